"""Store-and-forward at the issue's scale, against a real Orthanc (Debian's, on loopback), in three parts:

1. throughput: 1,000 captures (480x480 frames of real photographs, overlays rendered for a 480x320 panel, as a
   Pi with a 640x480 camera and a 3.5-inch screen keeps them) sent by `skinedge captures send` to a fresh Orthanc;
   then every instance, its attributes and every report's content checked through Orthanc's REST API;
2. crashes: the same 1,000 sent to another fresh Orthanc while the sender is SIGKILLed 20 times, each time as soon
   as Orthanc holds more instances than at the last kill; then instances == 3 x captures, series == 2 x, studies
   == 1 x, the set of SOP Instance UIDs exactly the expected one (0 lost, 0 duplicated);
3. the classification loop's FPS (edge.bench's pipeline mode: the demo bundle on a 640x480 clip, Grad-CAM every
   frame) alone and while `captures send --watch` forwards at its default idle priority, interleaved, side by
   side in one run. Orthanc runs under SCHED_IDLE here too: it stands for the hospital's server, which is not on
   the board. The sender re-sends the store (its send state cleared before each phase), which costs the board
   the same as sending new captures.

    python -m benchmarks.forward [--captures 1000] [--kills 20] [--frames 600] [--repeats 3] [--threads 1,2]

The store is built once and cached under $SKINEDGE_BENCH_CACHE (/tmp/skinedge-bench-cache).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._assets import CACHE, DEMO_BUNDLE, REPO, camera_clip
from edge import bench
from edge.record.outbox import Outbox
from edge.record.store import CaptureStore
from tests.forward_data import check_instances, expected_instances, fill_store, kill_loop, write_config
from tests.orthanc import PASSWORD, USER, Orthanc, missing

TARGET = 0.95
FRAME, SCREEN = 480, (480, 320)
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def cached_store(n: int) -> Path:
    root = CACHE / f"forward-store-{n}" / "store"
    if not (root / "captures.db").is_file():
        shutil.rmtree(root.parent, ignore_errors=True)
        print(f"keeping {n} captures ({FRAME}x{FRAME} frames, {SCREEN[0]}x{SCREEN[1]} overlays) in {root} ...",
              flush=True)
        fill_store(root, n, device_id="bench-board", seed=7, frame=FRAME, screen=SCREEN, progress=True).close()
    return root


def fresh_copy(store: Path, into: Path) -> Path:
    """The store without any send state (and its device key's public half, which its chain is checked against)."""
    root = into / "store"
    shutil.copytree(store, root, ignore=shutil.ignore_patterns("outbox.db*"))
    shutil.copy(store.parent / "device-key.pub", into)
    return root


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edge.cli", *args], check=False, capture_output=True, text=True,
                          cwd=REPO, env=ENV)


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def verify(pacs: Orthanc, store: Path, n: int) -> str:
    stats = pacs.statistics()
    counts = (stats["CountInstances"], stats["CountSeries"], stats["CountStudies"])
    assert counts == (3 * n, 2 * n, n), f"Orthanc holds {counts}, expected {(3 * n, 2 * n, n)}"
    expected, stored = expected_instances(store), pacs.instances()
    assert set(stored) == set(expected), (f"{len(set(expected) - set(stored))} instance(s) missing, "
                                          f"{len(set(stored) - set(expected))} unexpected")
    check_instances(pacs, expected, stored)
    with Outbox(store) as outbox:
        assert len(outbox.sent(pacs.url)) == n
    return (f"Orthanc holds {counts[0]} instances, {counts[1]} series, {counts[2]} studies: exactly the expected "
            f"SOP Instance UIDs; every instance's attributes and all {n} reports' content match")


def throughput(store: Path, n: int, work: Path) -> None:
    pacs = Orthanc(work / "orthanc-1").start()
    try:
        root = fresh_copy(store, work / "t")
        cfg = write_config(work / "t", root, pacs.url, {"username": USER, "password": PASSWORD})
        before = load()
        t0 = time.perf_counter()
        r = cli("captures", "send", "--config", str(cfg), "--priority", "normal")
        took = time.perf_counter() - t0
        assert r.returncode == 0, r.stdout + r.stderr
        mb = sum(p.stat().st_size for p in (pacs.root / "db").rglob("*") if p.is_file()) / 1e6
        print(f"\n## 1. Throughput ({before} before, {load()} after)\n\n{r.stdout.strip()}\n"
              f"{n} captures in {took:.1f} s (interpreter start included) = {n / took:.1f} captures/s, "
              f"{3 * n / took:.0f} instances/s, {mb / took:.1f} MB/s of DICOM stored ({mb:.0f} MB in Orthanc)")
        print(verify(pacs, root, n))
    finally:
        pacs.kill()


