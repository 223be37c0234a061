"""Predicted latency and FPS of a bundle on ARM boards nobody here has: emulated block counts costed in cycles by
llvm-mca, plus the boards' simulated cache misses turned into stall time.

    SKINEDGE_ARM_ROOT=/tmp/skinedge-aarch64 python -m benchmarks.arm_cost.predict BUNDLE --boards rpi4,rpi5 \
        --backend tflite,onnx --precision int8,fp32 --threads 1,4 --json predicted.json

The model, per board, backend, precision (benchmarks/README.md, "Predicted time on boards"):
  core cycles   = sum over the hottest blocks (>= 99.5 % of instructions) of executions x llvm-mca cycles per
                  execution on the board's scheduling model; the rest at the same cycles per instruction;
  memory stall  = (L2 hits x L2 latency + L3 hits x L3 latency) / MLP + DRAM lines x max(DRAM latency / MLP,
                  line / one core's bandwidth), MLP = the misses the core keeps in flight, from the simulated caches;
  time (t threads) = max((core + stall) / t, DRAM traffic at the threads' bandwidth) / clock, plus a thread-pool
                  barrier per operator (t > 1);
  range         = from compute and stall overlapped (max(core, stall) / t) to the stall not split over the
                  threads (core / t + stall); beyond that, the method's error on published figures
                  (benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from benchmarks.arm_cost import mca
from benchmarks.arm_cost.boards import BOARDS, Board, parse_boards
from benchmarks.arm_cost.emulate import REPO, EmulationError, arm_root, missing_tooling
from benchmarks.arm_cost.profile import PLUGIN, blocks_from_json, blocks_json, profile

SCHEMA = "skinedge-predict/1"
RESULTS = Path(__file__).resolve().parent / "results"
CACHE = Path(os.environ.get("SKINEDGE_PREDICT_CACHE", Path.home() / ".cache" / "skinedge" / "predict"))
LINE = 64
MLP = {"cortex-a53": 2.0}  # misses in flight: in-order A53; the out-of-order cores default to OOO_MLP
OOO_MLP = 4.0
SYNC_US = 2.0  # a thread-pool barrier per operator (and per member) with t > 1, in microseconds (approximate)
KEEP = 0.999  # the blocks stored with a profile: this share of the instructions


@dataclass(frozen=True)
class Predicted:
    board: str
    board_title: str
    bundle: str
    backend: str
    precision: str
    threads: int
    span: str  # "invoke" (the runtime's native call) or "inference" (with edge's Python around it)
    ms: float
    low_ms: float
    high_ms: float
    fps: float
    core_ms: float
    memory_ms: float
    instructions: float
    cycles: float
    covered: float
    l1_misses: float
    l2_misses: float
    dram_lines: float
    llvm_model: str
    mca_note: str


def stall_cycles(board: Board, caches: dict, mlp: float) -> float:
    """Cycles the core waits on memory per inference beyond llvm-mca's every-load-an-L1-hit."""
    m1, m2, m3 = caches["l1_misses"], caches["l2_misses"], caches["l3_misses"]
    l1 = board.l1d.latency
    l3 = (m2 - m3) * (board.l3.latency - l1) if board.l3 else 0.0
    # a DRAM line: its latency shared by the misses in flight, but no faster than one core's bandwidth
    dram = max((board.dram_ns * board.ghz - l1) / mlp, LINE / board.dram_gbs * board.ghz)
    return ((m1 - m2) * (board.l2.latency - l1) + l3) / mlp + m3 * dram


def dram_floor_cycles(board: Board, caches: dict, threads: int) -> float:
    """The DRAM traffic at the bandwidth the threads can draw (one core's, times threads, up to 2x: the boards'
    DRAM saturates early)."""
    return caches["l3_misses"] * LINE / (board.dram_gbs * min(threads, 2)) * board.ghz


def predict_one(board: Board, core: mca.Cycles, caches: dict, threads: int, ops: int) -> tuple[float, float, float]:
    """(central, low, high) milliseconds per inference at `threads` threads.

    central: compute and memory stall one after the other, both split over the threads (XNNPACK and MLAS tile every
             operator across the pool), never below the DRAM traffic at the threads' bandwidth;
    low:     compute and memory stall hidden behind each other (the larger of the two, split);
    high:    the memory stall not split at all (what one thread waits for on the shared L2 / DRAM, the others
             queue behind), the compute split.
    A thread-pool barrier per operator is added with t > 1. The central model was fixed before any comparison with
    published figures; the high one is where Raspberry Pi 4 figures fell (benchmarks/README.md)."""
    mlp = MLP.get(board.core, OOO_MLP)
    stall = stall_cycles(board, caches, mlp)
    floor = dram_floor_cycles(board, caches, threads)
    sync = (SYNC_US * ops * board.ghz * 1e3) if threads > 1 else 0.0
    central = max((core.cycles + stall) / threads, floor) + sync
    low = max(core.cycles / threads, stall / threads, floor) + sync
    high = max(core.cycles / threads + stall, floor) + sync
    return tuple(c / (board.ghz * 1e6) for c in (central, low, high))


