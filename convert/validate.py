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

from edge.metrics import confusion, macro_f1
from edge.trust.selftest import pearson

# The bars of issue 3: int8 must agree with float on >= 99% of images and lose <= 1 accuracy point.
MIN_AGREEMENT = 0.99
MAX_ACCURACY_DROP = 0.01
SURE = 0.5  # float top-1 probability from which an answer counts as confident
# A float model whose accuracy has not come this share of the way from chance to 100 % (nor 2 standard
# errors above chance, on few images) has learnt nothing usable, however faithfully int8 copies it.
NEAR_CHANCE = 0.25


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
    accuracy: float | None  # None: unlabelled validation images (agreement, |dprob| and CAM only)
    macro_f1: float | None
    max_dprob: float
    cam_correlation: float
    cam_in_mask: float | None  # mean share of Grad-CAM mass on the lesion, where lesion masks are known
    recall: dict[str, float]
    # the float model's top-1 minus top-2 probability: median over the images, and the largest on an image
    # where this artefact's top-1 differs (small: the disagreements are near-ties, not mistakes)
    float_margin: float = 0.0
    disagree_margin: float | None = None
    # top-1 agreement on the images where the float model's top-1 probability is >= SURE (None: no such image):
    # the answers that must never change (issue 21)
    agreement_sure: float | None = None
    n_sure: int = 0
    recall_drop: dict[str, float] = field(default_factory=dict)
    accuracy_drop: float = 0.0
    confusion: list[list[int]] | None = None  # edge.metrics.confusion (rows true, columns predicted), labelled only
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def recall(y: np.ndarray, pred: np.ndarray, labels: list[str]) -> dict[str, float]:
    return {lab: float(np.mean(pred[y == c] == c)) for c, lab in enumerate(labels) if np.any(y == c)}


def cam_in_mask(cams: np.ndarray, masks: list[np.ndarray | None]) -> float | None:
    """Mean fraction of each Grad-CAM map's mass inside the lesion mask (images with a non-empty mask)."""
    shares = []
    for cam, mask in zip(cams, masks):
        if mask is None or not mask.any() or cam.sum() <= 0:
            continue
        up = cv2.resize(cam.astype(np.float32), mask.shape[::-1], interpolation=cv2.INTER_LINEAR)
        shares.append(float(up[mask].sum() / up.sum()))
    return float(np.mean(shares)) if shares else None


