"""Procedural dermoscopy-like images with lesion masks: the data the tests, the demo and the calibration
examples use, since no real data set can be downloaded here.

Four classes a small CNN separates after a few epochs, each drawn with the nuisance variation a real
camera brings (skin tone from very light to very dark, lighting gradient, dermoscope vignette, hair,
blur, noise), drawn the same way for every class so that a model has to look at the lesion. Every
random choice comes from one numpy Generator, so the same seed gives the same pixels.

    skinedge synth --out DIR --per-class N --size S --seed K
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

CLASSES: tuple[str, ...] = ("normal", "pox_like", "pigmented", "inflammatory")
MASK_DIR = ".masks"  # hidden, so an ImageFolder scan of the tree does not take it for a class
MIN_SIZE = 16

_F = np.float32
# Skin tones from very light to very dark (roughly Fitzpatrick I to VI), RGB.
_TONES = np.array([[246, 218, 200], [234, 192, 160], [212, 160, 122], [176, 124, 88], [128, 86, 58],
                   [84, 56, 40]], _F)
_ANGLES = 512  # resolution of the lesion-border lookup table


def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel row and column coordinates, (h, 1) and (1, w), for broadcasting."""
    return np.arange(h, dtype=_F)[:, None], np.arange(w, dtype=_F)[None, :]


def _noise(rng: np.random.Generator, h: int, w: int, period: float) -> np.ndarray:
    """Smooth noise, blobs about `period` pixels across, roughly zero mean and unit variance."""
    period = max(float(period), 1.0)
    grid = rng.standard_normal((int(h / period) + 3, int(w / period) + 3), dtype=_F)
    return cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC) * _F(1.3)


def _blend(img: np.ndarray, colour: np.ndarray, alpha: np.ndarray) -> None:
    """img <- img + (colour - img) * alpha, in place; colour (3,) or (h, w, 3), alpha (h, w)."""
    img += (colour - img) * alpha[..., None]


