"""Know when not to answer: image-quality and out-of-distribution gates, checked on every frame.

Softmax always sums to one, so a blurred frame, a dark room or a wall would still get a class. Before a
class is shown the model's own crop must pass the quality gates (blur: variance of the Laplacian; exposure:
mean level and clipped-pixel share; motion: mean change from the previous frame at low resolution) and the
pooled features the model already outputs must pass the out-of-distribution gate fitted at conversion
(convert/ood.py writes gate.npz and `gates.ood` in the manifest). A bundle without a gate runs with the OOD
gate off; the quality gates need nothing from the bundle. numpy and OpenCV only, well under a millisecond.

The pooled features of a model trained on skin do not tell a featureless skin-coloured field (a wall, cloth,
skin out of focus) from healthy skin, nor white paper with print from pale skin. So the OOD gate also scores
five statistics of the image itself (`image_stats`: detail at a coarse scale, colour saturation, chromaticity
and its spread), fitted the same way on the same images; the two standardised scores are added.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:
    from edge.trust.bundle import Bundle

GATE_FILE = "gate.npz"
METHODS = ("mahalanobis", "mahalanobis_sqrt", "energy", "max_logit")
IMAGE_METHOD = "image_stats"  # Mahalanobis on image_stats(), added to the feature score (manifest gates.ood.image)
IMAGE_STATS = ("detail", "saturation", "red", "green", "red_spread")
DETAIL_SIDE = 64  # detail is measured on the luma reduced to this size: texture, not sensor noise
STATS_SIDE = 16  # colour statistics are taken on the image reduced to this size
_ONES = np.ones((1, 3), np.float32)
# What the health worker is told, by reason (the HUD shows these instead of a class).
RETAKE = {"too dark": "too dark", "too bright": "too bright", "blurred": "blurred", "moving": "hold still"}
NOT_RECOGNISED = "not recognised"
CHECKING = "CHECKING - hold steady"  # the gates passed but the class has not been the same for long enough
MOTION_SIDE = 32  # frames are compared at this size: motion, not sensor noise or detail
MOTION_FLOOR = 2.0  # grey levels added to the contrast, so a flat frame's noise is not motion


class GateError(ValueError):
    """A gate file or manifest entry that cannot be used: the message names the file and key."""


@dataclass(frozen=True)
class GatesConfig:
    """Quality limits (on the model's crop, 0..255 luma) and display stability; device config `gates:`.

    Defaults suit a phone or Pi camera framing skin at arm's length: see benchmarks/gates.py for the
    catch and false-alarm rates they give.
    """

    enabled: bool = True
    ood: bool = True  # use the bundle's out-of-distribution gate when it has one
    blur_min: float = 12.0  # variance of the Laplacian below this: blurred
    dark_level: float = 45.0  # mean luma below this: too dark
    bright_level: float = 225.0  # mean luma above this: too bright
    clipped_max: float = 0.4  # share of pixels at >= 250 (too bright) or <= 5 (too dark) above this
    motion_max: float = 0.35  # change from the previous frame, relative to the frame's own contrast: moving
    stable_frames: int = 3  # a class is shown once the same one passed this many frames in a row


@dataclass(frozen=True)
class Quality:
    sharpness: float  # variance of the Laplacian of the luma
    level: float  # mean luma
    dark_share: float  # share of pixels <= 5
    bright_share: float  # share of pixels >= 250
    motion: float | None  # mean |change| from the previous frame over its mean |deviation|; None on the first


def measure(image: np.ndarray, previous: np.ndarray | None = None) -> tuple[Quality, np.ndarray]:
    """Quality of one model input (h, w, 3) uint8 RGB; also returns its small luma for the next frame's motion."""
    luma = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    _, var = cv2.meanStdDev(cv2.Laplacian(luma, cv2.CV_16S))  # exact in int16 for uint8 input, faster than float
    hist = cv2.calcHist([luma], [0], None, [256], [0, 256]).ravel() / luma.size
    small = cv2.resize(luma, (MOTION_SIDE, MOTION_SIDE), interpolation=cv2.INTER_AREA).astype(np.float32)
    motion = None
    if previous is not None:  # relative to the contrast there is: smooth skin changes little when it moves
        contrast = cv2.mean(cv2.absdiff(previous, cv2.mean(previous)[0]))[0] + MOTION_FLOOR  # cv2: ~4x numpy here
        motion = cv2.mean(cv2.absdiff(small, previous))[0] / contrast
    level = float(hist @ np.arange(256))
    return Quality(float(var[0, 0]) ** 2, level, float(hist[:6].sum()), float(hist[250:].sum()), motion), small


def quality_reason(q: Quality, cfg: GatesConfig) -> str | None:
    """The first quality gate that trips (exposure before blur: a dark frame has no detail either), or None."""
    if q.level < cfg.dark_level or q.dark_share > cfg.clipped_max:
        return "too dark"
    if q.level > cfg.bright_level or q.bright_share > cfg.clipped_max:
        return "too bright"
    if q.sharpness < cfg.blur_min:
        return "blurred"
    if q.motion is not None and q.motion > cfg.motion_max:
        return "moving"
    return None


# ---- out-of-distribution scores: shared by the board (one frame) and convert/ood.py (batches) ----


def pooled(features: np.ndarray) -> np.ndarray:
    """(N, C, h, w) feature maps -> (N, C) global average pool, as the head sees them."""
    f = np.asarray(features, np.float32)
    return f.reshape(f.shape[0], f.shape[1], -1).mean(axis=2)


def image_stats(images: np.ndarray) -> np.ndarray:
    """IMAGE_STATS of (h, w, 3) or (N, h, w, 3) uint8 RGB model inputs -> (N, 5) float32.

    detail: log mean gradient magnitude of the luma seen at DETAIL_SIDE pixels (area averaging removes sensor
    noise), relative to the mean level; then on the image reduced to STATS_SIDE: saturation (HSV S, 0..1),
    red and green chromaticity R/(R+G+B), G/(R+G+B) of the mean colour, and the spread (std) of the red one.
    OpenCV calls only: about 0.15 ms a frame."""
    batch = np.asarray(images)
    out = np.empty((len(batch) if batch.ndim == 4 else 1, len(IMAGE_STATS)), np.float32)
    for i, img in enumerate(batch if batch.ndim == 4 else batch[None]):
        luma = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
        coarse = cv2.resize(luma, (DETAIL_SIDE, DETAIL_SIDE), interpolation=cv2.INTER_AREA).astype(np.float32)
        grad = cv2.magnitude(cv2.Sobel(coarse, cv2.CV_32F, 1, 0), cv2.Sobel(coarse, cv2.CV_32F, 0, 1))
        small = cv2.resize(img, (STATS_SIDE, STATS_SIDE), interpolation=cv2.INTER_AREA)
        f = small.astype(np.float32)
        _, red_spread = cv2.meanStdDev(cv2.divide(np.ascontiguousarray(f[..., 0]), cv2.transform(f, _ONES) + 1))
        r, g, b, _ = cv2.mean(small)
        out[i] = (np.log(cv2.mean(grad)[0] / (cv2.mean(luma)[0] + 1) + 1e-4),
                  cv2.mean(cv2.cvtColor(small, cv2.COLOR_RGB2HSV))[1] / 255, r / (r + g + b + 1), g / (r + g + b + 1),
                  red_spread[0, 0])
    return out


def mahalanobis_input(method: str, feats: np.ndarray) -> np.ndarray:
    """What the Gaussian is fitted on: the pooled features, or their square roots (mahalanobis_sqrt), which
    makes the skewed, non-negative activations closer to Gaussian."""
    return np.sqrt(np.maximum(feats, 0)) if method == "mahalanobis_sqrt" else feats


def raw_scores(method: str, logits: np.ndarray | None, feats: np.ndarray, arrays: dict[str, np.ndarray]) -> np.ndarray:
    """Higher = less like the training data. logits (N, K), pooled features (N, C) -> (N,).

    mahalanobis(_sqrt): squared distance to the nearest class mean under the shared covariance, in the whitened
    (optionally PCA-truncated) space `proj` maps to; image_stats: the same with image_stats() as `feats`;
    energy: -logsumexp(logits); max_logit: -max(logits).
    """
    if method.startswith("mahalanobis") or method == IMAGE_METHOD:
        z = (mahalanobis_input(method, feats) - arrays["center"]) @ arrays["proj"]  # (N, k)
        means = arrays["means"]  # (K, k)
        d = (z * z).sum(1)[:, None] - 2 * z @ means.T + (means * means).sum(1)[None, :]
        return d.min(axis=1)
    z = np.asarray(logits, np.float64)
    if method == "energy":
        m = z.max(axis=1)
        return -(m + np.log(np.exp(z - m[:, None]).sum(axis=1)))
    if method == "max_logit":
        return -z.max(axis=1)
    raise ValueError(f"unknown OOD method {method!r}: expected one of {', '.join(METHODS)}")


@dataclass(frozen=True)
class OodMember:
    method: str
    arrays: dict[str, np.ndarray]
    loc: float  # each member's raw score is standardised by its in-distribution mean and spread,
    scale: float  # so members of an ensemble combine on one scale


@dataclass(frozen=True)
class OodGate:
    members: list[OodMember]
    weights: np.ndarray  # ensemble weights, summing to 1
    threshold: float  # combined score above this: not recognised
    image: OodMember | None = None  # the image-statistics score, added to the members' (bundles before it: None)

    def score(self, logits: Sequence[np.ndarray], features: Sequence[np.ndarray],
              images: np.ndarray | None = None, stats: np.ndarray | None = None) -> np.ndarray:
        """Combined score per image: weighted sum of the members' standardised scores, plus the image-statistics
        score. Per member, logits (K,) or (N, K) and features as a backend gives them (C, h, w), a batch
        (N, C, h, w) or pooled (N, C); the model inputs `images` (h, w, 3) or (N, h, w, 3), or their `stats`."""
        total = 0.0
        for m, w, lg, f in zip(self.members, self.weights, logits, features):
            f = np.asarray(f, np.float32)
            f = pooled(f[None] if f.ndim == 3 else f) if f.ndim >= 3 else f
            total = total + w * (raw_scores(m.method, np.atleast_2d(lg), f, m.arrays) - m.loc) / m.scale
        if self.image is not None:
            if stats is None and images is None:
                raise ValueError("this OOD gate scores the image too: pass the model input(s)")
            stats = image_stats(images) if stats is None else stats
            total = total + (raw_scores(IMAGE_METHOD, None, stats, self.image.arrays) - self.image.loc) / self.image.scale
        return np.asarray(total, np.float64)


def _member_arrays(data: dict[str, np.ndarray], prefix: str, method: str, channels: int, path: Path) -> dict:
    if method != IMAGE_METHOD and not method.startswith("mahalanobis"):
        return {}
    arrays = {k: data.get(f"{prefix}_{k}") for k in ("center", "proj", "means")}
    missing = [k for k, v in arrays.items() if v is None]
    if missing:
        raise GateError(f"{path}: missing array(s) {', '.join(f'{prefix}_{k}' for k in missing)}")
    c, p, m = arrays["center"], arrays["proj"], arrays["means"]
    if c.shape != (channels,) or p.ndim != 2 or p.shape[0] != channels or m.ndim != 2 or m.shape[1] != p.shape[1]:
        raise GateError(f"{path}: {prefix}_center/proj/means shapes {c.shape}, {p.shape}, {m.shape} do not fit "
                        f"{channels} {'image statistics' if method == IMAGE_METHOD else 'feature channels'}")
    return {k: v.astype(np.float32) for k, v in arrays.items()}


def load_ood(root: Path, manifest: dict, channels: Sequence[int], weights: Sequence[float]) -> OodGate | None:
    """The bundle's OOD gate from manifest `gates.ood` and gate.npz, or None for a bundle made without one.

    `channels` is each member's feature channel count. The file's hash is checked by load_bundle with every
    other file; here its contents are checked against the manifest and the model."""
    spec = (manifest.get("gates") or {}).get("ood")
    if spec is None:
        return None
    mpath = Path(root) / "manifest.yaml"
    try:
        members = spec["members"]
        threshold = float(spec["threshold"])
        if spec["file"] != GATE_FILE or GATE_FILE not in manifest.get("artefacts", {}):
            raise GateError(f"{mpath}: gates.ood.file should be {GATE_FILE!r} and hashed under artefacts")
        if len(members) != len(channels):
            raise GateError(f"{mpath}: gates.ood.members has {len(members)} entries for {len(channels)} models")
        path = Path(root) / GATE_FILE
        with np.load(path, allow_pickle=False) as npz:
            data = dict(npz)
        out = []
        for i, (m, c) in enumerate(zip(members, channels)):
            if m["method"] not in METHODS or float(m["scale"]) <= 0:
                raise GateError(f"{mpath}: gates.ood.members[{i}]: method should be one of {list(METHODS)} and "
                                f"scale > 0, found {m['method']!r}, {m['scale']!r}")
            out.append(OodMember(m["method"], _member_arrays(data, f"m{i}", m["method"], c, path), float(m["loc"]),
                                 float(m["scale"])))
        image = spec.get("image")
        if image is not None:
            if float(image["scale"]) <= 0:
                raise GateError(f"{mpath}: gates.ood.image.scale should be > 0, found {image['scale']!r}")
            image = OodMember(IMAGE_METHOD, _member_arrays(data, "image", IMAGE_METHOD, len(IMAGE_STATS), path),
                              float(image["loc"]), float(image["scale"]))
    except (KeyError, TypeError) as e:
        raise GateError(f"{mpath}: gates.ood is missing or has a malformed key {e}") from e
    except (OSError, ValueError) as e:
        if isinstance(e, GateError):
            raise
        raise GateError(f"{Path(root) / GATE_FILE}: unreadable gate file: {e}") from e
    w = np.asarray(weights, np.float64)
    return OodGate(out, w / w.sum(), threshold, image)


@dataclass(frozen=True)
class Verdict:
    """One frame's gate outcome: `reason` None means every gate passed."""

    reason: str | None
    quality: Quality
    ood_score: float | None  # None when the OOD gate is off
    ood_threshold: float | None
    ms: float

    @property
    def passed(self) -> bool:
        return self.reason is None

    def record(self) -> dict:
        """Flat JSON-ready fields for captures and per-image results."""
        return {"gate": self.reason or "pass", **{f"gate_{k}": (None if v is None else round(v, 4))
                                                  for k, v in asdict(self.quality).items()},
                "gate_ood_score": None if self.ood_score is None else round(self.ood_score, 4),
                "gate_ood_threshold": self.ood_threshold}


class Gates:
    """Every gate for one stream of frames (keeps the previous frame for motion)."""

    def __init__(self, cfg: GatesConfig, ood: OodGate | None, use_motion: bool = True):
        self.cfg = cfg
        self.ood = ood if cfg.ood else None
        self.use_motion = use_motion  # off for a folder of unrelated images
        self._previous: np.ndarray | None = None

    @property
    def ood_state(self) -> str:
        return "on" if self.ood is not None else "off"

    def __call__(self, image: np.ndarray, logits: Sequence[np.ndarray], features: Sequence[np.ndarray]) -> Verdict:
        """Check one model input with its members' logits and feature maps."""
        t = time.perf_counter()
        q, small = measure(image, self._previous if self.use_motion else None)
        self._previous = small
        score = None if self.ood is None else float(self.ood.score(logits, features, image)[0])
        reason = None
        if self.cfg.enabled:
            reason = quality_reason(q, self.cfg)
            if reason is None and score is not None and score > self.ood.threshold:
                reason = NOT_RECOGNISED
        return Verdict(reason, q, score, None if self.ood is None else self.ood.threshold,
                       (time.perf_counter() - t) * 1e3)


class Stability:
    """Shows a class only once the same one has passed the gates `n` frames in a row, so labels do not flicker."""

    def __init__(self, n: int):
        self.n = max(1, n)
        self._last: int | None = None
        self._run = 0

    def update(self, target: int, passed: bool) -> bool:
        """Record this frame; True when `target` may be shown."""
        if not passed:
            self._last, self._run = None, 0
            return False
        self._run = self._run + 1 if target == self._last else 1
        self._last = target
        return self._run >= self.n


def message(reason: str) -> str:
    """The HUD line for a tripped gate: 'RETAKE - blurred' or 'NOT RECOGNISED - outside ...'."""
    if reason == NOT_RECOGNISED:
        return "NOT RECOGNISED - outside what this model was trained on"
    return f"RETAKE - {RETAKE[reason]}"


def for_bundle(bundle: Bundle, cfg: GatesConfig, use_motion: bool = True) -> Gates:
    """The gates for a loaded bundle: quality gates always, the OOD gate when the bundle has one."""
    channels = [m.features_shape[1] for m in bundle.members]
    return Gates(cfg, load_ood(bundle.root, bundle.manifest, channels, bundle.weights), use_motion)


def shown_message(verdict: Verdict, stable: bool) -> str | None:
    """What replaces the class on the HUD: a tripped gate's message, CHECKING until the class is stable, or None."""
    if verdict.reason is not None:
        return message(verdict.reason)
    return None if stable else CHECKING
