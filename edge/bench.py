"""`skinedge bench`: FPS and latency of a bundle per backend × threads on this board, as JSON + Markdown.

Each (backend, threads) configuration runs in its own child process, so load time, first-inference time
and peak RSS belong to that configuration alone. Reports from several boards merge into one table.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np
from tqdm import tqdm

from edge.bundle import load_bundle

SCHEMA = "skinedge-bench/1"


@dataclass(frozen=True)
class Job:
    bundle: str
    backend: str
    threads: int
    frames: int
    warmup: int
    gradcam: bool
    source: str | None


def board_model() -> str:
    """/proc/device-tree/model on ARM boards, else the CPU model name."""
    try:
        return Path("/proc/device-tree/model").read_text().strip("\x00\n ")
    except OSError:
        pass
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_temperature_c() -> float | None:
    """The first thermal zone that reads (cpu-thermal on a Pi, thermal zones on Jetson)."""
    for zone in sorted(Path("/sys/class/thermal").glob("thermal_zone*")):
        try:
            return int((zone / "temp").read_text()) / 1000.0
        except (OSError, ValueError):
            continue
    return None


def throttling() -> str | None:
    """`vcgencmd get_throttled` on a Raspberry Pi (0x0 = never throttled), else None."""
    try:
        out = subprocess.run(["vcgencmd", "get_throttled"], capture_output=True, text=True, timeout=5)
        return out.stdout.strip().split("=", 1)[-1] or None
    except (OSError, subprocess.SubprocessError):
        return None


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for dist in ("numpy", "opencv-python-headless", "opencv-python", "onnxruntime", "ai-edge-litert",
                 "tflite-runtime", "tensorrt", "skinedge"):
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return found


def percentiles(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms)
    return {"min": float(a.min()), "p50": float(np.percentile(a, 50)), "p90": float(np.percentile(a, 90)),
            "p99": float(np.percentile(a, 99)), "mean": float(a.mean())}


def measure(job: Job) -> dict:
    """One configuration, in this process: load, first inference, bare latency, full pipeline."""
    from edge.classify import Classifier

    bundle = load_bundle(job.bundle)
    t = time.perf_counter()
    clf = Classifier(bundle, job.backend, threads=job.threads)
    load_s = time.perf_counter() - t
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (*bundle.input_size, 3), dtype=np.uint8)
    t = time.perf_counter()
    clf.run_members(img)
    first_ms = (time.perf_counter() - t) * 1e3
    for _ in range(job.warmup):
        clf.run_members(img)
    lat, member_ms = [], []
    t_bare = time.perf_counter()
    for _ in range(job.frames):
        t = time.perf_counter()
        outs = clf.run_members(img)
        lat.append((time.perf_counter() - t) * 1e3)
        member_ms.append([ms for _, _, ms in outs])
    bare_s = time.perf_counter() - t_bare
    cam_ms = []
    for _ in range(min(job.frames, 50)):
        cam_ms.append(clf(img, want_cam=True).cam_ms)
    pipe = _pipeline(job, bundle)
    artefact = clf.artefact
    size = sum(m.files[artefact].stat().st_size for m in bundle.members)
    clf.close()
    return {
        "bundle": bundle.name, "bundle_digest": bundle.digest[:16], "arch": bundle.manifest.get("arch"),
        "backend": clf.kind, "artefact": artefact, "threads": job.threads, "frames": job.frames,
        "model_bytes": size, "load_s": load_s, "first_inference_ms": first_ms,
        "latency_ms": percentiles(lat), "bare_fps": job.frames / bare_s,
        "member_ms": {m.name: float(np.median([row[i] for row in member_ms])) for i, m in enumerate(bundle.members)},
        "gradcam_ms": float(np.median(cam_ms)),
        "pipeline": pipe,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
    }


def _pipeline(job: Job, bundle) -> dict:
    """decode -> preprocess -> infer -> Grad-CAM -> overlay, display off, through edge.pipeline.run."""
    from edge.config import load_config
    from edge.pipeline import run

    with tempfile.TemporaryDirectory() as tmp:
        source = job.source or str(_default_clip(Path(tmp), bundle))
        cfg_path = Path(tmp) / "bench.yaml"
        cfg_path.write_text(json.dumps({
            "bundle": str(Path(job.bundle).resolve()), "backend": job.backend, "threads": job.threads,
            "source": {"kind": "folder" if Path(source).is_dir() else "video", "path": str(Path(source).resolve()),
                       "loop": True},
            "display": {"kind": "null", "size": [480, 320]},
            "gradcam": {"every_n": 1 if job.gradcam else 0},
        }))
        stats = run(load_config(cfg_path), frames=job.frames)
    return {"fps": stats.fps, "stage_ms": stats.median_ms(), "decode_ms": stats.decode_ms,
            "dropped": stats.dropped, "gradcam": job.gradcam}


def _default_clip(tmp: Path, bundle) -> Path:
    """The shipped demo clip when present, else a synthetic one at 640×480."""
    shipped = Path(__file__).parent / "demo_assets" / "clip.mp4"
    if shipped.is_file():
        return shipped
    from calibration.synthetic import write_clip

    return write_clip(tmp / "clip.mp4", n_frames=60, size=(640, 480))


def run_jobs(jobs: list[Job], progress: bool = True) -> dict:
    """Every job in a child process; a failing configuration is reported, not fatal."""
    results = []
    for job in tqdm(jobs, desc="bench", disable=not progress):
        proc = subprocess.run([sys.executable, "-m", "edge.bench", json.dumps(job.__dict__)],
                              capture_output=True, text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
        if proc.returncode == 0:
            results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        else:
            err = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            results.append({"bundle": job.bundle, "backend": job.backend, "threads": job.threads, "error": err})
    return {
        "schema": SCHEMA, "board": board_model(), "machine": platform.machine(), "cpus": os.cpu_count(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "cpu_temp_c": cpu_temperature_c(),
        "throttled": throttling(), "versions": versions(), "results": results,
    }


def markdown(reports: list[dict]) -> str:
    """One table across reports (boards)."""
    rows = ["| board | bundle | backend | threads | size MB | load s | first ms | p50 ms | p90 ms | p99 ms | "
            "bare FPS | pipeline FPS | Grad-CAM | peak RSS MB |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for rep in reports:
        for r in rep["results"]:
            if "error" in r:
                rows.append(f"| {rep['board']} | {Path(r['bundle']).name} | {r['backend']} | {r['threads']} | "
                            f"error: {r['error']} |" + " |" * 9)
                continue
            lat = r["latency_ms"]
            rows.append(
                f"| {rep['board']} | {r['bundle']} | {r['backend']} ({r['artefact']}) | {r['threads']} | "
                f"{r['model_bytes'] / 1e6:.2f} | {r['load_s']:.2f} | {r['first_inference_ms']:.1f} | {lat['p50']:.2f} | "
                f"{lat['p90']:.2f} | {lat['p99']:.2f} | {r['bare_fps']:.1f} | {r['pipeline']['fps']:.1f} | "
                f"{'on' if r['pipeline']['gradcam'] else 'off'} | {r['peak_rss_mb']:.0f} |")
    return "\n".join(rows) + "\n"


def validate_report(rep: dict) -> dict:
    """Reject a file that is not a bench report, naming what is missing."""
    if not isinstance(rep, dict) or rep.get("schema") != SCHEMA or not isinstance(rep.get("results"), list):
        raise ValueError(f"not a {SCHEMA} report")
    return rep


def plot(reports: list[dict], out: Path) -> bool:
    """Bar chart of bare and pipeline FPS; returns False when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    labels, bare, pipe = [], [], []
    for rep in reports:
        for r in rep["results"]:
            if "error" not in r:
                labels.append(f"{rep['board'][:18]}\n{r['backend']} t{r['threads']}")
                bare.append(r["bare_fps"])
                pipe.append(r["pipeline"]["fps"])
    fig, ax = plt.subplots(figsize=(max(6, len(labels) * 1.2), 4))
    x = np.arange(len(labels))
    ax.bar(x - 0.2, bare, 0.4, label="bare inference")
    ax.bar(x + 0.2, pipe, 0.4, label="full pipeline")
    ax.set_xticks(x, labels, fontsize=7)
    ax.set_ylabel("FPS")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return True


if __name__ == "__main__":  # child process: one job, JSON on the last stdout line
    job = Job(**json.loads(sys.argv[1]))
    print(json.dumps(measure(job)))
