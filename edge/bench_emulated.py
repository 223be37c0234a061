"""Emulated instruction counts (benchmarks/arm_cost) as reports `skinedge bench --merge` accepts beside real boards.

A report is written per emulated core by `python -m benchmarks.arm_cost.run --bench`. Its rows are instructions
counted under qemu, not time: they rank backends and precisions on one core, and an engineer with one real board
can read how far the real latency of the same bundle/backend/precision follows them. This module only checks
and tabulates such reports; edge.bench loads and prints them.
"""

from __future__ import annotations

SCHEMA = "skinedge-armcost/1"
UNITS = ("inference", "gradcam_overlay", "decode_preprocess")
HEAD = ["board", "bundle", "backend", "precision", "threads", "M instr / inference", "of which dot product",
        "M instr Grad-CAM + overlay", "M instr decode + preprocess", "int8 / fp32", "real boards: p50 ms"]


def problem(rep: dict) -> str | None:
    """What makes `rep` not an emulated report (one line), or None."""
    if not isinstance(rep.get("board"), str) or not isinstance(rep.get("results"), list):
        return f"a {SCHEMA} report needs 'board' (text) and 'results' (list)"
    for i, r in enumerate(rep["results"]):
        keys = ("bundle", "backend", "precision", "threads", *UNITS)
        missing = [k for k in keys if k not in r] if isinstance(r, dict) else ["(not an object)"]
        if not missing and not all(isinstance(r[u], dict) and "total" in r[u] for u in UNITS):
            missing = [f"{u}.total" for u in UNITS]
        if missing:
            return f"results[{i}] lacks {', '.join(missing)}"
    return None


def _real_ms(real: list[dict], r: dict) -> str:
    hits = [f"{rep['board']} t{x['threads']}: {x['latency_ms']['p50']:.1f}" for rep in real for x in rep["results"]
            if "error" not in x and (x["bundle"], x["backend"], x.get("precision", "int8"))
            == (r["bundle"], r["backend"], r["precision"])]
    return "; ".join(hits) or "—"


def rows(emulated: list[dict], real: list[dict]) -> list[list[str]]:
    """One table row per emulated configuration, with the real boards' p50 latency of the same configuration."""
    out = []
    for rep in emulated:
        by = {(r["bundle"], r["backend"], r["precision"]): r for r in rep["results"]}
        for r in rep["results"]:
            inf = r["inference"]["total"]
            fp32 = by.get((r["bundle"], r["backend"], "fp32"))
            ratio = f"{inf / fp32['inference']['total']:.2f}" if r["precision"] == "int8" and fp32 else ""
            out.append([rep["board"], r["bundle"], r["backend"], r["precision"], str(r["threads"]), f"{inf / 1e6:.2f}",
                        f"{100 * r['inference'].get('dot', 0) / inf:.0f} %",
                        f"{r['gradcam_overlay']['total'] / 1e6:.2f}", f"{r['decode_preprocess']['total'] / 1e6:.2f}",
                        ratio, _real_ms(real, r)])
    return out
