"""Where results go, checked before the work that produces them: a record, a report or a video written at the end
of a long run must not be lost to a missing folder or a read-only place found only then."""

from __future__ import annotations

import os
import stat
from pathlib import Path


class OutputError(ValueError):
    """One line: which output, which path, why it cannot be written."""


def probe(path: Path | str, what: str) -> Path:
    """Check that `path` can be written now, by creating it (removed again) or opening the existing file for append
    (left as it is); OutputError naming `what` otherwise. Never follows into a device, FIFO or directory."""
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        st = None
    except OSError as e:
        raise OutputError(f"{what} {path}: {e.strerror or e}") from None
    if st is not None and not stat.S_ISREG(st.st_mode):
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file (a device, FIFO or socket)"
        raise OutputError(f"{what} {path}: is {kind}; give a file name")
    if not path.parent.is_dir():
        raise OutputError(f"{what} {path}: folder {path.parent} does not exist")
    flags = os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW | (os.O_APPEND if st is not None else os.O_CREAT | os.O_EXCL)
    try:
        os.close(os.open(path, flags, 0o644))
    except OSError as e:
        raise OutputError(f"{what} {path}: cannot be written ({e.strerror or e})") from None
    if st is None:
        path.unlink()
    return path
