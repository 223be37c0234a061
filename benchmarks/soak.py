"""Soak: does `skinedge run` hold its memory flat over a long run? (issue 12 target: < 1 byte/frame)

Runs the real pipeline (edge.pipeline.run: the demo bundle, the demo clip looped through the real capture
thread, Grad-CAM on every frame, a 480x320 overlay rendered for the null display) for --frames frames,
prints the resident set size (VmRSS) every --every frames, and at the end the slope of RSS over frames
after the warm-up (least squares over a sample every --sample frames), the peak RSS, and the FPS.
`--tracemalloc` instead compares Python allocation sites between the end of the warm-up and the end of the
run (slow: use it with a few ten thousand frames) to find what grows.

    nice -n 10 python -m benchmarks.soak [--frames 500000] [--warmup 100000] [--backend tflite] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

from benchmarks._assets import DEMO_BUNDLE
from edge.config import load_config
from edge.pipeline import run

CLIP = DEMO_BUNDLE.parent / "clip.mp4"


def rss_bytes(field: str = "VmRSS") -> int:
    """This process's resident set size now (VmRSS) or at its peak (VmHWM: unlike ru_maxrss, not inherited from
    the parent across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field} line")


def config(tmp: Path, backend: str, threads: int):
    path = tmp / "soak.yaml"
    path.write_text(json.dumps({
        "bundle": str(DEMO_BUNDLE), "backend": backend, "threads": threads,
        "source": {"kind": "video", "path": str(CLIP), "loop": True},
        "display": {"kind": "null", "size": [480, 320]},
        "gradcam": {"every_n": 1}, "watchdog": {"enabled": False}, "allow_unsigned": True,
    }))
    return load_config(path)


def slope(frames: list[int], rss: list[int]) -> float:
    """Least-squares bytes per frame."""
    return float(np.polyfit(np.asarray(frames, np.float64), np.asarray(rss, np.float64), 1)[0])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=500_000)
    ap.add_argument("--warmup", type=int, default=100_000, help="frames before the slope is fitted")
    ap.add_argument("--every", type=int, default=50_000, help="print RSS every N frames")
    ap.add_argument("--sample", type=int, default=5_000, help="RSS sample for the fit every N frames")
    ap.add_argument("--backend", default="tflite")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tracemalloc", action="store_true", help="list the allocation sites that grew after warm-up")
    ap.add_argument("--target", type=float, default=1.0, help="slope bar in bytes/frame (exit 1 above it)")
    a = ap.parse_args(argv)
    if not 0 < a.warmup < a.frames:
        ap.error("--warmup must be between 0 and --frames")
    samples: list[tuple[int, int]] = []
    snapshot: list[tracemalloc.Snapshot] = []
    t0 = time.perf_counter()

    def on_frame(*_) -> None:
        nonlocal shown
        shown += 1
        if shown % a.sample == 0 or shown % a.every == 0:
            samples.append((shown, rss_bytes()))
            if shown % a.every == 0:
                print(f"{shown:>9,} frames  RSS {samples[-1][1] / 2**20:8.2f} MiB  "
                      f"{shown / (time.perf_counter() - t0):6.1f} FPS", flush=True)
        if a.tracemalloc and shown == a.warmup:
            snapshot.append(tracemalloc.take_snapshot())

    shown = 0
    if a.tracemalloc:
        tracemalloc.start(8)
    with tempfile.TemporaryDirectory(prefix="skinedge-soak-") as tmp:
        cfg = config(Path(tmp), a.backend, a.threads)
        print(f"soak: {a.frames:,} frames of {CLIP.name} (looped) through {DEMO_BUNDLE.name} on {a.backend}, "
              f"{a.threads} thread(s), Grad-CAM every frame, null display; RSS {rss_bytes() / 2**20:.2f} MiB "
              "before start", flush=True)
        stats = run(cfg, frames=a.frames, on_frame=on_frame)
    if a.tracemalloc:
        grown = tracemalloc.take_snapshot().compare_to(snapshot[0], "traceback")
        print(f"allocation sites grown between frame {a.warmup:,} and frame {shown:,}:")
        for d in grown[:10]:
            print(f"  {d.size_diff:+,} B in {d.count_diff:+,} blocks at")
            for line in d.traceback.format()[-6:]:
                print("    " + line)
    after = [(f, r) for f, r in samples if f >= a.warmup]
    peak = rss_bytes("VmHWM")
    print(f"{stats.summary()}")
    if len(after) < 2:
        print("too few samples after the warm-up to fit a slope")
        return 1
    s = slope(*zip(*after))
    print(f"RSS slope after warm-up ({after[0][0]:,}..{after[-1][0]:,} frames, {len(after)} samples): "
          f"{s:+.3f} bytes/frame (target < {a.target}); RSS {after[0][1] / 2**20:.2f} -> "
          f"{after[-1][1] / 2**20:.2f} MiB; peak RSS {peak / 2**20:.1f} MiB")
    return 0 if s < a.target else 1


if __name__ == "__main__":
    sys.exit(main())
