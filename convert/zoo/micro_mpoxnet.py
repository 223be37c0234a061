"""MicroMPoxNet: a tiny CNN for mpox screening — depthwise-separable convolutions, residual connections,
Swish (SiLU) and squeeze-excitation, under one million parameters."""

from __future__ import annotations

import torch
from torch import nn

from convert.zoo.blocks import SqueezeExcite, conv_bn_act
from convert.zoo.split import Split, SplitModel

# (out channels, stride) per depthwise-separable block; five stride-2 steps in all (stem included): A is x/32
PLAN = ((32, 1), (48, 2), (48, 1), (96, 2), (96, 1), (160, 2), (160, 1), (256, 2), (256, 1))


class DSBlock(nn.Module):
    """Depthwise 3×3 -> SE -> pointwise 1×1, with a residual when the shape is kept."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(
            conv_bn_act(cin, cin, 3, stride, groups=cin),
            SqueezeExcite(cin),
            conv_bn_act(cin, cout, 1, act=None),
        )
        self.residual = stride == 1 and cin == cout
        self.act = nn.SiLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return self.act(y + x if self.residual else y)


def micro_mpoxnet(num_classes: int, width: int = 24, last: int = 512, dropout: float = 0.2) -> SplitModel:
    layers: list[nn.Module] = [conv_bn_act(3, width, 3, 2)]
    cin = width
    for cout, stride in PLAN:
        layers.append(DSBlock(cin, cout, stride))
        cin = cout
    layers.append(conv_bn_act(cin, last, 1))
    head = nn.Sequential(nn.Dropout(dropout), nn.Linear(last, num_classes))
    return SplitModel(Split(nn.Sequential(*layers), head))
