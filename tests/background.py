"""Slow single-threaded work (the emulated-ARM runs) started with the session and run beside the other tests.

qemu-user runs the guest on one host core, and the suite leaves about a third of this 2-core machine idle (user +
sys 12.3 min over 10.1 min wall, `time bash scripts/test.sh`), so the ~2 min of emulation costs little wall time
when it starts at the beginning and the tests that read its results run last (tests/conftest.py orders them).
WORKERS threads run the jobs under SCHED_IDLE (Linux keeps the policy per thread, and the qemu processes they
start inherit it), so the jobs take only time no other test wants; the second runs when the tests leave both cores
idle (a test waiting on a child, a server or a signal). Not
nice 10: torch's two OpenMP threads wait for each other at every op, and a niced process still takes slices from
one of them (micro_mpoxnet training on 2 threads: 2.4 s an epoch alone or beside a SCHED_IDLE busy loop, 2.8-6.2 s
beside a nice-9 one).

Jobs are registered at import with `job(name, fn)`; a test that reads one is marked `background(name)` (or uses a
fixture that tests/conftest.py maps to a job), and gets the job's return value (or its exception) with
`result(name)`. Only jobs some selected test reads are started.
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

_registered: dict[str, Job] = {}  # in registration order
_futures: dict[str, Future] = {}
WORKERS = 2  # jobs at a time: a second one runs when the tests leave both cores idle (waits, subprocess sleeps)
_pool: ThreadPoolExecutor | None = None
_workers: list[int] = []  # the worker threads' native ids
_scratch: tempfile.TemporaryDirectory | None = None
waited: dict[str, float] = {}  # seconds each test spent waiting for a job (the summary prints them)
took: dict[str, float] = {}  # seconds each job ran


def job(name: str, fn: Job) -> None:
    """Register `fn` to run in the background when a selected test reads `name`."""
    _registered[name] = fn


def _idle_priority() -> None:
    _workers.append(threading.get_native_id())
    os.sched_setscheduler(_workers[-1], os.SCHED_IDLE, os.sched_param(0))


def _set_policy(policy: int) -> None:
    """The scheduling policy of the workers and of every thread of the processes they started."""
    for tid in _workers + [int(t) for pid in _descendants(os.getpid()) for t in _ls(Path(f"/proc/{pid}/task"))]:
        try:
            os.sched_setscheduler(tid, policy, os.sched_param(0))
        except OSError:  # gone, or not allowed (then it runs on, slowly)
            pass


def _ls(path: Path) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


def _timed(name: str, fn: Job, scratch: Path) -> object:
    start = time.perf_counter()
    try:
        return fn(scratch)
    finally:
        took[name] = time.perf_counter() - start


def start(wanted: set[str]) -> None:
    """Start the `wanted` jobs not started yet, in registration order (unregistered names are skipped: a job's
    module registers it only where it can run, and its tests are skipped elsewhere)."""
    global _pool, _scratch
    names = [n for n in _registered if n in wanted and n not in _futures]
    if not names:
        return
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="background", initializer=_idle_priority)
        _scratch = tempfile.TemporaryDirectory(prefix="skinedge-tests-background-")
    for name in names:
        scratch = Path(_scratch.name) / name
        scratch.mkdir()
        _futures[name] = _pool.submit(_timed, name, _registered[name], scratch)


def result(name: str) -> object:
    """The job's return value, waiting for it (started now if it was not). While a test waits, nothing else runs,
    so the jobs get normal priority (SCHED_IDLE gets almost no CPU while anything else on the machine is busy), and
    the idle class back afterwards (else a next job would compete with the tests)."""
    if name not in _futures:
        start({name})
    t = time.perf_counter()
    boosted = False
    try:
        while True:
            try:
                return _futures[name].result(timeout=1.0)
            except TimeoutError:
                _set_policy(os.SCHED_OTHER)
                boosted = True
    finally:
        if boosted:
            _set_policy(os.SCHED_IDLE)
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
    _workers.clear()


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
