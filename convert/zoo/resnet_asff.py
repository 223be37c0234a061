"""ResNet-50 with adaptive spatial feature fusion of layer3 and layer4: layer3 is projected to layer4's
channels and resolution, and the two levels are mixed with per-image weights from GAP -> FC -> softmax."""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models import resnet50


class ASFF(nn.Module):
    def __init__(self, c3: int = 1024, c4: int = 2048):
        super().__init__()
        self.project = nn.Sequential(nn.Conv2d(c3, c4, 1, bias=False), nn.BatchNorm2d(c4), nn.ReLU(inplace=True))
        self.weights = nn.Linear(2 * c4, 2)

    def forward(self, l3: torch.Tensor, l4: torch.Tensor) -> torch.Tensor:
        p3 = self.project(nn.functional.adaptive_avg_pool2d(l3, l4.shape[-2:]))
        pooled = torch.cat([p3.mean((2, 3)), l4.mean((2, 3))], 1)
        w = torch.softmax(self.weights(pooled), 1)
        return w[:, 0, None, None, None] * p3 + w[:, 1, None, None, None] * l4


class ResNet50Features(nn.Module):
    """torchvision ResNet-50 up to layer4, with torchvision's module names; `fuse` adds ASFF."""

    def __init__(self, fuse: bool):
        super().__init__()
        r = resnet50(weights=None)
        self.conv1, self.bn1, self.relu, self.maxpool = r.conv1, r.bn1, r.relu, r.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = r.layer1, r.layer2, r.layer3, r.layer4
        self.asff = ASFF() if fuse else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer2(self.layer1(self.maxpool(self.relu(self.bn1(self.conv1(x))))))
        l3 = self.layer3(x)
        l4 = self.layer4(l3)
        return self.asff(l3, l4) if self.asff is not None else l4


class ResNet50ASFF(nn.Module):
    def __init__(self, num_classes: int, dropout: float = 0.2):
        super().__init__()
        self.features = ResNet50Features(fuse=True)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(2048, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(self.features(x), 1), 1))


def resnet50_asff(num_classes: int) -> ResNet50ASFF:
    return ResNet50ASFF(num_classes)
