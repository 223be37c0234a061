"""One image file, decoded whole or not at all.

`cv2.imread` decodes a truncated JPEG as far as the data goes and returns the partial image (grey below
the cut) with only a line on libjpeg's stderr, and what `cv2.imdecode` does with one differs between
OpenCV versions. A frame of which half is missing must not be classified, so the file's structure is
checked first: a JPEG must reach its end-of-image marker after the scan data, a PNG its IEND chunk
(OpenCV's decoders refuse the other formats' truncation and libpng the PNG CRC errors themselves).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_EOI, _SOS = b"\xff\xd9", 0xDA
_STANDALONE = {0x01, *range(0xD0, 0xD8)}  # TEM and RSTn carry no length


class ImageFileError(ValueError):
    """The file cannot be read or is incomplete or undecodable; the message says which."""


def incomplete(data: bytes) -> str | None:
    """Why a JPEG or PNG file is cut short, or None when it is whole (or another format)."""
    if data[:2] == b"\xff\xd8":
        return _jpeg(data)
    if data.startswith(PNG_SIGNATURE):
        return _png(data)
    return None


def _jpeg(data: bytes) -> str | None:
    """Walk the marker segments to the first scan; the entropy-coded data after it cannot hold FF D9 (byte
    stuffing), so the end-of-image marker must follow it."""
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return f"corrupt JPEG (no marker at byte {pos})"
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
        elif marker in _STANDALONE:
            pos += 2
        elif marker == _SOS:
            length = int.from_bytes(data[pos + 2:pos + 4], "big")
            return None if data.find(_EOI, pos + 2 + length) >= 0 else "truncated JPEG (no end-of-image marker)"
        else:
            pos += 2 + int.from_bytes(data[pos + 2:pos + 4], "big")
    return "truncated JPEG (ends before its image data)"


def _png(data: bytes) -> str | None:
    pos = len(PNG_SIGNATURE)
    while pos + 12 <= len(data):  # length, type, data, CRC
        end = pos + 12 + int.from_bytes(data[pos:pos + 4], "big")
        if end > len(data):
            break
        if data[pos + 4:pos + 8] == b"IEND":
            return None
        pos = end
    return "truncated PNG (no IEND chunk)"


def read_rgb(path: Path | str) -> np.ndarray:
    """The image at `path` as RGB uint8 (H, W, 3); ImageFileError if it is unreadable, cut short or undecodable."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise ImageFileError(f"{path}: {e.strerror or e}") from e
    why = "empty file" if not data else incomplete(data)
    if why:
        raise ImageFileError(f"{path}: {why}")
    try:
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error:
        bgr = None
    if bgr is None:
        raise ImageFileError(f"{path}: OpenCV cannot decode it (damaged or not an image)")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
