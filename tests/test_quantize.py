"""convert.quantize on a real small network: the int8 weights the boards run, and what stays in the graph."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from convert.export import export_onnx
from convert.quantize import quantize_int8
from tests.test_tflite import SIZE, calibrated_tap, images


@pytest.fixture(scope="module")
def fp32_model(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("quant")
    calib = images(16, seed=1)
    return export_onnx(calibrated_tap(calib), (SIZE, SIZE), tmp / "model.fp32.onnx"), calib, tmp


def _conv_weight_levels(path) -> list[int]:
    """Largest |int8 level| of each quantised conv weight (per-channel: over all channels)."""
    model = onnx.load(str(path))
    init = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    return [int(np.abs(init[n.input[0]].astype(np.int32)).max()) for n in model.graph.node
            if n.op_type == "DequantizeLinear" and n.input[0] in init and init[n.input[0]].dtype == np.int8]


def test_weights_use_all_8_bits_unless_reduce_range_is_asked_for(fp32_model):
    fp32, calib, tmp = fp32_model
    full = _conv_weight_levels(quantize_int8(fp32, tmp / "full.onnx", calib, "minmax"))
    seven = _conv_weight_levels(quantize_int8(fp32, tmp / "seven.onnx", calib, "minmax", reduce_range=True))
    assert len(full) == len(seven) > 5
    # symmetric per-channel: each weight's largest channel maps to 127 (8 bits) or 63/64 (7 bits)
    assert set(full) == {127}
    assert max(seven) <= 64


def _prepped(fp32, tmp):
    from onnxruntime.quantization.shape_inference import quant_pre_process

    out = tmp / "prepped.onnx"
    if not out.exists():
        quant_pre_process(str(fp32), str(out), skip_symbolic_shape=True)
    return out


@pytest.mark.parametrize("method", ["minmax", "percentile"])
def test_calibration_in_chunks_matches_calibration_at_once(fp32_model, method):
    """Chunked collection (bounded memory) gives the ranges onnxruntime computes from all images at once.
    (Entropy's threshold search over 128 re-binned bins moves more: up to 23 % on one tensor of this network
    at one image per step; the converter steps several images at a time.)"""
    from convert.calibrate import calibrate_pass
    from convert.quantize import OP_TYPES

    fp32, calib, tmp = fp32_model
    prepped = _prepped(fp32, tmp)
    once = calibrate_pass(prepped, calib, method, OP_TYPES, chunk_bytes=2**40).method
    chunked = calibrate_pass(prepped, calib, method, OP_TYPES, chunk_bytes=1).method  # one image at a time
    names = set(once.keys())
    assert names == set(chunked.keys()) and len(names) > 10
    for name in names:
        a, b = np.array(once[name].range_value, np.float64), np.array(chunked[name].range_value, np.float64)
        if method == "minmax":
            np.testing.assert_array_equal(a, b)
        else:  # the histogram is re-binned as the range grows
            np.testing.assert_allclose(a, b, rtol=0, atol=0.02 * float(np.abs(a).max()) + 1e-6, err_msg=name)


def test_a_percentile_pass_gives_the_ranges_of_a_minmax_pass(fp32_model):
    """`--calib-method auto` scores minmax from the percentile pass's observed min-max (Ranges.as_minmax) instead of
    a pass of its own: that must be what onnxruntime's MinMax calibrator computes, tensor for tensor."""
    from convert.calibrate import calibrate_pass
    from convert.quantize import OP_TYPES

    fp32, calib, tmp = fp32_model
    prepped = _prepped(fp32, tmp)
    minmax = calibrate_pass(prepped, calib, "minmax", OP_TYPES).method
    shared = calibrate_pass(prepped, calib, "percentile", OP_TYPES).as_minmax()
    assert set(shared.method) == set(minmax) and len(set(minmax)) > 10
    for name in minmax:
        np.testing.assert_array_equal(np.ravel(shared.method[name].range_value).astype(np.float32),
                                      np.ravel(minmax[name].range_value).astype(np.float32), err_msg=name)


