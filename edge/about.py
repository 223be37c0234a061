"""What is installed: skinedge's version and the commit it was built from, and the versions of the runtimes
around it (`skinedge --version [-v]`, bench reports). Versions come from package metadata, so nothing is imported:
asking for torch's version never loads torch."""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path

import edge

COMMIT_FILE = Path(edge.__file__).parent / "COMMIT"  # written into the wheel by setup.py's build step
BOARD = ("numpy", "opencv-python-headless", "opencv-python", "onnxruntime", "ai-edge-litert", "tflite-runtime",
         "tensorrt", "PyYAML", "Pillow", "cryptography")
WORKSTATION = ("torch", "torchvision", "onnx", "tensorflow", "onnx2tf", "matplotlib")  # absent on a board
RUNTIMES = BOARD + WORKSTATION


def commit() -> str | None:
    """The git commit skinedge was built from: the checkout's (an editable or source install, '+dirty' with
    uncommitted changes), else the one recorded in the wheel, else None."""
    repo = Path(edge.__file__).resolve().parent.parent
    if (repo / ".git").exists():
        try:
            head = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                                  text=True, timeout=10, check=True).stdout.strip()
            dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                                   capture_output=True, text=True, timeout=10, check=True).stdout.strip()
            return head + ("+dirty" if dirty else "")
        except (OSError, subprocess.SubprocessError):
            pass
    try:
        return COMMIT_FILE.read_text().strip() or None
    except OSError:
        return None


def versions(names: tuple[str, ...] = RUNTIMES) -> dict[str, str]:
    """Installed distributions among `names` -> version (the missing ones left out), after Python's."""
    found = {"python": platform.python_version()}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def version_text(verbose: bool = False) -> str:
    """'skinedge 0.1.0 (commit 67b80e7a1b2c)', and with `verbose` one line per runtime."""
    line = f"skinedge {edge.__version__} (commit {commit() or 'unknown'})"
    if not verbose:
        return line
    rows = [f"  {k}: {v}" for k, v in versions().items()]
    return "\n".join([line, f"  platform: {platform.platform()} {platform.machine()}", *rows])
