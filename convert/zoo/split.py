"""Every deployable classifier is features(x) -> global average pool -> head(pooled).

The board needs that split: the exported graph returns the feature map, and Grad-CAM runs the head in
numpy. `split_model` finds it in zoo models and in torchvision's families.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

HEAD_KINDS = (nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.ReLU6, nn.SiLU, nn.Hardswish, nn.Dropout, nn.Identity, nn.Flatten)


@dataclass
class Split:
    features: nn.Module
    head: nn.Sequential


class SplitModel(nn.Module):
    """head(flatten(gap(features(x)))): the split as one module (pytorch-grad-cam's target is `.features`)."""

    def __init__(self, split: Split):
        super().__init__()
        self.features = split.features
        self.head = split.head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1))


def _check_head(head: nn.Module, owner: str) -> nn.Sequential:
    head = head if isinstance(head, nn.Sequential) else nn.Sequential(head)
    for name, m in head.named_modules():
        if m is head or isinstance(m, nn.Sequential):
            continue
        if not isinstance(m, HEAD_KINDS):
            raise ValueError(f"{owner}: head layer {name or '0'} is {type(m).__name__}; the board's Grad-CAM supports "
                             f"only {', '.join(k.__name__ for k in HEAD_KINDS)}")
    return head


def split_model(model: nn.Module) -> Split:
    """The (features, head) of a zoo model or a torchvision classifier; ValueError naming what does not fit."""
    owner = type(model).__name__
    if hasattr(model, "members"):
        raise ValueError(f"{owner} is an ensemble: split each of its .members instead")
    if hasattr(model, "features") and hasattr(model, "head"):
        return Split(model.features, _check_head(model.head, owner))
    if hasattr(model, "features") and hasattr(model, "classifier"):  # mobilenet_v2/v3, efficientnet, mnasnet
        if any(type(m).__name__ == "LayerNorm2d" for m in model.classifier.modules()):
            raise ValueError(f"{owner}: its classifier normalises the spatial map (LayerNorm2d); not a GAP -> head model")
        return Split(model.features, _check_head(model.classifier, owner))
    if hasattr(model, "layer4") and hasattr(model, "fc"):  # resnet, resnext, wide_resnet
        feats = nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool,
                              model.layer1, model.layer2, model.layer3, model.layer4)
        return Split(feats, _check_head(model.fc, owner))
    if hasattr(model, "stem") and hasattr(model, "trunk_output") and hasattr(model, "fc"):  # regnet
        return Split(nn.Sequential(model.stem, model.trunk_output), _check_head(model.fc, owner))
    raise ValueError(f"{owner}: cannot split into features -> global average pool -> head "
                     "(expected .features + .head/.classifier, or a ResNet/RegNet layout)")
