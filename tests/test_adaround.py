"""AdaRound's weights in skinedge's int8 graph (convert.adaround): rounded weights written back into the float
graph are re-quantised by convert.quantize to exactly the integers they came from, including ones that differ
from round-to-nearest. AMD Quark itself runs only where $SKINEDGE_QUARK_PYTHON names a Python that has it (it
pins onnx <= 1.22, so it cannot be installed beside skinedge); everything else is real onnxruntime."""

from __future__ import annotations

import os
import sys

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from convert import adaround
from convert.quantize import quantize_int8
from tests.test_mixed import SIZE, _net


@pytest.fixture(scope="module")
def nets(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("adaround")
    images = np.random.default_rng(2).integers(0, 256, (16, SIZE, SIZE, 3), dtype=np.uint8)
    _net(tmp / "fp32.onnx")
    quantize_int8(tmp / "fp32.onnx", tmp / "int8.onnx", images, "minmax")
    return tmp, images


def _flip(qdq: onnx.ModelProto, share: float) -> int:
    """Move `share` of each conv's int8 weights one level towards zero, as a rounding optimiser may; returns how many."""
    init = {t.name: t for t in qdq.graph.initializer}
    producer = {o: n for n in qdq.graph.node for o in n.output}
    rng, moved = np.random.default_rng(3), 0
    for conv in (n for n in qdq.graph.node if n.op_type == "Conv"):
        name = producer[conv.input[1]].input[0]  # the weight's DequantizeLinear reads the int8 initializer
        q = numpy_helper.to_array(init[name])
        pick = (rng.random(q.shape) < share) & (np.abs(q) > 1) & (np.abs(q) < 127)
        new = q.copy()
        new[pick] -= np.sign(q[pick]).astype(np.int8)
        init[name].CopyFrom(numpy_helper.from_array(new, name))
        moved += int(pick.sum())
    return moved


def test_rounded_weights_keep_their_integers_through_skinedges_recipe(nets):
    tmp, images = nets
    fp32, qdq = onnx.load(str(tmp / "fp32.onnx")), onnx.load(str(tmp / "int8.onnx"))
    moved = _flip(qdq, 0.2)
    total = sum(q.size for q, _, _ in adaround.conv_weights(qdq).values())
    assert moved > 0.1 * total
    stats = adaround.round_into(fp32, qdq, take_bias=False)
    assert stats["convs"] == 3 and stats["scale_mismatch"] < 1e-6
    assert stats["weights_changed"] == pytest.approx(moved / total)
    onnx.save(fp32, str(tmp / "rounded.onnx"))
    quantize_int8(tmp / "rounded.onnx", tmp / "requantised.onnx", images, "minmax")
    requantised = onnx.load(str(tmp / "requantised.onnx"))
    assert adaround.same_integers(requantised, qdq) == 1.0
    assert adaround.same_integers(onnx.load(str(tmp / "int8.onnx")), qdq) == pytest.approx(1 - moved / total)


def test_weights_on_a_narrower_grid_keep_it_through_skinedges_recipe(nets):
    """A scale search (AIMET's sequential MSE, benchmarks/real_weights.py) clips each channel to a finer grid than
    max|w|/127: written back by `write_rounded`, skinedge's recipe re-quantises them onto that very grid."""
    tmp, images = nets
    fp32 = onnx.load(str(tmp / "fp32.onnx"))
    init = {t.name: numpy_helper.to_array(t) for t in fp32.graph.initializer}
    rounded = {}
    for conv in (n for n in fp32.graph.node if n.op_type == "Conv"):
        w = init[conv.input[1]]
        step = (0.8 * np.abs(w).max(axis=(1, 2, 3), keepdims=True) / 127).astype(np.float32)
        rounded[conv.input[1]] = np.clip(np.round(w / step), -127, 127) * step
    stats = adaround.write_rounded(fp32, rounded)
    assert stats["convs"] == 3 and stats["off_grid_steps"] < 1e-3 and stats["weights_changed"] > 0.1
    onnx.save(fp32, str(tmp / "narrowed.onnx"))
    quantize_int8(tmp / "narrowed.onnx", tmp / "narrowed.int8.onnx", images, "minmax")
    got = adaround.conv_weights(onnx.load(str(tmp / "narrowed.int8.onnx")))
    by_weight = {n.name: n.input[1] for n in fp32.graph.node if n.op_type == "Conv"}
    for name, (q, scale, _) in got.items():
        np.testing.assert_allclose(q * scale[:, None, None, None], rounded[by_weight[name]], rtol=0, atol=1e-6)


def test_quark_python_is_refused_in_one_line(monkeypatch, tmp_path):
    monkeypatch.delenv(adaround.QUARK_ENV, raising=False)
    with pytest.raises(adaround.QuarkUnavailable, match=adaround.QUARK_ENV) as e:
        adaround.quark_python()
    assert "\n" not in str(e.value)
    with pytest.raises(adaround.QuarkUnavailable, match="cannot import quark.onnx") as e:
        adaround.quark_python(sys.executable)  # skinedge's own Python: no Quark here
    assert "\n" not in str(e.value)
    with pytest.raises(adaround.QuarkUnavailable, match="No such file") as e:
        adaround.quark_python(tmp_path / "no-python")
    assert "\n" not in str(e.value)


@pytest.mark.skipif(not os.environ.get(adaround.QUARK_ENV), reason=f"{adaround.QUARK_ENV} not set (AMD Quark's Python)")
def test_quark_adaround_for_real(nets):
    tmp, images = nets
    stats = adaround.optimise(tmp / "fp32.onnx", tmp / "ada.onnx", images[:8], 20, progress=False,
                              quark_out=tmp / "quark.onnx")
    assert stats["convs"] == 3 and stats["scale_mismatch"] < 1e-6 and 0 < stats["weights_changed"] < 0.5
    quantize_int8(tmp / "ada.onnx", tmp / "ada.int8.onnx", images, "minmax")
    assert adaround.same_integers(onnx.load(str(tmp / "ada.int8.onnx")), onnx.load(str(tmp / "quark.onnx"))) == 1.0


def test_convert_refuses_adaround_without_quark_before_any_work(tmp_path, monkeypatch):
    from convert.pipeline import ConvertError, Options, convert

    monkeypatch.delenv(adaround.QUARK_ENV, raising=False)
    with pytest.raises(ConvertError, match=adaround.QUARK_ENV):
        convert(Options(arch="micro_mpoxnet", random_init=True, calib=tmp_path / "none", val=tmp_path / "none",
                        out=tmp_path / "bundle", adaround=10, progress=False))
    assert not (tmp_path / "bundle").exists() and not list(tmp_path.glob("bundle*"))
