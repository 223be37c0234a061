"""Pipeline efficiency: full-pipeline FPS with Grad-CAM on every frame vs bare-inference FPS of the same
artefact and threads, side by side (issue 5 target: ratio >= 0.90).

Each configuration runs through `skinedge bench`'s own measurement (edge.bench): one child process loads
the bundle, times bare inference on preprocessed frames of the clip, then runs edge.pipeline.run on the
same clip (decode in the capture thread -> preprocess -> infer -> Grad-CAM -> 480x320 overlay, display
off). Configurations are repeated and interleaved, and medians reported, because the machine is shared.

    python -m benchmarks.pipeline_efficiency [--frames 100] [--repeats 3] [--threads 1,2] [--backend tflite]
"""

from __future__ import annotations

import argparse
import statistics
import sys

from benchmarks._assets import DEMO_BUNDLE, camera_clip, mobilenet_bundle
from edge import bench

TARGET = 0.90
# figure -> how to read it from one result; medians over repeats are printed
FIGURES = {
    "bare": lambda r: r["bare_fps"],
    "pipeline": lambda r: r["pipeline"]["fps"],
    "ratio": lambda r: r["pipeline"]["fps"] / r["bare_fps"],
    "bare_ms": lambda r: r["latency_ms"]["mean"],
    "frame_ms": lambda r: r["pipeline"]["frame_ms"]["mean"],
    **{s: (lambda r, s=s: r["pipeline"]["stage_ms"][s])
       for s in ("preprocess", "infer", "gradcam", "render", "wait")},
    "decode": lambda r: r["pipeline"]["decode_ms"],
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--backend", default="tflite")
    a = ap.parse_args(argv)
    bundles = {"MobileNetV2 224 (random init)": mobilenet_bundle(), "demo MicroMPoxNet 128": DEMO_BUNDLE}
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
    print("\nWhere a pipeline frame's time goes (median ms; decode runs in the capture thread, 'wait' is the "
          "main loop waiting for a frame):\n")
    print("\n".join(bench.md_table(["bundle", "threads", "bare infer (mean)", "pipeline frame (mean)",
                                     "preprocess", "infer", "Grad-CAM", "overlay", "wait", "decode"], where)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
