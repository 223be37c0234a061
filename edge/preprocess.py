"""The one preprocessing function: camera frame -> model input.

The board, the calibration set and the validation set all pass through `to_model_input`, so what the
model saw when it was calibrated and validated is bit-for-bit what it sees on the board. Scaling and
mean/std normalisation are inside the exported graph; here we only centre-crop to the model's aspect,
resize and lay the pixels out. INTER_LINEAR_EXACT is used because it gives identical pixels on x86
and ARM (NEON), unlike INTER_LINEAR/INTER_AREA.
"""

from __future__ import annotations

import cv2
import numpy as np


def _as_size(size: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    """(height, width) from an int or a pair."""
    if isinstance(size, int):
        return size, size
    h, w = (int(v) for v in size)
    return h, w


def centre_crop(rgb: np.ndarray, aspect: float) -> np.ndarray:
    """Largest centred crop of `rgb` whose width/height equals `aspect`."""
    h, w = rgb.shape[:2]
    if w > h * aspect:
        cw = max(1, round(h * aspect))
        x0 = (w - cw) // 2
        return rgb[:, x0 : x0 + cw]
    ch = max(1, round(w / aspect))
    y0 = (h - ch) // 2
    return rgb[y0 : y0 + ch]


def to_model_input(rgb: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Frame (H, W, 3) uint8 RGB -> (h, w, 3) uint8 RGB at the model's size.

    Centre-crops to the model's aspect ratio (lesions are framed in the middle of the view), then
    resizes with INTER_LINEAR_EXACT.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB frame, got shape {rgb.shape} dtype {rgb.dtype}")
    h, w = _as_size(size)
    crop = centre_crop(rgb, w / h)
    if crop.shape[:2] == (h, w):
        return np.ascontiguousarray(crop)
    return cv2.resize(crop, (w, h), interpolation=cv2.INTER_LINEAR_EXACT)


def to_layout(img: np.ndarray, layout: str) -> np.ndarray:
    """(h, w, 3) uint8 -> a batch of one in the backend's layout: 'NHWC' or 'NCHW', in a 64-byte aligned buffer.

    Why aligned: ONNX Runtime converts the input with a slower path at some addresses (8, 16, 32 bytes past a
    64-byte boundary: +137 k instructions, 0.5 % of the demo model's int8 inference on an emulated Cortex-A72),
    and where numpy put the array depended on unrelated allocations (benchmarks/README.md, ARM cost)."""
    if layout == "NHWC":
        return _aligned_copy(img[None])
    if layout == "NCHW":
        return _aligned_copy(img.transpose(2, 0, 1)[None])
    raise ValueError(f"unknown layout {layout!r}: expected 'NHWC' or 'NCHW'")


def _aligned_copy(a: np.ndarray, align: int = 64) -> np.ndarray:
    buf = np.empty(a.nbytes + align, np.uint8)
    start = -buf.ctypes.data % align
    out = buf[start:start + a.nbytes].view(a.dtype).reshape(a.shape)
    np.copyto(out, a)
    return out
