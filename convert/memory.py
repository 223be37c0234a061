"""Peak memory of the conversion, for its summary (the bar: <= 3 GB at 224 px with 512 calibration images)."""

from __future__ import annotations

import resource
import sys


def peak_rss_mb() -> dict[str, float]:
    """Peak resident set size so far, in MB: of this process (onnxruntime, onnx2tf and TensorFlow all run in
    it) and of the largest child process that has ended (0 if none). ru_maxrss is KiB on Linux, bytes on macOS."""
    unit = 1 if sys.platform == "darwin" else 1024
    return {who: round(resource.getrusage(what).ru_maxrss * unit / 1e6, 1)
            for who, what in (("self", resource.RUSAGE_SELF), ("children", resource.RUSAGE_CHILDREN))}
