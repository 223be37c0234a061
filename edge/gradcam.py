"""Grad-CAM on the board, from the model's `features` output and its head in numpy.

With y = head(GAP(A)), dy_c/dA_k(i,j) = (1/hw) * dhead_c/dp_k at p = mean_ij(A), so the Grad-CAM channel
weights (the spatial mean of the gradient) are the head's gradient at the pooled features divided by hw.
The head is a handful of dense layers (stored in head.npz, BatchNorm folded), so running it forward and
back here costs microseconds and needs no autograd and no second model. On a float model this is exact
Grad-CAM; on an int8 model it is Grad-CAM of the int8 model's own feature map.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edge.trust.npzfile import NpzError, load_npz

ACTIVATIONS = ("relu", "relu6", "silu", "hardswish")


@dataclass(frozen=True)
class Head:
    """Dense layers after global average pooling: (kind, weight, bias) in float64, converted once at load (per
    frame, converting a 1024x2048 layer cost more than the whole matrix-vector product); weight is None for
    activations."""

    layers: tuple[tuple[str, np.ndarray | None, np.ndarray | None], ...]

    @property
    def in_features(self) -> int:
        kind, w, _ = next(layer for layer in self.layers if layer[1] is not None)
        return w.shape[1] if kind == "linear" else w.shape[0]


def load_head(path: Path | str) -> Head:
    """Read head.npz with shape checks that name the file."""
    path = Path(path)
    try:
        data = load_npz(path)  # headers checked against the file before anything is allocated
    except NpzError as e:
        raise ValueError(f"not a valid head file: {e}") from None
    try:
        return head_from_arrays(data)
    except (KeyError, ValueError) as e:
        raise ValueError(f"{path}: not a valid head file: {str(e)[:200]}") from None


def head_from_arrays(data: dict[str, np.ndarray]) -> Head:
    """`layers` (kinds) and `w{i}`/`b{i}` arrays -> Head, checking that consecutive shapes chain."""
    layers = []
    for i, kind in enumerate(str(k) for k in data["layers"]):
        if kind in ("linear", "affine"):
            layers.append((kind, data[f"w{i}"].astype(np.float64), data[f"b{i}"].astype(np.float64)))
        elif kind in ACTIVATIONS:
            layers.append((kind, None, None))
        else:
            raise ValueError(f"layer {i} has unknown kind {kind!r}")
    width = None
    for i, (kind, w, b) in enumerate(layers):
        if w is None:
            continue
        n_in, n_out = (w.shape[1], w.shape[0]) if kind == "linear" else (w.shape[0], w.shape[0])
        if (width is not None and n_in != width) or b.shape != (n_out,):
            raise ValueError(f"layer {i} ({kind}) has inconsistent shapes {w.shape}, {b.shape}")
        width = n_out
    if width is None:
        raise ValueError("the head has no linear layer")
    return Head(tuple(layers))


def _act(kind: str, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Activation value and its derivative, with PyTorch's conventions at the kinks."""
    if kind == "relu":
        return np.maximum(x, 0), (x > 0).astype(x.dtype)
    if kind == "relu6":
        return np.clip(x, 0, 6), ((x > 0) & (x < 6)).astype(x.dtype)
    if kind == "silu":
        s = 1.0 / (1.0 + np.exp(-x))
        return x * s, s * (1 + x * (1 - s))
    if kind == "hardswish":
        y = x * np.clip(x + 3, 0, 6) / 6
        d = np.where(x < -3, 0.0, np.where(x <= 3, x / 3 + 0.5, 1.0)).astype(x.dtype)
        return y, d
    raise ValueError(f"unknown activation {kind!r}")


def head_logits_and_grad(head: Head, pooled: np.ndarray, target: int | None = None) -> tuple[np.ndarray, np.ndarray, int]:
    """Run the head on `pooled` (C,), return (logits, d logit_target / d pooled, target); target defaults to argmax."""
    x = pooled.astype(np.float64)
    derivs: list[np.ndarray | None] = []
    for kind, w, b in head.layers:
        if kind == "linear":
            x = w @ x + b
            derivs.append(None)
        elif kind == "affine":
            x = w * x + b
            derivs.append(None)
        else:
            x, d = _act(kind, x)
            derivs.append(d)
    logits = x
    target = int(np.argmax(logits)) if target is None else int(target)
    g = np.zeros_like(logits)
    g[target] = 1.0
    for (kind, w, _), d in zip(reversed(head.layers), reversed(derivs)):
        if kind == "linear":
            g = w.T @ g
        elif kind == "affine":
            g = w * g
        else:
            g = g * d
    return logits.astype(np.float32), g.astype(np.float32), target


def gradcam(features: np.ndarray, head: Head, target: int | None = None) -> tuple[np.ndarray, int]:
    """Grad-CAM map (h, w), >= 0, unnormalised, for `target` (default: the head's top class) from features (C, h, w)."""
    c, h, w = features.shape
    if c != head.in_features:
        raise ValueError(f"features have {c} channels but the head expects {head.in_features}")
    _, grad, target = head_logits_and_grad(head, features.mean(axis=(1, 2)), target)
    weights = grad / (h * w)
    cam = np.tensordot(weights, features.astype(np.float32), axes=1)
    return np.maximum(cam, 0), target


def normalise(cam: np.ndarray) -> np.ndarray:
    """Min-max scale to [0, 1] (pytorch-grad-cam's convention); an all-flat map becomes zeros."""
    lo, hi = float(cam.min()), float(cam.max())
    return (cam - lo) / (hi - lo) if hi > lo else np.zeros_like(cam, dtype=np.float32)


def combine(cams: list[np.ndarray], weights: list[float]) -> np.ndarray:
    """Ensemble Grad-CAM: each member's normalised map resized to the finest grid, averaged with the ensemble weights."""
    h = max(c.shape[0] for c in cams)
    w = max(c.shape[1] for c in cams)
    out = np.zeros((h, w), np.float32)
    for cam, wt in zip(cams, weights):
        m = normalise(cam).astype(np.float32)
        if m.shape != (h, w):
            m = cv2.resize(m, (w, h), interpolation=cv2.INTER_LINEAR)
        out += wt * m
    return out / float(sum(weights))
