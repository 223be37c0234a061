"""Emulated ARM cost: instructions per inference, per Grad-CAM + overlay and per pipeline frame, for each
emulated core × bundle × backend × precision at one thread, cached per (core, bundle) under --cache.

    SKINEDGE_ARM_ROOT=/tmp/skinedge-aarch64 python -m benchmarks.arm_cost.run --cores cortex-a72,cortex-a76 \
        --bundles demo,mobilenet_v2,mobilenetv2_msca_pfr,efficientnet_b0 --jobs 2
    python -m benchmarks.arm_cost.run --table            # Markdown tables from the cache
    python -m benchmarks.arm_cost.run --bench out.json   # a skinedge-bench report for `skinedge bench --merge`

Bundles: "demo" is the shipped demo bundle (its whole pipeline is measured too); other names are random-init
224 px bundles built by benchmarks/_assets.zoo_bundle (needs the x86 venv with torch), or a bundle directory.
Instructions are not time (see benchmarks/README.md); they rank what runs on the same core.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchmarks.arm_cost.emulate import CORES, DEMO_BUNDLE, EmulationError, arm_root, measure, missing_tooling

COMBOS = [("tflite", "int8"), ("onnx", "int8"), ("tflite", "fp32"), ("onnx", "fp32")]
CACHE = Path(os.environ.get("SKINEDGE_ARM_COST_CACHE", "/tmp/skinedge-arm-cost"))
RUNTIME = {"tflite": "LiteRT", "onnx": "ONNX Runtime"}


def bundle_path(name: str) -> Path:
    if name == "demo":
        return DEMO_BUNDLE
    if Path(name).is_dir():
        return Path(name)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from _assets import zoo_bundle

    return zoo_bundle(name)


def cached(cache: Path, core: str, name: str, repeat: int) -> Path:
    return cache / f"{core}--{Path(name).name}--r{repeat}.json"


def run_one(root: Path, cache: Path, core: str, name: str, repeat: int) -> str:
    out = cached(cache, core, name, repeat)
    if out.exists():
        return f"{out.name}: cached"
    bundle = bundle_path(name)
    demo = name == "demo"
    try:
        res = measure(root, core, bundle, COMBOS, k=3 if demo else 1, warmup=2 if demo else 1, pipeline=demo,
                      scratch=cache / "scratch" / f"{core}-{Path(name).name}-r{repeat}")
    except EmulationError as e:
        return f"{out.name}: FAILED {e}"
    out.write_text(json.dumps({**res, "name": Path(name).name, "repeat": repeat}, indent=1))
    return f"{out.name}: done"


def load(cache: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(cache.glob("*--r*.json"))]


# ---- tables ----


def _m(x: float) -> str:
    return f"{x / 1e6:.1f}" if x >= 1e7 else f"{x / 1e6:.2f}"


def rows_by_key(results: list[dict]) -> dict[tuple, list[dict]]:
    """(name, core, backend, precision) -> the repeats' rows, each with the decode cost of its bundle."""
    by: dict[tuple, list[dict]] = {}
    for res in results:
        for r in res["runs"]:
            row = {**r, "decode_preprocess": res["decode_preprocess"], "bundle": res["bundle"],
                   "input_size": res["input_size"]}
            by.setdefault((res["name"], res["core"], r["backend"], r["precision"]), []).append(row)
    return by


def spread(values: list[float]) -> float:
    """(max - min) / min, as a percentage."""
    return 100.0 * (max(values) - min(values)) / min(values)


def table(results: list[dict]) -> str:
    by = rows_by_key(results)
    first = {key: rows[0] for key, rows in by.items()}
    names = list(dict.fromkeys(k[0] for k in first))
    cores = [c for c in CORES if any(k[1] == c for k in first)]
    head = ["bundle", "core (board)", "LiteRT int8", "LiteRT fp32", "ORT int8", "ORT fp32", "int8/fp32 LiteRT",
            "int8/fp32 ORT", "LiteRT/ORT int8", "LiteRT/ORT fp32", "dot-product share (int8)",
            "outside inference (best int8)"]
    lines = [f"| {' | '.join(head)} |", f"|{'---|' * len(head)}"]
    for name in names:
        for core in cores:
            inf = {(b, p): first[(name, core, b, p)]["inference"]["total"]
                   for b, p in COMBOS if (name, core, b, p) in first}
            if len(inf) < 4:
                continue
            best = min(("tflite", "onnx"), key=lambda b: inf[(b, "int8")])
            r = first[(name, core, best, "int8")]
            outside = r["gradcam_overlay"]["total"] + r["decode_preprocess"]["total"]
            dots = [first[(name, core, b, "int8")]["inference"] for b in ("tflite", "onnx")]
            lines.append("| " + " | ".join([
                f"{name} ({r['input_size'][0]} px)", f"{core} ({CORES[core].boards})",
                *(_m(inf[c]) for c in COMBOS[0::2] + COMBOS[1::2]),
                *(f"{inf[(b, 'int8')] / inf[(b, 'fp32')]:.2f}" for b in ("tflite", "onnx")),
                *(f"{inf[('tflite', p)] / inf[('onnx', p)]:.2f}" for p in ("int8", "fp32")),
                " / ".join(f"{100 * d['dot'] / d['total']:.0f} %" for d in dots),
                f"{100 * outside / (outside + inf[(best, 'int8')]):.0f} % ({RUNTIME[best]})"]) + " |")
    return "\n".join(lines) + "\n"


