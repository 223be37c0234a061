"""Each artefact against the float torch model on held-out images.

Fidelity is a safety property: an int8 model that disagrees with its float model changes what a health
worker sees. Every artefact is run through the board's own code (edge.classify) and compared with the
float model on the same preprocessed images: top-1 agreement, accuracy, macro-F1, max |Δprob|, per-class
recall, and how closely its Grad-CAM follows the float model's.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import cv2
import numpy as np

# The bars of issue 3: int8 must agree with float on >= 99% of images and lose <= 1 accuracy point.
MIN_AGREEMENT = 0.99
MAX_ACCURACY_DROP = 0.01


@dataclass
class Outputs:
    """What one model gave on the validation images."""

    probs: np.ndarray  # (N, K)
    cams: np.ndarray  # (N, h, w) normalised


@dataclass
class Row:
    artefact: str
    n: int
    top1_agreement: float
    accuracy: float
    macro_f1: float
    max_dprob: float
    cam_correlation: float
    cam_in_mask: float | None  # mean share of Grad-CAM mass on the lesion, where lesion masks are known
    recall: dict[str, float]
    recall_drop: dict[str, float] = field(default_factory=dict)
    accuracy_drop: float = 0.0
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def macro_f1(y: np.ndarray, pred: np.ndarray, k: int) -> float:
    f1s = []
    for c in range(k):
        tp = np.sum((pred == c) & (y == c))
        fp = np.sum((pred == c) & (y != c))
        fn = np.sum((pred != c) & (y == c))
        if tp + fp + fn:
            f1s.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(f1s)) if f1s else 0.0


def recall(y: np.ndarray, pred: np.ndarray, labels: list[str]) -> dict[str, float]:
    return {lab: float(np.mean(pred[y == c] == c)) for c, lab in enumerate(labels) if np.any(y == c)}


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel() - a.mean(), b.ravel() - b.mean()
    den = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / den) if den > 0 else float(np.array_equal(a, b))


def cam_in_mask(cams: np.ndarray, masks: list[np.ndarray | None]) -> float | None:
    """Mean fraction of each Grad-CAM map's mass inside the lesion mask (images with a non-empty mask)."""
    shares = []
    for cam, mask in zip(cams, masks):
        if mask is None or not mask.any() or cam.sum() <= 0:
            continue
        up = cv2.resize(cam.astype(np.float32), mask.shape[::-1], interpolation=cv2.INTER_LINEAR)
        shares.append(float(up[mask].sum() / up.sum()))
    return float(np.mean(shares)) if shares else None


def compare(artefact: str, out: Outputs, ref: Outputs | None, y: np.ndarray, labels: list[str],
            masks: list[np.ndarray | None] | None = None) -> Row:
    """One report row; `ref` is the float model (None for the float model's own row); `masks` are lesion
    masks at model-input size (synthetic data), for the share of Grad-CAM mass on the lesion."""
    pred = out.probs.argmax(1)
    row = Row(
        artefact=artefact,
        n=len(y),
        top1_agreement=1.0 if ref is None else float(np.mean(pred == ref.probs.argmax(1))),
        accuracy=float(np.mean(pred == y)),
        macro_f1=macro_f1(y, pred, len(labels)),
        max_dprob=0.0 if ref is None else float(np.abs(out.probs - ref.probs).max()),
        cam_correlation=1.0 if ref is None else float(np.mean([pearson(a, b) for a, b in zip(out.cams, ref.cams)])),
        recall=recall(y, pred, labels),
        cam_in_mask=cam_in_mask(out.cams, masks) if masks is not None else None,
    )
    if ref is not None:
        ref_row = compare("float", ref, None, y, labels)
        row.accuracy_drop = ref_row.accuracy - row.accuracy
        row.recall_drop = {k: ref_row.recall[k] - v for k, v in row.recall.items()}
        if row.top1_agreement < MIN_AGREEMENT or row.accuracy_drop > MAX_ACCURACY_DROP:
            worst = sorted(row.recall_drop.items(), key=lambda kv: -kv[1])[:2]
            row.warnings.append(
                f"{artefact}: agreement {row.top1_agreement:.2%} (bar {MIN_AGREEMENT:.0%}), accuracy drop "
                f"{row.accuracy_drop * 100:.2f} points (bar {MAX_ACCURACY_DROP * 100:.0f}); recall dropped most for "
                + ", ".join(f"{k} ({d * 100:+.1f} pts)" for k, d in worst)
            )
    return row


def table(rows: list[Row]) -> str:
    """Markdown table of the rows."""
    head = ("| artefact | n | top-1 agreement | accuracy | macro-F1 | max |Δprob| | CAM corr | CAM on lesion |\n"
            "|---|---|---|---|---|---|---|---|\n")
    return head + "".join(
        f"| {r.artefact} | {r.n} | {r.top1_agreement:.2%} | {r.accuracy:.2%} | {r.macro_f1:.3f} | {r.max_dprob:.4f} | "
        f"{r.cam_correlation:.3f} | {'-' if r.cam_in_mask is None else f'{r.cam_in_mask:.0%}'} |\n"
        for r in rows
    )