def _polar(rng: np.random.Generator, ys: np.ndarray, xs: np.ndarray, cx: float, cy: float,
           r: float, squash: tuple[float, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Coordinates around (cx, cy) in units of r, in a randomly rotated frame squashed by a random
    factor in `squash`: (u, v, distance, angle)."""
    phi = rng.uniform(0, np.pi)
    c, s = _F(np.cos(phi)), _F(np.sin(phi))
    dx, dy = xs - _F(cx), ys - _F(cy)
    u = (dx * c + dy * s) / _F(r)
    v = (dy * c - dx * s) / _F(r * rng.uniform(*squash))
    return u, v, np.sqrt(u * u + v * v), np.arctan2(v, u)


def _skin(rng: np.random.Generator, ys: np.ndarray, xs: np.ndarray, s: float) -> tuple[np.ndarray, np.ndarray]:
    """Skin of a random tone with mottling, blotchy redness, crossing furrows and pores.

    Returns the image (h, w, 3) float32 and the base tone (3,)."""
    h, w = ys.shape[0], xs.shape[1]
    k = s / 224  # sizes below are in pixels of a 224-pixel view
    t = rng.uniform(0, len(_TONES) - 1)
    i = min(int(t), len(_TONES) - 2)
    base = (_TONES[i] + _F(t - i) * (_TONES[i + 1] - _TONES[i])) * rng.uniform(0.96, 1.04, 3).astype(_F)
    shade = (1 + rng.uniform(0.02, 0.06) * _noise(rng, h, w, 60 * k)
             + rng.uniform(0.01, 0.035) * _noise(rng, h, w, 14 * k))
    red = rng.uniform(0.0, 0.05) * _noise(rng, h, w, 40 * k)
    img = np.empty((h, w, 3), _F)
    img[..., 0] = base[0] * shade
    img[..., 1] = base[1] * shade * (1 - red)
    img[..., 2] = base[2] * shade * (1 - 0.7 * red)
    # microrelief: two families of fine furrows crossing at an angle, gently warped
    a = rng.uniform(0, np.pi)
    b = a + rng.uniform(0.6, 1.2)
    warp = 2.0 * _noise(rng, h, w, 30 * k)
    f = _F(2 * np.pi / (rng.uniform(7, 12) * k))
    ridge = np.maximum(np.cos(f * (xs * _F(np.cos(a)) + ys * _F(np.sin(a))) + warp),
                       np.cos(f * (xs * _F(np.cos(b)) + ys * _F(np.sin(b))) + warp))
    furrow = np.square(np.clip((ridge - 0.85) / 0.15, 0, 1))
    pores = np.clip((_noise(rng, h, w, 1.5 * k) - rng.uniform(1.5, 1.9)) / 0.5, 0, 1)
    img *= (1 - rng.uniform(0.02, 0.07) * furrow - rng.uniform(0.05, 0.14) * pores)[..., None]
    return img, base


def _normal(rng: np.random.Generator, img: np.ndarray, base: np.ndarray, ys: np.ndarray, xs: np.ndarray,
            cx: float, cy: float, s: float) -> np.ndarray:
    """No lesion: the skin alone."""
    return np.zeros(img.shape[:2], bool)


def _pigmented(rng: np.random.Generator, img: np.ndarray, base: np.ndarray, ys: np.ndarray, xs: np.ndarray,
               cx: float, cy: float, s: float) -> np.ndarray:
    """One irregular brown-to-black blob with colour variegation, sometimes a pigment network, dots
    and globules, or a blue-grey veil."""
    h, w = img.shape[:2]
    k = s / 224
    radius = rng.uniform(0.11, 0.27) * s
    _, _, rho, theta = _polar(rng, ys, xs, cx, cy, radius, (0.6, 1.0))
    # irregular, asymmetric border: a few harmonics over angle, plus smooth 2-D wobble
    n = np.arange(2, 13)
    amp = rng.uniform(0.08, 0.25) * rng.uniform(0.3, 1.0, n.size) / n**0.9
    ang = np.linspace(-np.pi, np.pi, _ANGLES, endpoint=False)[:, None]
    table = (1 + (amp * np.cos(n * ang + rng.uniform(0, 2 * np.pi, n.size))).sum(1)).astype(_F)
    idx = ((theta + np.pi) * (_ANGLES / (2 * np.pi))).astype(np.int32) % _ANGLES
    inside = table[idx] + _F(rng.uniform(0.03, 0.1)) * _noise(rng, h, w, 0.5 * radius) - rho
    alpha = np.clip(inside / _F(rng.uniform(0.02, 0.12)) + 0.5, 0, 1)
    # variegation: light brown -> dark brown -> black, by a smooth field (darker centre or rim)
    stops = np.array([[160, 100, 62], [92, 56, 36], [38, 28, 26]], _F) * rng.uniform(0.85, 1.15, (3, 1)).astype(_F)
    t2 = 2 * np.clip(rng.uniform(0.2, 0.6) + 0.35 * _noise(rng, h, w, 0.6 * radius)
                     + 0.12 * _noise(rng, h, w, 0.15 * radius)
                     + rng.uniform(-0.3, 0.5) * np.clip(1 - rho, 0, 1), 0, 1)
    col = (stops[0] + (stops[1] - stops[0]) * np.clip(t2, 0, 1)[..., None]
           + (stops[2] - stops[1]) * np.clip(t2 - 1, 0, 1)[..., None])
    col = np.minimum(col, base * _F(0.72))  # always darker than the skin around it
    if rng.random() < 0.6:  # pigment network: the zero crossings of band-limited noise form a mesh of lines
        mesh = _noise(rng, h, w, rng.uniform(4, 7) * k)
        lines = np.exp(-np.square(mesh / _F(rng.uniform(0.3, 0.5))))
        col *= (1 - rng.uniform(0.3, 0.55) * lines * np.clip(1.5 * inside, 0, 1))[..., None]
    dots = np.zeros((h, w), np.uint8)
    for _ in range(int(rng.integers(0, 14))):  # dots and globules (clipped to the lesion by alpha)
        r, a = radius * 0.8 * np.sqrt(rng.random()), rng.uniform(0, 2 * np.pi)
        centre = (round((cx + r * np.cos(a)) * 8), round((cy + r * np.sin(a)) * 8))
        cv2.circle(dots, centre, max(4, round(rng.uniform(0.8, 2.6) * k * 8)), 255, -1, cv2.LINE_AA, shift=3)
    col *= (1 - dots.astype(_F) * _F(0.6 / 255))[..., None]
    if rng.random() < 0.25:  # blue-grey veil over part of the lesion
        veil = np.clip(_noise(rng, h, w, 0.8 * radius) + rng.uniform(-0.3, 0.3), 0, 1) * _F(0.6)
        grey = np.array([100, 110, 135], _F) * _F(min(1.0, base.mean() / 180))
        _blend(col, grey, veil)
    _blend(img, col, alpha)
    return inside > 0


def _pox(rng: np.random.Generator, img: np.ndarray, base: np.ndarray, ys: np.ndarray, xs: np.ndarray,
         cx: float, cy: float, s: float) -> np.ndarray:
    """3-15 small raised vesicles or pustules: whitish or yellowish dome with highlight and shadow, red
    halo, sometimes a dark umbilicated centre. Each is drawn in its own small window."""
    h, w = img.shape[:2]
    mask = np.zeros((h, w), bool)
    spread = rng.uniform(0.1, 0.22) * s
    la = rng.uniform(0, 2 * np.pi)
    lx, ly, lz = 0.6 * np.cos(la), 0.6 * np.sin(la), 0.8  # light direction (unit vector)
    hx, hy = lx / np.hypot(0.6, 1.8), ly / np.hypot(0.6, 1.8)  # where the specular highlight sits
    core = np.array([250, 244, 225] if rng.random() < 0.5 else [240, 220, 150], _F) * rng.uniform(0.92, 1.0)
    core = 0.8 * core + 0.2 * base
    tint = np.array([1.0, rng.uniform(0.45, 0.62), rng.uniform(0.5, 0.66)], _F)
    umbilicated = rng.random() < 0.35
    placed: list[tuple[float, float, float]] = []
    for _ in range(int(rng.integers(3, 16))):
        r = max(1.5, rng.uniform(0.022, 0.055) * s)
        for _try in range(25):
            px, py = cx + spread * rng.standard_normal(), cy + spread * rng.standard_normal()
            if all(np.hypot(px - qx, py - qy) > 1.25 * (r + qr) for qx, qy, qr in placed):
                break
        else:
            continue
        placed.append((px, py, r))
        x0, x1 = max(0, int(px - 3 * r)), min(w, int(px + 3 * r) + 2)
        y0, y1 = max(0, int(py - 3 * r)), min(h, int(py + 3 * r) + 2)
        if x0 >= x1 or y0 >= y1:
            continue
        u, v, d, _ = _polar(rng, ys[y0:y1], xs[:, x0:x1], px, py, r, (0.8, 1.0))
        patch = img[y0:y1, x0:x1]
        halo = np.exp(-2 * np.square(d / _F(rng.uniform(1.6, 2.4)))) * _F(rng.uniform(0.5, 0.9))
        patch *= (1 - halo[..., None] * (1 - tint))
        away = np.clip(-(u * lx + v * ly) / (d + 1e-3), 0, 1)  # shadow on the side away from the light
        patch *= (1 - 0.35 * np.exp(-np.square((d - 1) / 0.35)) * away)[..., None]
        nz = np.sqrt(np.clip(1 - d * d, 0, 1))
        shade = np.clip(u * lx + v * ly + nz * lz, 0, 1)
        spec = np.exp(-(np.square(u - hx) + np.square(v - hy)) / 0.03) * (d < 1)
        col = core * (0.55 + 0.45 * shade)[..., None] + (180 * spec)[..., None]
        if umbilicated:
            col *= (1 - 0.5 * np.exp(-np.square(d / 0.28)))[..., None]
        _blend(patch, col, np.clip((1 - d) / 0.2 + 0.5, 0, 1) * _F(rng.uniform(0.8, 0.95)))
        mask[y0:y1, x0:x1] |= d < 1
    return mask


def _inflammatory(rng: np.random.Generator, img: np.ndarray, base: np.ndarray, ys: np.ndarray, xs: np.ndarray,
                  cx: float, cy: float, s: float) -> np.ndarray:
    """A diffuse, irregular red/pink patch with soft borders, inner mottling, sometimes whitish scale."""
    h, w = img.shape[:2]
    k = s / 224
    radius = rng.uniform(0.2, 0.4) * s
    _, _, rho, _ = _polar(rng, ys, xs, cx, cy, radius, (0.6, 1.0))
    field = 1 - rho + 0.3 * _noise(rng, h, w, 0.7 * radius) + 0.06 * _noise(rng, h, w, 0.2 * radius)
    soft = _F(rng.uniform(0.4, 0.9))
    cover = np.clip(field / soft, 0, 1)
    tint = np.array([rng.uniform(1.0, 1.06), rng.uniform(0.48, 0.66), rng.uniform(0.55, 0.72)], _F)
    col = img * tint * (1 + 0.07 * _noise(rng, h, w, 9 * k))[..., None]
    _blend(img, col, cover * _F(rng.uniform(0.75, 0.95)))
    if rng.random() < 0.6:  # scaling: whitish flakes on the patch
        flecks = np.clip((_noise(rng, h, w, 3.5 * k) - rng.uniform(1.1, 1.5)) / 0.5, 0, 1) * cover
        scale = np.array([235, 228, 215], _F) * rng.uniform(0.9, 1.0)
        _blend(img, scale, flecks * _F(rng.uniform(0.4, 0.7)))
    return field > soft / 2


# Each draws its lesion into `img` in place, centred near (cx, cy) and sized relative to the view side `s`,
# and returns the lesion mask.
_LESIONS: dict[str, Callable[..., np.ndarray]] = {
    "normal": _normal, "pox_like": _pox, "pigmented": _pigmented, "inflammatory": _inflammatory}


def _hair(rng: np.random.Generator, img: np.ndarray, s: float, max_hairs: int = 10) -> None:
    """Dark thin curved strands (none in about half the images), drawn anti-aliased over everything."""
    if rng.random() < 0.45:
        return
    h, w = img.shape[:2]
    k = s / 224
    canvas = np.zeros((h, w), np.uint8)
    thick = max(1, round(k * rng.choice([1, 1, 2])))
    t = np.linspace(0, 1, 24, dtype=_F)[:, None]
    for _ in range(int(rng.integers(1, max_hairs + 1))):
        p0 = rng.uniform((-0.1 * w, -0.1 * h), (1.1 * w, 1.1 * h))
        a = rng.uniform(0, 2 * np.pi)
        p2 = p0 + rng.uniform(0.3, 1.0) * s * np.array([np.cos(a), np.sin(a)])
        ctrl = (p0 + p2) / 2 + rng.normal(0, 0.15 * np.hypot(*(p2 - p0)), 2)
        pts = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * ctrl + t**2 * p2  # quadratic Bezier
        cv2.polylines(canvas, [np.round(pts * 16).astype(np.int32)], False, 255, thick, cv2.LINE_AA, shift=4)
    colour = rng.uniform(15, 55) * np.array([1.0, 0.85, 0.75], _F)
    _blend(img, colour, canvas.astype(_F) * _F(rng.uniform(0.75, 0.95) * min(1.0, 0.4 + k) / 255))


def _lighting(rng: np.random.Generator, ys: np.ndarray, xs: np.ndarray, s: float) -> np.ndarray:
    """Gain map: exposure, a linear gradient, radial fall-off and, sometimes, the dark ring around a
    dermoscope's field of view."""
    yn = (ys - _F((ys.shape[0] - 1) / 2)) / _F(s / 2)
    xn = (xs - _F((xs.shape[1] - 1) / 2)) / _F(s / 2)
    r2 = xn * xn + yn * yn
    ga, g = rng.uniform(0, 2 * np.pi), rng.uniform(0, 0.22)
    gain = (_F(rng.uniform(0.85, 1.12)) * (1 + _F(g * np.cos(ga)) * xn + _F(g * np.sin(ga)) * yn)
            * (1 - _F(rng.uniform(0, 0.12)) * r2))
    if rng.random() < 0.35:
        ring = np.clip((_F(rng.uniform(0.92, 1.3)) - np.sqrt(r2)) / _F(rng.uniform(0.02, 0.06)) + 0.5, 0, 1)
        gain = gain * (0.04 + 0.96 * ring)
    return gain


def _finish(rng: np.random.Generator, img: np.ndarray, s: float) -> np.ndarray:
    """Optional defocus blur and sensor noise; float image -> uint8."""
    if rng.random() < 0.5:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.3, 1.4) * s / 224)
    img += rng.standard_normal(img.shape, dtype=_F) * _F(rng.uniform(1, 5))
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def render(cls: str, rng: np.random.Generator, size: int = 224) -> tuple[np.ndarray, np.ndarray]:
    """One image of class `cls`: (size, size, 3) uint8 RGB and the (size, size) bool lesion mask
    (all False for 'normal'; the union of the vesicles for 'pox_like')."""
    if cls not in _LESIONS:
        raise ValueError(f"unknown synthetic class {cls!r}: expected one of {', '.join(CLASSES)}")
    if size < MIN_SIZE:
        raise ValueError(f"size {size} is too small: at least {MIN_SIZE} pixels")
    ys, xs = _grid(size, size)
    img, base = _skin(rng, ys, xs, size)
    cx, cy = size / 2 + rng.uniform(-0.15, 0.15, 2) * size
    mask = _LESIONS[cls](rng, img, base, ys, xs, cx, cy, size)
    _hair(rng, img, size)
    img *= _lighting(rng, ys, xs, size)[..., None]
    return _finish(rng, img, size), mask