def pipeline_table(results: list[dict]) -> str:
    """Demo bundle: the measured pipeline frame against the sum of its measured parts."""
    lines = ["| core | backend | inference | Grad-CAM + overlay | decode + preprocess | sum | whole pipeline frame |",
             "|---|---|---|---|---|---|---|"]
    for key, rows in rows_by_key(results).items():
        r = rows[0]
        if "pipeline_frame" not in r:
            continue
        parts = [r["inference"]["total"], r["gradcam_overlay"]["total"], r["decode_preprocess"]["total"]]
        lines.append(f"| {key[1]} | {RUNTIME[key[2]]} {key[3]} | " + " | ".join(_m(x) for x in parts)
                     + f" | {_m(sum(parts))} | {_m(r['pipeline_frame']['total'])} |")
    return "\n".join(lines) + "\n"


def repeat_table(results: list[dict]) -> str:
    """Every configuration measured more than once: the spread of its counts across runs."""
    head = ("| bundle | core | backend | precision | runs | inference (M) | spread | Grad-CAM + overlay spread "
            "| decode + preprocess spread | pipeline frame spread |")
    lines = [head, "|---|---|---|---|---|---|---|---|---|---|"]
    for (name, core, b, p), rows in rows_by_key(results).items():
        if len(rows) < 2:
            continue
        inf = [r["inference"]["total"] for r in rows]
        pipe = [r["pipeline_frame"]["total"] for r in rows if "pipeline_frame" in r]
        lines.append(f"| {name} | {core} | {RUNTIME[b]} | {p} | {len(rows)} | "
                     + ", ".join(f"{x / 1e6:.3f}" for x in inf) + f" | {spread(inf):.3f} % | "
                     + f"{spread([r['gradcam_overlay']['total'] for r in rows]):.3f} % | "
                     + f"{spread([r['decode_preprocess']['total'] for r in rows]):.3f} % | "
                     + (f"{spread(pipe):.3f} % |" if len(pipe) > 1 else "— |"))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cores", default="cortex-a72,cortex-a76,cortex-a57,neoverse-n1")
    ap.add_argument("--bundles", default="demo")
    ap.add_argument("--repeats", type=int, default=1, help="independent runs of each (core, bundle)")
    ap.add_argument("--jobs", type=int, default=1, help="emulations run side by side")
    ap.add_argument("--cache", type=Path, default=CACHE)
    ap.add_argument("--table", action="store_true", help="print the Markdown tables from the cache")
    ap.add_argument("--bench", type=Path, help="write the cache as skinedge-bench reports (one per core)")
    a = ap.parse_args(argv)
    a.cache.mkdir(parents=True, exist_ok=True)
    if a.table or a.bench:
        results = load(a.cache)
        if a.table:
            print(table(results), pipeline_table(results), repeat_table(results), sep="\n")
        if a.bench:
            write_bench(results, a.bench)
        return 0
    root = arm_root()
    if why := missing_tooling(root):
        print(why, file=sys.stderr)
        return 2
    cores = a.cores.split(",")
    unknown = [c for c in cores if c not in CORES]
    if unknown:
        print(f"--cores: unknown {', '.join(unknown)}; expected some of {', '.join(CORES)}", file=sys.stderr)
        return 2
    jobs = [(c, n, r) for n in a.bundles.split(",") for c in cores for r in range(a.repeats)]
    with ThreadPoolExecutor(a.jobs) as pool:
        for line in pool.map(lambda j: run_one(root, a.cache, *j), jobs):
            print(line, flush=True)
    return 0


def write_bench(results: list[dict], out: Path) -> None:
    """One emulated report per core (<out stem>-<core>.json) for `skinedge bench --merge`."""
    from edge import bench_emulated

    units = ("inference", "gradcam_overlay", "decode_preprocess", "pipeline_frame")
    for core in dict.fromkeys(r["core"] for r in results):
        rows = [{"bundle": r["bundle"], "backend": b, "precision": p, "threads": 1, **{u: r[u] for u in units if u in r}}
                for (_, c, b, p), (r, *_) in rows_by_key(results).items() if c == core]
        path = out.with_name(f"{out.stem}-{core}{out.suffix or '.json'}")
        path.write_text(json.dumps({"schema": bench_emulated.SCHEMA, "board": f"emulated {core} ({CORES[core].boards})",
                                    "emulator": "qemu-aarch64 TCG + benchmarks/arm_cost/count.c", "results": rows},
                                   indent=1))
        print(f"wrote {path}")


if __name__ == "__main__":
    sys.exit(main())
