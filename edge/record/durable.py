"""Files that survive a power cut: written to a temp name, fsynced, then renamed or linked into place, and the
directory fsynced. Shared by the capture store (images) and the device key."""

from __future__ import annotations

import os
from pathlib import Path

TMP_PREFIX = ".tmp-"


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_temp(tmp: Path, data: bytes, mode: int) -> None:
    """A new file `tmp` holding `data`, fsynced, mode `mode` whatever the umask; removed again on error."""
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, mode)
    try:
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)


def write_durable(path: Path, data: bytes) -> None:
    """Replace `path` with `data` (0600) via a temp file beside it; the caller fsyncs the directory."""
    tmp = path.with_name(f"{TMP_PREFIX}{path.name}")
    _write_temp(tmp, data, 0o600)
    os.replace(tmp, path)


def write_new(path: Path, data: bytes, mode: int) -> bool:
    """Create `path` holding `data` only if it does not exist, atomically and durably; False if it existed
    (another process made it first): link(2) never replaces a file."""
    tmp = path.with_name(f"{TMP_PREFIX}{path.name}.{os.getpid()}")
    tmp.unlink(missing_ok=True)  # left by a crash of a process that had this pid
    _write_temp(tmp, data, mode)
    try:
        os.link(tmp, path)
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)
    return True
