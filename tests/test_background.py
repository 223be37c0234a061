"""tests/background.py, in a child process (this session's own worker is busy with the real jobs)."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import REPO

CHILD = """
import os, subprocess, sys, time
from tests import background

def fails(scratch):
    raise ValueError("job failed")

background.job("value", lambda scratch: (scratch.is_dir(), os.sched_getscheduler(0)))
background.job("fails", fails)
background.job("never", lambda scratch: sys.exit("a job nobody reads was started"))
background.job("sleeps", lambda scratch: subprocess.run(["sleep", "60"]))
background.start({"value", "fails", "unknown"})
print("value", background.result("value"))
try:
    background.result("fails")
except ValueError as e:
    print("raised", e)
background.job("slow", lambda scratch: (time.sleep(2.5), os.sched_getscheduler(0))[1])
background.job("after", lambda scratch: os.sched_getscheduler(0))
print("waited for", background.result("slow"))  # not started by start(): result() starts it
background.start({"after"})
print("next job", background.result("after"))
background.start({"sleeps"})
time.sleep(0.5)
t = time.perf_counter()
background.stop()
print("stopped in", round(time.perf_counter() - t), "s;", sorted(background.took))
"""


def test_jobs_run_idle_return_or_raise_get_priority_when_waited_for_and_stop_ends_their_children():
    r = subprocess.run([sys.executable, "-c", CHILD], cwd=REPO, capture_output=True, text=True, timeout=60,
                       check=False)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    # a job gets its own scratch directory and runs in the idle class
    assert lines[0] == f"value (True, {os.SCHED_IDLE})"
    assert lines[1] == "raised job failed"
    # the 60 s child was killed, not waited for; 'never' was not wanted, so it never ran
    # a job a test waits for more than a second gets normal priority; the next one is idle again
    assert lines[2:4] == [f"waited for {os.SCHED_OTHER}", f"next job {os.SCHED_IDLE}"]
    assert lines[4] == "stopped in 0 s; ['after', 'fails', 'sleeps', 'slow', 'value']"
