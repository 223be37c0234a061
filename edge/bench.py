"""`skinedge bench`: latency and FPS of bundles per backend × precision × threads on this board.

Each configuration runs in its own child process (`python -m edge.bench '<job json>'`), so its load time,
first-inference time and peak RSS belong to it alone and one crashing runtime cannot take the run down.
A configuration measures, on frames from the same source the pipeline reads:
- bare inference: the backend alone on preprocessed frames (latency percentiles, FPS, per member);
- the full pipeline through `edge.pipeline.run` — decode (capture thread) → preprocess → infer →
  Grad-CAM → overlay, display off — with per-stage milliseconds, and how long the loop waited for a
  frame (≈ 0 when the capture thread hides decoding).
Reports are JSON (SCHEMA) with the board, temperatures and library versions, so reports from several
boards merge into one Markdown table.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from edge import about, bench_emulated, bench_predicted, pipeline
from edge.backends import PRECISIONS, artefact_for, backend_list, resolve
from edge.backends.cpu import check_threads
from edge.memory import peak_rss_kib
from edge.stats import percentiles
from edge.trust.bundle import BundleError, load_bundle

SCHEMA = "skinedge-bench/2"
DEMO_CLIP = Path(__file__).parent / "demo_assets" / "clip.mp4"
DISPLAY_SIZE = (480, 320)  # the overlay is rendered at this panel size; the null sink discards it
MAX_INPUTS = 32  # distinct preprocessed frames the bare-inference loop cycles through
# what a result must hold for the tables: a measured configuration, or one that failed
# + how long inference waited for the capture thread (camera) and for the presenter thread (display)
STAGES = (*pipeline.STAGES, "wait_camera", "wait_display")
RESULT_KEYS = ("bundle", "backend", "precision", "threads", "model_bytes", "load_s", "first_inference_ms",
               "latency_ms", "bare_fps", "pipeline", "members", "peak_rss_mb", "thermal_end")
ERROR_KEYS = ("bundle", "backend", "threads", "error")


class BenchError(ValueError):
    """Bad input to the benchmark (bundle, backend, source, report file): one line naming it."""


@dataclass(frozen=True)
class Job:
    bundle: str
    backend: str
    threads: int
    frames: int
    warmup: int
    gradcam: bool
    source: str | None
    precision: str = "int8"

    @property
    def label(self) -> str:
        return f"{Path(self.bundle).name} {self.backend} {self.precision} t{self.threads}"


# ---- the board: model, temperature, throttling, versions ----


def board_model() -> str:
    """/proc/device-tree/model on ARM boards (Pi, Jetson), else the CPU model name."""
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


def _thermal_zones() -> list[tuple[str, float]]:
    zones = []
    for zone in sorted(Path("/sys/class/thermal").glob("thermal_zone*")):
        try:
            zones.append(((zone / "type").read_text().strip(), int((zone / "temp").read_text()) / 1000.0))
        except (OSError, ValueError):
            continue
    return zones


def cpu_temperature() -> tuple[str, float] | None:
    """(zone type, °C) of the CPU's thermal zone (Pi: cpu-thermal, Jetson: CPU-therm, x86: x86_pkg_temp),
    else the first zone that reads; None where there is none (VMs, containers)."""
    zones = _thermal_zones()
    cpu = [z for z in zones if re.search(r"cpu|soc|x86_pkg|k10temp", z[0], re.IGNORECASE)]
    return (cpu or zones or [None])[0]


# vcgencmd get_throttled bits: 0-3 now, 16-19 since boot.
THROTTLE_BITS = {0: "under-voltage", 1: "frequency capped", 2: "throttled", 3: "soft temperature limit"}


def throttling() -> dict | None:
    """`vcgencmd get_throttled` on a Raspberry Pi, decoded; None where vcgencmd does not exist."""
    try:
        out = subprocess.run(["vcgencmd", "get_throttled"], check=False, capture_output=True, text=True,
                             timeout=5)
        raw = out.stdout.strip().split("=", 1)[-1]
        bits = int(raw, 16)
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    return {"raw": raw, "now": [n for b, n in THROTTLE_BITS.items() if bits >> b & 1],
            "since_boot": [n for b, n in THROTTLE_BITS.items() if bits >> (b + 16) & 1]}


def cpu_freq_mhz() -> dict | None:
    """Current (lowest across CPUs) and maximum clock from cpufreq: a current clock well below the maximum
    under load means thermal or power throttling on boards without vcgencmd (Jetson)."""
    cur, top = [], []
    for cpu in sorted(Path("/sys/devices/system/cpu").glob("cpu[0-9]*/cpufreq")):
        try:
            cur.append(int((cpu / "scaling_cur_freq").read_text()) / 1000.0)
            top.append(int((cpu / "cpuinfo_max_freq").read_text()) / 1000.0)
        except (OSError, ValueError):
            continue
    return {"cur": min(cur), "max": max(top)} if cur else None


def thermal_state() -> dict:
    temp = cpu_temperature()
    return {"cpu_temp_c": temp[1] if temp else None, "thermal_zone": temp[0] if temp else None,
            "cpu_freq_mhz": cpu_freq_mhz(), "throttled": throttling()}


def versions() -> dict[str, str]:
    found = {**about.versions(("skinedge", *about.BOARD)), "kernel": platform.release()}
    try:
        lines = Path("/etc/os-release").read_text().splitlines()
        found["os"] = dict(x.split("=", 1) for x in lines if "=" in x).get("PRETTY_NAME", "").strip('"')
    except OSError:
        pass
    return found


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (None where the OS has none)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


# A configuration whose median latency is this many times its fastest run was sharing the CPU: on an idle board the
# median sits within a few tens of per cent of the minimum (same input, same kernels every frame).
BUSY_RATIO = 2.0


def busy_warnings(report: dict) -> list[str]:
    """One line per configuration whose own spread says the machine was busy, with the load averages."""
    if report.get("schema") != SCHEMA:
        return []
    loads = [report.get(k) for k in ("load_start", "load_end")]
    load = "; ".join(f"{w} {' '.join(f'{x:.2f}' for x in v)}" for w, v in zip(("start", "end"), loads) if v)
    out = []
    for r in _ok(report):
        lat = r["latency_ms"]
        if lat["min"] > 0 and lat["p50"] > BUSY_RATIO * lat["min"]:
            out.append(f"WARNING: {report['board']}: {r['bundle']} {r['backend']} {r.get('precision', 'int8')} "
                       f"t{r['threads']}: p50 {lat['p50']:.2f} ms is {lat['p50'] / lat['min']:.1f}x its minimum "
                       f"{lat['min']:.2f} ms: the machine was busy (load average {load or 'not readable'}, "
                       f"{report.get('cpus', '?')} CPUs), so these figures measure the load, not the model; "
                       "re-run on an idle machine")
    return out


# ---- one configuration, in the child process ----


def pipeline_config(job: Job, tmp: Path):
    """The device config of the job's pipeline run (written under tmp): its source, looped; null display."""
    from edge.config import load_config, source_overrides

    path = tmp / "bench.yaml"
    path.write_text(json.dumps({
        "bundle": str(Path(job.bundle).resolve()), "backend": job.backend, "threads": job.threads,
        "source": {"kind": "video", "path": str(DEMO_CLIP)},
        "display": {"kind": "null", "size": list(DISPLAY_SIZE)},
        "gradcam": {"every_n": 1 if job.gradcam else 0}, "watchdog": {"enabled": False},
        "allow_unsigned": True,  # a measurement, not a clinic: signed or not, the bundle runs (the ready line says)
    }))
    overrides = source_overrides(job.source) if job.source else {}
    kind = overrides.get("source.kind", "video")
    if kind in ("video", "folder"):
        overrides["source.loop"] = True
    return load_config(path, overrides)


