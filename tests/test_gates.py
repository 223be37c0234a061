"""The gates on real images: quality gates on synthetic lesion renders and their degradations, motion
between frames, display stability, and the OOD score the converter fits (edge.gates / convert.ood)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from calibration.degrade import DEGRADATIONS
from calibration.nonlesion import KINDS
from calibration.nonlesion import frames as nonlesion_frames
from calibration.photos import find_photos, photo_crops
from calibration.synthetic import CLASSES
from calibration.synthetic import render as synth
from convert.ood import auroc, fit_mahalanobis
from edge.answer import Answerer
from edge.classify import Classifier
from edge.config import ConfigError, load_config
from edge.gates import (
    CHECKING,
    IMAGE_STATS,
    NOT_RECOGNISED,
    GateError,
    Gates,
    GatesConfig,
    Stability,
    for_bundle,
    image_stats,
    measure,
    quality_reason,
    raw_scores,
    shown_message,
)
from edge.record.store import CaptureStore
from edge.trust import safeyaml
from edge.trust.admit import admit
from edge.trust.bundle import MANIFEST, BundleError, hash_tree, load_bundle
from edge.trust.signing import Trust

DEMO = Path(__file__).resolve().parent.parent / "edge" / "demo_assets"
SIZE = 128  # the demo bundle's input size


@pytest.fixture(scope="module")
def clf():
    c = Classifier(load_bundle(DEMO / "bundle"), "onnx", threads=2)
    yield c
    c.close()


@pytest.fixture(scope="module")
def lesions() -> np.ndarray:
    """Synthetic lesion images unseen by the demo bundle (its sets use seeds 11-13)."""
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

    from edge.trust.manifest import ManifestError, check

    man = yaml.safe_load(Path("edge/demo_assets/bundle/manifest.yaml").read_text())
    man["gates"] = {"ood": {"file": "gate.npz", "method": "mahalanobis_sqrt_pca64", "threshold": 1.7,
                            "members": [{"method": "mahalanobis_sqrt", "loc": 7.3, "scale": 5.3}], "max_flag_rate": 0.05}}
    assert check(man)["gates"]["ood"]["threshold"] == 1.7
    man["gates"]["ood"]["image"] = {"method": "image_stats", "loc": 5.0, "scale": 2.0}
    assert check(man)["gates"]["ood"]["image"]["scale"] == 2.0
    man["gates"]["ood"]["image"]["scale"] = 0
    with pytest.raises(ManifestError, match="gates.ood.image.scale"):
        check(man)
    man["gates"]["ood"]["image"]["scale"] = 2.0
    man["gates"]["ood"]["extra"] = 1
    with pytest.raises(ManifestError, match="gates.ood.extra: unknown key"):
        check(man)


def test_demo_bundle_ood_gate_on_the_real_runtime(clf, lesions):
    gates = for_bundle(clf.bundle, GatesConfig())
    assert gates.ood_state == "on" and gates.ood.image is not None

    def flagged(images: np.ndarray) -> float:
        ood = gates.ood
        scores = [ood.score([lg], [f], im)[0] for im, (lg, f, _) in ((im, clf.run_members(im)[0]) for im in images)]
        return float(np.mean(np.array(scores) > ood.threshold))

    assert flagged(lesions) <= 0.15  # 5 % on the validation set; unseen lesions, 40 images
    assert flagged(lesions[:10]) <= 0.2  # healthy skin ('normal') is not taken for a featureless field
    # blank skin and solid colours: no detail; text: no skin colour (the image statistics); noise: the features
    for kind in KINDS:
        assert flagged(nonlesion_frames(5, SIZE, seed=5, kinds=(kind,))[0]) >= 0.8, kind
    photos = find_photos()
    assert photos, "no packaged photographs installed (scikit-image, mate-backgrounds)"
    assert flagged(photo_crops(photos[:6], SIZE, 3, seed=5)[0]) >= 0.8


def test_image_statistics_tell_featureless_and_paper_from_skin(lesions):
    """detail is the log gradient after denoising: a flat skin-coloured field with sensor noise has far less than
    any skin render; white paper has almost no saturation, skin always some."""
    skin = image_stats(lesions)
    blank = image_stats(nonlesion_frames(10, SIZE, seed=4, kinds=("blank_skin",))[0])
    text = image_stats(nonlesion_frames(10, SIZE, seed=4, kinds=("text",))[0])
    detail, saturation = IMAGE_STATS.index("detail"), IMAGE_STATS.index("saturation")
    assert blank[:, detail].max() < skin[:, detail].min()
    assert text[:, saturation].max() < skin[:, saturation].min()
    assert image_stats(lesions[0]).shape == (1, len(IMAGE_STATS))
    with pytest.raises(ValueError, match="pass the model input"):
        for_bundle(load_bundle(DEMO / "bundle"), GatesConfig()).ood.score([np.zeros(4)], [np.zeros((1, 512))])


def test_verdict_reason_and_record_through_the_answer_path(clf, lesions):
    model = admit(DEMO / "bundle", Trust())[1]
    answerer = Answerer(clf, for_bundle(clf.bundle, GatesConfig()), model)
    dark = answerer(DEGRADATIONS["darkened (x0.2)"](lesions[0])).verdict
    assert dark.reason == "too dark" and shown_message(dark, True) == "RETAKE - too dark"
    answerer = Answerer(clf, for_bundle(clf.bundle, GatesConfig(), use_motion=False), model)  # unrelated images
    noise = answerer(nonlesion_frames(1, SIZE, seed=3, kinds=("noise",))[0][0]).verdict  # sharp, mid-grey
    assert noise.reason == NOT_RECOGNISED and noise.ood_score > noise.ood_threshold
    assert shown_message(noise, True).startswith("NOT RECOGNISED")
    rec = noise.record()
    assert rec["gate"] == NOT_RECOGNISED and rec["gate_ood_score"] > rec["gate_ood_threshold"]
    off = Gates(GatesConfig(enabled=False), answerer.gates.ood)(lesions[0], *zip(*[o[:2] for o in clf.run_members(lesions[0])]))
    assert off.passed and off.ood_score is not None  # disabled: scores still recorded, nothing blocked


def _copy_bundle(tmp_path: Path) -> Path:
    root = tmp_path / "bundle"
    shutil.copytree(DEMO / "bundle", root)
    return root


def _rewrite_manifest(root: Path, edit) -> None:
    man = safeyaml.load(safeyaml.read(root / MANIFEST))
    edit(man)
    man["artefacts"] = hash_tree(root)
    (root / MANIFEST).write_text(safeyaml.dump(man))


def test_bundle_made_before_gates_runs_with_ood_off(tmp_path, lesions):
    root = _copy_bundle(tmp_path)
    (root / "gate.npz").unlink()
    _rewrite_manifest(root, lambda man: man.pop("gates"))
    gates = for_bundle(load_bundle(root), GatesConfig())
    assert gates.ood_state == "off"
    assert gates(DEGRADATIONS["blurred (sigma 3)"](lesions[1]), [], []).reason == "blurred"


def test_tampered_or_malformed_gate_is_refused(tmp_path):
    root = _copy_bundle(tmp_path)
    with np.load(root / "gate.npz") as z:
        arrays = dict(z)
    arrays["m0_proj"] = arrays["m0_proj"][:-1]  # one feature channel short
    np.savez(root / "gate.npz", **arrays)
    with pytest.raises(BundleError, match="gate.npz does not match its sha256"):
        load_bundle(root)
    _rewrite_manifest(root, lambda man: None)  # re-hashed: now the contents are checked
    with pytest.raises(GateError, match=r"gate\.npz: m0_center/proj/means shapes .* do not fit 512 feature channels"):
        for_bundle(load_bundle(root), GatesConfig())
    arrays["m0_proj"] = np.pad(arrays["m0_proj"], ((0, 1), (0, 0)))
    arrays["image_center"] = arrays["image_center"][:3]  # statistics from another version of image_stats
    np.savez(root / "gate.npz", **arrays)
    _rewrite_manifest(root, lambda man: None)
    with pytest.raises(GateError, match=r"gate\.npz: image_center/proj/means shapes .* do not fit 5 image statistics"):
        for_bundle(load_bundle(root), GatesConfig())


@pytest.mark.parametrize("gates, message", [
    ({"blur_min": "high"}, r"gates\.blur_min: expected a number >= 0\.0, found 'high'"),
    ({"blur": 10}, r"gates\.blur: unknown key; did you mean 'blur_min'\?"),
    ({"stable_frames": 0}, r"gates\.stable_frames: expected an integer in 1\.\.100, found 0"),
    ({"clipped_max": 1.5}, r"gates\.clipped_max: expected a number in 0\.0\.\.1\.0"),
    ({"dark_level": 200, "bright_level": 100}, r"gates\.dark_level: must be below gates\.bright_level \(100\)"),
    ({"ood": "yes"}, r"gates\.ood: expected true or false"),
])
def test_bad_gate_config_names_file_and_key(tmp_path, gates, message):
    path = tmp_path / "board.yaml"
    path.write_text(yaml.safe_dump({"source": {"kind": "opencv", "device": 0}, "display": {"kind": "null"},
                                    "gates": gates}))
    with pytest.raises(ConfigError, match=f"^{path}: {message}"):
        load_config(path)


def test_gate_config_overrides_defaults(tmp_path):
    path = tmp_path / "board.yaml"
    path.write_text(yaml.safe_dump({"source": {"kind": "opencv", "device": 0}, "display": {"kind": "null"},
                                    "gates": {"blur_min": 30, "stable_frames": 5, "ood": False}}))
    cfg = load_config(path).gates
    assert (cfg.blur_min, cfg.stable_frames, cfg.ood, cfg.dark_level) == (30.0, 5, False, GatesConfig.dark_level)
    assert Gates(cfg, for_bundle(load_bundle(DEMO / "bundle"), GatesConfig()).ood).ood_state == "off"


def test_capture_records_the_gate_outcome(tmp_path, lesions):
    gates = Gates(GatesConfig(), None)
    verdict = gates(DEGRADATIONS["blurred (sigma 3)"](lesions[2]), [], [])
    with CaptureStore(tmp_path / "store") as store:
        store.add(lesions[2], lesions[2], [0.7, 0.1, 0.1, 0.1], list(CLASSES), "b" * 64, gate=verdict.record())
        cap, = store.list()
    assert cap.gate["gate"] == "blurred" and cap.gate["gate_sharpness"] < GatesConfig.blur_min
    assert cap.gate["gate_ood_score"] is None
