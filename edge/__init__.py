"""skinedge board runtime: numpy, OpenCV, PyYAML and one inference runtime; never torch or tensorflow."""

import os

__version__ = "0.1.0"

# ONNX Runtime (1.32 on Linux) ships Microsoft's 1DS telemetry, on by default (off only where it sees a CI system's
# variables, CI, GITHUB_ACTIONS and the like, which a board never has): it keeps an event store under
# ~/.cache/Microsoft and, from threads of its own on timers of the host's clock, compresses events and tries to
# upload them to mobile.events.data.microsoft.com (DNS look-ups even offline). A medical device that promises to
# work offline sends nothing, and that background work landed in measured inferences at random
# (benchmarks/README.md, ARM cost, "Repeat runs"). It reads this when onnxruntime is imported, so it is set here,
# before any edge module can import it; a user who wants telemetry sets it to 0 themselves.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
