"""Every deployable classifier is features(x) -> global average pool -> head(pooled).

The board needs that split: the exported graph returns the feature map A, and Grad-CAM runs the head in
numpy, so the head may hold only the layer kinds in HEAD_KINDS. `split_model` finds the split in zoo models,
in the torchvision families whose forward is exactly that, and in a user's module that declares it with
`.features` and `.head`; anything else is refused by name rather than split wrongly.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torchvision import models as tvm

HEAD_KINDS = (nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.ReLU6, nn.SiLU, nn.Hardswish, nn.Dropout, nn.Identity,
              nn.Flatten)

# torchvision families whose forward is features -> GAP -> flatten -> classifier, nothing in between
_FEATURES_CLASSIFIER = (tvm.MobileNetV2, tvm.MobileNetV3, tvm.EfficientNet)
_SUPPORTED = ("zoo models (.features + .head), torchvision MobileNetV2/V3, EfficientNet, ResNet/ResNeXt/"
              "Wide-ResNet and RegNet, or a module of your own with .features and .head")


@dataclass
class Split:
    features: nn.Module
    head: nn.Sequential


class SplitModel(nn.Module):
    """head(flatten(gap(features(x)))): the form every zoo model has, and a split as one module
    (pytorch-grad-cam's target layer is `.features`)."""

    def __init__(self, split: Split):
        super().__init__()
        self.features = split.features
        self.head = split.head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1))


def resnet_trunk(model: nn.Module) -> nn.Sequential:
    """conv1 ... layer4 of a torchvision ResNet, under torchvision's own names (its state dict loads)."""
    names = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")
    return nn.Sequential(OrderedDict((n, getattr(model, n)) for n in names))


def _offender(module: nn.Module) -> str | None:
    """'name (Kind)' of the first layer in `module` that is not a HEAD_KINDS layer, else None."""
    for name, m in module.named_modules():
        if not isinstance(m, (nn.Sequential, *HEAD_KINDS)):
            return f"{name or '(the module itself)'} ({type(m).__name__})"
    return None


def checked_head(head: nn.Module, owner: str, attr: str) -> nn.Sequential:
    """`head` as an nn.Sequential, or ValueError naming the first layer the board cannot run."""
    bad = _offender(head)
    if bad is not None:
        raise ValueError(f"{owner}: head layer {attr}.{bad} is not one of "
                         f"{', '.join(k.__name__ for k in HEAD_KINDS)} (the layers board Grad-CAM can run)")
    return head if isinstance(head, nn.Sequential) else nn.Sequential(head)


def split_model(model: nn.Module) -> Split:
    """The (features, head) of `model`, sharing its modules; ValueError naming what does not fit."""
    owner = type(model).__name__
    if hasattr(model, "members") and hasattr(model, "member_names"):
        names = ", ".join(model.member_names)
        raise ValueError(f"{owner} is an ensemble: split each of its .members ({names}) instead")
    if isinstance(model, _FEATURES_CLASSIFIER):
        return Split(model.features, checked_head(model.classifier, owner, "classifier"))
    if isinstance(model, tvm.ResNet):  # resnet*, resnext*, wide_resnet*
        return Split(resnet_trunk(model), checked_head(model.fc, owner, "fc"))
    if isinstance(model, tvm.RegNet):
        return Split(nn.Sequential(OrderedDict(stem=model.stem, trunk_output=model.trunk_output)),
                     checked_head(model.fc, owner, "fc"))
    from_torchvision = type(model).__module__.startswith("torchvision.")
    if not from_torchvision and hasattr(model, "features") and hasattr(model, "head"):
        return Split(model.features, checked_head(model.head, owner, "head"))
    heads = {a: m for a in ("classifier", "fc", "head", "heads") if isinstance(m := getattr(model, a, None), nn.Module)}
    detail = next((f"; its {a}.{bad} is not a head layer" for a, m in heads.items() if (bad := _offender(m))), "")
    raise ValueError(f"{owner} ({type(model).__module__}): cannot split into features -> global average pool "
                     f"-> head{detail}. Supported: {_SUPPORTED}")
