"""ResNet-50 with adaptive spatial feature fusion of layer3 and layer4.

layer3 (stride 16) is brought to layer4's shape by a 1×1 stride-2 convolution — the same projection ResNet
uses for its own downsampling shortcut, so the output size matches layer4 at any input size and the graph
stays plain Conv for ONNX and TFLite — and the two levels are mixed with per-image weights from
GAP(concat) -> FC -> softmax. The fused map is A, the map Grad-CAM explains.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models import resnet50

from convert.zoo.split import Split, SplitModel, resnet_trunk


class ASFF(nn.Module):
    def __init__(self, c3: int = 1024, c4: int = 2048):
        super().__init__()
        self.project = nn.Sequential(nn.Conv2d(c3, c4, 1, stride=2, bias=False), nn.BatchNorm2d(c4),
                                     nn.ReLU(inplace=True))
        self.level_weights = nn.Linear(2 * c4, 2)

    def forward(self, l3: torch.Tensor, l4: torch.Tensor) -> torch.Tensor:
        p3 = self.project(l3)
        w = torch.softmax(self.level_weights(torch.cat([p3.mean((2, 3)), l4.mean((2, 3))], 1)), 1)
        return w[:, 0:1, None, None] * p3 + w[:, 1:2, None, None] * l4


class ResNetASFFFeatures(nn.Module):
    """A torchvision ResNet's conv1 ... layer4 under their own names, plus `asff` fusing layer3 into
    layer4."""

    def __init__(self, trunk: nn.Sequential, asff: ASFF):
        super().__init__()
        for name, module in trunk.named_children():
            self.add_module(name, module)
        self.asff = asff

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer2(self.layer1(self.maxpool(self.relu(self.bn1(self.conv1(x))))))
        l3 = self.layer3(x)
        return self.asff(l3, self.layer4(l3))


def resnet50_asff(num_classes: int, dropout: float = 0.2) -> SplitModel:
    features = ResNetASFFFeatures(resnet_trunk(resnet50(weights=None)), ASFF())
    return SplitModel(Split(features, nn.Sequential(nn.Dropout(dropout), nn.Linear(2048, num_classes))))
