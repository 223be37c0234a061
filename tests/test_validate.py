"""convert.validate's verdicts on hand-made outputs: a model at chance is named, agreement on near-ties is
explained by the float model's margin, and drops are printed as drops (negative)."""

from __future__ import annotations

import numpy as np

from convert.validate import Outputs, chance_warning, compare, margin

LABELS = ["a", "b", "c", "d"]


def _outputs(pred: np.ndarray, confidence: float, k: int = 4) -> Outputs:
    probs = np.full((len(pred), k), (1 - confidence) / (k - 1))
    probs[np.arange(len(pred)), pred] = confidence
    return Outputs(probs, np.ones((len(pred), 2, 2)))


def test_a_model_at_chance_is_named_and_a_trained_one_is_not():
    y = np.repeat(np.arange(4), 50)
    guessing = compare("float (torch)", _outputs(np.random.default_rng(0).integers(0, 4, 200), 0.4), None, y, LABELS)
    assert len(guessing.warnings) == 1
    assert guessing.warnings[0].startswith("float (torch): accuracy") and "chance (25.0%" in guessing.warnings[0]
    right = y.copy()
    right[:20] = (right[:20] + 1) % 4  # 90 % accurate
    assert compare("float (torch)", _outputs(right, 0.9), None, y, LABELS).warnings == []


def test_chance_is_the_commonest_class_share():
    y = np.array([0] * 90 + [1] * 10)
    assert "chance (90.0%" in chance_warning("m", 0.90, y, 2)  # always answering 'a' scores 90 %
    assert chance_warning("m", 0.99, y, 2) is None
    assert chance_warning("m", 0.40, np.repeat(np.arange(4), 50), 4) is not None  # 4 classes: 25 % by chance


def test_disagreement_on_near_ties_is_explained_and_drops_are_negative():
    y = np.repeat(np.arange(4), 25)
    ref = _outputs(y, 0.9)
    ref.probs[:10] = [0.2501, 0.2499, 0.25, 0.25]  # near-ties, right answer 'a' by a hair
    got = Outputs(ref.probs.copy(), ref.cams)
    got.probs[:10] = [0.2499, 0.2501, 0.25, 0.25]  # the artefact tips them to 'b'
    row = compare("int8_onnx", got, ref, y, LABELS)
    assert row.top1_agreement == 0.9 and row.accuracy_drop > 0
    assert row.disagree_margin == np.float64(margin(ref.probs[:10]).max()) and row.disagree_margin < 0.001
    assert row.float_margin > 0.5  # the other images are far from ties
    (warning,) = row.warnings
    assert "at most 0.0001 " in warning
    assert "accuracy -10.00 points vs float" in warning  # a drop, printed negative
    assert "recall fell most for a (-40.0 pts)" in warning and "b (" not in warning  # b's recall did not fall
