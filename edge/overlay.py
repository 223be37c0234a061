"""What the health worker sees: the frame with its Grad-CAM heat map, and a HUD beside it.

The HUD never covers the lesion: the image is letterboxed into its own area, the prediction panel sits
beside it (landscape) or below it (portrait), and the disclaimer band runs along the bottom. Font sizes
come from the display size, and every string is shrunk or shortened to fit its box, so the same layout
is legible on a 320×240 SPI panel and an 800×480 DSI screen. `hud()` returns the text items it would
draw, so tests can check with cv2.getTextSize that nothing is clipped or overlapping.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache

import cv2
import numpy as np

from edge.config import COLORMAPS
from edge.i18n import ENGLISH, Messages
from edge.sinks import apply_rotation, fit_rect, resize_to

# Each colour map as an RGB lookup table: applyColorMap with it gives RGB in one pass, ~4x faster than the
# built-in map followed by a BGR->RGB conversion (the overlay runs on every frame).
_LEVELS = np.arange(256, dtype=np.uint8)[:, None]
_RGB_LUTS = {name: np.ascontiguousarray(cv2.applyColorMap(_LEVELS, code)[..., ::-1])
             for name, code in COLORMAPS.items()}
# The HUD measures the same strings (labels, percentages, the disclaimer) at the same sizes on every frame:
# caching cv2.getTextSize saves ~20 calls per frame, each a GIL release and re-acquire that waits while
# another pipeline thread holds the GIL. 1024 entries (~330 B each) hold that working set: labels and their
# shortened forms, 0-100 % in two fonts. The FPS line is a new string now and then: a bigger cache would keep
# growing for hours as new FPS values appear (the one growing allocation site tracemalloc found in issue 12's soak).
_text_size = lru_cache(maxsize=1024)(cv2.getTextSize)
DISCLAIMER = "screening aid - not a diagnosis"  # ASCII hyphen: Hershey fonts have no em dash
UNCERTAIN = "UNCERTAIN"

BODY_FONT, TITLE_FONT = cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX
WHITE, GREY, DIM = (255, 255, 255), (175, 175, 175), (70, 70, 70)
GREEN, AMBER, RED, RED_TEXT = (40, 200, 90), (255, 176, 0), (200, 30, 30), (255, 90, 80)
PANEL_BG, BAND_BG, NOTE = (22, 22, 22), (0, 0, 0), (255, 225, 140)

Rect = tuple[int, int, int, int]  # x, y, w, h


@dataclass
class Prediction:
    labels: list[str]
    probs: np.ndarray  # (K,), sums to 1

    def __post_init__(self):
        self.probs = np.asarray(self.probs, np.float64).reshape(-1)
        if len(self.labels) != len(self.probs):
            raise ValueError(f"{len(self.labels)} labels for {len(self.probs)} probabilities")

    def top(self, k: int = 1) -> list[tuple[str, float]]:
        order = np.argsort(-self.probs, kind="stable")[:k]
        return [(self.labels[i], float(self.probs[i])) for i in order]


def _normalised(cam: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """CAM scaled to 0..1 by its maximum and resized (INTER_LINEAR) to (w, h)."""
    cam = np.asarray(cam, np.float32)
    if cam.ndim != 2:
        raise ValueError(f"expected a 2-D Grad-CAM map, got shape {cam.shape}")
    cam = np.clip(np.nan_to_num(cam), 0.0, None)
    peak = float(cam.max()) if cam.size else 0.0
    cam = cam / peak if peak > 0 else np.zeros_like(cam)
    return np.clip(cv2.resize(cam, tuple(size), interpolation=cv2.INTER_LINEAR), 0.0, 1.0)


def _colour(norm: np.ndarray, colormap: str) -> np.ndarray:
    if colormap not in COLORMAPS:
        raise ValueError(f"unknown colormap {colormap!r}: expected one of {', '.join(COLORMAPS)}")
    u8 = cv2.convertScaleAbs(norm, alpha=255.0)  # rounds and saturates, faster than numpy on ARM too
    return cv2.applyColorMap(u8, _RGB_LUTS[colormap])


def heatmap(cam: np.ndarray, size: tuple[int, int], colormap: str = "jet") -> np.ndarray:
    """(h, w) CAM >= 0 -> (H, W, 3) uint8 RGB heat map at size (W, H)."""
    return _colour(_normalised(cam, size), colormap)


def blend(frame_rgb: np.ndarray, cam: np.ndarray, alpha: float = 0.45, colormap: str = "jet") -> np.ndarray:
    """Heat map over the frame, weighted per pixel by alpha × CAM, so cold regions keep their pixels."""
    size = (frame_rgb.shape[1], frame_rgb.shape[0])
    norm = _normalised(cam, size)
    weight = alpha * norm
    return cv2.blendLinear(frame_rgb, _colour(norm, colormap), 1.0 - weight, weight)


@dataclass(frozen=True)
class Text:
    text: str
    x: int
    y: int  # baseline
    scale: float
    thickness: int
    color: tuple[int, int, int]
    font: int = BODY_FONT

    @property
    def box(self) -> Rect:
        """(x, y, w, h) that cv2.putText covers, from cv2.getTextSize (including the descender)."""
        (w, h), base = _text_size(self.text, self.font, self.scale, self.thickness)
        return self.x, self.y - h, w, h + base


@dataclass
class Hud:
    image: Rect  # where the frame goes
    panel: Rect
    band: Rect
    panel_bg: tuple[int, int, int]
    rects: list[tuple[Rect, tuple[int, int, int]]]  # filled rectangles (confidence bar, tick)
    texts: list[Text]
    warning_band: Rect | None = None  # red, above the disclaimer band, when there is a warning


@dataclass(frozen=True)
class _Fonts:
    unit: float  # 1.0 at 320×240
    pad: int
    body: float
    body_t: int
    title: float
    title_t: int

    @classmethod
    def for_size(cls, w: int, h: int) -> _Fonts:
        u = min(w, h) / 240.0
        return cls(unit=u, pad=max(3, round(4 * u)), body=0.42 * u, body_t=1 if u < 1.6 else 2,
                   title=0.62 * u, title_t=max(1, round(u)))

    def height(self, title: bool = False) -> int:
        (_, h), base = _text_size("Ag%", *self.font(title))
        return h + base

    def font(self, title: bool = False) -> tuple[int, float, int]:
        """(font face, scale, thickness) of title or body text."""
        return (TITLE_FONT, self.title, self.title_t) if title else (BODY_FONT, self.body, self.body_t)


def _fit(text: str, max_w: int, scale: float, thickness: int, font: int) -> tuple[str, float]:
    """Shrink to 85% of `scale` if needed, then shorten with '..' until the text fits max_w pixels."""
    for s in (scale, scale * 0.85):
        if _text_size(text, font, s, thickness)[0][0] <= max_w:
            return text, s
    while len(text) > 1 and _text_size(text + "..", font, s, thickness)[0][0] > max_w:
        text = text[:-1]
    return text.rstrip() + "..", s


class _Column:
    """Stacks text rows and bars top-down inside a panel."""

    def __init__(self, f: _Fonts, x: int, y: int, w: int):
        self.f, self.x, self.y, self.w = f, x, y, w
        self.texts: list[Text] = []
        self.rects: list[tuple[Rect, tuple[int, int, int]]] = []

    def line(self, text: str, color, title: bool = False, right: str | None = None, right_color=None) -> None:
        """One row; `right` is right-aligned (a percentage) and the left text is shortened to leave room."""
        font, scale, t = self.f.font(title)
        (_, h), base = _text_size("Ag%", font, scale, t)
        baseline = self.y + h
        room = self.w
        if right is not None:
            rw = _text_size(right, font, scale, t)[0][0]
            self.texts.append(Text(right, self.x + self.w - rw, baseline, scale, t, right_color or color,
                                   font))
            room -= rw + self.f.pad * 2
        text, s = _fit(text, room, scale, t, font)
        self.texts.append(Text(text, self.x, baseline, s, t, color, font))
        self.y = baseline + base + self.f.pad

    def bar(self, value: float, color, tick: float | None) -> None:
        bh = max(5, round(7 * self.f.unit))
        self.rects.append(((self.x, self.y, self.w, bh), DIM))
        self.rects.append(((self.x, self.y, max(1, round(self.w * value)), bh), color))
        if tick is not None:
            tw = max(1, round(self.f.unit))
            tx = self.x + min(self.w - tw, round(self.w * tick))
            self.rects.append(((tx, self.y - 2, tw, bh + 4), WHITE))
        self.y += bh + 2 * self.f.pad

    def gap(self) -> None:
        self.y += self.f.pad


def footer_lines(fps: float | None, visit: str | None = None, extra: tuple[str, ...] = (),
                 msgs: Messages = ENGLISH, waiting: int | None = None) -> list[tuple[str, tuple[int, int, int]]]:
    """The rows under the prediction on the live screen: the visit, the page's pairing lines, how many captures
    wait for the PACS (`waiting`; None: forwarding off), FPS."""
    rows = [(msgs.hud("Visit {visit}", visit=visit), WHITE)] if visit else []
    rows += [(line, GREY) for line in extra]
    if waiting is not None:
        rows.append((msgs.hud("{count} to send", count=waiting), AMBER) if waiting else (msgs.hud("all sent"), GREY))
    return rows + [(msgs.hud("FPS --") if fps is None else msgs.hud("FPS {fps}", fps=f"{fps:.1f}"), GREY)]


def _prediction_rows(col: _Column, pred: Prediction | None, min_confidence: float,
                     rows: list[tuple[str, tuple[int, int, int]]], bottom: int, pin: bool, gate: str | None = None,
                     msgs: Messages = ENGLISH) -> None:
    """The class (or the gate's message), its bar and the top-3, then the footer `rows`: pinned to `bottom` when
    `pin` (a tall landscape panel); top-3 rows are left out, last first, where the footer would not fit above it."""
    row_h = col.f.height() + col.f.pad
    if gate is not None:
        _gate_rows(col, gate, msgs)
    elif pred is None:
        col.line(msgs.hud("no result yet"), GREY)
    else:
        (label, p), = pred.top(1)
        sure = p >= min_confidence
        col.line(label if sure else msgs.hud(UNCERTAIN), GREEN if sure else AMBER, title=True)
        col.line(f"{p * 100:.0f}%", WHITE, title=True)
        col.bar(p, GREEN if sure else AMBER, tick=min_confidence if min_confidence > 0 else None)
        room = (bottom - col.y - col.f.pad) // row_h - len(rows)
        for i, (name, q) in enumerate(pred.top(max(0, min(3, room)))):
            colour = GREEN if sure and i == 0 else GREY
            col.line(name, colour, right=f"{q * 100:.0f}%")
    col.gap()
    if pin:  # the footer (visit, FPS) pinned to the bottom of a tall panel
        col.y = max(col.y, bottom - len(rows) * row_h)
    for text, colour in rows:
        col.line(text, colour)


def split_to_fit(text: str, width: int, font: int = BODY_FONT, scale: float = 1.0, thickness: int = 1) -> list[str]:
    """`text` in rows no wider than `width` pixels, broken at spaces where it can be, else between characters
    (an address or a code must be shown whole, never shortened with '..')."""
    rows: list[str] = []
    for word in text.split(" "):
        trial = f"{rows[-1]} {word}" if rows else word
        if rows and _text_size(trial, font, scale, thickness)[0][0] <= width:
            rows[-1] = trial
            continue
        while len(word) > 1 and _text_size(word, font, scale, thickness)[0][0] > width:
            cut = max(1, next(i for i in range(len(word), 0, -1)
                              if _text_size(word[:i], font, scale, thickness)[0][0] <= width or i == 1))
            rows.append(word[:cut])
            word = word[cut:]
        rows.append(word)
    return rows


def _wrap(text: str, width: int, font: int, scale: float, thickness: int) -> list[str]:
    """Words of `text` in lines no wider than `width` pixels (a longer single word gets a line of its own)."""
    lines: list[str] = []
    for word in text.split():
        trial = f"{lines[-1]} {word}" if lines else word
        if lines and _text_size(trial, font, scale, thickness)[0][0] <= width:
            lines[-1] = trial
        else:
            lines.append(word)
    return lines


def _gate_rows(col: _Column, gate: str, msgs: Messages = ENGLISH) -> None:
    """A tripped gate instead of the class: 'RETAKE' / 'NOT RECOGNISED' in large type, scaled down until its
    longest word fits the panel, and the reason wrapped below it, in the board's language."""
    head = gate.partition(" - ")[0]
    colour = GREY if head == "CHECKING" else AMBER if head == "RETAKE" else RED_TEXT
    head, _, rest = msgs.hud(gate).partition(" - ")
    _, scale, t = col.f.font(title=True)
    widest = max(_text_size(w, TITLE_FONT, scale, t)[0][0] for w in head.split())
    scale = min(scale, scale * col.w / widest)
    body = 1.2 * col.f.body  # the reason is what to fix: a little larger than the top-3 rows
    for text, font, sc, th, c in ((head, TITLE_FONT, scale, t, colour), (rest, BODY_FONT, body, col.f.body_t, WHITE)):
        for line in _wrap(text, col.w, font, sc, th):
            (_, h), base = _text_size(line, font, sc, th)
            col.texts.append(Text(line, col.x, col.y + h, sc, th, c, font))
            col.y += h + base + col.f.pad


def _status_rows(col: _Column, status: str, height: int) -> None:
    """The first part of the status ('CAMERA LOST') wrapped in large type, the rest ('reconnecting') below,
    centred in a column of `height` pixels."""
    top = col.y
    head, _, rest = status.partition(" - ")
    words, line = head.split(), ""
    for word in words:
        trial = f"{line} {word}".strip()
        if line and _text_size(trial, TITLE_FONT, col.f.title, col.f.title_t)[0][0] > col.w:
            col.line(line, WHITE, title=True)
            trial = word
        line = trial
    col.line(line, WHITE, title=True)
    if rest:
        col.line(rest, WHITE)
    dy = max(0, (height - (col.y - top)) // 2)
    col.texts = [replace(t, x=t.x + (col.w - t.box[2]) // 2, y=t.y + dy) for t in col.texts]


def footer_rows(footer: list[tuple[str, tuple[int, int, int]]], f: _Fonts, width: int
                ) -> list[tuple[str, tuple[int, int, int]]]:
    """The footer's lines split into rows that fit `width` (an address or a code is never shortened)."""
    font, scale, t = f.font()
    return [(row, colour) for text, colour in footer for row in split_to_fit(text, width, font, scale, t)]


def _panel_height(f: _Fonts, footer_rows: int = 1) -> int:
    """Height the prediction rows need: 2 title rows, the bar, 3 top-k rows and the footer rows."""
    bar = max(5, round(7 * f.unit)) + 2 * f.pad
    return 2 * (f.height(True) + f.pad) + bar + (3 + footer_rows) * (f.height() + f.pad) + 3 * f.pad


def hud(pred: Prediction | None, size: tuple[int, int], min_confidence: float, fps: float | None,
        status: str | None = None, gate: str | None = None, warning: str | None = None, msgs: Messages = ENGLISH,
        footer: list[tuple[str, tuple[int, int, int]]] | None = None) -> Hud:
    """Layout and contents of the HUD for an upright canvas of `size` (w, h); `gate` (edge.gates.shown_message)
    replaces the class and confidence; `warning` (e.g. UNSIGNED MODEL: edge.trust.admit.Provenance.warning) is a
    red band of its own above the disclaimer, on every screen; `footer` (default: the FPS row) goes under the
    prediction; every text in the language of `msgs` (ASCII: OpenCV's fonts have no other glyphs)."""
    w, h = size
    f = _Fonts.for_size(w, h)
    footer = footer if footer is not None else footer_lines(fps, msgs=msgs)
    band_h = f.height() + 2 * f.pad
    avail = h - band_h * (2 if warning else 1)
    if w >= h:  # landscape: the (square) image on the left, the panel on the right
        need = _text_size(UNCERTAIN, TITLE_FONT, f.title, f.title_t)[0][0] + 2 * f.pad
        pw = min(max(w - avail, need), w // 2)
        image, panel = (0, 0, w - pw, avail), (w - pw, 0, pw, avail)
    else:  # portrait: the image on top, the panel below
        ph = min(_panel_height(f, len(footer_rows(footer, f, w - 2 * f.pad))), avail // 2)
        image, panel = (0, 0, w, avail - ph), (0, avail - ph, w, ph)
    if status:  # the warning covers the image too: a blank or stale frame must not look live
        panel = (0, 0, w, avail)
    px, py, pw, ph = panel
    big = replace(f, title=1.5 * f.title, title_t=f.title_t + 1, body=1.3 * f.body) if status else f
    col = _Column(big, px + f.pad, py + f.pad, pw - 2 * f.pad)
    bg = PANEL_BG
    if status:
        bg = RED
        _status_rows(col, msgs.hud(status), ph - 2 * f.pad)
    else:
        _prediction_rows(col, pred, min_confidence, footer_rows(footer, f, col.w), bottom=py + ph - f.pad,
                         pin=w >= h, gate=gate, msgs=msgs)
    band = (0, h - band_h, w, band_h)
    warning_band = (0, avail, w, band_h) if warning else None
    texts = [_band_text(msgs.hud(DISCLAIMER), band, f, NOTE)]
    if warning:
        texts.append(_band_text(msgs.hud(warning), warning_band, f, WHITE))
    return Hud(image, panel, band, bg, col.rects, col.texts + texts, warning_band)


def _band_text(text: str, band: Rect, f: _Fonts, colour) -> Text:
    """One line centred in a full-width band, shrunk or shortened to fit it."""
    x, y, w, _ = band
    text, s = _fit(text, w - 2 * f.pad, f.body, f.body_t, BODY_FONT)
    (tw, th), _ = _text_size(text, BODY_FONT, s, f.body_t)
    return Text(text, x + (w - tw) // 2, y + f.pad + th, s, f.body_t, colour)


def _fill(canvas: np.ndarray, rect: Rect, colour) -> None:
    """Filled rectangle, clipped to the canvas (cv2.rectangle: ~10x faster than a numpy slice assignment)."""
    x, y, w, h = rect
    if w > 0 and h > 0:
        cv2.rectangle(canvas, (x, y), (x + w - 1, y + h - 1), colour, cv2.FILLED)


def render(frame_rgb: np.ndarray, cam: np.ndarray | None, pred: Prediction | None, *, size: tuple[int, int],
           min_confidence: float, fps: float | None, status: str | None = None, colormap: str = "jet",
           alpha: float = 0.45, rotation: int = 0, gate: str | None = None, warning: str | None = None,
           msgs: Messages = ENGLISH, footer: list[tuple[str, tuple[int, int, int]]] | None = None) -> np.ndarray:
    """The screen for one frame: (h, w, 3) uint8 RGB for a panel of `size` (w, h), mounted at `rotation`.

    With rotation 90 or 270 the HUD is laid out upright on the (h, w) canvas and then turned, so text
    reads correctly on a panel mounted sideways. `status` (e.g. camera lost) replaces the prediction panel;
    `gate` (RETAKE, NOT RECOGNISED) replaces the class, and the heat map is hidden, since it would explain a
    class that is not shown. `warning` (UNSIGNED MODEL) is a red band above the disclaimer.
    """
    w, h = size
    if rotation in (90, 270):
        w, h = h, w
    layout = hud(pred, (w, h), min_confidence, fps, status, gate, warning, msgs, footer)
    canvas = np.zeros((h, w, 3), np.uint8)
    ix, iy, iw, ih = layout.image
    x, y, fw, fh = fit_rect((frame_rgb.shape[1], frame_rgb.shape[0]), (iw, ih))
    view = resize_to(frame_rgb, (fw, fh))
    if cam is not None and gate is None:
        view = blend(view, cam, alpha, colormap)
    canvas[iy + y : iy + y + fh, ix + x : ix + x + fw] = view
    _fill(canvas, layout.panel, layout.panel_bg)
    _fill(canvas, layout.band, BAND_BG)
    if layout.warning_band:
        _fill(canvas, layout.warning_band, RED)
    for rect, colour in layout.rects:
        _fill(canvas, rect, colour)
    for t in layout.texts:
        cv2.putText(canvas, t.text, (t.x, t.y), t.font, t.scale, t.color, t.thickness, cv2.LINE_AA)
    return apply_rotation(canvas, rotation)