def _inputs(cfg, size: tuple[int, int], n: int) -> list[np.ndarray]:
    """Up to n frames of the source, preprocessed as the pipeline does."""
    from edge.preprocess import to_model_input
    from edge.sources import open_source

    src = open_source(cfg.source)
    try:
        frames = []
        while len(frames) < n:
            frame = src.read()
            if frame is None:
                break
            frames.append(to_model_input(frame, size))
    finally:
        src.close()
    if not frames:
        raise BenchError(f"{src.name}: gave no frames")
    return frames


def measure_pipeline(cfg, frames: int, warmup: int) -> dict:
    """edge.pipeline.run for warmup + frames frames (the board's gated path: edge.answer); figures over the frames
    after the warm-up, and `gates`: how many of all the frames each gate outcome had (refused frames show no
    class and skip Grad-CAM, as on the board)."""
    stamps: list[float] = []
    outcomes: dict[str, int] = {}

    def shown(frame, answer, overlay) -> None:
        stamps.append(time.perf_counter())
        outcome = answer.verdict.reason or "pass"
        outcomes[outcome] = outcomes.get(outcome, 0) + 1

    stats = pipeline.run(cfg, frames=warmup + frames, on_frame=shown)
    if len(stamps) < warmup + 2:
        raise RuntimeError(f"the pipeline showed only {len(stamps)} frames")
    steady = np.diff(stamps[warmup:]) * 1e3  # ms between consecutive frames on screen
    # the newest frames - 1 of each rolling window: the frames after the warm-up (all of them up to its size)
    stage_ms = {s: v.median(frames - 1) for s, v in stats.stage_ms.items()}
    # ≈ 0 when decoding and rendering are hidden behind inference, which is the point of the three threads
    stage_ms["wait_camera"] = stats.wait_capture_ms.median(frames - 1)
    stage_ms["wait_display"] = stats.wait_presenter_ms.median(frames - 1)
    return {"fps": 1e3 / float(np.mean(steady)), "frame_ms": percentiles(list(steady)), "stage_ms": stage_ms,
            "decode_ms": stats.decode_ms, "dropped": stats.dropped, "gradcam": cfg.gradcam.every_n > 0,
            "frames": len(steady), "gates": outcomes}