def margin(probs: np.ndarray) -> np.ndarray:
    """Top-1 minus top-2 probability per row: how far each answer is from a tie."""
    top2 = np.sort(probs, axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


def chance_warning(artefact: str, accuracy: float, y: np.ndarray, k: int) -> str | None:
    """A warning when accuracy on labelled images is at or near what always answering the commonest class
    scores: the model knows nothing (too little training, wrong checkpoint, labels in another order)."""
    if len(y) == 0 or k < 2 or y.min() < 0:  # no labels, nothing to say
        return None
    chance = float(np.bincount(y, minlength=k).max() / len(y))
    bar = chance + max(NEAR_CHANCE * (1 - chance), 2 * np.sqrt(chance * (1 - chance) / len(y)))
    if accuracy >= bar:
        return None
    return (f"{artefact}: accuracy {accuracy:.1%} on {len(y)} labelled validation images is at or near chance "
            f"({chance:.1%} by always answering the commonest class; bar {bar:.1%}): the model has learnt "
            "nothing usable (train longer, check the checkpoint and the class order)")


def compare(artefact: str, out: Outputs, ref: Outputs | None, y: np.ndarray, labels: list[str],
            masks: list[np.ndarray | None] | None = None) -> Row:
    """One report row; `ref` is the float model (None for the float model's own row); `masks` are lesion
    masks at model-input size (synthetic data), for the share of Grad-CAM mass on the lesion. `y` < 0 marks
    unlabelled images: no accuracy then."""
    pred = out.probs.argmax(1)
    labelled = bool(len(y)) and bool(np.all(y >= 0))
    row = Row(
        artefact=artefact,
        n=len(y),
        top1_agreement=1.0 if ref is None else float(np.mean(pred == ref.probs.argmax(1))),
        accuracy=float(np.mean(pred == y)) if labelled else None,
        macro_f1=macro_f1(y, pred, len(labels)) if labelled else None,
        max_dprob=0.0 if ref is None else float(np.abs(out.probs - ref.probs).max()),
        cam_correlation=1.0 if ref is None else float(np.mean([pearson(a, b) for a, b in zip(out.cams, ref.cams)])),
        recall=recall(y, pred, labels),
        cam_in_mask=cam_in_mask(out.cams, masks) if masks is not None else None,
        float_margin=float(np.median(margin((ref or out).probs))) if len(y) else 0.0,
        confusion=confusion(y, pred, len(labels)).tolist() if labelled else None,
    )
    if ref is None:
        row.warnings += [w for w in [chance_warning(artefact, row.accuracy, y, len(labels))] if w]
        return row
    ref_row = compare("float", ref, None, y, labels)
    row.accuracy_drop = ref_row.accuracy - row.accuracy if labelled else 0.0
    row.recall_drop = {k: ref_row.recall[k] - v for k, v in row.recall.items()}
    differs = pred != ref.probs.argmax(1)
    sure = ref.probs.max(1) >= SURE
    row.n_sure = int(sure.sum())
    row.agreement_sure = float(np.mean(~differs[sure])) if sure.any() else None
    if differs.any():
        row.disagree_margin = float(margin(ref.probs)[differs].max())
    if sure.any() and differs[sure].any():
        row.warnings.append(f"{artefact}: changes the answer on {int(differs[sure].sum())} of the {row.n_sure} images "
                            f"where the float model is >= {SURE:.0%} sure")
    if row.top1_agreement < MIN_AGREEMENT or row.accuracy_drop > MAX_ACCURACY_DROP:
        fell = sorted(((k, d) for k, d in row.recall_drop.items() if d > 0), key=lambda kv: -kv[1])[:2]
        ties = "" if row.disagree_margin is None else (
            f"; where they differ the float model's top-1 leads its top-2 by at most {row.disagree_margin:.4f} "
            f"(median over all images {row.float_margin:.4f})")
        accuracy = (f", accuracy {(0.0 - row.accuracy_drop) * 100:+.2f} points vs float (bar -{MAX_ACCURACY_DROP * 100:.0f})"
                    if labelled else " (unlabelled images: no accuracy)")
        row.warnings.append(
            f"{artefact}: agreement {row.top1_agreement:.2%} (bar {MIN_AGREEMENT:.0%}{ties}){accuracy}"
            + ("; recall fell most for " + ", ".join(f"{k} ({-d * 100:+.1f} pts)" for k, d in fell) if fell else "")
        )
    return row


def _fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def table(rows: list[Row]) -> str:
    """Markdown table of the rows."""
    head = (f"| artefact | n | top-1 agreement | where float ≥ {SURE:.0%} (n) | float margin: largest where they "
            "differ (median, all images) | accuracy | macro-F1 | max |Δprob| | CAM corr | CAM on lesion |\n"
            "|---|---|---|---|---|---|---|---|---|---|\n")
    return head + "".join(
        f"| {r.artefact} | {r.n} | {r.top1_agreement:.2%} | "
        f"{'-' if r.agreement_sure is None else f'{r.agreement_sure:.2%}'} ({r.n_sure}) | "
        f"{'-' if r.disagree_margin is None else f'{r.disagree_margin:.4f}'} ({r.float_margin:.4f}) | "
        f"{_fmt(r.accuracy, '.2%')} | {_fmt(r.macro_f1, '.3f')} | {r.max_dprob:.4f} | "
        f"{r.cam_correlation:.3f} | {'-' if r.cam_in_mask is None else f'{r.cam_in_mask:.0%}'} |\n"
        for r in rows
    )
