"""Waiting for a state, never for a time: the deadline only turns a hang into a failure (a test that slept for a
fixed time raced in CI when the machine was faster or slower than the author's)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def _ended(child) -> object | None:
    """The exit code of a subprocess.Popen or multiprocessing.Process that has ended, else None."""
    return child.poll() if hasattr(child, "poll") else None if child.is_alive() else child.exitcode


def until(what: str, predicate: Callable[[], T], *, child=None, seconds: float = 120.0, step: float = 0.01) -> T:
    """Poll `predicate()` until it is truthy and return its value; fail at once if `child` (a Popen or a
    multiprocessing.Process) ended first, or after `seconds`."""
    deadline = time.monotonic() + seconds
    while not (got := predicate()):
        if child is not None and (code := _ended(child)) is not None:
            raise AssertionError(f"the child exited ({code}) before {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds:.0f} s waiting for {what}")
        time.sleep(step)
    return got
