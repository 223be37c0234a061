"""convert.memory and edge.memory: the peak RSS the conversion summary and bench's rows print is the process's own."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from convert.memory import peak_rss_mb

CHILD = "from convert.memory import peak_rss_mb; from edge import bench; import resource; " \
        "print(peak_rss_mb()['self'], bench._rss_mb(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6)"


def test_peak_rss_is_own_not_inherited_from_the_parent():
    big = np.ones(50_000_000)  # 400 MB touched in this (parent) process
    assert peak_rss_mb()["self"] >= 400
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, check=True).stdout.split()
    own, bench_own, inherited = float(out[0]), float(out[1]), float(out[2])
    # ru_maxrss survives fork + exec: the child "peaks" at the parent's 400 MB; VmHWM is the child's own
    assert inherited >= 400 and own < 200 and bench_own < 200
    del big


def test_peak_counts_child_processes_as_usr_bin_time_does():
    """A child that peaks above this process (the AdaRound worker, say) sets the summary's figure."""
    subprocess.run([sys.executable, "-c", "import numpy; b = numpy.ones(100_000_000); b += 1"], check=True)
    rss = peak_rss_mb()
    assert rss["children"] >= 800 and rss["peak"] == max(rss["self"], rss["children"]) >= 800