def profile_cached(root: Path, core: str, boards: list[Board], bundle: Path, combos: list[tuple[str, str]],
                   cache: Path, inference_span: bool = True) -> dict:
    """profile() of the bundle on the core, stored under `cache` by the bundle's digest, the combos and the boards'
    caches, so that a second prediction (other threads, other boards of the same caches) does not emulate again."""
    from edge.trust.bundle import load_bundle

    digest = load_bundle(bundle, verify=False).digest[:16]
    key = hashlib.sha1(json.dumps([core, digest, combos, inference_span, [[b.name, b.geometry] for b in boards]]
                                  ).encode()).hexdigest()
    path = cache / f"{core}--{Path(bundle).name}--{key[:12]}.json"
    if path.exists():
        res = json.loads(path.read_text())
        for r in res["runs"]:
            for sp in r["spans"].values():
                sp["blocks"] = blocks_from_json(sp["blocks"])
        return res
    res = profile(root, core, boards, bundle, combos, inference_span=inference_span,
                  scratch=Path(tempfile.gettempdir()) / "skinedge-predict" / path.stem)
    cache.mkdir(parents=True, exist_ok=True)
    stored = {**res, "bundle_digest": digest,
              "runs": [{**r, "spans": {n: _kept(sp) for n, sp in r["spans"].items()}} for r in res["runs"]]}
    path.write_text(json.dumps(stored))
    return res


def _kept(span: dict) -> dict:
    """A span as stored: its total instructions, and only the blocks that make KEEP of them."""
    hottest, total = mca.hot(span["blocks"], KEEP)
    return {**span, "instructions": total, "blocks": blocks_json({b.key: b for b in hottest})}


def operator_count(bundle: Path, backend: str, precision: str) -> int:
    """Operators (nodes) of every member's artefact: each is a barrier of the thread pool with t > 1."""
    from edge.backends import artefact_for
    from edge.trust.bundle import load_bundle

    b = load_bundle(bundle, verify=False)
    n = 0
    for m in b.members:
        path = m.files[artefact_for(backend, precision)]
        if backend == "onnx":
            import onnx

            n += len(onnx.load(str(path), load_external_data=False).graph.node)
        else:
            n += _tflite_ops(path)
    return n


def _tflite_ops(path: Path) -> int:
    """Operators of a .tflite file's first subgraph, read from its flatbuffer without TensorFlow."""
    import struct

    buf = Path(path).read_bytes()

    def table(pos):
        return pos + struct.unpack_from("<i", buf, pos)[0]

    def field(tab, i):
        vt = tab - struct.unpack_from("<i", buf, tab)[0]
        size = struct.unpack_from("<H", buf, vt)[0]
        off = struct.unpack_from("<H", buf, vt + 4 + 2 * i)[0] if 4 + 2 * i < size else 0
        return tab + off if off else None

    def vector(pos):
        start = pos + struct.unpack_from("<I", buf, pos)[0]
        return start, struct.unpack_from("<I", buf, start)[0]

    model = table(0)
    subgraphs, _ = vector(field(model, 2))  # Model.subgraphs
    sub = table(subgraphs + 4)
    _, n = vector(field(sub, 3))  # SubGraph.operators
    return n


def predict(bundle: Path, boards: list[Board], combos: list[tuple[str, str]], threads: list[int],
            root: Path | None = None, cache: Path = CACHE, span: str = "invoke",
            progress=print) -> list[Predicted]:
    """Every board x combo x thread count; one emulation per distinct core (boards sharing a core share it)."""
    root = root or arm_root()
    if why := missing_tooling(root) or mca.missing_llvm():
        raise EmulationError(why)
    if not (root / PLUGIN).exists():
        raise EmulationError(f"{root / PLUGIN} missing (run benchmarks/arm_cost/setup.sh)")
    out = []
    for core in dict.fromkeys(b.core for b in boards):
        group = [b for b in boards if b.core == core]
        progress(f"emulating {Path(bundle).name} on {core} for {', '.join(b.name for b in group)}")
        # every board of the core simulated (boards alike share one simulation): one cached run serves them all
        res = profile_cached(root, core, [b for b in BOARDS.values() if b.core == core], bundle, combos, cache,
                             inference_span=span == "inference")
        for r in res["runs"]:
            sp = r["spans"][span]
            ops = operator_count(bundle, r["backend"], r["precision"])
            for board in group:
                costs = _mca_cache(cache, board.mca_cpu)
                cyc = mca.cycles(sp["blocks"], board.mca_cpu, costs, total=sp.get("instructions"))
                _save_mca_cache(cache, board.mca_cpu, costs)
                caches = sp["caches"][board.name]
                for t in threads:
                    ms, low, high = predict_one(board, cyc, caches, t, ops)
                    out.append(Predicted(
                        board.name, board.title, res["bundle"], r["backend"], r["precision"], t, span, ms, low,
                        high, 1e3 / ms, cyc.cycles / (board.ghz * 1e6),
                        stall_cycles(board, caches, MLP.get(core, OOO_MLP)) / (board.ghz * 1e6),
                        cyc.instructions, cyc.cycles, cyc.covered, caches["l1_misses"], caches["l2_misses"],
                        caches["l3_misses"], board.mca_cpu, board.mca_note))
    return out


