"""calibration.synthetic: deterministic lesion images and masks, the ImageFolder tree, the demo clip, the CLI."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from calibration.dataset import scan
from calibration.synthetic import CLASSES, load_mask, main, render, write_clip, write_imagefolder

SIZE = 64
# plausible lesion area as a fraction of the image, per class
MASK_FRACTION = {"pox_like": (0.003, 0.2), "pigmented": (0.01, 0.35), "inflammatory": (0.03, 0.7)}


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng(list(key))


@pytest.mark.parametrize("cls", CLASSES)
def test_render_is_deterministic(cls):
    img, mask = render(cls, _rng(1, 2), SIZE)
    again, mask_again = render(cls, _rng(1, 2), SIZE)
    other, _ = render(cls, _rng(1, 3), SIZE)
    assert img.shape == (SIZE, SIZE, 3) and img.dtype == np.uint8
    assert mask.shape == (SIZE, SIZE) and mask.dtype == bool
    assert np.array_equal(img, again) and np.array_equal(mask, mask_again)
    assert not np.array_equal(img, other)


@pytest.mark.parametrize("cls", CLASSES)
def test_masks_cover_the_lesion_only(cls):
    fractions = [render(cls, _rng(7, i), SIZE)[1].mean() for i in range(12)]
    if cls == "normal":
        assert max(fractions) == 0
    else:
        lo, hi = MASK_FRACTION[cls]
        assert lo <= min(fractions) and max(fractions) <= hi, fractions


def _lesion_vs_skin(img: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """(luma ratio, red/green ratio) of the lesion's median pixel over the median skin pixel nearby."""
    ring = cv2.dilate(mask.astype(np.uint8), np.ones((9, 9), np.uint8), iterations=2).astype(bool) & ~mask
    x = img.astype(np.float64) + 1
    les, skin = np.median(x[mask], 0), np.median(x[ring], 0)
    return les.mean() / skin.mean(), (les[0] / les[1]) / (skin[0] / skin[1])


def test_lesions_look_as_described():
    """Against the skin around it: a pigmented lesion is darker, an inflamed patch redder, a vesicle
    paler and less red than its own red halo."""
    n = 16
    pig = [_lesion_vs_skin(*render("pigmented", _rng(3, i), 96)) for i in range(n)]
    inf = [_lesion_vs_skin(*render("inflammatory", _rng(3, i), 96)) for i in range(n)]
    pox = [_lesion_vs_skin(*render("pox_like", _rng(3, i), 96)) for i in range(n)]
    assert all(luma < 0.85 for luma, _ in pig), pig
    assert all(red > 1.1 for _, red in inf), inf
    assert all(red < 1.0 for _, red in pox), pox  # whitish/yellowish core vs the red halo around it


