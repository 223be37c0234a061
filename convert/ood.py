"""Fit the out-of-distribution gate at conversion, and measure every gate for the model card.

Candidates, all on what the exported model already outputs: Mahalanobis distance to the nearest class
mean under a shared covariance of the pooled features (in full with shrinkage, and in PCA subspaces), the
energy score and the max-logit score; each alone and with the image-statistics score added (edge.gates.
image_stats: pooled features do not tell a featureless skin-coloured field from healthy skin). Each is measured
against held-in validation images and two kinds of images that are not lesions: natural photographs that ship
in packages (calibration/photos.py) and synthetic non-lesion frames (calibration/nonlesion.py). The candidate
with the best mean AUROC over the two, averaged between the score as the board computes it and its feature part
alone (so the features must carry their weight), is kept; its threshold flags at most 5 % of the validation
images. Selection and the figures reported use disjoint photographs and different synthetic seeds, so the
reported AUROC is not the one that chose; the card gives the combined score's AUROC and each part's alone.
An ensemble gets one model per member; members' scores are standardised and combined with the ensemble
weights (edge/gates.py does the same on the board). Class means need class labels: images from an unlabelled
folder are labelled with the float model's own top-1 (pseudo-labels). `skinedge convert` (convert/pipeline.py)
and `python -m convert.gate_bundle` both fit through `fit_for_set`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import numpy as np

from calibration.dataset import ImageSet, load_batch, sample_per_class
from calibration.degrade import DEGRADATIONS
from calibration.nonlesion import KINDS
from calibration.nonlesion import frames as nonlesion_frames
from calibration.photos import find_photos, photo_crops, split_by_photo
from edge.classify import Classifier
from edge.gates import (
    GATE_FILE,
    IMAGE_METHOD,
    GatesConfig,
    OodGate,
    OodMember,
    image_stats,
    mahalanobis_input,
    measure,
    pooled,
    quality_reason,
    raw_scores,
)
from edge.trust.bundle import load_bundle

MAX_FLAG_RATE = 0.05  # of in-distribution validation images (the bar)
# The threshold is set on the float model's scores; the board's int8 features drift (MobileNetV2 at 96 px: a
# float 4.75 % became 5.2 % on int8 ONNX), so it flags this share of the validation images, a point inside the bar.
FIT_FLAG_RATE = 0.04
SHRINK = 0.1  # covariance shrinkage towards a scaled identity (more channels than images)
PCA_DIMS = (16, 64, 128)
# The full space costs a C x C projection per frame on the board: ~0.4 ms and 6.5 MB of gate.npz at 1280
# channels (and far more while BLAS threads fight the runtime's), so above this only PCA subspaces are tried.
FULL_MAX_CHANNELS = 512
# Every image below runs through the float model at each conversion: enough to tell 0.95 from 0.99, few enough
# to add seconds, not minutes (benchmarks/gates.py measures on more, on the board's runtime).
NONLESION_PER_KIND = 10
PHOTO_CROPS = 4  # per photograph
MIN_IMAGES = 8  # fewer fit or validation images than this: no gate (a mean and a threshold from noise)


@dataclass(frozen=True)
class Outputs:
    """Per member: logits (N, K) and pooled features (N, C); and the images' image_stats (N, 5)."""

    logits: list[np.ndarray]
    pooled: list[np.ndarray]
    stats: np.ndarray | None = None


Model = Callable[[np.ndarray], Outputs]  # (N, H, W, 3) uint8 images -> the float model's outputs


@contextmanager
def bundle_model(root: Path) -> Iterator[Model]:
    """The (partial) bundle's fp32 ONNX model, run by the board's own code on one thread, as a Model.

    The exported float model, not torch: for the ~250 images a fit scores, ONNX Runtime on one thread was 30x
    faster than torch eager on this shared 2-core machine (2 vs 62 ms an image, MicroMPoxNet at 64 px)."""
    bundle = load_bundle(root, verify=False)
    clf = Classifier(bundle, "onnx", threads=1, precision="fp32")

    def model(images: np.ndarray) -> Outputs:
        outs = [clf.run_members(im) for im in images]
        return Outputs([np.stack([o[i][0] for o in outs]) for i in range(len(bundle.members))],
                       [pooled(np.stack([o[i][1] for o in outs])) for i in range(len(bundle.members))])

    try:
        yield model
    finally:
        clf.close()


