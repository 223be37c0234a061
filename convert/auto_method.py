"""`--calib-method auto`: which calibration method to keep, chosen on images the candidates were not calibrated on
and that the validation figures do not use.

The calibration images are split (`split`): the candidates are calibrated on the larger part, scored on the
smaller one against the float model, and the chosen method is then calibrated again on all of them. Choosing on
the `--val` images would make the model card's agreement for the chosen method a selected, not a held-out, figure.

The score puts confident answers first (issue 21): a method that flips an answer the float model is >= 50 % sure
of loses to one that does not, whatever their overall agreement; then overall agreement; then how much
probability the float model's top-1 class loses on average (a continuous figure, so ties on few images still
order the methods).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from convert.calibrate import Ranges
from convert.validate import SURE

SHARE = 0.25  # of the calibration images held out for the choice
MAX_IMAGES = 128  # the choice runs the exact (slow) int8 session on these
MIN_IMAGES = 8  # below this the choice is made on all calibration images, and the card says so
# The candidates; a tie goes to the earlier (minmax clips nothing). Both come from one percentile pass (its histogram
# collectors observe each tensor's min-max too). Entropy is not one: its own, slowest pass, and on the real-weights
# benchmark it kept fewer confident answers than minmax (EfficientNet-Lite2: 2 vs 1 of 266 changed, benchmarks/README.md).
ORDER = ("minmax", "percentile")
PASS = "percentile"  # the calibration pass both candidates come from


@dataclass(frozen=True)
class Score:
    agreement: float  # top-1 agreement with the float model
    agreement_sure: float  # the same, where the float model's top-1 probability >= SURE (1.0 if none)
    n_sure: int
    top1_drop: float  # mean over images of max(0, float top-1's probability in float - in int8)

    def key(self) -> tuple[float, float, float]:
        return (self.agreement_sure, self.agreement, -self.top1_drop)

    def as_dict(self) -> dict:
        return {k: round(v, 6) if isinstance(v, float) else v for k, v in asdict(self).items()}


def candidates(ranges: Ranges) -> dict[str, Ranges]:
    """Each candidate's ranges, in ORDER, from one `PASS` pass of the fit split."""
    return {"minmax": ranges.as_minmax(), "percentile": ranges}


def split(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit, select) indices into n calibration images: every 4th image, up to MAX_IMAGES, is held out for the
    choice (the images come in class order, so the stride keeps the classes mixed); with fewer than MIN_IMAGES
    to hold out, both are all images."""
    k = min(MAX_IMAGES, int(n * SHARE))
    if k < MIN_IMAGES:
        every = np.arange(n)
        return every, every
    select = np.linspace(0, n - 1, k).round().astype(int)
    return np.setdiff1d(np.arange(n), select), select


def score(ref: np.ndarray, got: np.ndarray) -> Score:
    """`ref`, `got`: (N, K) probabilities of the float model and of a candidate on the same images."""
    top = ref.argmax(1)
    sure = ref.max(1) >= SURE
    same = got.argmax(1) == top
    rows = np.arange(len(top))
    return Score(agreement=float(same.mean()), agreement_sure=float(same[sure].mean()) if sure.any() else 1.0,
                 n_sure=int(sure.sum()), top1_drop=float(np.maximum(ref[rows, top] - got[rows, top], 0).mean()))


def choose(scores: dict[str, Score]) -> str:
    """The method with the best Score.key; ties go to the earlier method in `scores`."""
    best = max(score.key() for score in scores.values())
    return next(m for m, s in scores.items() if s.key() == best)
