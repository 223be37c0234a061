"""Real onnx2tf conversion and the real LiteRT interpreter on a small CNN with the FeatureTap contract."""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from ai_edge_litert.interpreter import Interpreter
from torch import nn

from calibration.synthetic import CLASSES, render
from convert.export import IMAGENET_MEAN, IMAGENET_STD, PRESETS, FeatureTap, Preprocessing, export_onnx
from convert.tflite import (
    calibration_pixels,
    check_input,
    check_integer,
    check_scales,
    convert_float_tflite,
    convert_tflite,
    map_outputs,
)
from edge.backends.tflite import TfliteBackend, runtime_name
from edge.preprocess import to_model_input
from tests.conftest import REPO

SIZE = 64
K = 4
ROOT = Path(__file__).resolve().parents[1]


class Residual(nn.Module):
    def __init__(self, *layers: nn.Module):
        super().__init__()
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def _cbr(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout), nn.ReLU6()]


def tiny_split() -> types.SimpleNamespace:
    """Conv, depthwise-separable convs, a residual add, ReLU6, and padded MaxPools after a Clip (ReLU6) and
    after a Relu (torchvision's ResNet stem): the kernels and patterns of the zoo's models."""
    features = nn.Sequential(
        *_cbr(3, 16, stride=2), nn.MaxPool2d(3, 1, 1),
        *_cbr(16, 16, groups=16), *_cbr(16, 32, k=1),
        nn.Conv2d(32, 32, 3, 1, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(3, 2, 1),
        *_cbr(32, 48, k=1),
        Residual(*_cbr(48, 48, groups=48), nn.Conv2d(48, 48, 1, bias=False), nn.BatchNorm2d(48)),
        *_cbr(48, 48, stride=2, groups=48), *_cbr(48, 64, k=1),
    )
    return types.SimpleNamespace(features=features, head=nn.Sequential(nn.Dropout(0.2), nn.Linear(64, K)))


def images(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([to_model_input(render(CLASSES[i % len(CLASSES)], rng, SIZE)[0], SIZE) for i in range(n)])


def nchw(img: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(img.transpose(2, 0, 1)[None])


def calibrated_tap(calib: np.ndarray, pre: Preprocessing = PRESETS["imagenet"]) -> FeatureTap:
    """tiny_split() in eval mode, its BatchNorm statistics taken from `calib`: a random network's activations
    vanish with depth, and these give every layer the scale a trained network has, so fidelity figures mean
    something."""
    torch.manual_seed(0)
    tap = FeatureTap(tiny_split(), pre)
    for m in tap.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None
    tap.train()
    with torch.no_grad():
        tap(torch.from_numpy(calib).permute(0, 3, 1, 2).contiguous())
    return tap.eval()


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tflite")
    calib, val = images(48, seed=1), images(24, seed=2)
    # A BGR model (the graph reorders the camera's RGB with a Gather): every check against the fp32 ONNX below
    # also checks that onnx2tf translates the reorder (it mistranslates torch.flip's negative-step Slice).
    bgr = Preprocessing(IMAGENET_MEAN, IMAGENET_STD, "BGR")
    onnx_path = export_onnx(calibrated_tap(calib, bgr), (SIZE, SIZE), tmp / "model.fp32.onnx")
    out = tmp / "bundle" / "model.int8.tflite"
    res = convert_tflite(onnx_path, calib, out, fp32_out=out.with_name("model.fp32.tflite"), workdir=tmp / "work")
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    ref = [session.run(["logits", "features"], {"input": nchw(x)}) for x in val]
    return types.SimpleNamespace(onnx=onnx_path, out=out, res=res, work=tmp / "work", calib=calib, val=val, ref=ref)


def test_input_is_the_raw_uint8_pixel(converted):
    res = converted.res
    assert (res.input_scale, res.input_zero_point, res.input_dtype) == (1.0, 0, "uint8")
    assert res.path == converted.out and res.features_layout == "NHWC" and res.seconds > 0
    assert sorted(p.name for p in converted.out.parent.iterdir()) == ["model.fp32.tflite", "model.int8.tflite"]
    interp = Interpreter(model_path=str(converted.out))
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]
    assert inp["dtype"] == np.uint8 and inp["quantization"] == (1.0, 0)
    assert list(inp["shape"]) == [1, SIZE, SIZE, 3]
    assert all(d["dtype"] == np.float32 for d in interp.get_output_details())
    # Intermediates stay in the work directory, with onnx2tf's chatter in a log instead of the terminal.
    assert (converted.work / "convert.log").stat().st_size > 0
    assert (converted.work / "calibration_image_sample_data_20x128x128x3_float32.npy").is_file()


def test_prepared_onnx_is_the_same_function(converted):
    """The copy onnx2tf converts: float raw-pixel input, the normalisation's scale folded into the stem (through
    the BGR reorder), MaxPool padding as explicit Pad nodes — same outputs."""
    prepared = onnx.load(str(converted.work / "model.float_input.onnx"))
    first = [n for n in prepared.graph.node if "input" in n.input]
    assert [n.op_type for n in first] == ["Add"]  # no Mul: pixel + b/s on the camera's RGB, before the reorder
    offset = onnx.numpy_helper.to_array(next(t for t in prepared.graph.initializer if t.name == first[0].input[1]))
    np.testing.assert_allclose(offset.ravel(), -255 * np.array(IMAGENET_MEAN[::-1]), rtol=1e-6)  # mean given in BGR
    pads = [n for n in prepared.graph.node if n.op_type == "Pad"]
    assert sorted(onnx.helper.get_attribute_value(n.attribute[0]) for n in pads) == [b"constant", b"edge"]
    for n in prepared.graph.node:
        if n.op_type == "MaxPool":
            assert not any(any(a.ints) for a in n.attribute if a.name == "pads")
    session = ort.InferenceSession(prepared.SerializeToString(), providers=["CPUExecutionProvider"])
    for img, ref in zip(converted.val[:4], converted.ref):
        got = session.run(["logits", "features"], {"input": nchw(img).astype(np.float32)})
        np.testing.assert_allclose(got[0], ref[0], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(got[1], ref[1], rtol=1e-5, atol=1e-5)


def _normalised_graph(reader: str, bgr: bool = False) -> onnx.ModelProto:
    """float pixels -> Mul(s) -> Add(b) [-> Gather BGR] -> `reader` ("conv": a padded conv, also read by nothing
    else; "depthwise": a group-3 conv; "pool": a MaxPool) -> output."""
    h = onnx.helper
    rng = np.random.default_rng(0)
    s = 1 / (255 * np.array(IMAGENET_STD, np.float32))
    b = -np.array(IMAGENET_MEAN, np.float32) / np.array(IMAGENET_STD, np.float32)
    inits = [onnx.numpy_helper.from_array(v, name) for v, name in
             ((s.reshape(1, 3, 1, 1), "s"), (b.reshape(1, 3, 1, 1), "b"), (np.array([2, 1, 0], np.int64), "bgr"))]
    nodes = [h.make_node("Mul", ["input", "s"], ["m"]), h.make_node("Add", ["m", "b"], ["n"])]
    x = "n"
    if bgr:
        nodes.append(h.make_node("Gather", ["n", "bgr"], ["g"], axis=1))
        x = "g"
    groups = 3 if reader == "depthwise" else 1
    inits.append(onnx.numpy_helper.from_array(rng.normal(size=(6, 3 // groups, 3, 3)).astype(np.float32), "w"))
    if reader == "pool":
        nodes.append(h.make_node("MaxPool", [x], ["out"], kernel_shape=[2, 2]))
    else:
        nodes.append(h.make_node("Conv", [x, "w"], ["out"], pads=[1, 1, 1, 1], group=groups))
    graph = h.make_graph(nodes, "g", [h.make_tensor_value_info("input", onnx.TensorProto.FLOAT, [1, 3, 8, 8])],
                         [h.make_tensor_value_info("out", onnx.TensorProto.FLOAT,
                                                   [1, 3, 7, 7] if reader == "pool" else [1, 6, 8, 8])], inits)
    return h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])


@pytest.mark.parametrize("bgr", [False, True])
def test_input_scale_folds_into_the_convolution(bgr):
    """pixel*s + b -> (pixel + b/s) with s in the conv's weights: the same function, padding included, and the
    normalisation's scale no longer an op of its own (TFLite would quantise its output)."""
    from convert.tflite import _fold_input_scale

    model = _normalised_graph("conv", bgr)
    ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).integers(0, 256, (1, 3, 8, 8)).astype(np.float32)
    want = ref.run(None, {"input": x})[0]
    assert _fold_input_scale(model)
    onnx.checker.check_model(model)
    assert [n.op_type for n in model.graph.node] == ["Add"] + ["Gather"] * bgr + ["Conv"]
    got = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("reader", ["depthwise", "pool"])
def test_input_scale_stays_where_a_reader_cannot_take_it(reader):
    from convert.tflite import _fold_input_scale

    model = _normalised_graph(reader)
    before = model.SerializeToString()
    assert not _fold_input_scale(model)
    assert model.SerializeToString() == before


def test_only_the_last_layer_is_float(converted):
    """The int8 TFLite computes on int8 everywhere but its FULLY_CONNECTED, which writes float logits (an int8
    one saturates above the calibrated range); check_integer refuses any other op left float."""
    interp = Interpreter(model_path=str(converted.out))
    ops, tensors = interp._get_ops_details(), interp.get_tensor_details()
    dtypes = {op["op_name"]: {tensors[i]["dtype"].__name__ for i in op["inputs"] if i >= 0} for op in ops}
    assert dtypes["FULLY_CONNECTED"] == {"float32"} and ops[-1]["op_name"] == "FULLY_CONNECTED"
    assert dtypes["CONV_2D"] == dtypes["DEPTHWISE_CONV_2D"] == {"int8", "int32"}
    check_integer(ops, tensors, converted.out)
    floaty_conv = [{**op, "op_name": "CONV_2D"} if op["op_name"] == "FULLY_CONNECTED" else op for op in ops]
    with pytest.raises(RuntimeError, match="TFLite left these ops float, expected int8: CONV_2D"):
        check_integer(floaty_conv, tensors, converted.out)


def test_outputs_mapped_by_shape(converted):
    assert sorted(converted.res.outputs) == ["features", "logits"]
    assert sorted(converted.res.outputs.values()) == [0, 1]
    backend = TfliteBackend(converted.out, converted.res.outputs)
    assert backend.input_size == (SIZE, SIZE)
    logits, features = backend.run(converted.val[0])
    ref_logits, ref_features = converted.ref[0]
    assert logits.shape == ref_logits.shape[1:] == (K,) and logits.dtype == np.float32
    assert features.shape == ref_features.shape[1:] and features.dtype == np.float32


def test_agreement_with_fp32_onnx(converted):
    backend = TfliteBackend(converted.out, converted.res.outputs)
    agree, dprob, corr = [], [], []
    for img, (ref_logits, ref_features) in zip(converted.val, converted.ref):
        logits, features = backend.run(img)
        p, q = np.exp(logits - logits.max()), np.exp(ref_logits[0] - ref_logits[0].max())
        p, q = p / p.sum(), q / q.sum()
        agree.append(p.argmax() == q.argmax())
        dprob.append(np.abs(p - q).max())
        corr.append(np.corrcoef(features.ravel(), ref_features[0].ravel())[0, 1])
    print(f"\nTFLite int8 vs fp32 ONNX on {len(agree)} images: top-1 agreement {np.mean(agree):.1%}, "
          f"max |dprob| {max(dprob):.4f}, features correlation mean {np.mean(corr):.4f} min {min(corr):.4f}")
    assert min(corr) > 0.95
    assert np.mean(agree) >= 0.9


def test_backend_equals_interpreter_by_hand(converted):
    img = converted.val[3]
    interp = Interpreter(model_path=str(converted.out))
    interp.allocate_tensors()
    interp.set_tensor(interp.get_input_details()[0]["index"], img[None])
    interp.invoke()
    details = interp.get_output_details()
    logits = interp.get_tensor(details[converted.res.outputs["logits"]]["index"])
    features = interp.get_tensor(details[converted.res.outputs["features"]]["index"])
    got_logits, got_features = TfliteBackend(converted.out, converted.res.outputs, threads=2).run(img)
    np.testing.assert_array_equal(got_logits, logits[0])
    np.testing.assert_array_equal(got_features, features[0].transpose(2, 0, 1))


def _equals_fp32_onnx(backend: TfliteBackend, converted) -> None:
    """A float TFLite model's logits and features equal the fp32 ONNX's on 4 validation images."""
    for img, (ref_logits, ref_features) in zip(converted.val[:4], converted.ref):
        logits, features = backend.run(img)
        np.testing.assert_allclose(logits, ref_logits[0], atol=1e-4)
        np.testing.assert_allclose(features, ref_features[0], atol=1e-4)


def test_tensorflow_then_triton_does_not_crash():
    """triton (imported by torch._dynamo, so by any torchvision model) loaded after TensorFlow segfaults the process
    (`python -c "import tensorflow, triton"` dies with SIGSEGV here); convert.tflite, through which skinedge
    reaches TensorFlow, loads triton first."""
    r = subprocess.run([sys.executable, "-c", "import convert.tflite, tensorflow, triton; print('ok')"],
                       capture_output=True, text=True, check=False, cwd=REPO, timeout=300)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), (r.returncode, r.stderr[-300:])


def test_float_model_alone_makes_no_int8(converted, tmp_path):
    """convert_float_tflite (the LiteRT float baseline when --adaround rounds the int8 model's weights): the same
    float model as convert_tflite's fp32_out, without the int8 calibration."""
    out = tmp_path / "model.fp32.tflite"
    outputs = convert_float_tflite(converted.onnx, converted.calib[:1], out, workdir=tmp_path / "work")
    assert outputs == converted.res.fp32_outputs
    assert (tmp_path / "work" / "saved_model").is_dir() and not list((tmp_path / "work").rglob("*int8*"))
    _equals_fp32_onnx(TfliteBackend(out, outputs, artefact="fp32_tflite"), converted)


def test_backend_runs_float_and_int8_input_models(converted):
    """The float32 model (onnx2tf's own, kept as fp32_out) gets float pixels and equals the fp32 ONNX; an
    int8-input model gets quantised ones."""
    res = converted.res
    assert res.fp32_path == converted.out.with_name("model.fp32.tflite") and sorted(res.fp32_outputs) == [
        "features", "logits"]
    details = Interpreter(model_path=str(res.fp32_path)).get_output_details()
    assert map_outputs(details, [1, K], list(converted.ref[0][1].shape), res.fp32_path) == res.fp32_outputs
    backend = TfliteBackend(res.fp32_path, res.fp32_outputs, artefact="fp32_tflite")
    assert backend.input["dtype"] == np.float32 and backend.artefact == "fp32_tflite"
    _equals_fp32_onnx(backend, converted)

    import tensorflow as tf

    conv = tf.lite.TFLiteConverter.from_saved_model(str(converted.work / "saved_model"))
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    data = calibration_pixels(converted.calib)
    conv.representative_dataset = lambda: ([data[i : i + 1]] for i in range(len(data)))
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    int8_path = converted.work / "int8_in_out.tflite"
    int8_path.write_bytes(conv.convert())
    backend = TfliteBackend(int8_path, converted.res.outputs)
    assert backend.input["dtype"] == np.int8 and backend.input["quantization"] == (1.0, -128)
    # Same calibration, so the same int8 graph: equal to the uint8-in model up to the output's quantisation step.
    want_logits, want_features = TfliteBackend(converted.out, converted.res.outputs).run(converted.val[0])
    logits, features = backend.run(converted.val[0])
    assert logits.dtype == np.float32 and features.dtype == np.float32
    np.testing.assert_allclose(logits, want_logits, atol=backend.logits["quantization"][0] * 1.01)
    np.testing.assert_allclose(features, want_features, atol=backend.features["quantization"][0] * 1.01)


def test_corrupt_or_missing_tflite_names_the_file(converted, tmp_path):
    garbage = tmp_path / "garbage.tflite"
    garbage.write_bytes(b"not a flatbuffer at all" * 10)
    truncated = tmp_path / "truncated.tflite"
    truncated.write_bytes(converted.out.read_bytes()[:5000])
    for path in (garbage, truncated, tmp_path / "missing.tflite"):
        with pytest.raises(RuntimeError, match=str(path)):
            TfliteBackend(path, converted.res.outputs)
    with pytest.raises(RuntimeError, match="output mapping"):
        TfliteBackend(converted.out, {"logits": 0})
    with pytest.raises(ValueError, match="uint8 image"):
        TfliteBackend(converted.out, converted.res.outputs).run(converted.val[0][:32])


def test_bad_conversion_inputs_are_refused_before_onnx2tf(converted, tmp_path):
    float_input = converted.work / "model.float_input.onnx"
    with pytest.raises(ValueError, match="model.float_input.onnx: expected one uint8 input"):
        convert_tflite(float_input, converted.calib, tmp_path / "x.tflite")
    with pytest.raises(ValueError, match="to_model_input"):
        convert_tflite(converted.onnx, converted.calib[:, :32, :32], tmp_path / "x.tflite")
    with pytest.raises(ValueError, match=r"\(N, H, W, 3\) uint8"):
        convert_tflite(converted.onnx, converted.calib.astype(np.float32), tmp_path / "x.tflite")
    with pytest.raises(ValueError, match="quant_type"):
        convert_tflite(converted.onnx, converted.calib, tmp_path / "x.tflite", quant_type="int4")
    assert not (tmp_path / "x.tflite").exists()


def test_per_tensor_weights_on_request(converted, tmp_path):
    res = convert_tflite(converted.onnx, converted.calib, tmp_path / "t.tflite", quant_type="per-tensor")
    interp = Interpreter(model_path=str(res.path))
    tensors = interp.get_tensor_details()
    convs = [op for op in interp._get_ops_details() if op["op_name"] in ("CONV_2D", "DEPTHWISE_CONV_2D")]
    assert convs and all(tensors[op["inputs"][1]]["quantization_parameters"]["scales"].size == 1 for op in convs)
    check_integer(interp._get_ops_details(), tensors, res.path)
    agree = [TfliteBackend(res.path, res.outputs).run(img)[0].argmax() == ref[0][0].argmax()
             for img, ref in zip(converted.val, converted.ref)]
    assert np.mean(agree) >= 0.75


def _detail(name: str, shape: list[int], dtype=np.float32) -> dict:
    return {"name": name, "shape": np.array(shape), "dtype": dtype}


def test_map_outputs_by_rank_not_position():
    p = Path("m.tflite")
    # K equal to C, h and w: only the rank tells them apart.
    assert map_outputs([_detail("PartitionedCall:1", [1, 4, 4, 4]), _detail("PartitionedCall:0", [1, 4])],
                       [1, 4], [1, 4, 4, 4], p) == {"logits": 1, "features": 0}
    assert map_outputs([_detail("a", [1, 4]), _detail("b", [1, 3, 5, 8])], [1, 4], [1, 8, 3, 5], p) == {
        "logits": 0, "features": 1}
    with pytest.raises(RuntimeError, match="expected NHWC"):  # features left NCHW by the converter
        map_outputs([_detail("a", [1, 4]), _detail("b", [1, 8, 3, 5])], [1, 4], [1, 8, 3, 5], p)
    with pytest.raises(RuntimeError, match="2-D logits and a 4-D features"):
        map_outputs([_detail("a", [1, 4])], [1, 4], [1, 8, 3, 5], p)
    with pytest.raises(RuntimeError, match="expected float32"):
        map_outputs([_detail("a", [1, 4], np.int8), _detail("b", [1, 3, 5, 8])], [1, 4], [1, 8, 3, 5], p)


def test_absurd_quantisation_scales_are_refused():
    def detail(name: str, scales: list[float]) -> dict:
        return {"name": name, "quantization_parameters": {"scales": np.array(scales, np.float32)}}

    check_scales([detail("conv", [0.02, 0.5]), detail("shape", [])], Path("m.tflite"))
    with pytest.raises(RuntimeError, match=r"m.tflite: tensors quantised with absurd scales.*'maxpool'"):
        check_scales([detail("conv", [0.02]), detail("maxpool", [1.33e36])], Path("m.tflite"))


def test_input_quantisation_other_than_identity_is_refused():
    check_input({"dtype": np.uint8, "quantization": (1.0, 0)}, Path("m.tflite"))
    for dtype, q in ((np.uint8, (1.0039, 0)), (np.uint8, (1.0, 3)), (np.int8, (1.0, -128))):
        with pytest.raises(RuntimeError, match="m.tflite: input should be uint8 with scale 1 and zero point 0"):
            check_input({"dtype": dtype, "quantization": q}, Path("m.tflite"))


def test_board_backend_never_loads_tensorflow(converted):
    code = (
        "import sys, numpy as np\n"
        "from edge.backends.tflite import TfliteBackend, runtime_name\n"
        f"b = TfliteBackend({str(converted.out)!r}, {converted.res.outputs!r})\n"
        f"logits, features = b.run(np.zeros(({SIZE}, {SIZE}, 3), np.uint8))\n"
        "assert not [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'torch')], 'heavy import'\n"
        "print(runtime_name())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == runtime_name()
    assert runtime_name().startswith("ai_edge_litert ")


def test_a_model_xnnpack_refuses_runs_on_litert_builtin_kernels_and_says_so():
    """tests/data/xnnpack-refused-conv.int8.tflite is one real layer: the 1x1 CONV_2D (80 x 1280, int8 per channel)
    of the channel attention of a MobileNetV2-MSCA-PFR trained on the synthetic set at 96 px (benchmarks/_trained.py),
    cut out of the int8 TFLite the converter wrote for it (TensorFlow's flatbuffer schema: that op, its tensors and
    buffers). On the calibration images that layer's ReLU output was all zeros, so its output scale is 7.8e-9 and the
    requantisation scale ~850: XNNPACK refuses to prepare it, and the board refused the whole model. LiteRT's
    built-in kernels run it, to the same integers as the reference kernels."""
    from edge.backends.tflite import XNNPACK_NOTE, load_interpreter

    path = REPO / "tests" / "data" / "xnnpack-refused-conv.int8.tflite"
    with pytest.raises(RuntimeError, match="XNNPACK"):  # the premise: LiteRT's default path refuses it
        Interpreter(model_path=str(path)).allocate_tensors()
    interp, note = load_interpreter(path)
    assert note == XNNPACK_NOTE
    ref, ref_note = load_interpreter(path, reference=True)
    assert ref_note == ""
    x = np.random.default_rng(0).integers(-128, 128, interp.get_input_details()[0]["shape"], dtype=np.int8)
    outs = []
    for it in (interp, ref):
        it.set_tensor(it.get_input_details()[0]["index"], x)
        it.invoke()
        outs.append(it.get_tensor(it.get_output_details()[0]["index"]).astype(np.int32))
    assert outs[0].shape == (1, 1, 1, 80) and np.array_equal(outs[0], outs[1])
