"""Transfer-learning models with the custom MLP heads of the ensemble paper, on torchvision backbones."""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models import efficientnet_b1, mobilenet_v2

from convert.zoo.resnet_asff import ResNet50Features


class HeadModel(nn.Module):
    """features -> GAP -> head, the form every zoo model shares."""

    def __init__(self, features: nn.Module, head: nn.Sequential):
        super().__init__()
        self.features = features
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(self.features(x), 1), 1))


def mobilenetv2_tl(num_classes: int) -> HeadModel:
    """MobileNetV2, head 1280-512-256-K with dropout 0.3."""
    return HeadModel(mobilenet_v2(weights=None).features, nn.Sequential(
        nn.Linear(1280, 512), nn.ReLU(inplace=True), nn.Dropout(0.3),
        nn.Linear(512, 256), nn.ReLU(inplace=True), nn.Dropout(0.3), nn.Linear(256, num_classes)))


def efficientnet_b1_head(num_classes: int) -> HeadModel:
    """EfficientNet-B1, head 1280-512-K."""
    return HeadModel(efficientnet_b1(weights=None).features, nn.Sequential(
        nn.Linear(1280, 512), nn.ReLU(inplace=True), nn.Dropout(0.3), nn.Linear(512, num_classes)))


def resnet50_head(num_classes: int) -> HeadModel:
    """ResNet-50, head 2048-1024-BN-512-BN-K."""
    return HeadModel(ResNet50Features(fuse=False), nn.Sequential(
        nn.Linear(2048, 1024), nn.BatchNorm1d(1024), nn.ReLU(inplace=True), nn.Dropout(0.3),
        nn.Linear(1024, 512), nn.BatchNorm1d(512), nn.ReLU(inplace=True), nn.Dropout(0.3), nn.Linear(512, num_classes)))
