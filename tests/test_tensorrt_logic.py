"""The TensorRT backend's logic that does not need a GPU: cache keys, cache placement and invalidation,
atomic engine writes, tensor mapping and input layout. (The TensorRT/CUDA calls themselves are
unverified here: no GPU.)"""

from __future__ import annotations

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