def crashes(store: Path, n: int, kills: int, work: Path) -> Orthanc:
    pacs = Orthanc(work / "orthanc-2").start()
    root = fresh_copy(store, work / "k")
    cfg = write_config(work / "k", root, pacs.url, {"username": USER, "password": PASSWORD})
    before = load()
    done, mid = kill_loop(pacs, cfg, kills)
    held = pacs.count()
    r = cli("captures", "send", "--config", str(cfg), "--priority", "normal")
    assert r.returncode == 0, r.stdout + r.stderr
    print(f"\n## 2. SIGKILL mid-send ({before} before, {load()} after)\n\n{done} SIGKILLs ({mid} of them left a "
          f"capture half stored); Orthanc held {held} instances after the last; the next run: {r.stdout.strip()}")
    print(verify(pacs, root, n))
    return pacs


def _pipeline_fps(job: bench.Job) -> float:
    r = bench.run_jobs([job], progress=False)["results"][0]
    assert "error" not in r, r
    return r["pipeline"]["fps"]


class Sender:
    """`captures send --watch` at its default (idle) priority, from a cleared send state."""

    def __init__(self, root: Path, cfg: Path):
        for f in root.glob("outbox.db*"):
            f.unlink()
        self.root, self.cfg = root, cfg
        self.proc = subprocess.Popen([sys.executable, "-m", "edge.cli", "captures", "send", "--config", str(cfg),
                                      "--watch"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     cwd=REPO, env=ENV)
        line = self.proc.stdout.readline()
        assert "SCHED_IDLE" in line, line

    def sent(self, url: str) -> int:
        with Outbox(self.root) as outbox:
            return outbox.sent_count(url)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.communicate(timeout=300)


def fps(store: Path, pacs: Orthanc, work: Path, frames: int, repeats: int, threads: list[int]) -> None:
    os.sched_setscheduler(pacs.proc.pid, os.SCHED_IDLE, os.sched_param(0))
    for task in os.listdir(f"/proc/{pacs.proc.pid}/task"):
        os.sched_setscheduler(int(task), os.SCHED_IDLE, os.sched_param(0))
    root = fresh_copy(store, work / "f")
    cfg = write_config(work / "f", root, pacs.url, {"username": USER, "password": PASSWORD}, poll_seconds=1.0)
    clip = camera_clip()
    rows = []
    before = load()
    for t in threads:
        job = bench.Job(str(DEMO_BUNDLE), "tflite", t, frames, 10, True, str(clip))
        alone, sending, ratios, controls, sent_counts, seconds = [], [], [], [], [], []
        for _ in range(repeats):  # alone, sending, alone again: the ratio is against the mean of the two around it
            a1 = _pipeline_fps(job)
            sender = Sender(root, cfg)
            t0 = time.perf_counter()
            b = _pipeline_fps(job)
            seconds.append(time.perf_counter() - t0)
            sent_counts.append(sender.sent(pacs.url))
            sender.stop()
            a2 = _pipeline_fps(job)
            alone += [a1, a2]
            sending.append(b)
            ratios.append(b / ((a1 + a2) / 2))
            controls.append(a2 / a1)
        ratio = statistics.median(ratios)
        rows.append([str(t), f"{statistics.median(alone):.1f}", f"{statistics.median(sending):.1f}", f"{ratio:.3f}",
                     "yes" if ratio >= TARGET else "NO", (f"{statistics.median(controls):.3f} "
                     f"({min(controls):.2f}-{max(controls):.2f})"), f"{statistics.median(sent_counts):.0f}",
                     f"{statistics.median(seconds):.1f}"])
    print(f"\n## 3. Loop FPS while sending ({before} before, {load()} after)\n\n{bench.board_model()}, "
          f"{os.cpu_count()} CPUs; demo MicroMPoxNet 128, tflite int8, Grad-CAM every frame, clip 640x480, {frames} "
          f"frames per phase; {repeats} repeats of alone / sending / alone: ratio = sending / mean of the two phases "
          f"around it; the control (second alone / first alone) shows what the shared machine alone does\n")
    print("\n".join(bench.md_table(["threads", "FPS alone", "FPS while sending", "ratio (median)", f">= {TARGET}",
                                     "control: alone / alone (median, range)", "captures sent during the phase",
                                     "phase s"], rows)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--captures", type=int, default=1000)
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--frames", type=int, default=600)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--parts", default="1,2,3", help="which parts to run (1 throughput, 2 SIGKILLs, 3 FPS)")
    a = ap.parse_args(argv)
    why = missing()
    if why:
        print(why, file=sys.stderr)
        return 2
    store = cached_store(a.captures)
    with CaptureStore(store, create=False) as s:
        n = len(s.list())
    parts = a.parts.split(",")
    with tempfile.TemporaryDirectory(prefix="skinedge-forward-") as tmp:
        work = Path(tmp)
        if "1" in parts:
            throughput(store, n, work)
        pacs = crashes(store, n, a.kills, work) if "2" in parts else Orthanc(work / "orthanc-3").start()
        try:
            if "3" in parts:
                fps(store, pacs, work, a.frames, a.repeats, [int(t) for t in a.threads.split(",")])
        finally:
            pacs.kill()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
