"""torch -> ONNX with the deployment contract of DESIGN.md.

The exported graph takes the camera's own pixels (uint8 RGB, N×3×H×W), normalises them as its first ops,
and returns `logits` [1, K] and `features` [1, C, h, w] — the map the network global-average-pools before
its head. The head itself is also written as numpy arrays (`head.npz`), so the board can run Grad-CAM
from the int8 model's `features` output without autograd.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from convert.zoo import Split

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INPUT_NAME = "input"
OUTPUT_NAMES = ("logits", "features")
OPSET = 17


class FeatureTap(nn.Module):
    """uint8 RGB NCHW -> (logits, features): normalisation inside, the feature map tapped before GAP."""

    def __init__(self, split: Split, mean=IMAGENET_MEAN, std=IMAGENET_STD):
        super().__init__()
        self.features = split.features
        self.head = split.head
        std_t = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
        mean_t = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        # x/255 then (x - mean)/std, folded into one multiply-add.
        self.register_buffer("scale", 1.0 / (255.0 * std_t))
        self.register_buffer("shift", -mean_t / std_t)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a = self.features(x.float() * self.scale + self.shift)
        logits = self.head(torch.flatten(F.adaptive_avg_pool2d(a, 1), 1))
        return logits, a


def export_onnx(tap: FeatureTap, size: tuple[int, int], path: Path) -> Path:
    """Static-shape ONNX export (opset 17), simplified with onnxslim, checked with onnx.checker."""
    tap = tap.eval()
    dummy = torch.zeros(1, 3, *size, dtype=torch.uint8)
    path = Path(path)
    with torch.no_grad():
        torch.onnx.export(
            tap,
            (dummy,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            opset_version=OPSET,
            dynamo=False,
        )
    import onnxslim

    model = onnxslim.slim(onnx.load(str(path)))
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def head_arrays(head: nn.Sequential) -> dict[str, np.ndarray]:
    """The head as numpy arrays for edge/gradcam.py: `layers` (kinds) and `w{i}`/`b{i}` per layer.

    BatchNorm1d is folded into the Linear right before it; a BatchNorm1d with no Linear before it becomes an
    `affine` layer (w = per-feature scale). Dropout and Identity vanish (eval mode).
    """
    layers: list[list] = []  # [kind, w, b]
    acts = {nn.ReLU: "relu", nn.ReLU6: "relu6", nn.SiLU: "silu", nn.Hardswish: "hardswish"}
    for m in _flat(head):
        if isinstance(m, nn.Linear):
            b = m.bias if m.bias is not None else torch.zeros(m.out_features)
            layers.append(["linear", m.weight.detach().double(), b.detach().double()])
        elif isinstance(m, nn.BatchNorm1d):
            scale = m.weight.detach().double() / torch.sqrt(m.running_var.double() + m.eps)
            shift = m.bias.detach().double() - m.running_mean.double() * scale
            if layers and layers[-1][0] == "linear":
                layers[-1][1] = layers[-1][1] * scale[:, None]
                layers[-1][2] = layers[-1][2] * scale + shift
            else:
                layers.append(["affine", scale, shift])
        elif type(m) in acts:
            layers.append([acts[type(m)], None, None])
        elif isinstance(m, (nn.Dropout, nn.Identity, nn.Flatten)):
            continue
        else:
            raise ValueError(f"head layer {type(m).__name__} is not supported for board Grad-CAM")
    out: dict[str, np.ndarray] = {"layers": np.array([k for k, _, _ in layers])}
    for i, (_, w, b) in enumerate(layers):
        if w is not None:
            out[f"w{i}"] = w.numpy().astype(np.float32)
            out[f"b{i}"] = b.numpy().astype(np.float32)
    return out


def _flat(seq: nn.Module):
    """Leaf modules of nested Sequentials, in order."""
    for m in seq.children():
        if isinstance(m, nn.Sequential):
            yield from _flat(m)
        else:
            yield m