def fit_mahalanobis(feats: np.ndarray, labels: np.ndarray, dims: int | None) -> dict[str, np.ndarray]:
    """center, proj (C, k) and class means (K, k) such that ||(x - center) @ proj - mean_c||^2 is the squared
    Mahalanobis distance to class c under the shared (within-class) covariance, in the top-`dims` principal
    subspace of the features (all of them, with shrinkage, when dims is None).

    The whitening matrix comes from the SVD of the (n, k) residuals, never an eigendecomposition of the k x k
    covariance: with more channels than images that is most of the fitting time (seconds for 1280 channels)."""
    x = feats.astype(np.float64)
    center = x.mean(0)
    x = x - center
    classes = np.unique(labels)
    means = np.stack([x[labels == c].mean(0) for c in classes])
    resid = x - means[np.searchsorted(classes, labels)]
    basis = None if dims is None else np.linalg.svd(x, full_matrices=False)[2][:dims].T  # (C, k)
    r = resid if basis is None else resid @ basis
    _, s, vt = np.linalg.svd(r, full_matrices=False)
    var = s * s / len(r)  # the covariance's non-zero eigenvalues, eigenvectors in vt
    iso = SHRINK * var.sum() / r.shape[1]  # shrinkage towards a scaled identity, as (1 - SHRINK) cov + SHRINK tr/k I
    inv_sqrt = 1 / np.sqrt(np.maximum((1 - SHRINK) * var + iso, 1e-12))
    white = (vt.T * (inv_sqrt - 1 / np.sqrt(iso))) @ vt + np.eye(r.shape[1]) / np.sqrt(iso)  # cov^(-1/2)
    proj = white if basis is None else basis @ white
    return {"center": center.astype(np.float32), "proj": proj.astype(np.float32),
            "means": (means @ proj).astype(np.float32)}


def auroc(inside: np.ndarray, outside: np.ndarray) -> float:
    """Probability that an outside image scores higher than an inside one (ties count half)."""
    s = np.sort(np.asarray(inside, np.float64))
    o = np.asarray(outside, np.float64)
    below = np.searchsorted(s, o, side="left")
    equal = np.searchsorted(s, o, side="right") - below
    return float((below + 0.5 * equal).sum() / (len(s) * len(o)))


def candidates(n_fit: int, channels: int) -> dict[str, tuple[str, int | None]]:
    """name -> (method, PCA dims or None for the full space); subspaces no larger than the data supports. Each
    is tried alone and with the image-statistics score added ('+image')."""
    out: dict[str, tuple[str, int | None]] = {}
    for method in ("mahalanobis", "mahalanobis_sqrt"):
        if channels <= FULL_MAX_CHANNELS:
            out[method] = (method, None)
        out.update({f"{method}_pca{k}": (method, k) for k in PCA_DIMS if k < min(n_fit, channels)})
    return {**out, "energy": ("energy", None), "max_logit": ("max_logit", None)}


def _standardised(method: str, arrays: dict, logits: np.ndarray | None, feats: np.ndarray) -> OodMember:
    s = raw_scores(method, logits, feats, arrays)
    loc, spread = float(s.mean()), float(s.std())
    # a member whose score does not vary (an untrained network's constant logits) only shifts the sum
    return OodMember(method, arrays, loc, spread if spread > 1e-6 * max(1.0, abs(loc)) else 1.0)


def fit_image(fit: Outputs, fit_labels: np.ndarray, val: Outputs) -> OodMember:
    """The image-statistics score: class-conditional Gaussians with a shared covariance, as for the features."""
    return _standardised(IMAGE_METHOD, fit_mahalanobis(fit.stats, fit_labels, None), None, val.stats)


def build_gate(method: str, dims: int | None, fit: Outputs, fit_labels: np.ndarray, val: Outputs,
               weights: Sequence[float]) -> OodGate:
    """One candidate gate on the features: per member fitted, standardised on the validation images."""
    members = []
    for lg, f, vlg, vf in zip(fit.logits, fit.pooled, val.logits, val.pooled):
        arrays = fit_mahalanobis(mahalanobis_input(method, f), fit_labels, dims) if method.startswith("mahal") else {}
        members.append(_standardised(method, arrays, vlg, vf))
    w = np.asarray(weights, np.float64)
    return thresholded(OodGate(members, w / w.sum(), 0.0), val)


