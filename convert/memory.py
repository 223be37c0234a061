"""Peak memory of the conversion, for its summary (the bar: <= 3 GB at 224 px with 512 calibration images)."""

from __future__ import annotations

import resource
import sys

from edge.memory import peak_rss_kib


def peak_rss_mb() -> dict[str, float]:
    """Peak resident set size so far, in MB: of this process (onnxruntime, onnx2tf and TensorFlow all run in
    it), of the largest child process that has ended (0 if none; e.g. the AdaRound worker), and `peak`, the larger
    of the two: what /usr/bin/time reports for the whole run (its wait4 figure takes the largest of the process and
    its waited-for descendants). ru_maxrss is KiB on Linux, bytes on macOS."""
    unit = 1 if sys.platform == "darwin" else 1024
    own = round(peak_rss_kib() * 1024 / 1e6, 1)
    children = round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * unit / 1e6, 1)
    return {"self": own, "children": children, "peak": max(own, children)}
