"""One image file, decoded whole or not at all, and only if decoding it is affordable.

`cv2.imread` decodes a truncated JPEG as far as the data goes and returns the partial image (grey below
the cut) with only a line on libjpeg's stderr, and what `cv2.imdecode` does with one differs between
OpenCV versions. A frame of which half is missing must not be classified, so the file's structure is
checked first: a JPEG must reach its end-of-image marker after the scan data, a PNG its IEND chunk
(OpenCV's decoders refuse the other formats' truncation and libpng the PNG CRC errors themselves).

Before anything is read, the file's size is checked (a 2 GB sparse `.jpg` is not read whole), and before
anything is decoded, its width and height are read from its header (a 2.6 MB PNG can claim 30000x30000 pixels,
2.7 GB once decoded): both against `ImageLimits`, whose defaults are well above any camera's frame. Formats
whose header this module cannot read are refused rather than decoded blind.

This is the one reader of image files for training, conversion, `run` on a folder and `val`, so all four see the
same pixels, as a viewer shows them. Pillow decodes (the same pixels as OpenCV for 8-bit RGB files; it also reads
the EXIF orientation of any format, palette transparency and 16-bit grayscale): EXIF orientation is applied,
grayscale is repeated into three channels, 16-bit samples are scaled (v * 255 / 65535, not clipped), and
transparency is composited on BACKGROUND, a neutral mid grey. Without that, hidden pixels become whatever colour
the exporting program left under them (black in one package, white in another) and the model classifies that
instead of a neutral field. `Decoded.converted` says what was done, for the count callers report once.
"""

from __future__ import annotations

