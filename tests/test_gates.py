"""The gates on real images: quality gates on synthetic lesion renders and their degradations, motion
between frames, display stability, and the OOD score the converter fits (edge.gates / convert.ood)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from calibration.degrade import DEGRADATIONS
from calibration.synthetic import CLASSES
from calibration.synthetic import render as synth
from convert.ood import auroc, fit_mahalanobis
from edge.gates import CHECKING, Gates, GatesConfig, Stability, measure, quality_reason, raw_scores, shown_message

SIZE = 128


@pytest.fixture(scope="module")
def lesions() -> np.ndarray:
    return np.stack([synth(c, np.random.default_rng([77, i, j]), SIZE)[0] for i, c in enumerate(CLASSES)
                     for j in range(10)])


def test_quality_gates_pass_clean_and_catch_each_degradation(lesions):
    cfg = GatesConfig()
    clean = [quality_reason(measure(im)[0], cfg) for im in lesions]
    assert clean.count(None) >= len(lesions) - 1
    expected = {"blurred": "blurred", "darkened": "too dark", "over-exposed": "too bright"}
    for name, degrade in DEGRADATIONS.items():
        want = expected[name.split(" ")[0]]
        got = [quality_reason(measure(degrade(im))[0], cfg) for im in lesions]
        assert got.count(want) >= 0.9 * len(lesions), (name, got)


def test_motion_between_frames(lesions):
    img = lesions[0]
    assert measure(img, measure(img)[1])[0].motion == 0.0
    moved = measure(img, measure(np.roll(img, SIZE // 4, axis=1))[1])[0]
    assert quality_reason(moved, GatesConfig()) == "moving"
    gates = Gates(GatesConfig(), None, use_motion=False)  # a folder of unrelated images: no motion
    gates(np.roll(img, SIZE // 4, axis=1), [], [])
    assert gates(img, [], []).quality.motion is None


def test_stability_shows_a_class_only_after_n_equal_frames(lesions):
    s = Stability(3)
    assert [s.update(t, True) for t in (1, 1, 2, 2, 2, 2)] == [False, False, False, False, True, True]
    assert s.update(2, False) is False and s.update(2, True) is False
    verdict = Gates(GatesConfig(), None)(lesions[1], [], [])
    assert shown_message(verdict, False) == CHECKING and shown_message(verdict, True) is None


def test_mahalanobis_score_is_the_distance_under_the_shared_covariance():
    rng = np.random.default_rng(0)
    means = rng.normal(0, 3, (3, 6))
    labels = np.repeat(np.arange(3), 400)
    x = means[labels] + rng.normal(0, 1, (1200, 6)) * np.array([1, 2, 0.5, 1, 3, 1])
    arrays = fit_mahalanobis(x, labels, None)
    far = means[0] + 8 * np.array([1, 2, 0.5, 1, 3, 1])  # 8 standard deviations from class 0 in every axis
    s_in, s_out = raw_scores("mahalanobis", None, x[:50], arrays), raw_scores("mahalanobis", None, far[None], arrays)
    assert np.median(s_in) < 10 and s_out[0] > 100
    assert auroc(s_in, s_out) == 1.0 and auroc(s_out, s_in) == 0.0


def test_manifest_schema_takes_the_gate_entry():
    import yaml

    from edge.manifest import ManifestError, check

    man = yaml.safe_load(Path("edge/demo_assets/bundle/manifest.yaml").read_text())
    man["gates"] = {"ood": {"file": "gate.npz", "method": "mahalanobis_sqrt_pca64", "threshold": 1.7,
                            "members": [{"method": "mahalanobis_sqrt", "loc": 7.3, "scale": 5.3}], "max_flag_rate": 0.05}}
    assert check(man)["gates"]["ood"]["threshold"] == 1.7
    man["gates"]["ood"]["extra"] = 1
    with pytest.raises(ManifestError, match="gates.ood.extra: unknown key"):
        check(man)
