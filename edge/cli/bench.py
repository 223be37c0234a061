"""`skinedge bench`: latency and FPS tables, merged across boards."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edge.cli.common import count, given, non_negative


def _bench(a: argparse.Namespace) -> int:
    import json

    from edge import bench

    try:
        _check_outputs(a)  # before minutes of benchmarking or prediction, not after
        if a.merge:
            if a.bundle or a.json:
                raise bench.BenchError("--merge takes report files only (no bundles); write with --md / --plot")
            reports = [bench.load_report(f) for f in a.merge]
        elif a.predict:
            reports = [_predict(a)]
        else:
            if not a.bundle:
                raise bench.BenchError("give one or more bundles, or --merge A.json B.json")
            jobs, skipped = bench.plan([str(b) for b in a.bundle], a.backend.split(","),
                                       a.precision.split(","), bench.int_list(a.threads, "--threads"), a.frames,
                                       a.warmup, a.gradcam, a.source)
            reports = [bench.run_jobs(jobs, skipped)]
            if a.fidelity:
                bench.add_fidelity(reports[0])
    except bench.BenchError as e:
        print(f"skinedge bench: error: {e}", file=sys.stderr)
        return 2
    table = bench.markdown(reports)
    print(table)
    for rep in reports:
        for line in bench.busy_warnings(rep):
            print(line, file=sys.stderr)
    try:
        if a.json:
            a.json.write_text(json.dumps(reports[0], indent=2))
        if a.md:
            a.md.write_text(table)
        if a.plot:
            print(f"plot written to {a.plot}" if bench.plot(reports, a.plot) else
                  "no plot: matplotlib is not installed (pip install matplotlib)")
    except OSError as e:  # checked before the run; a disk that filled up since is still one line
        print(f"skinedge bench: error: cannot write the report: {e.strerror or e}: {e.filename}", file=sys.stderr)
        return 2
    return 0 if all("error" not in r for rep in reports for r in rep["results"]) else 1


def _predict(a: argparse.Namespace) -> dict:
    """--predict: emulated prediction for boards, as a report (raises BenchError with one line)."""
    from edge import bench, bench_predicted
    from edge.backends import backend_list

    if not a.bundle:
        raise bench.BenchError("--predict needs one or more bundles")
    try:
        backends = [b for b in dict.fromkeys(backend_list(a.backend.replace("auto", "tflite"))) if b != "tensorrt"]
        if not backends:
            raise ValueError("--predict costs CPU backends (tflite, onnx); TensorRT runs on the GPU")
        return bench_predicted.predict_report(a.bundle, a.predict, backends, a.precision.split(","),
                                              bench.int_list(a.threads, "--threads"),
                                              progress=lambda m: print(m, file=sys.stderr))
    except (ValueError, bench_predicted.PredictUnavailable) as e:
        raise bench.BenchError(f"--predict: {e}") from None


def _check_outputs(a: argparse.Namespace) -> None:
    from edge import bench
    from edge.outputs import OutputError, probe

    for option in ("json", "md", "plot"):
        if getattr(a, option):
            try:
                probe(getattr(a, option), f"--{option}")
            except OutputError as e:
                raise bench.BenchError(str(e)) from None


def add_parsers(sub) -> None:
    b = sub.add_parser("bench", help="latency and FPS per bundle x backend x precision x threads; --merge tables "
                                     "across boards")
    b.add_argument("bundle", nargs="*", type=Path)
    b.add_argument("--backend", default="auto", help="comma-separated: tflite, onnx, tensorrt, auto")
    b.add_argument("--precision", default="int8", help="comma-separated: int8, fp32 (fp32: bare inference only, "
                                                      "for the int8 speed-up)")
    b.add_argument("--threads", default="1", help="comma-separated thread counts, e.g. 1,2,4")
    b.add_argument("--frames", type=count, default=100, help="measured frames per configuration and phase")
    b.add_argument("--warmup", type=non_negative, default=10, help="frames run before measuring")
    b.add_argument("--gradcam", action="store_true", help="Grad-CAM on every frame of the pipeline run")
    b.add_argument("--fidelity", action="store_true", help="add each artefact's agreement with the float model "
                                                         "and accuracy from the bundle's validation")
    b.add_argument("--source", type=given, help="video file, image folder or camera for the pipeline run (default: the demo clip)")
    b.add_argument("--json", type=Path, help="write the report here (merge it with reports from other boards)")
    b.add_argument("--md", type=Path, help="write the Markdown tables here")
    b.add_argument("--plot", type=Path, help="write a PNG bar chart here (needs matplotlib)")
    b.add_argument("--merge", nargs="+", type=Path, metavar="REPORT.json", help="merge reports from several boards")
    b.add_argument("--predict", metavar="BOARD[,BOARD]", help="no board: predict ms and FPS on these boards (rpi4, "
                                                            "rpi5, jetson-nano, orin-nano, rpi-zero2w, rpi3b+) from "
                                                            "emulation; needs a checkout's ARM root (benchmarks/README)")
    b.set_defaults(fn=_bench)
