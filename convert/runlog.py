"""A conversion's log: framework output to a file, skinedge's own lines to the terminal, one line on failure.

onnx2tf, TensorFlow, ONNX Runtime and LiteRT print from Python and from C++ (TensorSpec listings, XNNPACK
delegate lines, graph optimiser warnings): none of it tells a user anything, and a failure buried in it reads
as forty lines of traceback. Inside `logged(path)` file descriptors 1 and 2 and Python's sys.stdout go to the
log file; skinedge's progress lines (`terminal()`), its progress bars (sys.stderr stays the terminal) and its
own warnings stay on the terminal, and a warning raised by another package goes to the log. `Stages` names the
stage a conversion is in, so an unexpected exception becomes one line naming that stage and the log, with the
traceback written to the log.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import traceback
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

OWN_PACKAGES = ("convert", "calibration", "edge")  # their warnings are meant for the user: shown on the terminal
_active: dict[str, object] = {}  # while logged(): "terminal" (TextIO) and "path" (Path)


def terminal() -> TextIO:
    """Where skinedge's own lines go: the terminal while logged(), else sys.stdout."""
    return _active.get("terminal", sys.stdout)  # type: ignore[return-value]


def log_path() -> Path | None:
    """The active conversion log, if any."""
    return _active.get("path")  # type: ignore[return-value]


def _on_fd(stream: TextIO, fd: int) -> bool:
    try:
        return stream.fileno() == fd
    except (AttributeError, OSError, io.UnsupportedOperation):
        return False


def _own(filename: str) -> bool:
    parts = Path(filename).resolve().parts
    return any(p in OWN_PACKAGES for p in parts[-3:-1])


@contextlib.contextmanager
def logged(path: Path) -> Iterator[Path]:
    """Send everything but skinedge's own output to `path` (truncated) for the duration."""
    with contextlib.suppress(ImportError):
        import absl.logging  # noqa: F401  (its handler keeps the stderr it sees at import: the one fd 2 will become)
    sys.stdout.flush()
    sys.stderr.flush()
    saved_fds = os.dup(1), os.dup(2)
    # a stream on fd 1/2 would follow the redirection: the terminal gets its own descriptor (pytest's capture
    # objects have none and are kept as they are)
    out = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8") if _on_fd(sys.stdout, 1) else sys.stdout
    err = os.fdopen(os.dup(2), "w", buffering=1, encoding="utf-8") if _on_fd(sys.stderr, 2) else sys.stderr
    old = sys.stdout, sys.stderr, warnings.showwarning
    log = open(path, "w", buffering=1, encoding="utf-8")  # noqa: SIM115 - closed in finally

    def showwarning(message, category, filename, lineno, file=None, line=None) -> None:
        dest = err if _own(filename) else log
        dest.write(warnings.formatwarning(message, category, filename, lineno, line))

    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    sys.stdout, sys.stderr, warnings.showwarning = log, err, showwarning
    _active.update(terminal=out, path=Path(path))
    try:
        yield Path(path)
    finally:
        _active.clear()
        log.flush()
        sys.stdout, sys.stderr, warnings.showwarning = old
        os.dup2(saved_fds[0], 1)
        os.dup2(saved_fds[1], 2)
        for fd in saved_fds:
            os.close(fd)
        for stream in {out, err} - {old[0], old[1]}:
            stream.close()
        log.close()


class Stages:
    """The stage a long job is in, for the one line its failure gets."""

    def __init__(self) -> None:
        self.name = "start"

    def at(self, name: str) -> None:
        self.name = name

    def failed(self, e: BaseException) -> str:
        """'stage TFLite failed: RuntimeError: ...; details in LOG' (the traceback goes to the log, if one is
        active)."""
        first = (str(e).strip().splitlines() or [""])[0][:300]
        where = log_path()
        if where is not None:
            print(f"--- stage {self.name} failed ---", file=sys.stdout)
            traceback.print_exception(e, file=sys.stdout)
        return f"stage {self.name} failed: {type(e).__name__}: {first}" + (f"; details in {where}" if where else "")
