""".npz files from a bundle, read only after every array's header has been checked against the file.

np.load trusts the header: a zero-byte file raises EOFError, and a 100-byte .npy whose header declares a
(100000, 100000, 3) array makes numpy try to allocate it. Here each member's header is parsed first (no
allocation), its dtype must be plain numeric or text, and its declared size must equal the bytes the
member really holds, before a single array is read.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
from numpy.lib import format as npformat

MAX_BYTES = 256 << 20  # per file, uncompressed: heads, golden sets and gate statistics are far smaller


class NpzError(ValueError):
    """One line naming the file (and the array) that is not a sound .npz."""


def _header(f, size: int, where: str) -> tuple[tuple[int, ...], np.dtype]:
    try:
        version = npformat.read_magic(f)
        read = npformat.read_array_header_1_0 if version == (1, 0) else npformat.read_array_header_2_0
        shape, _, dtype = read(f, max_header_size=10000)
    except (ValueError, EOFError, OSError) as e:
        raise NpzError(f"{where}: not a .npy array ({str(e)[:120]})") from None
    if dtype.hasobject or dtype.kind not in "biufU":
        raise NpzError(f"{where}: dtype {dtype} is not a plain numeric or text array")
    if any(d < 0 for d in shape):
        raise NpzError(f"{where}: negative dimension in shape {shape}")
    declared = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if declared != size - f.tell():
        raise NpzError(f"{where}: header declares shape {shape} {dtype} ({declared} bytes) but the file holds "
                       f"{size - f.tell()} bytes of data")
    return shape, dtype


def load_npz(path: Path | str) -> dict[str, np.ndarray]:
    """All arrays of an .npz, after checking every header against the archive; NpzError otherwise."""
    path = Path(path)
    try:
        archive = zipfile.ZipFile(path)
    except FileNotFoundError:
        raise NpzError(f"{path}: missing") from None
    except (zipfile.BadZipFile, OSError) as e:
        raise NpzError(f"{path}: not an .npz archive ({e})") from None
    with archive:
        infos = archive.infolist()
        if sum(i.file_size for i in infos) > MAX_BYTES:
            raise NpzError(f"{path}: holds more than {MAX_BYTES >> 20} MiB of arrays")
        out = {}
        for info in infos:
            name = info.filename.removesuffix(".npy")
            where = f"{path}[{name[:60]}]"
            try:
                with archive.open(info) as f:
                    _header(f, info.file_size, where)
                with archive.open(info) as f:
                    out[name] = npformat.read_array(f, allow_pickle=False)
            except (zipfile.BadZipFile, EOFError, OSError, ValueError) as e:
                if isinstance(e, NpzError):
                    raise
                raise NpzError(f"{where}: unreadable ({str(e)[:120]})") from None
    return out
