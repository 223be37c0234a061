"""Predicted latency on boards nobody here has (benchmarks/arm_cost/predict.py) as reports `skinedge bench` makes and
merges beside real boards': `skinedge bench BUNDLE --predict rpi4,rpi5` on a workstation, `--merge` later.

Predicting needs what only a skinedge checkout on a workstation has: the emulated aarch64 root with the profiling
plugin (benchmarks/arm_cost/setup.sh), qemu-user and llvm-19. The rows are marked "predicted" with their range
and the method's median error on published real-board figures (benchmarks/README.md, "Predicted vs published").
"""

from __future__ import annotations

from pathlib import Path

SCHEMA = "skinedge-predict/1"
KEYS = ("board", "board_title", "bundle", "backend", "precision", "threads", "ms", "low_ms", "high_ms", "fps",
        "core_ms", "memory_ms", "instructions", "cycles", "llvm_model")
HEAD = ["board", "bundle", "backend", "precision", "threads", "predicted ms", "range ms", "FPS", "core ms",
        "memory ms", "IPC", "LLVM model"]


class PredictUnavailable(RuntimeError):
    """Prediction cannot run here: one line saying what is missing."""


def problem(rep: dict) -> str | None:
    """What makes `rep` not a predicted report (one line), or None."""
    if not isinstance(rep.get("board"), str) or not isinstance(rep.get("results"), list):
        return f"a {SCHEMA} report needs 'board' (text) and 'results' (list)"
    for i, r in enumerate(rep["results"]):
        missing = [k for k in KEYS if k not in r] if isinstance(r, dict) else ["(not an object)"]
        if missing:
            return f"results[{i}] lacks {', '.join(missing)}"
    return None


def predict_report(bundles: list[Path], boards: str, backends: list[str], precisions: list[str],
                   threads: list[int], progress=print) -> dict:
    """Predict every bundle × board × backend × precision × threads; raises PredictUnavailable or ValueError."""
    try:
        from benchmarks.arm_cost import predict
        from benchmarks.arm_cost.boards import parse_boards
        from benchmarks.arm_cost.emulate import EmulationError
        from benchmarks.arm_cost.mca import McaError
    except ImportError:
        raise PredictUnavailable("--predict needs a skinedge checkout (benchmarks/arm_cost) on the PYTHONPATH, "
                                 "with its emulated ARM root: see benchmarks/README.md, 'Predicted time'") from None
    from edge.trust.bundle import BundleError, load_bundle

    chosen = parse_boards(boards)
    for bundle in bundles:
        if not Path(bundle).is_dir():
            raise ValueError(f"{bundle}: no such bundle directory")
        try:
            load_bundle(bundle)  # schema, hashes, golden self-test: refused here, not inside the emulator
        except BundleError as e:
            raise ValueError(str(e)) from None
    combos = [(b, p) for p in precisions for b in backends]
    rows = []
    try:
        for bundle in bundles:
            # edge's run_members, as `skinedge bench` times it (the runtime's call and the Python around it)
            rows += predict.predict(Path(bundle), chosen, combos, threads, span="inference", progress=progress)
    except (EmulationError, McaError) as e:
        raise PredictUnavailable(str(e)) from None
    return predict.report(rows, predict.published_error())


def band(rep: dict) -> str:
    err = rep.get("median_abs_error_pct")
    return (f"median error {err:.0f} % on published boards" if err is not None
            else "error against published boards not measured")


def summary_rows(rep: dict, width: int) -> list[list[str]]:
    """Rows for the real boards' "Latency and FPS" table: the key columns, p50 = the prediction, bare FPS, the rest
    "—" (`width` = the table's column count after the key)."""
    out = []
    for r in rep["results"]:
        cells = ["—"] * width
        cells[4], cells[7] = f"{r['ms']:.2f}", f"{r['fps']:.1f}"  # p50 ms, bare FPS
        out.append([f"{r['board_title']} (predicted, {band(rep)})", r["bundle"], r["backend"], r["precision"],
                    str(r["threads"]), *cells])
    return out


def rows(rep: dict) -> list[list[str]]:
    """The detailed table: prediction, range, core and memory parts, IPC, which LLVM model costed it."""
    return [[r["board"], r["bundle"], r["backend"], r["precision"], str(r["threads"]), f"{r['ms']:.2f}",
             f"{r['low_ms']:.2f}–{r['high_ms']:.2f}", f"{r['fps']:.1f}", f"{r['core_ms']:.2f}",
             f"{r['memory_ms']:.2f}", f"{r['instructions'] / r['cycles']:.2f}", r["llvm_model"]]
            for r in rep["results"]]
