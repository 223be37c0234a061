"""Transfer-learning models with the custom MLP heads of the ensemble paper, on torchvision backbones
(features under torchvision's own names)."""

from __future__ import annotations

from torch import nn
from torchvision.models import efficientnet_b1, mobilenet_v2, resnet50

from convert.zoo.split import Split, SplitModel, resnet_trunk


def mobilenetv2_tl(num_classes: int) -> SplitModel:
    """MobileNetV2, head 1280-512-256-K with dropout 0.3."""
    return SplitModel(Split(mobilenet_v2(weights=None).features, nn.Sequential(
        nn.Linear(1280, 512), nn.ReLU(inplace=True), nn.Dropout(0.3),
        nn.Linear(512, 256), nn.ReLU(inplace=True), nn.Dropout(0.3), nn.Linear(256, num_classes))))


def efficientnet_b1_head(num_classes: int) -> SplitModel:
    """EfficientNet-B1, head 1280-512-K with dropout 0.3."""
    return SplitModel(Split(efficientnet_b1(weights=None).features, nn.Sequential(
        nn.Linear(1280, 512), nn.ReLU(inplace=True), nn.Dropout(0.3), nn.Linear(512, num_classes))))


def resnet50_head(num_classes: int) -> SplitModel:
    """ResNet-50 up to layer4, head 2048-1024-BN-512-BN-K with dropout 0.3."""
    return SplitModel(Split(resnet_trunk(resnet50(weights=None)), nn.Sequential(
        nn.Linear(2048, 1024), nn.BatchNorm1d(1024), nn.ReLU(inplace=True), nn.Dropout(0.3),
        nn.Linear(1024, 512), nn.BatchNorm1d(512), nn.ReLU(inplace=True), nn.Dropout(0.3),
        nn.Linear(512, num_classes))))