def _rss_mb() -> float:
    return peak_rss_kib() / 1024.0


def measure(job: Job) -> dict:
    """One configuration, in this process: load, first inference, bare latency, then the full pipeline."""
    from edge.classify import Classifier

    start = thermal_state()
    bundle = load_bundle(job.bundle)
    t = time.perf_counter()
    clf = Classifier(bundle, job.backend, threads=job.threads, precision=job.precision)
    load_s = time.perf_counter() - t
    artefact, kind, runtime = clf.artefact, clf.kind, _runtime(clf.kind)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = pipeline_config(job, Path(tmp))
        inputs = _inputs(cfg, bundle.input_size, min(job.frames, MAX_INPUTS))
        t = time.perf_counter()
        clf.run_members(inputs[0])
        first_ms = (time.perf_counter() - t) * 1e3
        for i in range(job.warmup):
            clf.run_members(inputs[i % len(inputs)])
        lat, members = [], []
        t_bare = time.perf_counter()
        for i in range(job.frames):
            t = time.perf_counter()
            outs = clf.run_members(inputs[i % len(inputs)])
            lat.append((time.perf_counter() - t) * 1e3)
            members.append([ms for _, _, ms in outs])
        bare_s = time.perf_counter() - t_bare
        clf.close()
        del clf, outs  # free the runtime before the pipeline opens its own
        rss_bare = _rss_mb()
        # edge.pipeline opens the int8 artefact (device configs have no precision): fp32 has no pipeline run.
        pipe = measure_pipeline(cfg, job.frames, job.warmup) if job.precision == "int8" else None
    per_member = np.asarray(members)
    return {
        "bundle": bundle.name, "bundle_path": str(Path(job.bundle).resolve()),
        "bundle_digest": bundle.digest[:16], "arch": bundle.manifest.get("arch"), "backend": kind,
        "runtime": runtime, "precision": job.precision,
        "artefact": artefact, "threads": job.threads, "frames": job.frames, "warmup": job.warmup,
        "source": str(cfg.source.path or cfg.source.device or cfg.source.pipeline or cfg.source.kind),
        "input_size": list(bundle.input_size),
        "model_bytes": sum(m.files[artefact].stat().st_size for m in bundle.members),
        "load_s": load_s, "first_inference_ms": first_ms,
        "latency_ms": percentiles(lat), "bare_fps": job.frames / bare_s,
        "members": [{"name": m.name, "weight": m.weight, "latency_ms": percentiles(list(per_member[:, i]))}
                    for i, m in enumerate(bundle.members)],
        "pipeline": pipe,
        "peak_rss_bare_mb": rss_bare, "peak_rss_mb": _rss_mb(),
        "thermal_start": start, "thermal_end": thermal_state(),
    }


