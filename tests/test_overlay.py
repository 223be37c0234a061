"""The overlay: heat map colours, HUD legibility at the panel sizes we ship, UNCERTAIN, disclaimer, status."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edge.overlay import (
    DISCLAIMER,
    GREEN,
    UNCERTAIN,
    Prediction,
    blend,
    heatmap,
    hud,
    render,
)
from edge.sinks import apply_rotation

LABELS = ["monkeypox", "chickenpox", "measles", "normal"]
SURE = Prediction(LABELS, np.array([0.87, 0.08, 0.04, 0.01]))
UNSURE = Prediction(LABELS, np.array([0.41, 0.35, 0.14, 0.10]))
LONG = Prediction(["basal cell carcinoma (nodular type)", "actinic keratosis", "seborrhoeic keratosis"],
                  np.array([0.9, 0.06, 0.04]))
SIZES = [(320, 240), (480, 320), (800, 480), (240, 320), (320, 480), (480, 800)]


def frame(size: int = 96) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(90, 170, (size, size, 3), dtype=np.uint8)


def hot_corner_cam() -> np.ndarray:
    cam = np.zeros((7, 7), np.float32)
    cam[:2, :2] = 3.0
    return cam


def overlaps(a, b) -> bool:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    return ax < bx + bw and bx < ax + aw and ay < by + bh and by < ay + ah


def test_prediction_top():
    assert SURE.top(2) == [("monkeypox", pytest.approx(0.87)), ("chickenpox", pytest.approx(0.08))]
    with pytest.raises(ValueError, match="labels"):
        Prediction(["a"], np.array([0.5, 0.5]))


def test_heatmap_is_warm_where_the_cam_is_high():
    hm = heatmap(hot_corner_cam(), (70, 70), "jet")
    assert hm.shape == (70, 70, 3) and hm.dtype == np.uint8
    hot, cold = hm[2, 2].astype(int), hm[-3, -3].astype(int)
    assert hot[0] >= 120 and hot[2] < 30  # jet's top is (dark) red, RGB channel 0
    assert cold[2] >= 120 and cold[0] < 30  # and its bottom is (dark) blue
    assert heatmap(np.zeros((7, 7)), (10, 10)).shape == (10, 10, 3)  # an all-zero map is valid
    with pytest.raises(ValueError, match="2-D"):
        heatmap(np.zeros((1, 7, 7)), (10, 10))
    with pytest.raises(ValueError, match="colormap"):
        heatmap(hot_corner_cam(), (10, 10), "nope")


def test_blend_leaves_cold_regions_untouched():
    img = frame(70)
    img[..., 0] //= 2  # a bluish frame, so the pull towards jet's red is visible
    out = blend(img, hot_corner_cam(), alpha=0.5, colormap="jet")
    assert np.array_equal(out[-20:, -20:], img[-20:, -20:])
    assert np.abs(out[:8, :8].astype(int) - img[:8, :8]).mean() > 20
    assert (out[:8, :8, 0].astype(int) > img[:8, :8, 0]).all()


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("case", ["sure", "unsure", "long", "none", "status", "unsigned", "unsigned status"])
def test_hud_text_fits_and_does_not_overlap(size, case):
    pred = {"sure": SURE, "unsure": UNSURE, "long": LONG, "none": None, "status": SURE, "unsigned": SURE,
            "unsigned status": None}[case]
    status = "CAMERA LOST - reconnecting" if "status" in case else None
    warning = "UNSIGNED MODEL" if "unsigned" in case else None
    h = hud(pred, size, min_confidence=0.6, fps=123.4, status=status, warning=warning)
    w, hh = size
    boxes = [t.box for t in h.texts]
    for t, (x, y, bw, bh) in zip(h.texts, boxes):
        assert 0 <= x and 0 <= y and x + bw <= w and y + bh <= hh, (t.text, (x, y, bw, bh), size)
        assert t.scale >= 0.3, t  # legible: Hershey text below ~0.3 is a smear of pixels
    for i in range(len(boxes)):
        for j in range(i + 1, len(boxes)):
            assert not overlaps(boxes[i], boxes[j]), (h.texts[i].text, h.texts[j].text, size)
        for rect, _ in h.rects:
            assert not overlaps(boxes[i], rect), (h.texts[i].text, rect, size)
    panel_and_band = [h.panel, h.band] + ([h.warning_band] if warning else [])
    for t, box in zip(h.texts, boxes):  # text stays in the panel or the bands, never on the lesion
        assert any(overlaps(box, r) and r[0] <= box[0] and box[0] + box[2] <= r[0] + r[2]
                   for r in panel_and_band)
        if status is None:
            assert not overlaps(box, h.image)
    texts = [t.text for t in h.texts]
    assert DISCLAIMER in texts  # always, whole
    assert ("UNSIGNED MODEL" in texts) == bool(warning)  # whole, in its own band
    if warning:
        assert not overlaps(h.warning_band, h.band) and not overlaps(h.warning_band, h.panel)
        assert not overlaps(h.warning_band, h.image)
    if "status" in case:
        assert "CAMERA LOST" in texts and "reconnecting" in texts and "monkeypox" not in texts


@pytest.mark.parametrize("size", [(320, 240), (480, 320), (800, 480)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_uncertain_replaces_the_class_below_threshold(size):
    sure = hud(SURE, size, min_confidence=0.6, fps=10.0)
    doubt = hud(SURE, size, min_confidence=0.9, fps=10.0)
    assert sure.texts[0].text == "monkeypox" and sure.texts[0].color == GREEN
    assert doubt.texts[0].text == UNCERTAIN
    assert GREEN not in [t.color for t in doubt.texts]  # no class is highlighted
    a = render(frame(), None, SURE, size=size, min_confidence=0.6, fps=10.0)
    b = render(frame(), None, SURE, size=size, min_confidence=0.9, fps=10.0)
    x, y, w, h = doubt.texts[0].box
    assert np.abs(a[y : y + h, x : x + w].astype(int) - b[y : y + h, x : x + w]).sum() > 0
    ix, iy, iw, ih = doubt.image
    view = (slice(iy, iy + ih), slice(ix, ix + iw))
    assert np.array_equal(a[view], b[view])  # only the HUD changed


@pytest.mark.parametrize("size", [(320, 240), (480, 320), (800, 480)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_render_shape_disclaimer_and_heat(size):
    w, h = size
    bluish = np.full((96, 96, 3), (60, 120, 160), np.uint8)
    plain = render(bluish, None, SURE, size=size, min_confidence=0.6, fps=None)
    heat = render(bluish, hot_corner_cam(), SURE, size=size, min_confidence=0.6, fps=None, alpha=0.6)
    assert plain.shape == (h, w, 3) and plain.dtype == np.uint8
    layout = hud(SURE, size, min_confidence=0.6, fps=None)
    bx, by, bw, bh = layout.band
    assert plain[by : by + bh, bx : bx + bw].max() > 150  # the disclaimer is drawn in the band
    ix, iy, iw, ih = layout.image
    side = min(iw, ih)  # the square frame fills the image area's short side
    x0, y0 = ix + (iw - side) // 2, iy + (ih - side) // 2
    corner = (slice(y0 + 2, y0 + side // 8), slice(x0 + 2, x0 + side // 8))
    far = (slice(y0 + side - side // 4, y0 + side - 2), slice(x0 + side - side // 4, x0 + side - 2))
    def warmth(img):  # red minus blue
        return img[..., 0].astype(float).mean() - img[..., 2].astype(float).mean()

    assert warmth(heat[corner]) > warmth(plain[corner]) + 30  # warmer where the cam is high
    assert np.array_equal(heat[far], plain[far])


def test_status_banner_covers_the_view():
    out = render(np.zeros((96, 96, 3), np.uint8), None, None, size=(480, 320), min_confidence=1.0, fps=None,
                 status="CAMERA LOST - reconnecting")
    layout = hud(None, (480, 320), 1.0, None, status="CAMERA LOST - reconnecting")
    x, y, w, h = layout.panel
    assert (x, y, w) == (0, 0, 480)
    red = (out[..., 0] > 150) & (out[..., 1] < 60)
    assert red[y : y + h].mean() > 0.7


def test_unsigned_model_band_is_red_and_leaves_the_view_alone():
    plain = render(frame(), None, SURE, size=(480, 320), min_confidence=0.6, fps=None)
    warned = render(frame(), None, SURE, size=(480, 320), min_confidence=0.6, fps=None, warning="UNSIGNED MODEL")
    layout = hud(SURE, (480, 320), 0.6, None, warning="UNSIGNED MODEL")
    x, y, w, h = layout.warning_band
    band = warned[y : y + h, x : x + w]
    assert ((band[..., 0] > 150) & (band[..., 1] < 60)).mean() > 0.5  # red, with white text on it
    assert (band.min(axis=2) > 200).any()
    assert not np.array_equal(plain[y : y + h], band)


def test_rotation_lays_out_upright_then_turns():
    turned = render(frame(), None, SURE, size=(480, 320), min_confidence=0.6, fps=5.0, rotation=90)
    upright = render(frame(), None, SURE, size=(320, 480), min_confidence=0.6, fps=5.0)
    assert turned.shape == (320, 480, 3)
    assert np.array_equal(turned, apply_rotation(upright, 90))


def test_text_is_readable_back_at_scale():
    """The disclaimer is drawn with the font size the HUD reports (a cross-check of the boxes)."""
    layout = hud(SURE, (320, 240), 0.6, 9.0)
    t = next(t for t in layout.texts if t.text == DISCLAIMER)
    out = render(frame(), None, SURE, size=(320, 240), min_confidence=0.6, fps=9.0)
    x, y, w, h = t.box
    ink = out[y : y + h, x : x + w].max(axis=2) > 100
    cols = np.flatnonzero(ink.any(axis=0))
    assert cols[0] <= 2 and cols[-1] >= w - 3  # the ink spans the measured box
    assert cv2.getTextSize(DISCLAIMER, t.font, t.scale, t.thickness)[0][0] == w
