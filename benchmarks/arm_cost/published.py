"""Published real-board latencies of MobileNetV2 1.0 224 on XNNPACK (the library LiteRT runs on the CPU), against
predict.py's figures for the same model, precision and thread count: the method's error.

    SKINEDGE_ARM_ROOT=/tmp/skinedge-aarch64 nice -n 10 python -m benchmarks.arm_cost.published --bundle DIR

DIR is a MobileNetV2 1.0 224 bundle with 1000 classes (torchvision's architecture, random weights: speed does not
depend on them), built as benchmarks/README.md shows. Writes results/published.json (the table and the median absolute
error that `skinedge bench --predict` quotes) and prints the Markdown table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from benchmarks.arm_cost.boards import BOARDS
from benchmarks.arm_cost.predict import RESULTS, predict
from benchmarks.arm_cost.run import COMBOS

XNNPACK_README = "https://github.com/google/XNNPACK/blob/master/README.md (Raspberry Pi table, benchmarked 2022-02-08)"
TF_BLOG = ("TensorFlow blog 'Faster Quantized Inference with XNNPACK' (2021-09-09), https://blog.tensorflow.org/2021/09/"
           "faster-quantized-inference-with-xnnpack.html, table of ImageNet models on Raspberry Pi 3B+ (read here as quoted "
           "in https://velog.io/@kcw4875/Faster-Quantized-Inference-with-XNNPACK)")
ARM_COURSE = ("https://learn.arm.com/courses/executorch-on-arm/optimize-image-classification/evaluate-int8-mobilenetv2/"
              "bring-the-runtime-paths-into-one-view/")


@dataclass(frozen=True)
class Figure:
    board: str  # boards.BOARDS key
    precision: str
    threads: int
    ms: float
    runtime: str
    source: str
    like_for_like: bool  # same ISA (AArch64) and library as predicted; else shown, not in the error
    note: str = ""


FIGURES = [
    Figure("rpi4", "fp32", 4, 46.0, "XNNPACK end2end-bench, ARM64 build", XNNPACK_README, True,
           "'RPi 4 (BCM2711, ARM64)' column; multi-threaded (4 cores)"),
    Figure("rpi4", "int8", 4, 17.0, "XNNPACK end2end-bench, ARM64 build, per-channel int8", XNNPACK_README, True,
           "'RPi 4 (BCM2711, ARM64)' column; multi-threaded (4 cores)"),
    Figure("rpi3b+", "fp32", 4, 95.7, "TensorFlow Lite with XNNPACK", TF_BLOG, True,
           "threads not stated: 4 assumed (one A53 at 1.4 GHz cannot reach 95.7 ms: 2 fp32 FMA per cycle at most)"),
    Figure("rpi3b+", "int8", 4, 70.5, "TensorFlow Lite with XNNPACK (int8)", TF_BLOG, True,
           "threads not stated: 4 assumed, as for fp32"),
    Figure("rpi5", "fp32", 4, 10.88, "ExecuTorch with XNNPACK (median)", ARM_COURSE, True,
           "board not restated on the results page: a Pi 5 inferred (a Pi 4 takes 46 ms for this model and precision, "
           "XNNPACK's own figure); threads: ExecuTorch's default, one per core, assumed"),
    Figure("rpi5", "int8", 4, 3.98, "ExecuTorch with XNNPACK, int8 (median)", ARM_COURSE, True,
           "as above"),
    Figure("rpi3b+", "fp32", 4, 79.0, "XNNPACK end2end-bench, 32-bit Raspbian build", XNNPACK_README, False,
           "'RPi 3+ (BCM2837B0)' column: AArch32 NEON kernels, not the AArch64 ones predicted"),
    Figure("rpi3b+", "int8", 4, 30.0, "XNNPACK end2end-bench, 32-bit Raspbian build", XNNPACK_README, False,
           "as above"),
    Figure("rpi4", "fp32", 4, 41.0, "XNNPACK end2end-bench, 32-bit Raspbian build", XNNPACK_README, False,
           "'RPi 4 (BCM2711)' column: AArch32 kernels"),
    Figure("rpi4", "int8", 4, 20.0, "XNNPACK end2end-bench, 32-bit Raspbian build", XNNPACK_README, False,
           "as above"),
]


def compare(bundle: Path) -> dict:
    """Predict every figure's board × precision × threads (LiteRT, the runtime's call alone) and compare."""
    boards = [BOARDS[b] for b in dict.fromkeys(f.board for f in FIGURES)]
    threads = sorted({f.threads for f in FIGURES} | {1})
    rows = predict(bundle, boards, COMBOS, threads, span="invoke", progress=lambda m: print(m, file=sys.stderr))
    by = {(r.board, r.precision, r.threads): r for r in rows if r.backend == "tflite"}
    table = []
    for f in FIGURES:
        p = by[(f.board, f.precision, f.threads)]
        table.append({**asdict(f), "predicted_ms": p.ms, "low_ms": p.low_ms, "high_ms": p.high_ms,
                      "error_pct": 100 * (p.ms - f.ms) / f.ms, "within_range": p.low_ms <= f.ms <= p.high_ms,
                      "predicted_1_thread_ms": by[(f.board, f.precision, 1)].ms})
    errors = [abs(t["error_pct"]) for t in table if t["like_for_like"]]
    return {"bundle": Path(bundle).name, "rows": table, "median_abs_error_pct": statistics.median(errors),
            "figures": len(errors), "boards": len({t["board"] for t in table if t["like_for_like"]}),
            "predictions": [asdict(r) for r in rows]}


def markdown(res: dict) -> str:
    lines = [("| board | precision | threads | published ms | runtime | predicted ms (range) | error | in range | "
             "source |"), "|---|---|---|---|---|---|---|---|---|"]
    for t in res["rows"]:
        mark = "" if t["like_for_like"] else " (not in the error: " + t["note"].split(":")[0] + ")"
        lines.append(f"| {BOARDS[t['board']].title} | {t['precision']} | {t['threads']} | {t['ms']:g} | "
                     f"{t['runtime']}{mark} | {t['predicted_ms']:.1f} ({t['low_ms']:.1f}–{t['high_ms']:.1f}) | "
                     f"{t['error_pct']:+.0f} % | {'yes' if t['within_range'] else 'no'} | {t['source']} |")
    lines.append(f"\nMedian absolute error over the {res['figures']} like-for-like figures ({res['boards']} boards): "
                 f"**{res['median_abs_error_pct']:.0f} %**.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path, required=True, help="a MobileNetV2 1.0 224 bundle, 1000 classes")
    ap.add_argument("--table", action="store_true", help="print the table from results/published.json only")
    a = ap.parse_args(argv)
    out = RESULTS / "published.json"
    res = json.loads(out.read_text()) if a.table else compare(a.bundle)
    if not a.table:
        out.write_text(json.dumps(res, indent=1))
    print(markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
