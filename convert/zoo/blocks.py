"""Small building blocks shared by the zoo architectures."""

from __future__ import annotations

import torch
from torch import nn


def conv_bn_act(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1, dilation: int = 1,
                act: type[nn.Module] | None = nn.SiLU) -> nn.Sequential:
    pad = dilation * (k - 1) // 2
    layers = [nn.Conv2d(cin, cout, k, stride, pad, dilation=dilation, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if act is not None:
        layers.append(act(inplace=True) if act in (nn.ReLU, nn.ReLU6, nn.SiLU) else act())
    return nn.Sequential(*layers)


class SqueezeExcite(nn.Module):
    def __init__(self, ch: int, reduction: int = 4):
        super().__init__()
        mid = max(8, ch // reduction)
        self.fc = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(ch, mid, 1), nn.SiLU(inplace=True),
                                nn.Conv2d(mid, ch, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.fc(x)