def _runtime(kind: str) -> str:
    if kind == "tflite":
        from edge.backends.tflite import runtime_name

        return runtime_name()
    if kind == "onnx":
        import onnxruntime

        return f"onnxruntime {onnxruntime.__version__}"
    return kind


# ---- the parent: plan, run, report ----


def int_list(text: str, option: str) -> list[int]:
    """'1,2,4' -> [1, 2, 4], or BenchError naming the option."""
    try:
        return [int(x) for x in text.split(",")]
    except ValueError:
        raise BenchError(f"{option} takes comma-separated integers, e.g. 1,2,4; got {text!r}") from None


def plan(bundles: list[str], backends: list[str], precisions: list[str], threads: list[int], frames: int,
         warmup: int, gradcam: bool, source: str | None) -> tuple[list[Job], list[dict]]:
    """The jobs to run, and the combinations skipped because the bundle has no artefact for them (a backend
    whose runtime is not installed still runs, and its child reports the error in the table).

    Raises BenchError for input that cannot be benchmarked at all: a missing or refused bundle, an unknown
    backend or precision, a bad thread or frame count, a missing source.
    """
    try:
        backends = backend_list(",".join(backends))
    except ValueError as e:
        raise BenchError(str(e)) from e
    bad = [p for p in precisions if p not in PRECISIONS]
    if bad or not precisions:
        raise BenchError(f"unknown precision {', '.join(bad) or '(none)'}: "
                         f"expected some of {', '.join(PRECISIONS)}")
    if not threads:
        raise BenchError("--threads: give one or more thread counts, e.g. 1,2,4")
    for n in threads:
        try:
            if line := check_threads(n, "--threads"):
                print(line, file=sys.stderr)
        except ValueError as e:
            raise BenchError(str(e)) from None
    if frames < 2 or warmup < 0:
        raise BenchError(f"need --frames >= 2 and --warmup >= 0, got {frames} and {warmup}")
    is_file = source and "!" not in source and "://" not in source and not source.isdigit() and source != "picamera2"
    if is_file and not os.path.lexists(source):  # (lexists: False, not an error, for a name too long)
        raise BenchError(f"source {source[:200]} not found")
    if is_file:
        check_source(source)
    jobs, skipped = [], []
    for b in bundles:
        if not Path(b).is_dir():
            raise BenchError(f"{b}: no such bundle directory")
        try:
            bundle = load_bundle(b)
        except BundleError as e:
            raise BenchError(str(e)) from e
        for k in backends:
            for p in precisions:
                try:
                    kind = resolve(k, bundle, p)
                except BundleError as e:
                    skipped.append({"bundle": bundle.name, "backend": k, "precision": p, "reason": str(e)})
                    continue
                want = artefact_for(kind, p)
                if bundle.has(want):
                    jobs.extend(Job(b, kind, t, frames, warmup, gradcam, source, p) for t in threads)
                else:
                    skipped.append({"bundle": bundle.name, "backend": kind, "precision": p,
                                    "reason": f"the bundle has no {want} artefact"})
    unique = list(dict.fromkeys(jobs))  # 'auto' may resolve to a backend also named explicitly
    if not unique:
        why = "; ".join(f"{s['backend']} {s['precision']}: {s['reason']}" for s in skipped)
        raise BenchError(f"nothing to run: {why}")
    return unique, skipped


def check_source(source: str) -> None:
    """Open a file or folder source once here, so a FIFO, an empty folder or a damaged video is one line before
    any child process starts (a camera is left alone: the children open it one after another)."""
    from edge.config import ConfigError
    from edge.sources import SourceError, open_source

    try:
        with tempfile.TemporaryDirectory() as tmp:
            cfg = pipeline_config(Job("", "auto", 1, 2, 0, False, source), Path(tmp))
        open_source(cfg.source).close()
    except (ConfigError, SourceError) as e:
        raise BenchError(f"--source: {e}") from None


