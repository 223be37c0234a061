"""Slow single-threaded work (the emulated-ARM runs) started with the session and run beside the other tests.

qemu-user runs the guest on one host core, and the suite leaves about a third of this 2-core machine idle (user +
sys 12.3 min over 10.1 min wall, `time bash scripts/test.sh`), so the ~2 min of emulation costs little wall time
when it starts at the beginning and the tests that read its results run last (tests/conftest.py orders them).
One worker thread runs the jobs one after another under SCHED_IDLE (Linux keeps the policy per thread, and the
qemu processes it starts inherit it), so emulation takes at most one core and only time no other test wants. Not
nice 10: torch's two OpenMP threads wait for each other at every op, and a niced process still takes slices from
one of them (micro_mpoxnet training on 2 threads: 2.4 s an epoch alone or beside a SCHED_IDLE busy loop, 2.8-6.2 s
beside a nice-9 one).

A test module registers jobs at import with `job(name, fn)` and marks the tests that read them `background`;
a test gets a job's return value (or its exception) with `result(name)`.
"""

from __future__ import annotations

import os
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

Job = Callable[[Path], object]  # called with its own empty scratch directory

_registered: dict[str, tuple[str, Job]] = {}  # name -> (registering module, fn), in registration order
_futures: dict[str, Future] = {}
_pool: ThreadPoolExecutor | None = None
_scratch: tempfile.TemporaryDirectory | None = None
waited: dict[str, float] = {}  # seconds each test spent waiting for a job (the summary prints them)
took: dict[str, float] = {}  # seconds each job ran


def job(name: str, fn: Job) -> None:
    """Register `fn` to run in the background when a test of the calling module is selected."""
    _registered[name] = (fn.__module__, fn)


def _idle_priority() -> None:
    os.sched_setscheduler(threading.get_native_id(), os.SCHED_IDLE, os.sched_param(0))


def _timed(name: str, fn: Job, scratch: Path) -> object:
    start = time.perf_counter()
    try:
        return fn(scratch)
    finally:
        took[name] = time.perf_counter() - start


def start(modules: set[str]) -> None:
    """Start, in registration order, every job registered by one of `modules`."""
    global _pool, _scratch
    names = [n for n, (mod, _) in _registered.items() if mod in modules and n not in _futures]
    if not names:
        return
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="background", initializer=_idle_priority)
        _scratch = tempfile.TemporaryDirectory(prefix="skinedge-tests-background-")
    for name in names:
        scratch = Path(_scratch.name) / name
        scratch.mkdir()
        _futures[name] = _pool.submit(_timed, name, _registered[name][1], scratch)


def result(name: str) -> object:
    """The job's return value, waiting for it (started now if no selected test's module started it)."""
    if name not in _futures:
        start({_registered[name][0]})
    t = time.perf_counter()
    try:
        return _futures[name].result()
    finally:
        waited[name] = waited.get(name, 0.0) + time.perf_counter() - t


def stop() -> None:
    """Cancel jobs not started and end any still running (an interrupted or -x session), then clean up."""
    global _pool, _scratch
    if _pool is None:
        return
    _pool.shutdown(wait=False, cancel_futures=True)
    if not all(f.done() for f in _futures.values()):
        for pid in _descendants(os.getpid()):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    _pool.shutdown(wait=True)
    _scratch.cleanup()
    _pool = _scratch = None


def _descendants(root: int) -> list[int]:
    """Every live process below `root` (the job's bash, qemu and their children), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        kids = children.get(todo.pop(), [])
        out += kids
        todo += kids
    return out
