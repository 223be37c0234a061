"""skinedge board runtime: numpy, OpenCV, PyYAML and one inference runtime; never torch or tensorflow."""

__version__ = "0.1.0"
