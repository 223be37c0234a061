"""Peak resident memory of this process image, for bench's and the converter's reports."""

from __future__ import annotations

import resource
import sys
from pathlib import Path


def peak_rss_kib() -> int:
    """Linux's VmHWM: the peak RSS of this process image only. ru_maxrss survives execve, so a process started
    (fork + exec) from a large parent (bench's configuration children, a converter run from pytest) reports the
    parent's RSS as its own peak; VmHWM does not. ru_maxrss where there is no /proc (KiB on Linux, bytes on macOS)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss // 1024 if sys.platform == "darwin" else rss