def _imwrite(path: Path, img: np.ndarray) -> None:
    if not cv2.imwrite(str(path), img, [cv2.IMWRITE_PNG_COMPRESSION, 3]):
        raise OSError(f"{path}: could not write image")


def write_imagefolder(out: Path, per_class: int, size: int = 224, seed: int = 0,
                      classes: Sequence[str] = CLASSES) -> Path:
    """Write out/<cls>/<cls>_00000.png ... and the masks as out/.masks/<cls>/<same name>.png; returns out.

    Image i of a class depends only on (seed, class, i), so files are byte-identical for the same seed
    and a larger set extends a smaller one."""
    out = Path(out)
    unknown = [c for c in classes if c not in _LESIONS]
    if unknown:
        raise ValueError(f"unknown synthetic class(es) {', '.join(unknown)}: expected some of {', '.join(CLASSES)}")
    if per_class < 1 or seed < 0 or size < MIN_SIZE:
        raise ValueError(f"need per_class >= 1, seed >= 0 and size >= {MIN_SIZE}; got {per_class}, {seed}, {size}")
    total = len(classes) * per_class
    with tqdm(total=total, desc="synth", unit="img", disable=total <= 200) as bar:
        for cls in classes:
            img_dir, mask_dir = out / cls, out / MASK_DIR / cls
            img_dir.mkdir(parents=True, exist_ok=True)
            mask_dir.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                rgb, mask = render(cls, np.random.default_rng([seed, CLASSES.index(cls), i]), size)
                name = f"{cls}_{i:05d}.png"
                _imwrite(img_dir / name, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
                _imwrite(mask_dir / name, mask.astype(np.uint8) * 255)
                bar.update()
    return out


def load_mask(image_path: Path) -> np.ndarray | None:
    """The lesion mask `write_imagefolder` wrote beside an image, as (H, W) bool, or None if there is none."""
    image_path = Path(image_path)
    path = image_path.parent.parent / MASK_DIR / image_path.parent.name / (image_path.stem + ".png")
    if not path.is_file():
        return None
    mask = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if mask is None:
        raise ValueError(f"{path}: unreadable mask image")
    return mask > 127


def _scene(rng: np.random.Generator, h: int, w: int, s: float) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """A large patch of skin with a pigmented lesion, a pox-like cluster and an inflamed patch, and hair;
    returns it as uint8 RGB with the lesion centres (x, y)."""
    ys, xs = _grid(h, w)
    img, base = _skin(rng, ys, xs, s)
    spots = [("pigmented", 0.27, 0.36), ("pox_like", 0.72, 0.38), ("inflammatory", 0.5, 0.72)]
    centres = []
    for cls, fx, fy in spots:
        cx, cy = fx * w, fy * h
        _LESIONS[cls](rng, img, base, ys, xs, cx, cy, s)
        centres.append((cx, cy))
    _hair(rng, img, s, max_hairs=16)
    img *= (1 + _F(0.06) * np.clip(_noise(rng, h, w, s), -1, 1))[..., None]  # uneven room light
    return np.clip(img + 0.5, 0, 255).astype(np.uint8), centres


def _encode(frames: list[np.ndarray], path: Path, fourcc: str, fps: int) -> bool:
    """Write RGB frames with one codec and check that OpenCV decodes them back, all of them, at size."""
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (w, h))
    if not writer.isOpened():
        return False
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    cap = cv2.VideoCapture(str(path))
    n = 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        n += frame.shape[:2] == (h, w)
    cap.release()
    if n == len(frames):
        return True
    path.unlink(missing_ok=True)
    return False


