"""Peak memory of the conversion, for its summary (the bar: <= 3 GB at 224 px with 512 calibration images)."""

from __future__ import annotations

import resource
import sys
from pathlib import Path


def _vm_hwm_mb() -> float | None:
    """Linux's VmHWM: the peak RSS of this process image only. ru_maxrss survives execve, so a process started
    (fork + exec) from a large parent reports the parent's RSS as its own peak; VmHWM does not."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) * 1024 / 1e6, 1)
    except OSError:
        pass
    return None


def peak_rss_mb() -> dict[str, float]:
    """Peak resident set size so far, in MB: of this process (onnxruntime, onnx2tf and TensorFlow all run in
    it), of the largest child process that has ended (0 if none; e.g. the AdaRound worker), and `peak`, the larger
    of the two: what /usr/bin/time reports for the whole run (its wait4 figure takes the largest of the process and
    its waited-for descendants). ru_maxrss is KiB on Linux, bytes on macOS."""
    unit = 1 if sys.platform == "darwin" else 1024
    own = _vm_hwm_mb()
    own = own if own is not None else round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * unit / 1e6, 1)
    children = round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * unit / 1e6, 1)
    return {"self": own, "children": children, "peak": max(own, children)}
