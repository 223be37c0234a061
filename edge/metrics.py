"""Classification figures from labels and probabilities (numpy only, so `skinedge val` runs on a board too):
confusion matrix, per-class precision / recall / F1, macro-F1, and calibration (expected calibration error over
confidence bins, the bins themselves for a reliability diagram). Used by `skinedge val`, the converter's
validation and model card, and `skinedge train`.

Images the gates held back are not answers: a confusion matrix gets them as a last "not answered" column
(`answered` False), and every other figure is computed on the answered images only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ECE_BINS = 10  # equal-width confidence bins, as in Guo et al. 2017 (15 there; 10 suits a few hundred images)
NOT_ANSWERED = "not answered"


def confusion(y: np.ndarray, pred: np.ndarray, k: int, answered: np.ndarray | None = None) -> np.ndarray:
    """(k, k+1) counts: rows true class, columns predicted class, and a last column for images not answered."""
    y, pred = np.asarray(y, np.int64), np.asarray(pred, np.int64)
    answered = np.ones(len(y), bool) if answered is None else np.asarray(answered, bool)
    cm = np.zeros((k, k + 1), np.int64)
    np.add.at(cm, (y[answered], pred[answered]), 1)
    np.add.at(cm, (y[~answered], np.full((~answered).sum(), k)), 1)
    return cm


@dataclass(frozen=True)
class PerClass:
    precision: np.ndarray  # (k,), nan where the class was never predicted
    recall: np.ndarray  # (k,), nan where the class has no (answered) image
    f1: np.ndarray  # (k,)
    support: np.ndarray  # (k,) answered images of each true class


def per_class(cm: np.ndarray) -> PerClass:
    """Precision, recall and F1 per class from a confusion() matrix (its not-answered column left out)."""
    m = cm[:, : cm.shape[0]].astype(np.float64)
    tp, predicted, support = np.diag(m), m.sum(0), m.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision, recall = tp / predicted, tp / support
        f1 = np.where(tp > 0, 2 * tp / (predicted + support), np.where(predicted + support > 0, 0.0, np.nan))
    return PerClass(precision, recall, f1, support.astype(np.int64))


def macro_f1(y: np.ndarray, pred: np.ndarray, k: int) -> float:
    """Mean F1 over the classes that occur among the true labels or the predictions (0 if none)."""
    f1 = per_class(confusion(y, pred, k)).f1
    return float(np.nanmean(f1)) if np.isfinite(f1).any() else 0.0


@dataclass(frozen=True)
class Calibration:
    ece: float  # sum over bins of (images in bin / images) * |accuracy - mean confidence|
    edges: np.ndarray  # (bins + 1,) confidence bin edges
    count: np.ndarray  # (bins,) images per bin
    confidence: np.ndarray  # (bins,) mean top-1 probability per bin (nan if empty)
    accuracy: np.ndarray  # (bins,) share correct per bin (nan if empty)


def calibration(probs: np.ndarray, y: np.ndarray, bins: int = ECE_BINS) -> Calibration:
    """How far the top-1 probability is from the share of answers that are right, over equal-width bins."""
    probs, y = np.asarray(probs, np.float64), np.asarray(y, np.int64)
    conf, right = probs.max(1), probs.argmax(1) == y
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, bins - 1)
    count = np.bincount(which, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(which, conf, bins) / count
        acc = np.bincount(which, right.astype(np.float64), bins) / count
    ece = float(np.nansum(count / max(1, len(y)) * np.abs(acc - mean_conf)))
    return Calibration(ece, edges, count, mean_conf, acc)


def fmt(v: float | None, spec: str = ".3f") -> str:
    """A table cell: '-' for a figure that does not exist (None, or nan: a class never predicted)."""
    return "-" if v is None or not np.isfinite(v) else format(v, spec)


def confusion_markdown(cm: np.ndarray, labels: list[str]) -> str:
    """The matrix as a Markdown table: rows true, columns predicted (and not answered, where any)."""
    cols = list(labels) + ([NOT_ANSWERED] if cm[:, -1].any() else [])
    rows = [[lab, *(str(int(v)) for v in cm[i, : len(cols)])] for i, lab in enumerate(labels)]
    return "\n".join(["| true \\ predicted | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|",
                      *("| " + " | ".join(r) + " |" for r in rows)]) + "\n"


def per_class_markdown(cm: np.ndarray, labels: list[str]) -> str:
    """Precision, recall, F1 and support per class as a Markdown table."""
    pc = per_class(cm)
    head = "| class | precision | recall | F1 | images | not answered |\n|---|---|---|---|---|---|\n"
    return head + "".join(f"| {lab} | {fmt(pc.precision[i])} | {fmt(pc.recall[i])} | {fmt(pc.f1[i])} | "
                          f"{pc.support[i]} | {int(cm[i, -1])} |\n" for i, lab in enumerate(labels))


def confusion_csv(cm: np.ndarray, labels: list[str]) -> str:
    """The matrix as CSV: a header of predicted classes and 'not answered', one row per true class."""
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["true \\ predicted", *labels, NOT_ANSWERED])
    for lab, row in zip(labels, cm):
        w.writerow([lab, *(int(v) for v in row)])
    return buf.getvalue()