def _mca_path(cache: Path, cpu: str) -> Path:
    return cache / f"mca-llvm{mca.LLVM_VERSION}-{cpu}.json"


def _mca_cache(cache: Path, cpu: str) -> dict[str, float]:
    path = _mca_path(cache, cpu)
    return json.loads(path.read_text()) if path.exists() else {}


def _save_mca_cache(cache: Path, cpu: str, costs: dict[str, float]) -> None:
    cache.mkdir(parents=True, exist_ok=True)
    _mca_path(cache, cpu).write_text(json.dumps(costs))


def report(rows: list[Predicted], error_pct: float | None) -> dict:
    """A report `skinedge bench --merge` shows beside real boards' (edge.bench_predicted)."""
    return {"schema": SCHEMA, "board": "predicted (emulated, no board)",
            "method": "qemu block counts x llvm-mca cycles + simulated caches (benchmarks/arm_cost/predict.py)",
            "llvm": mca.LLVM_VERSION, "median_abs_error_pct": error_pct,
            "results": [asdict(r) for r in rows]}


def published_error() -> float | None:
    """The method's median absolute error on the published real-board figures (results/published.json)."""
    path = RESULTS / "published.json"
    return json.loads(path.read_text()).get("median_abs_error_pct") if path.exists() else None


def summary(rows: list[Predicted]) -> str:
    """Markdown: per board and thread count, predicted ms of each backend × precision and the two ratios that choose
    a device config's defaults."""
    by = {(r.board, r.threads, r.backend, r.precision): r.ms for r in rows}
    head = ("| board | threads | LiteRT int8 | LiteRT fp32 | ORT int8 | ORT fp32 | int8/fp32 (LiteRT) | "
            "LiteRT/ORT (int8) |")
    lines = [head, "|---|---|---|---|---|---|---|---|"]
    for board, t in dict.fromkeys((r.board, r.threads) for r in rows):
        ms = [by.get((board, t, b, p)) for b, p in COMBO_ORDER]
        if None in ms:
            continue
        lines.append(f"| {BOARDS[board].title} | {t} | " + " | ".join(f"{m:.1f}" for m in ms)
                     + f" | {ms[0] / ms[1]:.2f} | {ms[0] / ms[2]:.2f} |")
    return "\n".join(lines) + "\n"


COMBO_ORDER = [("tflite", "int8"), ("tflite", "fp32"), ("onnx", "int8"), ("onnx", "fp32")]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle", type=Path, nargs="?", default=REPO / "edge" / "demo_assets" / "bundle")
    ap.add_argument("--boards", default="rpi4,rpi5,jetson-nano", help=f"comma-separated: {', '.join(BOARDS)}")
    ap.add_argument("--backend", default="tflite,onnx")
    ap.add_argument("--precision", default="int8,fp32")
    ap.add_argument("--threads", default="1")
    ap.add_argument("--span", choices=("invoke", "inference"), default="inference",
                    help="invoke: the runtime's call alone (as published benchmarks time it); inference: with edge's "
                         "Python around it (what skinedge bench times)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--summary", action="store_true", help="one row per board and thread count instead")
    a = ap.parse_args(argv)
    try:
        boards = parse_boards(a.boards)
    except ValueError as e:
        print(f"--boards: {e}", file=sys.stderr)
        return 2
    combos = [(b, p) for p in a.precision.split(",") for b in a.backend.split(",")]
    try:
        rows = predict(a.bundle, boards, combos, [int(t) for t in a.threads.split(",")], span=a.span,
                       progress=lambda m: print(m, file=sys.stderr))
    except (EmulationError, mca.McaError) as e:
        print(e, file=sys.stderr)
        return 2
    rep = report(rows, published_error())
    if a.json:
        a.json.write_text(json.dumps(rep, indent=1))
    if a.summary:
        print(summary(rows))
        return 0
    from edge import bench_predicted
    from edge.bench import md_table

    print("\n".join(md_table(bench_predicted.HEAD, bench_predicted.rows(rep))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
