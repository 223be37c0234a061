"""PNG figures for `skinedge val` and `skinedge train`: confusion matrix, reliability diagram, training curves.

matplotlib is in the workstation (convert) extra, not on a board: `available()` says whether it is here, and the
callers write the CSV and Markdown forms of the same figures either way.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edge.metrics import NOT_ANSWERED, Calibration


def available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed, none opened
    import matplotlib.pyplot as plt

    return plt


def confusion_png(cm: np.ndarray, labels: Sequence[str], title: str, out: Path) -> None:
    """Counts, rows true and columns predicted (plus 'not answered' where any image was), shaded by row share."""
    plt = _pyplot()
    cols = list(labels) + ([NOT_ANSWERED] if cm[:, -1].any() else [])
    m = cm[:, : len(cols)]
    share = m / np.maximum(m.sum(1, keepdims=True), 1)
    side = 1.2 + 0.55 * len(cols)
    fig, ax = plt.subplots(figsize=(side + 1.5, side))
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i, j in np.ndindex(m.shape):
        ax.text(j, i, str(int(m[i, j])), ha="center", va="center", fontsize=8,
                color="white" if share[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(cols)), cols, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def reliability_png(cal: Calibration, title: str, out: Path) -> None:
    """Accuracy against mean confidence per bin (bars), the diagonal of perfect calibration, and the ECE."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    centres = (cal.edges[:-1] + cal.edges[1:]) / 2
    width = cal.edges[1] - cal.edges[0]
    filled = cal.count > 0
    ax.bar(centres[filled], cal.accuracy[filled], width * 0.9, label="accuracy", color="#4c72b0")
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
    ax.plot(cal.confidence[filled], cal.accuracy[filled], "o", color="#dd8452", label="bin: mean confidence, share correct")
    for x, n in zip(centres[filled], cal.count[filled]):
        ax.text(x, 0.02, str(int(n)), ha="center", fontsize=7, color="white")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (top-1 probability)")
    ax.set_ylabel("share correct")
    ax.set_title(f"{title}\nECE {cal.ece:.3f} (images per bin at the foot)", fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def curves_png(history: Sequence[dict], title: str, out: Path) -> None:
    """Training curves: loss, and accuracy and macro-F1, per epoch for train and validation; the best epoch
    marked. `history` rows have epoch, train_loss, val_loss, train_accuracy, val_accuracy, train_f1, val_f1,
    best."""
    plt = _pyplot()
    epochs = [h["epoch"] for h in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6))
    for ax, keys in ((left, ("loss",)), (right, ("accuracy", "f1"))):
        for key in keys:
            for split, style in (("train", "-"), ("val", "--")):
                values = [h.get(f"{split}_{key}") for h in history]
                if any(v is not None for v in values):
                    ax.plot(epochs, [np.nan if v is None else v for v in values], style, marker=".",
                            label=f"{split} {'macro-F1' if key == 'f1' else key}")
        for h in history:
            if h.get("best"):
                ax.axvline(h["epoch"], color="grey", lw=0.5)
        ax.set_xlabel("epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.legend(fontsize=7)
    left.set_ylabel("loss")
    right.set_ylim(0, 1)
    fig.suptitle(f"{title} (grey lines: a new best epoch by validation macro-F1)", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
