"""Small building blocks shared by the zoo architectures."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn


def conv_bn_act(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1, dilation: int = 1,
                act: type[nn.Module] | None = nn.SiLU) -> nn.Sequential:
    """Conv (same padding, no bias) -> BatchNorm -> optional activation; folds cleanly for int8."""
    pad = dilation * (k - 1) // 2
    conv = nn.Conv2d(cin, cout, k, stride, pad, dilation=dilation, groups=groups, bias=False)
    layers: list[nn.Module] = [conv, nn.BatchNorm2d(cout)]
    if act is not None:
        layers.append(act(inplace=True))
    return nn.Sequential(*layers)


def extend(backbone: nn.Sequential, **extra: nn.Module) -> nn.Sequential:
    """`backbone` followed by named extra stages, keeping the backbone's own child names (0, 1, ...) so a
    torchvision state dict still loads into it."""
    return nn.Sequential(OrderedDict([*backbone.named_children(), *extra.items()]))


class SqueezeExcite(nn.Module):
    """Channel gating from the global average (squeeze) through a bottleneck MLP (excite)."""

    def __init__(self, ch: int, reduction: int = 4):
        super().__init__()
        mid = max(8, ch // reduction)
        self.fc = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(ch, mid, 1), nn.SiLU(inplace=True),
                                nn.Conv2d(mid, ch, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.fc(x)