def _child(job: Job, timeout: float) -> dict:
    """Run one job in a child process; its result, or an error entry naming what went wrong."""
    head = {"bundle": Path(job.bundle).name, "bundle_path": str(Path(job.bundle).resolve()),
            "backend": job.backend, "precision": job.precision, "threads": job.threads}
    try:
        proc = subprocess.run([sys.executable, "-m", "edge.bench", json.dumps(asdict(job))], check=False,
                              capture_output=True, text=True, timeout=timeout,
                              env=dict(os.environ, PYTHONUNBUFFERED="1"))
    except subprocess.TimeoutExpired:
        return {**head, "error": f"timed out after {timeout:.0f} s"}
    lines = proc.stdout.strip().splitlines()
    if proc.returncode == 0 and lines:
        return json.loads(lines[-1])
    err = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}, no output"])[-1]
    return {**head, "error": err}


def run_jobs(jobs: list[Job], skipped: list[dict] | None = None, progress: bool = True) -> dict:
    """Each job in its own child process, one after another; a failed configuration is a row, not fatal."""
    header = {"schema": SCHEMA, "board": board_model(), "machine": platform.machine(), "cpus": os.cpu_count(),
              "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "versions": versions(),
              "thermal_start": thermal_state(), "load_start": load_average()}
    results = []
    bar = tqdm(jobs, desc="bench", unit="config", disable=not progress)
    for job in bar:
        bar.set_postfix_str(job.label)
        results.append(_child(job, timeout=300 + 5.0 * (job.frames + job.warmup) * 2))
    return {**header, "thermal_end": thermal_state(), "load_end": load_average(), "results": results,
            "skipped": skipped or [],
            "int8_speedup": int8_speedups([{**header, "results": results}])}


def add_fidelity(report: dict) -> None:
    """--fidelity: beside each result, its artefact's top-1 agreement with the float model and its accuracy, as
    the bundle's validation measured them at conversion (manifest `validation`), so one table holds format,
    size, fidelity and speed."""
    validations: dict[str, dict] = {}
    for r in report["results"]:
        if "error" in r:
            continue
        if r["bundle_path"] not in validations:
            validations[r["bundle_path"]] = load_bundle(r["bundle_path"], verify=False).manifest.get("validation") or {}
        row = validations[r["bundle_path"]].get(r["artefact"])
        r["fidelity"] = None if row is None else {k: row[k] for k in ("top1_agreement", "accuracy")}


def validate_report(rep: object, name: str = "report") -> dict:
    """Reject anything that is not a bench report (or an emulated one), naming the file and what is wrong."""
    for kind in (bench_emulated, bench_predicted):
        if isinstance(rep, dict) and rep.get("schema") == kind.SCHEMA:
            if why := kind.problem(rep):
                raise BenchError(f"{name}: {why}")
            return rep
    if not isinstance(rep, dict) or rep.get("schema") != SCHEMA:
        found = rep.get("schema") if isinstance(rep, dict) else type(rep).__name__
        raise BenchError(f"{name}: not a {SCHEMA} report (schema: {found!r})")
    if not isinstance(rep.get("board"), str) or not isinstance(rep.get("results"), list):
        raise BenchError(f"{name}: a {SCHEMA} report needs 'board' (text) and 'results' (list)")
    for i, r in enumerate(rep["results"]):
        missing = [k for k in (ERROR_KEYS if "error" in r else RESULT_KEYS) if k not in r] \
            if isinstance(r, dict) else ["(not an object)"]
        if missing:
            raise BenchError(f"{name}: results[{i}] lacks {', '.join(missing)}")
    return rep


def load_report(path: Path) -> dict:
    """A report file for --merge, or BenchError with one line."""
    try:
        return validate_report(json.loads(Path(path).read_text()), str(path))
    except OSError as e:
        raise BenchError(f"{path}: cannot read it: {e.strerror or e}") from e
    except json.JSONDecodeError as e:
        raise BenchError(f"{path}: not JSON ({e.msg} at line {e.lineno})") from e


# ---- tables and plot ----


def _ok(rep: dict) -> list[dict]:
    return [r for r in rep["results"] if "error" not in r]


