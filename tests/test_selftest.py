"""The golden self-test catches tampering that rehashes the bundle: a +0.8 logit bias on one class (which a
blanket 0.05 dprob limit let through) and a changed head.npz (identical probabilities, wrong Grad-CAM maps);
old golden files without reference maps are refused with a line saying to re-convert."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import pytest
import yaml
from onnx import helper, numpy_helper

from edge.classify import Classifier
from edge.trust.bundle import MANIFEST, BundleError, hash_tree, load_bundle
from edge.trust.selftest import load_golden, selftest
from tests.test_run import DEMO

ARTEFACTS = {"int8_onnx": ("onnx", "int8"), "fp32_onnx": ("onnx", "fp32"), "int8_tflite": ("tflite", "int8"),
             "fp32_tflite": ("tflite", "fp32")}


def _rehash(root) -> None:
    man = yaml.safe_load((root / MANIFEST).read_text())
    man["artefacts"] = hash_tree(root)
    (root / MANIFEST).write_text(yaml.safe_dump(man, sort_keys=False))


def _selftest(root, artefact: str):
    kind, precision = ARTEFACTS[artefact]
    b = load_bundle(root)
    return selftest(b, Classifier(b, kind, precision=precision))


def add_logit_bias(path, cls: int, bias: float) -> None:
    """Rewrite an ONNX model so that its `logits` output gets `bias` added on class `cls`."""
    model = onnx.load(str(path))
    k = next(o for o in model.graph.output if o.name == "logits").type.tensor_type.shape.dim[1].dim_value
    for node in model.graph.node:
        node.output[:] = ["logits_raw" if o == "logits" else o for o in node.output]
    vec = np.zeros((1, k), np.float32)
    vec[0, cls] = bias
    model.graph.initializer.append(numpy_helper.from_array(vec, "logit_bias"))
    model.graph.node.append(helper.make_node("Add", ["logits_raw", "logit_bias"], ["logits"]))
    onnx.save(model, str(path))


def test_demo_golden_format(bundle):
    """>= 16 images including the validation set's most borderline ones; reference probabilities, logits and
    Grad-CAM maps per artefact; tolerances per artefact in the manifest; where they were computed."""
    b = load_bundle(bundle)
    g = load_golden(b)
    assert len(g["input"]) >= 16
    srt = np.sort(g["probs_float"], 1)
    margins = srt[:, -1] - srt[:, -2]
    assert (margins < 0.5).sum() >= 4, np.round(margins, 3)  # the borderline half of the set
    for artefact in ARTEFACTS:
        assert {f"probs_{artefact}", f"logits_{artefact}", f"cam_{artefact}"} <= set(g)
        assert set(b.manifest["tolerances"][artefact]) == {"dprob", "logit_shift", "cam_corr", "cam_median"}
    on = b.manifest["golden"]["computed_on"]
    assert {"machine", "cpu", "vnni", "onnxruntime", "ai-edge-litert"} <= set(on)
    assert b.manifest["golden"]["margin"] >= 1.5


@pytest.mark.parametrize("artefact", list(ARTEFACTS))
def test_honest_bundle_passes(bundle, artefact):
    res = _selftest(bundle, artefact)
    assert res.ok, res.line()
    assert res.top1_required >= 1


@pytest.mark.parametrize("artefact", ["int8_onnx", "fp32_onnx"])
def test_logit_bias_on_one_class_is_refused(bundle, artefact):
    """+0.8 on one class's logit, hashes recomputed: refused for every class, as a systematic shift."""
    path = bundle / ("model.int8.onnx" if artefact == "int8_onnx" else "model.fp32.onnx")
    original = path.read_bytes()
    k = len(load_bundle(bundle).labels)
    for cls in range(k):
        path.write_bytes(original)
        add_logit_bias(path, cls, 0.8)
        _rehash(bundle)
        res = _selftest(bundle, artefact)
        print(f"\n{artefact} +0.8 on class {cls}: {res.line()}")
        assert not res.ok and any("systematic bias" in f for f in res.failures), res.line()
        assert res.drift.logit_shift > 0.5  # 0.8 * (1 - 1/K) on the biased class
    # and through the CLI: one verdict line, exit 1
    r = subprocess.run([sys.executable, "-m", "edge.cli", "verify", str(bundle), "--backend", "onnx", "--precision",
                        artefact[:4]], check=False, capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and "verdict: FAIL" in r.stdout and "systematic bias" in r.stdout, r.stdout + r.stderr


def test_changed_head_is_refused_by_the_cam_check(bundle):
    """head.npz with its last layer's rows for two classes swapped and its other weights perturbed, hashes
    recomputed: the model's probabilities are untouched (they do not use head.npz), only the maps change."""
    head = dict(np.load(bundle / "head.npz"))
    last = max(i for i, kind in enumerate(head["layers"]) if str(kind) == "linear")
    rng = np.random.default_rng(0)
    w = head[f"w{last}"]
    head[f"w{last}"] = (w[[1, 0, *range(2, len(w))]] + rng.normal(0, w.std(), w.shape)).astype(w.dtype)
    np.savez(bundle / "head.npz", **head)
    _rehash(bundle)
    for artefact in ("int8_onnx", "int8_tflite"):
        res = _selftest(bundle, artefact)
        print(f"\nchanged head, {artefact}: {res.line()}")
        assert res.drift.max_dprob <= res.tol["dprob"]  # probabilities as the reference
        assert not res.ok and any("Grad-CAM maps differ" in f for f in res.failures), res.line()


def test_old_golden_without_maps_refused_with_reconvert_hint(bundle):
    g = dict(np.load(bundle / "golden.npz"))
    np.savez(bundle / "golden.npz", **{k: v for k, v in g.items() if not k.startswith(("cam_", "logits_"))})
    _rehash(bundle)
    with pytest.raises(BundleError, match="no reference Grad-CAM maps or logits for int8_onnx: re-convert"):
        _selftest(bundle, "int8_onnx")
    man = yaml.safe_load((bundle / MANIFEST).read_text())
    del man["tolerances"]
    (bundle / MANIFEST).write_text(yaml.safe_dump(man, sort_keys=False))
    with pytest.raises(BundleError, match="no self-test tolerances for int8_onnx: re-convert"):
        _selftest(bundle, "int8_onnx")


def test_tolerances_stay_in_range_when_the_measured_drift_is_huge():
    """A random-init model's int8 maps can be anti-correlated with the reference; 2x that drift must still be a
    valid manifest value (the schema refuses a correlation below -1), not a bundle the converter cannot load."""
    from convert.golden import tolerance
    from edge.trust.selftest import Outputs

    rng = np.random.default_rng(0)
    cams = rng.random((4, 3, 3))
    ref = Outputs(np.tile([[0.95, 0.05]], (4, 1)), np.zeros((4, 1, 2)), cams)
    board = Outputs(np.tile([[0.05, 0.95]], (4, 1)), np.tile([[[0.0, 500.0]]], (4, 1, 1)), -cams)
    tol = tolerance(board, ref, "int8")
    assert tol == {"dprob": 1.0, "logit_shift": 100.0, "cam_corr": -1.0, "cam_median": -1.0}


def test_u8_weights_hold_the_same_integers(bundle):
    """convert.golden.u8_weights stores every int8 weight as uint8 + 128: under the exact session the model
    computes the very same numbers (the rewrite changes which fused kernels run, never what they compute)."""
    from convert.golden import u8_weights
    from edge.backends.onnx import OnnxBackend

    img = load_golden(load_bundle(bundle))["input"][0]
    s8 = OnnxBackend(bundle / "model.int8.onnx", reference=True).run(img)
    u8 = OnnxBackend(u8_weights(bundle / "model.int8.onnx"), reference=True).run(img)
    assert all(np.array_equal(a, b) for a, b in zip(s8, u8))


@pytest.mark.parametrize("saturates", [True, False])
def test_saturating_cpu_runs_the_int8_onnx_exact_and_says_so(monkeypatch, saturates):
    import onnxruntime as ort

    from edge.backends import onnx as onnx_backend

    monkeypatch.setattr(onnx_backend, "u8s8_saturates", lambda: saturates)
    b = load_bundle(DEMO / "bundle")
    clf = Classifier(b, "onnx", precision="int8")
    level = clf.backends[0].session.get_session_options().graph_optimization_level
    assert (level == ort.GraphOptimizationLevel.ORT_DISABLE_ALL) == saturates
    assert ("fused int8 kernels saturate" in clf.note) == saturates
    assert ("runs through the exact (unoptimised) session" in selftest(b, clf).line()) == saturates
    fp32 = Classifier(b, "onnx", precision="fp32")  # float kernels do not saturate
    assert fp32.note == "" and fp32.backends[0].session.get_session_options().graph_optimization_level != \
        ort.GraphOptimizationLevel.ORT_DISABLE_ALL


def test_tolerances_are_measured_on_honest_kernels():
    """The demo bundle's int8 ONNX limit is twice the drift of non-saturating kernels (0.0404), not the 0.894 that
    absorbed this x86's saturation; where this CPU's fused kernels do saturate, the self-test refuses them."""
    from edge.backends.cpu import u8s8_saturates

    b = load_bundle(DEMO / "bundle")
    tol = b.manifest["tolerances"]["int8_onnx"]
    assert tol["dprob"] <= 0.05 and tol["cam_corr"] >= 0.9, tol
    assert set(b.manifest["golden"]["board_kernels"]) == set(b.manifest["tolerances"])
    if u8s8_saturates():
        res = selftest(b, Classifier(b, "onnx", precision="int8", fused=True))
        assert not res.ok and res.drift.max_dprob > 10 * tol["dprob"], res.line()
