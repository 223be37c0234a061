"""MobileNetV2-MSCA-PFR: MobileNetV2 features, then multi-scale context aggregation (parallel 1×1, dilated
3×3 and 5×5 branches, fused, residual) and pooling-feature refinement (channel attention from average- and
max-pooled descriptors, then spatial attention from channel-average and channel-max maps).

Both modules sit inside `.features`, before the global pool, so the refined map is the one Grad-CAM explains.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models import mobilenet_v2

from convert.zoo.blocks import conv_bn_act, extend
from convert.zoo.split import Split, SplitModel


class MSCA(nn.Module):
    """Multi-scale context aggregation: receptive fields 1, 5, 7 and 5 side by side, fused back residually."""

    def __init__(self, ch: int, mid: int = 256, branch: int = 64):
        super().__init__()
        self.reduce = conv_bn_act(ch, mid, 1, act=nn.ReLU6)
        self.branches = nn.ModuleList([
            conv_bn_act(mid, branch, 1, act=nn.ReLU6),
            conv_bn_act(mid, branch, 3, dilation=2, act=nn.ReLU6),
            conv_bn_act(mid, branch, 3, dilation=3, act=nn.ReLU6),
            conv_bn_act(mid, branch, 5, act=nn.ReLU6),
        ])
        self.fuse = conv_bn_act(len(self.branches) * branch, ch, 1, act=None)
        self.act = nn.ReLU6(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.reduce(x)
        return self.act(x + self.fuse(torch.cat([b(r) for b in self.branches], 1)))


class PFR(nn.Module):
    """Pooling-feature refinement: channel attention (shared MLP over avg- and max-pooled descriptors), then
    spatial attention (conv over the channel-mean and channel-max maps)."""

    def __init__(self, ch: int, reduction: int = 16, kernel: int = 7):
        super().__init__()
        self.mlp = nn.Sequential(nn.Conv2d(ch, ch // reduction, 1), nn.ReLU(inplace=True),
                                 nn.Conv2d(ch // reduction, ch, 1))
        self.spatial = nn.Conv2d(2, 1, kernel, padding=kernel // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg = nn.functional.adaptive_avg_pool2d(x, 1)
        mx = nn.functional.adaptive_max_pool2d(x, 1)
        x = x * torch.sigmoid(self.mlp(avg) + self.mlp(mx))
        s = torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], 1)
        return x * torch.sigmoid(self.spatial(s))


def mobilenetv2_msca_pfr(num_classes: int, dropout: float = 0.2) -> SplitModel:
    """features.0-18 are torchvision's MobileNetV2 names; features.msca and features.pfr follow."""
    features = extend(mobilenet_v2(weights=None).features, msca=MSCA(1280), pfr=PFR(1280))
    return SplitModel(Split(features, nn.Sequential(nn.Dropout(dropout), nn.Linear(1280, num_classes))))