def int8_speedups(reports: list[dict]) -> list[dict]:
    """fp32 p50 / int8 p50 for every (board, bundle, backend, threads) measured at both precisions."""
    out = []
    for rep in reports:
        by = {(r["bundle"], r["backend"], r["threads"], r["precision"]): r for r in _ok(rep)}
        for (bundle, backend, threads, precision), r8 in by.items():
            r32 = by.get((bundle, backend, threads, "fp32"))
            if precision == "int8" and r32:
                out.append({"board": rep["board"], "bundle": bundle, "backend": backend, "threads": threads,
                            "fp32_p50_ms": r32["latency_ms"]["p50"], "int8_p50_ms": r8["latency_ms"]["p50"],
                            "speedup": r32["latency_ms"]["p50"] / r8["latency_ms"]["p50"]})
    return out


def md_table(head: list[str], rows: list[list[str]]) -> list[str]:
    """Markdown table lines."""
    return [f"| {' | '.join(row)} |" for row in [head, ["---"] * len(head), *rows]]


def _f(v: float | None, fmt: str = ".1f") -> str:
    return "—" if v is None else format(v, fmt)


KEY = ["board", "bundle", "backend", "precision", "threads"]
SUMMARY = ["size MB", "load s", "first ms", "min ms", "p50 ms", "p90 ms", "p99 ms", "bare FPS",
           "pipeline FPS", "pipeline/bare", "peak RSS MB", "CPU °C"]
STAGE_HEAD = ["preprocess", "infer", "Grad-CAM", "gates", "overlay", "display", "wait camera", "wait display", "decode",
              "dropped"]


def _summary_row(r: dict) -> list[str]:
    if "error" in r:
        return [f"**error**: {r['error']}"] + [""] * (len(SUMMARY) - 1)
    lat, pipe = r["latency_ms"], r["pipeline"]
    return [f"{r['model_bytes'] / 1e6:.2f}", f"{r['load_s']:.2f}", f"{r['first_inference_ms']:.1f}",
            *(f"{lat[k]:.2f}" for k in ("min", "p50", "p90", "p99")), f"{r['bare_fps']:.1f}",
            _f(pipe and pipe["fps"]) + (" (CAM)" if pipe and pipe["gradcam"] else ""),
            _f(pipe and pipe["fps"] / r["bare_fps"], ".2f"), f"{r['peak_rss_mb']:.0f}",
            _f(r["thermal_end"]["cpu_temp_c"])]


def _fidelity_cells(r: dict) -> list[str]:
    fid = r.get("fidelity")
    return ["—", "—"] if not fid else [f"{fid['top1_agreement']:.2%}", f"{fid['accuracy']:.2%}"]


