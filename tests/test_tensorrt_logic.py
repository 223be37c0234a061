"""The TensorRT backend's logic that does not need a GPU: cache keys, cache placement and invalidation,
atomic engine writes, tensor mapping and input layout. (The TensorRT/CUDA calls themselves are
unverified here: no GPU.)"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge.backends import tensorrt as trtb


def test_cache_key_changes_with_everything_that_invalidates_an_engine():
    base = trtb.cache_key("abc", "int8_onnx", "10.3.0", "Orin")
    assert base == trtb.cache_key("abc", "int8_onnx", "10.3.0", "Orin")
    others = {
        trtb.cache_key("abd", "int8_onnx", "10.3.0", "Orin"),
        trtb.cache_key("abc", "fp32_onnx", "10.3.0", "Orin"),
        trtb.cache_key("abc", "int8_onnx", "8.6.2", "Orin"),
        trtb.cache_key("abc", "int8_onnx", "10.3.0", "Xavier"),
    }
    assert base not in others and len(others) == 4


def test_cache_dir_beside_bundle_or_from_env(tmp_path, monkeypatch):
    monkeypatch.delenv(trtb.ENGINE_CACHE_ENV, raising=False)
    assert trtb.cache_dir(tmp_path / "bundle") == tmp_path / "bundle.engines"
    monkeypatch.setenv(trtb.ENGINE_CACHE_ENV, str(tmp_path / "var"))
    assert trtb.cache_dir(tmp_path / "bundle") == tmp_path / "var"


def test_stale_engines_are_found_and_current_kept(tmp_path):
    cur = trtb.engine_path(tmp_path, "m", "k1")
    old = trtb.engine_path(tmp_path, "m", "k0")
    other_member = trtb.engine_path(tmp_path, "n", "k0")
    for p in (cur, old, other_member):
        p.write_bytes(b"x")
    assert trtb.stale_engines(tmp_path, "m", "k1") == [old]


def test_save_atomically_leaves_no_temp_on_failure(tmp_path):
    target = tmp_path / "e" / "m.k.engine"
    trtb.save_atomically(target, b"engine-bytes")
    assert target.read_bytes() == b"engine-bytes"


    with pytest.raises(TypeError):
        trtb.save_atomically(target, object())  # write fails mid-way
    assert target.read_bytes() == b"engine-bytes"
    assert [p.name for p in target.parent.iterdir()] == ["m.k.engine"]


def _specs(names=("logits", "features"), nhwc=False):
    shape_in = (1, 64, 64, 3) if nhwc else (1, 3, 64, 64)
    return [
        trtb.TensorSpec("input", shape_in, np.dtype(np.uint8), True),
        trtb.TensorSpec(names[1], (1, 96, 4, 4), np.dtype(np.float32), False),
        trtb.TensorSpec(names[0], (1, 4), np.dtype(np.float32), False),
    ]


def test_plan_maps_outputs_by_name_then_rank():
    plan = trtb.plan_io(_specs())
    assert (plan.logits.name, plan.features.name, plan.layout) == ("logits", "features", "NCHW")
    plan = trtb.plan_io(_specs(names=("out0", "out1"), nhwc=True))
    assert plan.logits.shape == (1, 4) and plan.features.shape == (1, 96, 4, 4) and plan.layout == "NHWC"
    with pytest.raises(RuntimeError, match="1 input and 2 outputs"):
        trtb.plan_io(_specs()[:2])


def test_host_input_layout_dtype_and_shape_check():
    img = np.arange(64 * 64 * 3, dtype=np.uint8).reshape(64, 64, 3)
    plan = trtb.plan_io(_specs())
    x = trtb.host_input(plan, img)
    assert x.shape == (1, 3, 64, 64) and x.flags.c_contiguous and x[0, 2, 5, 7] == img[5, 7, 2]
    fplan = trtb.IOPlan(trtb.TensorSpec("input", (1, 64, 64, 3), np.dtype(np.float32), True),
                        plan.logits, plan.features, "NHWC")
    xf = trtb.host_input(fplan, img)
    assert xf.dtype == np.float32 and xf[0, 5, 7, 2] == img[5, 7, 2]
    with pytest.raises(ValueError, match="does not fit"):
        trtb.host_input(plan, img[:32])


# --- the symmetric rewrite TensorRT builds from, on a real quantised model -----------------------------

@pytest.fixture(scope="module")
def quantised(tmp_path_factory):
    """A small ReLU6/ReLU network with BatchNorm statistics from real images, quantised by the converter."""
    from convert.export import export_onnx
    from convert.quantize import quantize_int8
    from tests.test_tflite import SIZE, calibrated_tap, images

    tmp = tmp_path_factory.mktemp("qdq")
    calib, val = images(32, seed=1), images(16, seed=2)
    fp32 = export_onnx(calibrated_tap(calib), (SIZE, SIZE), tmp / "model.fp32.onnx")
    int8 = quantize_int8(fp32, tmp / "model.int8.onnx", calib, "minmax")
    return fp32, int8, val


def _session(data: bytes | str):
    import onnxruntime as ort

    return ort.InferenceSession(data, providers=["CPUExecutionProvider"])


def _zero_points(model) -> list[np.ndarray]:
    """Zero points of the activation (non-initializer) quantisations."""
    from onnx import numpy_helper

    init = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    return [init[n.input[2]] for n in model.graph.node
            if n.op_type in ("QuantizeLinear", "DequantizeLinear") and n.input[0] not in init]


def test_symmetric_qdq_keeps_ranges_and_results(quantised):
    import onnx

    fp32, int8, val = quantised
    src = onnx.load(str(int8))
    # The converter keeps every ReLU/ReLU6 (so the rewrite cannot lose one) and quantises with uint8.
    acts = [sum(n.op_type in ("Clip", "Relu") for n in onnx.load(str(m)).graph.node) for m in (fp32, int8)]
    assert acts[0] == acts[1] > 0
    assert {z.dtype for z in _zero_points(src)} == {np.dtype(np.uint8)}
    sym = trtb.symmetric_qdq(int8.read_bytes(), keep_grid=False)  # the plain rewrite: every range made symmetric
    out = onnx.load_from_string(sym)
    zps = _zero_points(out)
    assert len(zps) == len(_zero_points(src)) and all(z.dtype == np.int8 and not z.any() for z in zps)
    assert trtb.symmetric_qdq(sym, keep_grid=False) == sym  # already symmetric: nothing to do
    # Each symmetric range covers the uint8 one it replaces, at no more than twice the step.
    from onnx import numpy_helper

    before = {t.name: numpy_helper.to_array(t) for t in src.graph.initializer}
    after = {t.name: numpy_helper.to_array(t) for t in out.graph.initializer}
    for n in src.graph.node:
        if n.op_type == "QuantizeLinear" and n.input[0] not in before:
            s, z = float(before[n.input[1]]), float(before[n.input[2]])
            s2 = float(after[n.input[1]])
            assert s2 * 127 >= max(s * z, s * (255 - z)) * (1 - 1e-6) and s2 <= s * 255 / 127 * (1 + 1e-6)
    a, b, f = _session(str(int8)), _session(sym), _session(str(fp32))
    err_u8, err_sym = [], []
    for img in val:
        x = {"input": np.ascontiguousarray(img.transpose(2, 0, 1)[None])}
        (_, fa), (_, fb), (_, ff) = a.run(None, x), b.run(None, x), f.run(None, x)
        assert fb.min() >= 0  # the last ReLU6 still clamps: its output is never negative
        err_u8.append(np.abs(fa - ff).mean())
        err_sym.append(np.abs(fb - ff).mean())
    print(f"\nfeatures mean |error| vs fp32: uint8 form {np.mean(err_u8):.5f}, symmetric form {np.mean(err_sym):.5f}")
    # Half the resolution on the ReLU outputs: about twice the error, never an error of another order (as a
    # lost ReLU or a wrong range would give).
    assert np.mean(err_sym) < 3 * np.mean(err_u8)


def test_tensorrt_form_keeps_the_activations_grid(quantised):
    """The default form: pre-activation pairs gone, each ReLU output the shifted int8 copy of its uint8 grid (same
    scale), so the form computes what the int8 ONNX computes, up to float rounding at grid midpoints."""
    import onnx
    from onnx import numpy_helper

    from edge.backends import qdq_shift

    fp32, int8, val = quantised
    src = onnx.load(str(int8))
    form_bytes = trtb.symmetric_qdq(int8.read_bytes())
    form = onnx.load_from_string(form_bytes)
    onnx.checker.check_model(form)
    assert trtb.symmetric_qdq(form_bytes) == form_bytes  # already in the form: nothing to do
    assert all(z.dtype == np.int8 and not z.any() for z in _zero_points(form))
    pre = qdq_shift.pre_activation_pairs(src)
    assert pre and not pre & set(_quantised_activations(form))
    before = {t.name: numpy_helper.to_array(t) for t in src.graph.initializer}
    after = {t.name: numpy_helper.to_array(t) for t in form.graph.initializer}
    acts = [n.input[0] for n in src.graph.node if n.op_type == "QuantizeLinear"
            and any(p.op_type in ("Clip", "Relu") and n.input[0] in p.output for p in src.graph.node)]
    shifted = [t for t in acts if t in _quantised_activations(form)]
    scale = {n.input[0]: n.input[1] for n in src.graph.node if n.op_type == "QuantizeLinear"}
    assert shifted and all(after[scale[t]] == before[scale[t]] for t in shifted)  # the same step, not twice it
    assert [o.name for o in form.graph.output] == ["logits", "features"]
    forms = {"int8 ONNX": int8.read_bytes(), "kept grid": form_bytes,
             "plain symmetric": trtb.symmetric_qdq(int8.read_bytes(), keep_grid=False)}
    sessions, ref = {k: _session(v) for k, v in forms.items()}, _session(str(fp32))
    err = {k: [] for k in forms}
    for img in val:
        x = {"input": np.ascontiguousarray(img.transpose(2, 0, 1)[None])}
        want = ref.run(None, x)[1]
        for k, sess in sessions.items():
            got = sess.run(None, x)[1]
            assert got.min() >= 0  # the features come back unshifted: a ReLU6 output
            err[k].append(np.abs(got - want).mean())
    err = {k: float(np.mean(v)) for k, v in err.items()}
    print(f"\nfeatures mean |error| vs fp32: {err}")
    # measured: int8 0.0359, kept grid 0.0359, plain 0.0518 (on EfficientNet-Lite: tests/test_real_nets.py)
    assert err["kept grid"] < 1.05 * err["int8 ONNX"] and err["kept grid"] < 0.8 * err["plain symmetric"]
    with pytest.raises(ValueError, match="no quantised activation named 'nope'"):
        qdq_shift.unquantise(onnx.load(str(int8)), {"nope"})


def test_symmetric_qdq_refuses_what_it_cannot_rewrite():
    from onnx import TensorProto, helper

    scale = [helper.make_tensor(f"s{i}", TensorProto.FLOAT, [], [0.1 * (i + 1)]) for i in range(2)]
    zp = helper.make_tensor("z", TensorProto.UINT8, [], [128])
    nodes = [helper.make_node("QuantizeLinear", ["x", "s0", "z"], ["q"]),
             helper.make_node("DequantizeLinear", ["q", "s1", "z"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])], [*scale, zp])
    with pytest.raises(ValueError, match="zero point z is shared by two scales"):
        trtb.symmetric_qdq(helper.make_model(graph).SerializeToString())
    with pytest.raises(ValueError, match="not an ONNX model"):
        trtb.symmetric_qdq(b"not an onnx model")


def _quantised_activations(model) -> list[str]:
    return [n.input[0] for n in model.graph.node if n.op_type == "QuantizeLinear"]


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None,
                    reason="TensorRT is installed here (a Jetson): nothing is missing")
def test_missing_tensorrt_is_one_line_naming_the_package():
    repo = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, "-m", "edge.cli", "verify", str(repo / "edge/demo_assets/bundle"), "--backend",
                        "tensorrt"], cwd=repo, capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "(tensorrt)" in lines[0] and "comes with JetPack" in lines[0]