import io
import os
import stat
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_EOI, _SOS = b"\xff\xd9", 0xDA
_STANDALONE = {0x01, *range(0xD0, 0xD8)}  # TEM and RSTn carry no length
_SOF = set(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # start-of-frame markers (not DHT, JPG, DAC)
FORMATS = "PNG, JPEG, BMP, TIFF or WebP"
BACKGROUND = (128, 128, 128)  # RGB under transparent pixels: neutral mid grey
TRANSPARENT, SIXTEEN_BIT, GRAYSCALE = "transparent", "16-bit", "grayscale"  # conversions counted and reported
_ALPHA_MODES = ("RGBA", "LA", "PA", "La", "RGBa")
_SIXTEEN_BIT_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N")


@dataclass(frozen=True)
class ImageLimits:
    """What one image may cost, checked before it is read (bytes) and before it is decoded (pixels)."""

    max_pixels: int = 100_000_000  # 100 MP: above a 64 MP phone sensor or a 61 MP full-frame camera
    max_bytes: int = 256 * 2**20  # an uncompressed 8-bit TIFF of 85 MP fits


DEFAULT_LIMITS = ImageLimits()


class ImageFileError(ValueError):
    """The file cannot be read or is incomplete, undecodable or too large; the message says which (`reason`:
    without the path)."""

    def __init__(self, path: Path | str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = Path(path), reason


def incomplete(data: bytes) -> str | None:
    """Why a JPEG or PNG file is cut short, or None when it is whole (or another format)."""
    if data[:2] == b"\xff\xd8":
        return _jpeg(data)
    if data.startswith(PNG_SIGNATURE):
        return _png(data)
    return None


def _segments(data: bytes) -> Iterator[tuple[int, int]]:
    """(position, marker) of each JPEG marker segment up to and including the first scan (SOS); raises
    ValueError at a byte that is not a marker."""
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            raise ValueError(f"corrupt JPEG (no marker at byte {pos})")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        yield pos, marker
        if marker == _SOS:
            return
        pos += 2 if marker in _STANDALONE else 2 + int.from_bytes(data[pos + 2:pos + 4], "big")


def _jpeg(data: bytes) -> str | None:
    """Walk the marker segments to the first scan; the entropy-coded data after it cannot hold FF D9 (byte
    stuffing), so the end-of-image marker must follow it."""
    try:
        for pos, marker in _segments(data):
            if marker == _SOS:
                length = int.from_bytes(data[pos + 2:pos + 4], "big")
                return None if data.find(_EOI, pos + 2 + length) >= 0 else "truncated JPEG (no end-of-image marker)"
    except ValueError as e:
        return str(e)
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


def dimensions(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the header of a PNG, JPEG, BMP, TIFF or WebP file; None if it is none of them or its
    header cannot be read."""
    try:
        if data.startswith(PNG_SIGNATURE) and data[12:16] == b"IHDR":
            return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
        if data[:2] == b"\xff\xd8":
            return next(((int.from_bytes(data[pos + 7:pos + 9], "big"), int.from_bytes(data[pos + 5:pos + 7], "big"))
                         for pos, marker in _segments(data) if marker in _SOF and pos + 9 <= len(data)), None)
        if data[:2] == b"BM" and len(data) >= 26:
            return (abs(int.from_bytes(data[18:22], "little", signed=True)),
                    abs(int.from_bytes(data[22:26], "little", signed=True)))
        if data[:4] in (b"II*\0", b"MM\0*"):
            return _tiff(data)
        if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            return _webp(data)
    except ValueError:
        return None
    return None


def _tiff(data: bytes) -> tuple[int, int] | None:
    """ImageWidth (256) and ImageLength (257) of the first IFD (classic TIFF; OpenCV decodes the first page)."""
    order = "little" if data[:2] == b"II" else "big"

    def u(at: int, n: int) -> int:
        if at + n > len(data):
            raise ValueError("TIFF header cut short")
        return int.from_bytes(data[at:at + n], order)

    ifd = u(4, 4)
    found = {}
    for i in range(u(ifd, 2)):
        entry = ifd + 2 + 12 * i
        tag, kind = u(entry, 2), u(entry + 2, 2)
        if tag in (256, 257):
            found[tag] = u(entry + 8, 2) if kind == 3 else u(entry + 8, 4)
    return (found[256], found[257]) if len(found) == 2 else None


def _webp(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8 " and len(data) >= 30:
        return int.from_bytes(data[26:28], "little") & 0x3FFF, int.from_bytes(data[28:30], "little") & 0x3FFF
    if chunk == b"VP8L" and len(data) >= 25:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X" and len(data) >= 30:
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    return None


def _read_bounded(path: Path, limits: ImageLimits) -> bytes:
    """The file's bytes, if it is a regular file no larger than the limit (never blocks on a FIFO)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise ImageFileError(path, e.strerror or str(e)) from e
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ImageFileError(path, "not a regular file")
        if st.st_size > limits.max_bytes:
            raise ImageFileError(path, f"{_num(st.st_size / 2**20)} MB, more than the {_num(limits.max_bytes / 2**20)} "
                                 "MB an image may be (source.max_image_megabytes)")
        try:
            return f.read(limits.max_bytes)
        except OSError as e:
            raise ImageFileError(path, e.strerror or str(e)) from e


@dataclass(frozen=True)
class Decoded:
    rgb: np.ndarray  # (H, W, 3) uint8 RGB
    converted: tuple[str, ...]  # what was done beyond decoding: TRANSPARENT, SIXTEEN_BIT, GRAYSCALE


def to_rgb8(im: Image.Image) -> Decoded:
    """Any Pillow image -> 8-bit RGB, with what it took: transparency composited on BACKGROUND, 16-bit scaled,
    grayscale repeated."""
    if im.mode in _SIXTEEN_BIT_MODES:
        gray = np.clip(np.rint(np.asarray(im).astype(np.float64) * (255 / 65535)), 0, 255).astype(np.uint8)
        return Decoded(np.repeat(gray[..., None], 3, axis=2), (SIXTEEN_BIT, GRAYSCALE))
    if im.mode == "F":
        raise ValueError("floating-point pixels (mode F) are not supported")
    gray = (GRAYSCALE,) if im.mode in ("1", "L", "LA", "La") else ()
    if im.mode in _ALPHA_MODES or (im.mode in ("P", "L", "RGB") and "transparency" in im.info):
        rgba = np.asarray(im.convert("RGBA")).astype(np.uint32)
        alpha = rgba[..., 3:]
        if alpha.min() < 255:
            bg = np.asarray(BACKGROUND, np.uint32)
            rgb = (rgba[..., :3] * alpha + bg * (255 - alpha) + 127) // 255
            return Decoded(rgb.astype(np.uint8), (TRANSPARENT, *gray))
        return Decoded(rgba[..., :3].astype(np.uint8), gray)
    return Decoded(np.asarray(im.convert("RGB")), gray)


def decode(path: Path | str, limits: ImageLimits = DEFAULT_LIMITS) -> Decoded:
    """The image at `path` as a viewer shows it (see the module docstring); ImageFileError if it is unreadable,
    cut short, undecodable or beyond `limits`."""
    data = _read_bounded(Path(path), limits)
    why = "empty file" if not data else incomplete(data)
    if why:
        raise ImageFileError(path, why)
    size = dimensions(data)
    if size is None:
        raise ImageFileError(path, f"not a {FORMATS} image that can be read (by its header)")
    width, height = size
    if width * height > limits.max_pixels:
        raise ImageFileError(path, f"{width}x{height} pixels ({_num(width * height / 1e6)} MP), more than the "
                                   f"{_num(limits.max_pixels / 1e6)} MP an image may have (source.max_image_megapixels)")
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()  # Pillow's LOAD_TRUNCATED_IMAGES stays False: a cut file fails here
            out = to_rgb8(ImageOps.exif_transpose(im))
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as e:
        raise ImageFileError(path, f"cannot decode it ({type(e).__name__}: {e})") from e
    return Decoded(np.ascontiguousarray(out.rgb), out.converted)


def opencv_name(path: Path | str) -> str:
    """The file name to hand OpenCV, which takes UTF-8 names only: a name that is not (Linux allows any bytes)
    crashes its Python binding, so it is a ValueError here instead."""
    text = str(path)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        shown = text.encode("utf-8", "backslashreplace").decode("ascii", "replace")[:200]
        raise ValueError(f"{shown}: the name is not valid UTF-8, which OpenCV cannot open; rename it") from None
    return text


def read_rgb(path: Path | str, limits: ImageLimits = DEFAULT_LIMITS) -> np.ndarray:
    """The image at `path` as RGB uint8 (H, W, 3); ImageFileError if it is unreadable, cut short, undecodable or
    beyond `limits`."""
    return decode(path, limits).rgb


def conversions_text(counts: Counter) -> str | None:
    """'12 image(s) converted on reading: 10 transparent (composited on grey 128,128,128), 2 16-bit', or None."""
    if not counts:
        return None
    parts = [f"{counts[k]} {k}" + (f" (composited on grey {','.join(map(str, BACKGROUND))})" if k == TRANSPARENT
                                   else "") for k in (TRANSPARENT, SIXTEEN_BIT, GRAYSCALE) if counts[k]]
    return f"{counts['images']} image(s) converted on reading: {', '.join(parts)}"


def count(counts: Counter, decoded: Decoded) -> None:
    """Add one decoded image's conversions to `counts` (for conversions_text)."""
    if decoded.converted:
        counts["images"] += 1
        counts.update(decoded.converted)


def _num(x: float) -> str:
    return f"{x:.0f}" if x >= 10 else f"{x:.2g}"