def markdown(reports: list[dict]) -> str:
    """Tables across reports (boards): summary, pipeline stages, int8 vs fp32, ensemble members, emulated
    instruction counts, boards."""
    emulated = [rep for rep in reports if rep.get("schema") == bench_emulated.SCHEMA]
    predicted = [rep for rep in reports if rep.get("schema") == bench_predicted.SCHEMA]
    reports = [rep for rep in reports if rep.get("schema") not in (bench_emulated.SCHEMA, bench_predicted.SCHEMA)]
    summary, stages, members, notes = [], [], [], []
    fidelity = any("fidelity" in r for rep in reports for r in rep["results"])
    for rep in reports:
        for r in rep["results"]:
            key = [rep["board"], r["bundle"], r["backend"], r.get("precision", "int8"), str(r["threads"])]
            summary.append(key + _summary_row(r)[:1] + (_fidelity_cells(r) if fidelity else []) + _summary_row(r)[1:])
            if "error" in r:
                continue
            if pipe := r["pipeline"]:
                stages.append(key + [_f(pipe["stage_ms"].get(s), ".2f") for s in STAGES]  # older reports: "—"
                              + [f"{pipe['decode_ms']:.2f}", str(pipe["dropped"])])
            if len(r["members"]) > 1:
                members += [key + [m["name"], f"{m['weight']:.2f}", f"{m['latency_ms']['p50']:.2f}",
                                   f"{m['latency_ms']['p90']:.2f}"] for m in r["members"]]
                lat = r["latency_ms"]
                members.append(key + ["**total**", "", f"{lat['p50']:.2f}", f"{lat['p90']:.2f}"])
        notes += [f"- {rep['board']}: {s['bundle']} {s['backend']} {s['precision']} skipped: {s['reason']}"
                  for s in rep.get("skipped", [])]
        notes += [f"- {w}" for w in busy_warnings(rep)]
    for rep in predicted:
        summary += [row[:6] + (["—", "—"] if fidelity else []) + row[6:]
                    for row in bench_predicted.summary_rows(rep, len(SUMMARY))]
    head = KEY + SUMMARY[:1] + (["agreement", "accuracy"] if fidelity else []) + SUMMARY[1:]
    out = ["### Latency and FPS" + (" (agreement with the float model and accuracy: the bundle's validation)"
                                    if fidelity else ""), "", *md_table(head, summary)]
    if stages:
        title = ("### Pipeline stages (median ms per frame; decode and preprocess run in the capture thread, "
                 "overlay and display in the presenter thread; 'wait' is inference waiting for them)")
        out += ["", title, "", *md_table(KEY + STAGE_HEAD, stages)]
    if speed := int8_speedups(reports):
        out += ["", "### int8 vs fp32 (same backend and threads, p50 latency)", ""]
        out += md_table(["board", "bundle", "backend", "threads", "fp32 p50 ms", "int8 p50 ms", "speed-up"],
                        [[s["board"], s["bundle"], s["backend"], str(s["threads"]), f"{s['fp32_p50_ms']:.2f}",
                          f"{s['int8_p50_ms']:.2f}", f"{s['speedup']:.2f}×"] for s in speed])
    if members:
        out += ["", "### Ensemble members (inference ms)", "", *md_table(KEY + ["member", "weight", "p50 ms",
                                                                               "p90 ms"], members)]
    boards = [[rep["board"], rep.get("machine", "?"), str(rep.get("cpus", "?")), rep.get("created", "?"),
               _throttle_text(rep.get("thermal_end", {})),
               ", ".join(f"{k} {v}" for k, v in rep.get("versions", {}).items())] for rep in reports]
    for rep in predicted:
        title = (f"### Predicted on boards (no board: {rep['method']}; {bench_predicted.band(rep)}; see "
                 "benchmarks/README.md)")
        out += ["", title, "", *md_table(bench_predicted.HEAD, bench_predicted.rows(rep))]
    if emulated:
        title = ("### Emulated ARM cores: instructions counted under qemu at 1 thread (NOT time: they rank "
                 "configurations on one core; see benchmarks/README.md)")
        out += ["", title, "", *md_table(bench_emulated.HEAD, bench_emulated.rows(emulated, reports))]
    if boards:  # measured reports only (a predicted report has no board to describe)
        out += ["", "### Boards", "", *md_table(["board", "machine", "CPUs", "created", "throttled", "versions"],
                                                boards)]
    return "\n".join(out + ([""] + notes if notes else [])) + "\n"


def _throttle_text(state: dict) -> str:
    t = state.get("throttled")
    if t:
        now, before = ", ".join(t["now"]) or "none", ", ".join(t["since_boot"]) or "none"
        return f"{t['raw']} (now: {now}; since boot: {before})"
    f = state.get("cpu_freq_mhz")
    return f"not readable; clock {f['cur']:.0f}/{f['max']:.0f} MHz" if f else "not readable"


def plot(reports: list[dict], out: Path) -> bool:
    """Bar chart of bare-inference and pipeline FPS per configuration; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    labels, bare, pipe = [], [], []
    for rep in (rep for rep in reports if rep.get("schema") == SCHEMA):  # measured ones only
        for r in _ok(rep):
            labels.append(f"{rep['board'][:18]}\n{r['bundle'][:18]}\n"
                          f"{r['backend']} {r['precision']} t{r['threads']}")
            bare.append(r["bare_fps"])
            pipe.append(r["pipeline"]["fps"] if r["pipeline"] else 0.0)
    fig, ax = plt.subplots(figsize=(max(6.0, len(labels) * 1.6), 4.5))
    x = np.arange(len(labels))
    ax.bar(x - 0.2, bare, 0.4, label="bare inference")
    ax.bar(x + 0.2, pipe, 0.4, label="full pipeline (decode → overlay)")
    ax.set_xticks(x, labels, fontsize=7)
    ax.set_ylabel("frames per second")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return True


if __name__ == "__main__":  # child process: one job, its result as JSON on the last stdout line
    print(json.dumps(measure(Job(**json.loads(sys.argv[1])))))
