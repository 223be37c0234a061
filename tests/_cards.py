"""Patient cards as a camera sees them: a QR code made by OpenCV's own encoder, or an EAN-13 barcode drawn by
python-barcode, printed on a white card held at a slight angle in front of the lesion, a little blurred and noisy."""

from __future__ import annotations

import io

import cv2
import numpy as np


def qr_code(text: str) -> np.ndarray:
    """The QR code of `text` as OpenCV's QRCodeEncoder makes it (grey, 1 pixel per module, no quiet zone)."""
    return cv2.QRCodeEncoder.create().encode(text)


def ean13(digits: str) -> np.ndarray:
    """The EAN-13 barcode of 12 (or 13) digits, rendered by python-barcode as a label printer would (grey)."""
    import barcode
    from barcode.writer import ImageWriter

    buf = io.BytesIO()
    barcode.get("ean13", digits, writer=ImageWriter()).write(
        buf, options={"module_width": 0.33, "module_height": 15, "quiet_zone": 6.5, "dpi": 300, "font_size": 8})
    return cv2.imdecode(np.frombuffer(buf.getvalue(), np.uint8), cv2.IMREAD_GRAYSCALE)


def on_card(code: np.ndarray, background: np.ndarray, width: int, angle: float = 6.0, seed: int = 0) -> np.ndarray:
    """`code` printed `width` pixels wide on a white card over `background` (RGB), turned by `angle` degrees,
    then blurred a little and given sensor noise: what the board's camera sees when the card is held up."""
    rng = np.random.default_rng(seed)
    scale = width / code.shape[1]
    interp = cv2.INTER_NEAREST if scale >= 1 else cv2.INTER_AREA
    printed = cv2.resize(code, (width, max(1, round(code.shape[0] * scale))), interpolation=interp)
    pad = max(12, width // 8)
    card = cv2.copyMakeBorder(printed, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=250)
    frame = background.copy()
    h, w = frame.shape[:2]
    ch, cw = card.shape
    rot = cv2.getRotationMatrix2D((cw / 2, ch / 2), angle, 1.0)
    rot[:, 2] += ((w - cw) / 2, (h - ch) / 2)
    warped = cv2.warpAffine(card, rot, (w, h), flags=cv2.INTER_LINEAR, borderValue=0)
    mask = cv2.warpAffine(np.full_like(card, 255), rot, (w, h), flags=cv2.INTER_NEAREST, borderValue=0) > 0
    frame[mask] = np.repeat(warped[mask][:, None], 3, axis=1)
    frame = cv2.GaussianBlur(frame, (3, 3), 0.8)
    return np.clip(frame.astype(np.int16) + rng.normal(0, 4, frame.shape).round().astype(np.int16), 0, 255).astype(np.uint8)
