"""torch -> ONNX with the deployment contract of DESIGN.md.

The exported graph takes the camera's own pixels (uint8 RGB, N×3×H×W), normalises them as its first ops
(the model's own mean/std, and a reorder to BGR for a model trained on BGR), and returns `logits` [1, K] and `features` [1, C, h, w] — the map the network global-average-pools before
its head. The head itself is also written as numpy arrays (`head.npz`), so the board can run Grad-CAM
from the int8 model's `features` output without autograd.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
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
CHANNEL_ORDERS = ("RGB", "BGR")


@dataclass(frozen=True)
class Preprocessing:
    """What the network was trained on: (x/255 - mean) / std per channel, channels in `channel_order`.

    mean and std are in 0..1 units (of x/255, as torchvision's Normalize) and listed in the model's own
    channel order. The graph always takes the camera's RGB; for a BGR model it reorders the channels itself.
    """

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    channel_order: str = "RGB"
    preset: str | None = None

    def manifest(self) -> dict:
        return {"preset": self.preset, "mean": list(self.mean), "std": list(self.std), "units": "0-1 (x/255)",
                "channel_order": self.channel_order, "where": "inside the graph (its input is RGB)",
                "formula": self.describe()}

    def describe(self) -> str:
        """One line in 0..255 pixel units, e.g. 'lite: (x - 127,127,127) / 128,128,128 on RGB pixels'."""
        m, s = (",".join(f"{v * 255:.4g}" for v in t) for t in (self.mean, self.std))
        return f"{self.preset or 'custom'}: (x - {m}) / {s} on {self.channel_order} pixels"


PRESETS = {
    # torchvision and most PyTorch ImageNet models
    "imagenet": Preprocessing(IMAGENET_MEAN, IMAGENET_STD, "RGB", "imagenet"),
    # (x - 127.5) / 127.5: Inception, Keras/TF "tf" mode, MobileNet from TF-Slim
    "inception": Preprocessing((0.5,) * 3, (0.5,) * 3, "RGB", "inception"),
    # (x - 127) / 128: EfficientNet-Lite and the TFLite model zoo's float models
    "lite": Preprocessing((127 / 255,) * 3, (128 / 255,) * 3, "RGB", "lite"),
    # x / 255
    "raw": Preprocessing((0.0,) * 3, (1.0,) * 3, "RGB", "raw"),
    # x - mean in BGR pixels, no scaling: Caffe and Keras "caffe" mode (VGG, ResNet50 from Keras)
    "caffe": Preprocessing((103.939 / 255, 116.779 / 255, 123.68 / 255), (1 / 255,) * 3, "BGR", "caffe"),
}


def _per_channel(flag: str, values: Sequence[float], divide: float) -> tuple[float, float, float]:
    if len(values) not in (1, 3):
        raise ValueError(f"{flag}: expected 1 or 3 values (one per channel), got {len(values)}")
    return tuple(float(v) / divide for v in (values if len(values) == 3 else list(values) * 3))


def preprocessing(preset: str | None = None, mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                  channel_order: str | None = None, pixel_units: bool = False) -> Preprocessing:
    """A preset (default imagenet), with mean/std/channel order overriding it where given. mean/std are in
    0..1 units unless `pixel_units` (0..255, e.g. mean 127 std 128). ValueError in one line when wrong."""
    if preset is not None and preset not in PRESETS:
        raise ValueError(f"--preprocess {preset!r}: expected one of {', '.join(PRESETS)}")
    base = PRESETS[preset or "imagenet"]
    divide = 255.0 if pixel_units else 1.0
    m = base.mean if mean is None else _per_channel("--mean", mean, divide)
    s = base.std if std is None else _per_channel("--std", std, divide)
    if not pixel_units and mean is not None and max(m) > 1:
        raise ValueError(f"--mean {' '.join(f'{v:g}' for v in mean)}: above 1, but mean/std are in 0..1 units "
                         "(of x/255) unless --pixel-units is given")
    if min(s) <= 0:
        raise ValueError(f"--std: every value must be positive, got {' '.join(f'{v:g}' for v in std or s)}")
    order = (channel_order or base.channel_order).upper()
    if order not in CHANNEL_ORDERS:
        raise ValueError(f"--channel-order {channel_order!r}: expected RGB or BGR")
    named = next((k for k, p in PRESETS.items() if (p.mean, p.std, p.channel_order) == (m, s, order)), None)
    return Preprocessing(m, s, order, named)


class FeatureTap(nn.Module):
    """uint8 RGB NCHW -> (logits, features): normalisation inside, the feature map tapped before GAP."""

    def __init__(self, split: Split, pre: Preprocessing = PRESETS["imagenet"]):
        super().__init__()
        self.features = split.features
        self.head = split.head
        # In RGB order: the graph's input. (x/255 - mean)/std folded into one multiply-add.
        flip = pre.channel_order == "BGR"
        std_t = torch.tensor(pre.std[::-1] if flip else pre.std, dtype=torch.float32).view(1, 3, 1, 1)
        mean_t = torch.tensor(pre.mean[::-1] if flip else pre.mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.register_buffer("scale", 1.0 / (255.0 * std_t))
        self.register_buffer("shift", -mean_t / std_t)
        self.bgr = flip

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.float() * self.scale + self.shift
        if self.bgr:  # after the multiply-add, so quantize.input_normalisation_nodes still finds it
            x = x[:, [2, 1, 0]]  # a Gather: onnx2tf 1.28 mistranslates torch.flip's negative-step Slice
        a = self.features(x)
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