def thresholded(gate: OodGate, val: Outputs) -> OodGate:
    """The gate with its threshold set so that at most FIT_FLAG_RATE of the validation images are flagged."""
    return replace(gate, threshold=float(np.quantile(_score(gate, val), 1 - FIT_FLAG_RATE, method="higher")))


def _score(gate: OodGate, out: Outputs) -> np.ndarray:
    return gate.score(out.logits, out.pooled, stats=out.stats)


@lru_cache(maxsize=4)  # decoding the photographs takes seconds; conversions in one process share them
def ood_sets(size: int, split: str, per_kind: int = NONLESION_PER_KIND, crops: int = PHOTO_CROPS) -> dict[str, np.ndarray]:
    """Images that are not lesions, by kind: 'select' and 'report' splits share no photograph or seed. Natural
    photographs are left out where none of the packages that ship them is installed. The synthetic frames come
    in blocks of `per_kind`, one per calibration.nonlesion.KINDS."""
    sets = {"synthetic non-lesion": nonlesion_frames(per_kind, size, seed=1 if split == "select" else 2)[0]}
    photos = find_photos()
    if len(photos) >= 2:
        chosen = split_by_photo(photos, 0.5, seed=0)[0 if split == "select" else 1]
        sets["natural photographs"] = photo_crops(chosen, size, crops, seed=0)[0]
    return sets


def _mean_auroc(gate: OodGate, val: Outputs, sets: dict[str, Outputs]) -> float:
    inside = _score(gate, val)
    return float(np.mean([auroc(inside, _score(gate, o)) for o in sets.values()]))


def scores_by_part(gate: OodGate, out: Outputs) -> dict[str, np.ndarray]:
    """The combined score the board thresholds, and what the features and the image statistics give alone."""
    parts = {"combined": _score(gate, out), "features": _score(replace(gate, image=None), out)}
    if gate.image is not None:
        parts["image"] = _score(OodGate([], np.zeros(0), 0.0, gate.image), out)
    return parts


def fit_gate(model: Model, weights: Sequence[float], fit_images: np.ndarray, fit_labels: np.ndarray,
             val_images: np.ndarray, say: Callable[[str], None]) -> tuple[dict, dict, dict]:
    """Choose and fit the OOD gate. Returns (manifest `gates` entry, gate.npz arrays, figures for the card)."""
    size = val_images.shape[1]

    def run(images: np.ndarray) -> Outputs:
        return replace(model(images), stats=image_stats(images))

    fit, val = run(fit_images), run(val_images)
    unlabelled = fit_labels < 0
    fit_labels = np.where(unlabelled, top1(fit, weights), fit_labels)
    image = fit_image(fit, fit_labels, val)
    select = {k: run(v) for k, v in ood_sets(size, "select").items()}
    tried: dict[str, float] = {}
    best: tuple[float, str, OodGate] | None = None
    for base, (method, dims) in candidates(len(fit_images), fit.pooled[0].shape[1]).items():
        alone = build_gate(method, dims, fit, fit_labels, val, weights)
        features = _mean_auroc(alone, val, select)
        for name, gate in ((base, alone), (f"{base}+image", thresholded(replace(alone, image=image), val))):
            # the features must carry their weight, not lean on the image statistics alone
            tried[name] = round((_mean_auroc(gate, val, select) + features) / 2, 4)
            if best is None or tried[name] > best[0]:
                best = (tried[name], name, gate)
    _, name, gate = best
    inside = scores_by_part(gate, val)
    figures = {
        "method": name, "selection_mean_auroc": tried, "fit_images": len(fit_images),
        "pseudo_labelled": int(unlabelled.sum()), "validation_images": len(val_images),
        "in_distribution_flag_rate": round(float((inside["combined"] > gate.threshold).mean()), 4),
        "auroc": {}, "flag_rate": {}, "n": {},
    }
    for kind, imgs in ood_sets(size, "report").items():
        s = scores_by_part(gate, run(imgs))
        blocks = {kind: slice(None)}
        if kind == "synthetic non-lesion":  # and each kind of frame on its own
            n = len(imgs) // len(KINDS)
            blocks.update({f"  {k}": slice(i * n, (i + 1) * n) for i, k in enumerate(KINDS)})
        for key, part in blocks.items():
            figures["auroc"][key] = {p: round(auroc(inside[p], v[part]), 4) for p, v in s.items()}
            figures["flag_rate"][key] = round(float((s["combined"][part] > gate.threshold).mean()), 4)
            figures["n"][key] = len(imgs[part])
    figures["quality"] = quality_rates(val_images)
    spec = {"file": GATE_FILE, "method": name, "threshold": gate.threshold,
            "members": [{"method": m.method, "loc": m.loc, "scale": m.scale} for m in gate.members],
            "max_flag_rate": MAX_FLAG_RATE}
    arrays = {f"m{i}_{k}": v for i, m in enumerate(gate.members) for k, v in m.arrays.items()}
    if gate.image is not None:
        spec["image"] = {"method": IMAGE_METHOD, "loc": gate.image.loc, "scale": gate.image.scale}
        arrays.update({f"image_{k}": v for k, v in gate.image.arrays.items()})
    for line in gate_lines(figures):
        say(line)
    return spec, arrays, figures


