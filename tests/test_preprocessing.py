"""The model's own preprocessing: presets, --mean/--std in either unit, channel order, baked into the graph."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from convert.export import PRESETS, FeatureTap, Preprocessing, export_onnx, preprocessing
from convert.zoo import Split
from edge.preprocess import to_layout


def test_presets_and_overrides():
    assert preprocessing() == PRESETS["imagenet"]
    lite = preprocessing(mean=[127], std=[128], pixel_units=True)  # pixel units, one value for all channels
    assert lite == PRESETS["lite"] and lite.preset == "lite"
    assert preprocessing("inception").describe() == "inception: (x - 127.5,127.5,127.5) / 127.5,127.5,127.5 on RGB pixels"
    custom = preprocessing("inception", mean=[0.1, 0.2, 0.3])
    assert custom.mean == (0.1, 0.2, 0.3) and custom.std == (0.5,) * 3 and custom.preset is None
    caffe = preprocessing("caffe")
    assert caffe.channel_order == "BGR" and caffe.manifest()["channel_order"] == "BGR"
    assert preprocessing("caffe", channel_order="rgb").channel_order == "RGB"


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"mean": [0.5, 0.5]}, "--mean: expected 1 or 3 values (one per channel), got 2"),
    ({"std": [1, 2, 3, 4]}, "--std: expected 1 or 3 values (one per channel), got 4"),
    ({"mean": [127], "std": [128]}, "--mean 127: above 1, but mean/std are in 0..1 units (of x/255) unless --pixel-units"),
    ({"std": [0.2, 0, 0.2]}, "--std: every value must be positive"),
    ({"preset": "tf"}, "--preprocess 'tf': expected one of imagenet, inception, lite, raw, caffe"),
    ({"channel_order": "RGBA"}, "--channel-order 'RGBA': expected RGB or BGR"),
])
def test_bad_preprocessing_is_one_line(kwargs, message):
    with pytest.raises(ValueError) as e:
        preprocessing(**kwargs)
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


def _tiny() -> Split:
    torch.manual_seed(0)
    return Split(nn.Sequential(nn.Conv2d(3, 6, 1), nn.ReLU()), nn.Sequential(nn.Linear(6, 3)))


@pytest.mark.parametrize("pre", [*PRESETS.values(), Preprocessing((0.2, 0.4, 0.6), (0.1, 0.3, 0.5), "BGR")],
                         ids=[*PRESETS, "custom-bgr"])
def test_normalisation_is_baked_into_the_onnx_graph(pre, tmp_path):
    """The exported graph, fed the camera's RGB pixels, equals the network on (x/255 - mean)/std of the pixels in
    the model's own channel order, written out here independently of FeatureTap."""
    split = _tiny()
    path = export_onnx(FeatureTap(split, pre), (8, 8), tmp_path / "m.onnx")
    rgb = np.random.default_rng(1).integers(0, 256, (1, 3, 8, 8), dtype=np.uint8)
    logits, features = ort.InferenceSession(str(path)).run(None, {"input": rgb})
    x = torch.from_numpy(rgb).float() / 255
    if pre.channel_order == "BGR":
        x = x[:, [2, 1, 0]]
    x = (x - torch.tensor(pre.mean).view(1, 3, 1, 1)) / torch.tensor(pre.std).view(1, 3, 1, 1)
    with torch.no_grad():
        want = split.features(x)
        want_logits = split.head(want.mean((2, 3)))
    np.testing.assert_allclose(features, want.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(logits, want_logits.numpy(), rtol=1e-4, atol=1e-4)
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert ("Gather" in ops) == (pre.channel_order == "BGR") and "Slice" not in ops


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
def test_to_layout_is_a_64_byte_aligned_contiguous_copy(layout):
    """ONNX Runtime's instruction count depended on the input's address; to_layout pins it to a 64-byte boundary."""
    img = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    for _ in range(8):  # numpy's own allocations land at varying offsets
        x = to_layout(img, layout)
        assert x.ctypes.data % 64 == 0 and x.flags.c_contiguous
        want = img[None] if layout == "NHWC" else img.transpose(2, 0, 1)[None]
        np.testing.assert_array_equal(x, want)
        assert x.dtype == np.uint8 and not np.shares_memory(x, img)