def test_chunk_size_follows_the_activation_bytes(fp32_model):
    import onnxruntime as ort

    from convert.calibrate import bytes_per_image

    fp32, _, _ = fp32_model
    sess = ort.InferenceSession(str(fp32), providers=["CPUExecutionProvider"])
    # outputs: logits [1, 4] and features [1, 64, 8, 8] at 64 px
    assert bytes_per_image(sess) == 4 * (4 + 64 * 8 * 8)


def _range(model: onnx.ModelProto, tensor: str) -> float:
    """The largest value the uint8 QuantizeLinear of `tensor` can represent."""
    init = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    return float(init[f"{tensor}_scale"]) * (255 - int(init[f"{tensor}_zero_point"]))


def test_a_clipping_method_clips_only_the_first_half_of_the_network(fp32_model):
    """Issue 21: a percentile range clips the rare large values a confident answer is made of; the head and the later
    half of the activations get the ranges min-max calibration gives them (within one uint8 step), the first half
    is clipped."""
    from convert.calibrate import calibrate_pass
    from convert.quantize import OP_TYPES, full_range_tensors

    fp32, calib, tmp = fp32_model
    names = full_range_tensors(onnx.load(str(_prepped(fp32, tmp))))
    assert names[0] == "logits" and "features" in names
    calibrated = calibrate_pass(_prepped(fp32, tmp), calib, "percentile", OP_TYPES).observed.data
    late, early = [t for t in calibrated if t in names], [t for t in calibrated if t not in names]
    assert abs(len(late) - len(calibrated) / 2) <= 1 + sum(t in calibrated for t in names[:names.index("features")])
    kept = onnx.load(str(quantize_int8(fp32, tmp / "kept.onnx", calib, "percentile")))
    minmax = onnx.load(str(quantize_int8(fp32, tmp / "minmax.onnx", calib, "minmax")))
    clipped = onnx.load(str(quantize_int8(fp32, tmp / "clipped.onnx", calib, "percentile", keep_answer=False)))
    quantised = {n.input[0] for n in kept.graph.node if n.op_type == "QuantizeLinear"}
    for t in quantised & set(late):
        assert _range(kept, t) == pytest.approx(_range(minmax, t), rel=2 / 255), t
    assert sum(_range(kept, t) < 0.99 * _range(minmax, t) for t in quantised & set(early)) >= 3  # clipped
    assert _range(clipped, "features") < 0.99 * _range(kept, "features")  # as it would be without the rule


def test_logits_are_never_quantised(fp32_model):
    """The last layer takes int8 and writes float: on an image whose logit is above every calibration image's, the
    int8 model follows the float one, where a quantised logit would stop at the top of its range."""
    from convert.mixed import logits
    from convert.quantize import logit_tensors

    fp32, calib, tmp = fp32_model
    assert logit_tensors(onnx.load(str(fp32))) == ["logits"]
    ref = logits(onnx.load(str(fp32)), calib)
    order = np.argsort(ref.max(1))
    low, high = calib[order[:8]], calib[order[-1:]]  # calibrate on the 8 images with the smallest top logit
    kept = onnx.load(str(quantize_int8(fp32, tmp / "low.onnx", low, "minmax")))
    quantised = onnx.load(str(quantize_int8(fp32, tmp / "low_q.onnx", low, "minmax", keep_answer=False)))
    assert [n.op_type for n in kept.graph.node if "logits" in n.output] == ["Gemm"]
    assert [n.op_type for n in quantised.graph.node if "logits" in n.output] == ["DequantizeLinear"]
    assert _range(quantised, "logits") < float(ref[order[-1]].max())  # the held-back image is above the range
    assert float(logits(quantised, high).max()) <= _range(quantised, "logits") + 1e-6  # saturated
    got = logits(kept, high)[0]
    assert got.max() > _range(quantised, "logits") and np.abs(got - ref[order[-1]]).max() < 0.1 * np.ptp(ref)
