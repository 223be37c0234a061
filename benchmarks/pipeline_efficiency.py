"""Pipeline efficiency: full-pipeline FPS with Grad-CAM on every frame vs bare-inference FPS of the same
artefact and threads, side by side (issue 5 target: ratio >= 0.90).

Each configuration runs through `skinedge bench`'s own measurement (edge.bench): one child process loads
the bundle, times bare inference on preprocessed frames of the clip, then runs edge.pipeline.run on the
same clip (decode and preprocess in the capture thread -> infer and Grad-CAM in the main loop -> 480x320
overlay and null display in the presenter thread). Configurations are repeated and interleaved, and
medians reported, because the machine is shared. Bundles: the demo MicroMPoxNet at 128x128 as shipped,
and random-init 224x224 bundles of MobileNetV2 and of the zoo's MicroMPoxNet and MobileNetV2-MSCA-PFR
(built once by `skinedge convert --random-init`, a few minutes; speed does not depend on the weights).

    python -m benchmarks.pipeline_efficiency [--frames 100] [--repeats 3] [--threads 1,2] [--backend tflite]
"""

from __future__ import annotations

import argparse
import statistics
import sys

from benchmarks._assets import DEMO_BUNDLE, camera_clip, zoo_bundle
from edge import bench

TARGET = 0.90
# which thread runs which stage (decode is timed by the capture thread itself)
CAPTURE, MAIN_LOOP, PRESENTER = ("preprocess",), ("infer", "gradcam"), ("render", "display")
# figure -> how to read it from one result; medians over repeats are printed
FIGURES = {
    "bare": lambda r: r["bare_fps"],
    "pipeline": lambda r: r["pipeline"]["fps"],
    "ratio": lambda r: r["pipeline"]["fps"] / r["bare_fps"],
    "bare_ms": lambda r: r["latency_ms"]["mean"],
    "frame_ms": lambda r: r["pipeline"]["frame_ms"]["mean"],
    "decode": lambda r: r["pipeline"]["decode_ms"],
    **{s: (lambda r, s=s: r["pipeline"]["stage_ms"][s]) for s in CAPTURE + MAIN_LOOP + PRESENTER},
    "capture": lambda r: r["pipeline"]["decode_ms"] + sum(r["pipeline"]["stage_ms"][s] for s in CAPTURE),
    "main": lambda r: sum(r["pipeline"]["stage_ms"][s] for s in MAIN_LOOP),
    "presenter": lambda r: sum(r["pipeline"]["stage_ms"][s] for s in PRESENTER),
    # measured by the pipeline: ≈ 0 when the capture and presenter threads keep up with inference
    **{s: (lambda r, s=s: r["pipeline"]["stage_ms"][s]) for s in ("wait_camera", "wait_display")},
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--backend", default="tflite")
    a = ap.parse_args(argv)
    bundles = {"MobileNetV2 224 (random init)": zoo_bundle("mobilenet_v2"),
               "MobileNetV2-MSCA-PFR 224 (random init)": zoo_bundle("mobilenetv2_msca_pfr"),
               "MicroMPoxNet 224 (random init)": zoo_bundle("micro_mpoxnet"),
               "demo MicroMPoxNet 128": DEMO_BUNDLE}
    clip = camera_clip()
    threads = [int(t) for t in a.threads.split(",")]
    jobs = [bench.Job(str(b), a.backend, t, a.frames, a.warmup, True, str(clip))
            for _ in range(a.repeats) for b in bundles.values() for t in threads]
    report = bench.run_jobs(jobs)
    failed = [r for r in report["results"] if "error" in r]
    if failed:
        print("\n".join(f"{r['bundle']} t{r['threads']}: {r['error']}" for r in failed), file=sys.stderr)
        return 1
    print(f"\n{report['board']}, {report['cpus']} CPUs; {a.backend} int8; clip {clip.name} 640x480; "
          f"{a.frames} frames per phase, median of {a.repeats} interleaved repeats\n")
    rows, where = [], []
    for name, path in bundles.items():
        for t in threads:
            runs = [r for r in report["results"]
                    if r["bundle_path"] == str(path.resolve()) and r["threads"] == t]
            med = {k: statistics.median(get(r) for r in runs) for k, get in FIGURES.items()}
            # the ratio is a median of per-run ratios: each run's bare and pipeline phases ran back to back
            rows.append([name, str(t), f"{med['bare']:.1f}", f"{med['pipeline']:.1f}", f"{med['ratio']:.2f}",
                         "yes" if med["ratio"] >= TARGET else "NO"])
            where.append([name, str(t)] + [f"{med[k]:.2f}" for k in list(FIGURES)[3:]])
    print("\n".join(bench.md_table(["bundle", "threads", "bare FPS", "pipeline FPS (Grad-CAM every frame)",
                                     "ratio", f">= {TARGET:.2f}"], rows)))
    print("\nWhere a pipeline frame's time goes (median ms per stage; three threads run side by side: the capture "
          "thread decodes and preprocesses frame n+1, the main loop infers and explains frame n, the presenter "
          "renders and shows frame n-1, so a frame takes about the longest of the three, not their sum):\n")
    print("\n".join(bench.md_table(["bundle", "threads", "bare infer (mean)", "pipeline frame (mean)", "decode",
                                     "preprocess", "infer", "Grad-CAM", "render", "display", "capture thread",
                                     "main loop", "presenter", "inference waits for camera",
                                     "inference waits for display"], where)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