def write_clip(path: Path, n_frames: int = 48, size: tuple[int, int] = (320, 240), fps: int = 12,
               seed: int = 0) -> Path:
    """A short synthetic "camera pointed at the skin" video: a slow pan and zoom over a larger scene with
    three different lesions, hand tremor and sensor noise. `size` is (width, height).

    Written as 'mp4v' .mp4, else 'MJPG' .avi, and decoded back with OpenCV before it is accepted;
    returns the path actually written."""
    path = Path(path)
    w, h = size
    if n_frames < 1 or min(w, h) < MIN_SIZE:
        raise ValueError(f"need n_frames >= 1 and a size of at least {MIN_SIZE} pixels; got {n_frames}, {size}")
    rng = np.random.default_rng(seed)
    sh, sw = int(h * 2.2), int(w * 2.6)
    scene, centres = _scene(rng, sh, sw, h)
    ys, xs = _grid(h, w)
    lens = _lighting(rng, ys, xs, min(w, h) * 1.25)[..., None]  # fixed for the whole clip
    waypoints = np.array(centres, np.float64)
    frames = []
    for i in range(n_frames):
        pos = i / max(1, n_frames - 1) * (len(waypoints) - 1)  # visits the lesions in turn,
        j = min(int(pos), len(waypoints) - 2)
        f = np.clip((pos - j - 0.3) / 0.4, 0, 1)  # dwelling on each one,
        f = f * f * (3 - 2 * f)  # and easing in and out of the pans
        cx, cy = waypoints[j] + f * (waypoints[j + 1] - waypoints[j]) + rng.normal(0, 1.5, 2)
        zoom = 1.0 + 0.15 * np.sin(2 * np.pi * i / max(1, n_frames))
        m = np.array([[1 / zoom, 0, cx - (w / 2) / zoom], [0, 1 / zoom, cy - (h / 2) / zoom]])
        view = cv2.warpAffine(scene, m, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                              borderMode=cv2.BORDER_REFLECT)
        frame = view.astype(_F) * lens + rng.standard_normal((h, w, 3), dtype=_F) * _F(2.0)
        frames.append(np.clip(frame + 0.5, 0, 255).astype(np.uint8))
    path.parent.mkdir(parents=True, exist_ok=True)
    mp4, avi = path.with_suffix(".mp4"), path.with_suffix(".avi")
    for target, fourcc in ([(avi, "MJPG"), (mp4, "mp4v")] if path.suffix.lower() == ".avi"
                           else [(mp4, "mp4v"), (avi, "MJPG")]):
        if _encode(frames, target, fourcc, fps):
            return target
    raise OSError(f"{path}: OpenCV could not write a video it can read back (tried mp4v .mp4 and MJPG .avi)")


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def main(argv: list[str] | None = None) -> int:
    """`skinedge synth`: write a synthetic lesion ImageFolder tree."""
    p = argparse.ArgumentParser(prog="skinedge synth", description="Write a synthetic dermoscopy-like ImageFolder "
                                "tree: one folder of PNGs per class, lesion masks under .masks/.")
    p.add_argument("--out", type=Path, required=True, help="folder to write (created if missing)")
    p.add_argument("--per-class", type=_positive, default=100, help="images per class (default 100)")
    p.add_argument("--size", type=_positive, default=224, help="image side in pixels (default 224)")
    p.add_argument("--seed", type=int, default=0, help="same seed, same files (default 0)")
    p.add_argument("--classes", default=",".join(CLASSES), help=f"comma-separated subset of {','.join(CLASSES)}")
    a = p.parse_args(argv)
    classes = [c for c in a.classes.split(",") if c]
    t0 = time.perf_counter()
    try:
        write_imagefolder(a.out, a.per_class, a.size, a.seed, classes)
    except (ValueError, OSError) as e:
        print(f"skinedge synth: error: {e}", file=sys.stderr)
        return 2
    n = len(classes) * a.per_class
    print(f"wrote {n} images ({len(classes)} classes x {a.per_class}, {a.size}x{a.size} px) and their masks "
          f"to {a.out} in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
