"""profile.c's cache simulation against qemu's own (contrib/plugins/cache.c, built by setup.sh as libcache.so) on the
same guest: both see the whole process (profile.c's span 0-0) of an emulated Python doing numpy matrix products.

    SKINEDGE_ARM_ROOT=/tmp/skinedge-aarch64 nice -n 10 python -m benchmarks.arm_cost.cache_check [--board rpi4]

qemu's plugin sends instruction-cache misses to its L2 as well; it gets a 1 MB instruction cache here so that those
are the few cold misses and both L2s see (nearly) the same data stream. It counts an access that crosses a line once,
profile.c both lines. Prints both plugins' L1D and L2 misses and their ratio.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from benchmarks.arm_cost.boards import BOARDS
from benchmarks.arm_cost.emulate import CORES, arm_root, core_view, fixed_stack, no_aslr
from benchmarks.arm_cost.profile import PLUGIN

QEMU_CACHE = "opt/arm_cost/libcache.so"
GUEST = "import numpy as np; a = np.random.default_rng(0).random((300, 300)); [a @ a for _ in range(4)]"


def run(root: Path, core: str, plugin: str, log: Path | None = None) -> subprocess.CompletedProcess:
    """The guest under `plugin`; with `log`, qemu writes plugin output there (cache.c reports through qemu's log)."""
    view = core_view(root, CORES[core])
    argv = [f"{view}/usr/bin/python3.11", "-c", GUEST]
    env = fixed_stack(argv, {"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{root}/opt/site", "OPENBLAS_NUM_THREADS": "1",
                             "PYTHONHASHSEED": "0"})
    logging = ["-d", "plugin", "-D", str(log)] if log else []
    return subprocess.run([*no_aslr(), "qemu-aarch64", "-cpu", core, "-L", str(view), *logging, "-plugin", plugin,
                           *argv], env=env, capture_output=True, text=True, check=True)


def qemu_counts(report: str) -> tuple[int, int]:
    """(L1D misses, L2 misses) from cache.c's report, whose row for core 0 reads '0 <data accesses> <data misses>
    <rate>% <insn accesses> <insn misses> <rate>% <l2 accesses> <l2 misses> <rate>%'."""
    for line in report.splitlines():
        cells = line.split()
        if len(cells) >= 9 and cells[0] == "0" and cells[3].endswith("%"):
            return int(cells[2]), int(cells[8])
    raise RuntimeError(f"no per-core line in qemu's cache report:\n{report[-2000:]}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--board", default="rpi4", choices=[n for n, b in BOARDS.items() if b.l3 is None])
    a = ap.parse_args(argv)
    root, board = arm_root(), BOARDS[a.board]
    if root is None or not (root / QEMU_CACHE).exists():
        print(f"needs SKINEDGE_ARM_ROOT with {QEMU_CACHE} (benchmarks/arm_cost/setup.sh)", file=sys.stderr)
        return 2
    out = Path(f"/tmp/cache-check-{a.board}.profile")
    run(root, board.core, f"{root}/{PLUGIN},out={out},spans=0-0,cache={board.name}:{board.geometry}")
    ours = next(line.split() for line in out.read_text().splitlines() if line.startswith("cache "))
    l1, l2 = int(ours[3]), int(ours[4])
    log = Path(f"/tmp/cache-check-{a.board}.qemu.log")
    run(root, board.core, f"{root}/{QEMU_CACHE},dcachesize={board.l1d.kib * 1024},dassoc={board.l1d.ways},"
                          f"dblksize=64,icachesize=1048576,iassoc=16,iblksize=64,l2cachesize={board.l2.kib * 1024},"
                          f"l2assoc={board.l2.ways},l2blksize=64,evict=lru,limit=1", log)
    q1, q2 = qemu_counts(log.read_text())
    print(f"{board.title}, whole process: L1D misses profile.c {l1} / qemu cache.c {q1} = {l1 / q1:.4f}; "
          f"L2 misses {l2} / {q2} = {l2 / q2:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
