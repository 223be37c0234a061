"""Host side of a profiled emulated run: profile_guest.py under qemu-aarch64 with profile.c's plugin on one ARM core,
and the plugin's output parsed into per-inference block executions and cache misses per simulated board."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from benchmarks.arm_cost.boards import Board
from benchmarks.arm_cost.emulate import DEMO_CLIP, HERE, EmulationError, run_guest

PLUGIN = "opt/arm_cost/profile.so"  # inside the ARM root, built by setup.sh
# No OpenBLAS worker threads (numpy's, and OpenCV's copy): an idle worker still spins on sched_yield for a while
# after a matrix product, and the counter counts every guest thread, so how long it spun inside a span followed
# host timing (ONNX Runtime fp32 moved by ~1,700 instructions per inference, in libc's yield loop).
QUIET_THREADS = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
CLOCK = "/opt/arm_cost/fixed_clock.so"  # inside the ARM root, built by setup.sh (fixed_clock.c says why)


@dataclass(frozen=True)
class Block:
    """A translation block that ran: its address, instruction words and executions per inference."""
    pc: int
    words: tuple[int, ...]
    execs: float

    @property
    def key(self) -> str:
        """Content hash: the same code at the same address merges across re-translations and runs."""
        return hashlib.sha1(self.pc.to_bytes(8, "little") + b"".join(w.to_bytes(4, "little") for w in self.words)
                            ).hexdigest()[:16]


def parse(text: str, k: int) -> dict[tuple[int, int], dict]:
    """The plugin's output -> {(mark A, mark B): {"blocks": {key: Block}, "caches": {name: {...}}}}, per inference."""
    spans: dict[tuple[int, int], dict] = {}
    cur: dict | None = None
    for line in text.splitlines():
        w = line.split()
        if w[0] == "span":
            cur = spans.setdefault((int(w[1]), int(w[2])), {"blocks": {}, "caches": {}})
        elif w[0] == "block" and cur is not None:
            b = Block(int(w[1], 16), tuple(int(x, 16) for x in w[4].split(",")), int(w[3]) / k)
            old = cur["blocks"].get(b.key)
            cur["blocks"][b.key] = Block(b.pc, b.words, b.execs + (old.execs if old else 0.0))
        elif w[0] == "cache" and cur is not None:
            names = ("accesses", "l1_misses", "l2_misses", "l3_misses", "l1_write_misses")
            cur["caches"][w[1]] = {n: int(v) / k for n, v in zip(names, w[2:])}
    return spans


def _per_board(span: dict, by_board: dict[str, str]) -> dict:
    """The span with its simulated caches keyed by board (boards of one geometry share a simulation)."""
    return {**span, "caches": {board: span["caches"][h] for board, h in by_board.items()}}


def instructions(blocks: dict[str, Block]) -> float:
    return sum(b.execs * len(b.words) for b in blocks.values())


def profile(root: Path, core: str, boards: list[Board], bundle: Path, combos: list[tuple[str, str]],
            threads: int = 1, k: int = 2, warmup: int = 2, inference_span: bool = True, scratch: Path | None = None,
            timeout: float = 7200) -> dict:
    """One bundle on one emulated core, each (backend, precision) in one process: per-inference block executions
    and, for each board of `boards` (all with this core), its caches' misses; spans "invoke" and (with
    `inference_span`) "inference" (profile_guest.py)."""
    if not (root / CLOCK.lstrip("/")).exists():
        raise EmulationError(f"{root / CLOCK.lstrip('/')} missing (run benchmarks/arm_cost/setup.sh)")
    scratch = scratch or Path(f"/tmp/arm-profile-{os.getpid()}")
    out = scratch / f"{core}-{Path(bundle).name}-t{threads}.profile"
    spans = "+".join(f"{b + 1}-{b + 2}" + (f"+{b + 4}-{b + 5}" if inference_span else "")
                     for b in (10 * (i + 1) for i in range(len(combos))))
    geometries = list(dict.fromkeys(b.geometry for b in boards))
    caches = "".join(f",cache=h{i}:{g}" for i, g in enumerate(geometries))
    job = {"bundle": str(Path(bundle).resolve()), "combos": combos, "threads": threads, "k": k, "warmup": warmup,
           "clip": str(DEMO_CLIP), "inference_span": inference_span}
    info = run_guest(root, core, HERE / "profile_guest.py", job, f"{PLUGIN},out={out},spans={spans}{caches}",
                     f"{core} {Path(bundle).name}", scratch, timeout, env_extra=QUIET_THREADS,
                     preload=CLOCK)
    parsed = parse(out.read_text(), k)
    by_board = {b.name: f"h{geometries.index(b.geometry)}" for b in boards}
    runs = [{**r, "spans": {name: _per_board(parsed[tuple(marks)], by_board) for name, marks in r["spans"].items()}}
            for r in info.pop("runs")]
    return {"core": core, "bundle": info.pop("bundle_name"), "threads": threads, "k": k, **info, "runs": runs}


def blocks_json(blocks: dict[str, Block]) -> list[dict]:
    """The blocks as JSON rows, hottest first (executions x instructions)."""
    rows = sorted(blocks.values(), key=lambda b: -b.execs * len(b.words))
    return [{"pc": f"{b.pc:x}", "execs": b.execs, "words": " ".join(f"{w:08x}" for w in b.words)} for b in rows]


def blocks_from_json(rows: list[dict]) -> dict[str, Block]:
    blocks = [Block(int(r["pc"], 16), tuple(int(w, 16) for w in r["words"].split()), r["execs"]) for r in rows]
    return {b.key: b for b in blocks}


def dump(path: Path, res: dict) -> None:
    path.write_text(json.dumps({**res, "runs": [{**r, "blocks": blocks_json(r["blocks"])} for r in res["runs"]]}))