def _features(img: np.ndarray) -> np.ndarray:
    """Three trivial numbers over the central disc: dark area (hair closed away), red area, small bright
    blobs (white top-hat) - each relative to the image's own median skin."""
    s = img.shape[0]
    x = img.astype(np.float32) + 1
    luma, red = np.log(x.mean(2)), np.log(x[..., 0] / x[..., 1])
    closed = cv2.morphologyEx(luma, cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8))
    k = max(3, s // 16) | 1
    tophat = cv2.morphologyEx(luma, cv2.MORPH_TOPHAT, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    yy, xx = np.ogrid[:s, :s]
    c = (yy - s / 2) ** 2 + (xx - s / 2) ** 2 < (0.4 * s) ** 2
    ref_l, ref_r = np.median(closed[c]), np.median(red[c])
    return np.array([(closed[c] < ref_l - 0.3).mean(), (red[c] > ref_r + 0.25).mean(),
                     ((tophat[c] > 0.12) & (luma[c] > ref_l + 0.05)).mean()])


def test_classes_are_separable_by_trivial_features():
    """Each lesion class leads on its own feature, and a nearest-centroid rule on three numbers already
    gets most images right (a CNN does far better; see test_convert)."""
    n = 30

    def features(seed: int) -> np.ndarray:
        return np.array([[_features(render(cls, _rng(seed, c, i), SIZE)[0]) for i in range(n)]
                         for c, cls in enumerate(CLASSES)])  # (class, image, feature)

    train, test = features(1), features(2)
    med = np.median(train, axis=1)  # (class, feature)
    assert med[CLASSES.index("normal")].max() < 0.005
    for cls, f in (("pigmented", 0), ("inflammatory", 1), ("pox_like", 2)):
        others = np.delete(med[:, f], CLASSES.index(cls))
        assert med[CLASSES.index(cls), f] > 3 * others.max(), (cls, med)
    sd = train.reshape(-1, 3).std(0)
    dist = (((test / sd)[:, :, None, :] - (med / sd)[None, None]) ** 2).sum(-1)  # (class, image, centroid)
    accuracy = (dist.argmin(-1) == np.arange(len(CLASSES))[:, None]).mean()
    assert accuracy >= 0.75, accuracy


def test_render_rejects_bad_arguments():
    with pytest.raises(ValueError, match="unknown synthetic class 'melanoma'"):
        render("melanoma", _rng(0))
    with pytest.raises(ValueError, match="too small"):
        render("normal", _rng(0), 8)


def test_write_imagefolder_layout_masks_and_determinism(tmp_path):
    a = write_imagefolder(tmp_path / "a", per_class=3, size=40, seed=5)
    b = write_imagefolder(tmp_path / "b", per_class=4, size=40, seed=5)
    c = write_imagefolder(tmp_path / "c", per_class=3, size=40, seed=6)
    assert a == tmp_path / "a"
    for cls in CLASSES:
        names = sorted(p.name for p in (a / cls).iterdir())
        assert names == [f"{cls}_{i:05d}.png" for i in range(3)]
        assert sorted(p.name for p in (a / ".masks" / cls).iterdir()) == names
        for i, name in enumerate(names):
            path = a / cls / name
            assert path.read_bytes() == (b / cls / name).read_bytes()  # same seed: byte-identical, and
            assert path.read_bytes() != (c / cls / name).read_bytes()  # a bigger set extends a smaller one
            rgb, mask = render(cls, _rng(5, CLASSES.index(cls), i), 40)  # image i depends on (seed, class, i)
            assert np.array_equal(cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB), rgb)
            assert np.array_equal(load_mask(path), mask)
            assert mask.any() == (cls != "normal")
    ds = scan(a)  # the hidden mask folder is not taken for a class
    assert ds.classes == sorted(CLASSES) and len(ds.samples) == 12


def test_write_imagefolder_subset_and_errors(tmp_path):
    out = write_imagefolder(tmp_path / "s", per_class=1, size=32, classes=("pigmented",))
    assert [p.name for p in out.iterdir() if not p.name.startswith(".")] == ["pigmented"]
    with pytest.raises(ValueError, match="unknown synthetic class.*eczema"):
        write_imagefolder(tmp_path / "x", per_class=1, classes=("normal", "eczema"))
    with pytest.raises(ValueError, match="per_class >= 1"):
        write_imagefolder(tmp_path / "x", per_class=0)


def test_load_mask_absent(tmp_path):
    img = tmp_path / "cls" / "plain.png"
    img.parent.mkdir()
    cv2.imwrite(str(img), np.zeros((8, 8, 3), np.uint8))
    assert load_mask(img) is None


def _decode(path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames


def test_write_clip_decodes_to_every_frame(tmp_path):
    path = write_clip(tmp_path / "clip.mp4", n_frames=48, size=(320, 240), fps=12, seed=0)
    assert path == tmp_path / "clip.mp4"
    assert path.stat().st_size < 2_000_000
    frames = _decode(path)
    assert len(frames) == 48 and all(f.shape == (240, 320, 3) for f in frames)
    assert not np.array_equal(frames[0], frames[-1])  # the camera moves: first and last views differ
    assert float(np.mean([f.std() for f in frames])) > 5  # not blank


def test_write_clip_mjpg_avi(tmp_path):
    path = write_clip(tmp_path / "clip.avi", n_frames=6, size=(96, 64), fps=6, seed=1)
    assert path.suffix == ".avi"
    frames = _decode(path)
    assert len(frames) == 6 and frames[0].shape == (64, 96, 3)


def test_cli_writes_the_tree(tmp_path, capsys):
    out = tmp_path / "tree"
    assert main(["--out", str(out), "--per-class", "2", "--size", "32", "--seed", "4"]) == 0
    assert "wrote 8 images" in capsys.readouterr().out
    for cls in CLASSES:
        assert len(list((out / cls).glob("*.png"))) == 2
        assert len(list((out / ".masks" / cls).glob("*.png"))) == 2


def test_cli_through_skinedge_entry_point(tmp_path):
    from edge.cli import main as skinedge

    assert skinedge(["synth", "--out", str(tmp_path / "t"), "--per-class", "1", "--size", "24",
                     "--classes", "normal,pox_like"]) == 0
    assert sorted(p.name for p in (tmp_path / "t").iterdir()) == [".masks", "normal", "pox_like"]


def test_cli_errors(tmp_path, capsys):
    assert main(["--out", str(tmp_path / "t"), "--classes", "normal,eczema"]) == 2
    assert "eczema" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "t"), "--per-class", "0"])
    assert "positive integer" in capsys.readouterr().err