def top1(out: Outputs, weights: Sequence[float]) -> np.ndarray:
    """The float model's class per image (the ensemble's weighted softmax), used as the label of unlabelled images."""
    probs = 0.0
    for w, lg in zip(weights, out.logits):
        z = np.exp(lg - lg.max(axis=1, keepdims=True))
        probs = probs + w * z / z.sum(axis=1, keepdims=True)
    return np.argmax(probs, axis=1)


def fit_for_set(model: Model, weights: Sequence[float], calib: ImageSet, per_class: int, val_images: np.ndarray,
                say: Callable[[str], None]) -> tuple[dict, dict, dict] | None:
    """The gate fitted on up to `per_class` images per class of `calib` (of the whole set if unlabelled), threshold
    on `val_images`; None (and a line saying so) when there are too few images to fit one."""
    fit = load_batch(sample_per_class(calib, per_class, seed=2), val_images.shape[1:3])
    if min(len(fit.images), len(val_images)) < MIN_IMAGES:
        say(f"OOD gate: not fitted ({len(fit.images)} calibration and {len(val_images)} validation images; needs "
            f"{MIN_IMAGES} of each): the board runs this bundle with the OOD gate off")
        return None
    return fit_gate(model, weights, fit.images, fit.labels, val_images, say)


def card_section(fig: dict | None, note: str = "") -> str:
    """The model card's '## Gates' section."""
    lines = "".join(f"- {line}\n" for line in gate_lines(fig)) if fig else "- OOD gate: none (too few images)\n"
    return (f"## Gates\nThe board shows RETAKE or NOT RECOGNISED instead of a class when these trip "
            f"(edge/gates.py){note}.\n\n{lines}\n")


def quality_rates(images: np.ndarray, cfg: GatesConfig | None = None) -> dict[str, float]:
    """Share of images the quality gates flag (default limits): clean, and each degradation of them."""
    cfg = cfg or GatesConfig()

    def rate(imgs) -> float:
        return round(float(np.mean([quality_reason(measure(im)[0], cfg) is not None for im in imgs])), 4)

    return {"clean": rate(images), **{name: rate(fn(im) for im in images) for name, fn in DEGRADATIONS.items()}}


def gate_lines(fig: dict) -> list[str]:
    """The gate figures as the lines `skinedge convert` prints and the model card lists."""
    pseudo = f", {fig['pseudo_labelled']} of them by the model's top-1" if fig.get("pseudo_labelled") else ""
    lines = [(f"OOD gate: {fig['method']} (best of {len(fig['selection_mean_auroc'])} candidates by mean AUROC, "
              f"as scored and by the features alone, on other non-lesion images), fitted on {fig['fit_images']} calibration images{pseudo}; flags "
              f"{fig['in_distribution_flag_rate']:.1%} of {fig['validation_images']} validation images")]
    for kind, a in fig["auroc"].items():
        alone = ", ".join(f"{p} alone {v:.3f}" for p, v in a.items() if p != "combined")
        lines.append(f"OOD AUROC vs {kind.strip()} (n={fig['n'][kind]}): {a['combined']:.3f} as the board scores it "
                     f"({fig['flag_rate'][kind]:.0%} flagged); {alone}")
    q = fig["quality"]
    caught = ", ".join(f"{v:.0%} of {k}" for k, v in q.items() if k != "clean")
    return [*lines, f"quality gates: flag {q['clean']:.1%} of clean validation images; catch {caught}"]
