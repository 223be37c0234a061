"""Store-and-forward at the issue's scale, against a real Orthanc (Debian's, on loopback), in three parts:

1. throughput: 1,000 captures (480x480 frames of real photographs, overlays rendered for a 480x320 panel, as a
   Pi with a 640x480 camera and a 3.5-inch screen keeps them) sent by `skinedge captures send` to a fresh Orthanc;
   then every instance, its attributes and every report's content checked through Orthanc's REST API;
2. crashes: the same 1,000 sent to another fresh Orthanc while the sender is SIGKILLed 20 times, each time as soon
   as Orthanc holds more instances than at the last kill; then instances == 3 x captures, series == 2 x, one study
   per visit (or per capture without one), the set of SOP Instance UIDs exactly the expected one (0 lost, 0
   duplicated);
3. the classification loop's FPS while `captures send --watch` forwards at its default idle priority, side by side
   in one run: one `run` of the demo bundle on a 640x480 clip (Grad-CAM every frame), the sender paused (SIGSTOP)
   and resumed (SIGCONT) every second, FPS per window; and a control run in which nothing changes between the
   windows (the shared machine's own noise). Orthanc runs under SCHED_IDLE, storing in /dev/shm: it stands for
   the hospital's server, whose CPU and disk are not the board's.

    python -m benchmarks.forward [--captures 1000] [--kills 20] [--seconds 60] [--window 1] [--threads 1,2]
        [--parts 1,2,3]

The store is built once and cached under $SKINEDGE_BENCH_CACHE (/tmp/skinedge-bench-cache).
"""

from __future__ import annotations

import argparse
import os
import resource
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
from tests.forward_data import (
    check_instances,
    expected_counts,
    expected_instances,
    fill_store,
    kill_loop,
    write_config,
)
from tests.orthanc import PASSWORD, USER, Orthanc, missing

TARGET = 0.95
CONTROL = "nothing (control: alternate windows, no change)"
# This machine schedules by session (autogroup): a process started from the loop's session shares its group's CPU
# share, one started with setsid has a group of its own, as the forwarding unit has a cgroup of its own on a board.
SAME_GROUP = "captures send --watch (SCHED_IDLE), in the loop's scheduling group"
OWN_GROUP = "captures send --watch (SCHED_IDLE), in a scheduling group of its own"
IDLE_CGROUP = "captures send --watch (SCHED_IDLE), in a cgroup with cpu.idle = 1 (the forwarding unit's CPUWeight=idle)"


class IdleCgroup:
    """A cpu cgroup of this benchmark's own with cpu.idle = 1, holding only the sender: what the forwarding unit's
    CPUWeight=idle gives it on a board (cgroup v1 cpu controller or v2). Removed again at the end."""

    def __init__(self):
        root = next((p for p in (Path("/sys/fs/cgroup/cpu"), Path("/sys/fs/cgroup")) if (p / "cpu.idle").exists()
                     or (p / "cgroup.controllers").is_file() and "cpu" in (p / "cgroup.controllers").read_text()),
                    None)
        if root is None:
            raise OSError("no cpu cgroup controller with cpu.idle here")
        self.path = root / f"skinedge-bench-idle-{os.getpid()}"
        self.path.mkdir()
        (self.path / "cpu.idle").write_text("1")

    def add(self, pid: int) -> None:
        (self.path / "cgroup.procs").write_text(str(pid))

    def close(self) -> None:
        self.path.rmdir()  # empty once the sender has exited
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
    expected, stored = expected_instances(store), pacs.instances()
    assert counts == expected_counts(expected) and counts[0] == 3 * n, \
        f"Orthanc holds {counts}, expected {expected_counts(expected)}"
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
        t0, cpu0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
        r = cli("captures", "send", "--config", str(cfg), "--priority", "normal")
        took, cpu1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)
        assert r.returncode == 0, r.stdout + r.stderr
        mb = sum(p.stat().st_size for p in (pacs.root / "db").rglob("*") if p.is_file()) / 1e6
        print(f"\n## 1. Throughput ({before} before, {load()} after)\n\n{r.stdout.strip()}\n"
              f"{n} captures in {took:.1f} s (interpreter start included) = {n / took:.1f} captures/s, "
              f"{3 * n / took:.0f} instances/s, {mb / took:.1f} MB/s of DICOM stored ({mb:.0f} MB in Orthanc); the "
              f"sender's CPU time: {cpu:.1f} s = {1e3 * cpu / n:.0f} ms per capture (user + sys; peak RSS "
              f"{cpu1.ru_maxrss / 1024:.0f} MB, the largest child so far)")
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


class Sender:
    """`captures send --watch` at its default (idle) priority, from a cleared send state."""

    def __init__(self, root: Path, cfg: Path, own_session: bool = False):
        for f in root.glob("outbox.db*"):
            f.unlink()
        self.root = root
        self.proc = subprocess.Popen([sys.executable, "-m", "edge.cli", "captures", "send", "--config", str(cfg),
                                      "--watch"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     cwd=REPO, env=ENV, start_new_session=own_session)
        line = self.proc.stdout.readline()
        assert "SCHED_IDLE" in line, line

    def sent(self, url: str) -> int:
        with Outbox(self.root) as outbox:
            return outbox.sent_count(url)

    def pause(self, paused: bool) -> None:
        os.kill(self.proc.pid, signal.SIGSTOP if paused else signal.SIGCONT)

    def stop(self, grace: float = 30.0) -> None:
        """SIGTERM; SIGKILL after `grace` s (a sender starved of CPU may need longer to finish its batch, and
        SIGKILL costs it nothing: the next run resends what was not confirmed)."""
        self.pause(False)
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.communicate(timeout=grace)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()


def loop_config(work: Path, threads: int) -> Path:
    """The demo bundle on the 640x480 clip, looped, Grad-CAM every frame, a null 480x320 display."""
    cfg = work / f"loop-{threads}.yaml"
    cfg.write_text(f"bundle: '{DEMO_BUNDLE}'\nallow_unsigned: true\nbackend: tflite\nthreads: {threads}\n"
                   f"state_dir: '{work}'\nsource: {{kind: video, path: '{camera_clip()}', loop: true}}\n"
                   "display: {kind: 'null', size: [480, 320]}\ngradcam: {every_n: 1}\nwatchdog: {enabled: false}\n")
    return cfg


def windows(cfg: Path, toggle, seconds: float, window: float, warmup: float = 3.0) -> dict[bool, list[tuple]]:
    """Run the loop for `seconds` after `warmup`, calling toggle(on) at the start of each `window`-second window,
    alternately False and True; (FPS, CPU ms per frame of this process) of every off and every on window. Fine
    interleaving makes the slow swings of a shared machine's load fall on both sides alike; CPU time per frame
    tells a loop that got less CPU (scheduling) from one whose CPU time went further (caches, SMT siblings)."""
    import threading

    from edge.config import load_config
    from edge.pipeline import run

    shown: list[float] = []
    starts: list[tuple[float, float, bool]] = []

    def control() -> None:
        while not shown:
            time.sleep(0.01)
        t = time.monotonic() + warmup
        on = False
        while t < shown[0] + warmup + seconds:
            time.sleep(max(0.0, t - time.monotonic()))
            toggle(on)
            starts.append((time.monotonic(), time.process_time(), on))
            on, t = not on, t + window
        toggle(False)
        os.kill(os.getpid(), signal.SIGINT)  # the loop ends on Ctrl-C, cleanly

    threading.Thread(target=control, daemon=True).start()
    run(load_config(cfg), on_frame=lambda *_: shown.append(time.monotonic()))
    found: dict[bool, list[tuple]] = {False: [], True: []}
    for (t0, c0, state), (t1, c1, _) in zip(starts, starts[1:]):
        n = sum(t0 <= t < t1 for t in shown)
        found[state].append((n / (t1 - t0), 1e3 * (c1 - c0) / max(n, 1)))
    return found


def fps(store: Path, pacs: Orthanc, work: Path, seconds: float, window: float, threads: list[int]) -> None:
    for tid in os.listdir(f"/proc/{pacs.proc.pid}/task"):  # the hospital's server is not on the board
        os.sched_setscheduler(int(tid), os.SCHED_IDLE, os.sched_param(0))
    root = fresh_copy(store, work / "f")
    send_cfg = write_config(work / "f", root, pacs.url, {"username": USER, "password": PASSWORD}, poll_seconds=1.0)
    rows = []
    before = load()
    for t in threads:
        cfg = loop_config(work, t)
        for label in (CONTROL, SAME_GROUP, OWN_GROUP, IDLE_CGROUP):
            if label == CONTROL:
                found = windows(cfg, lambda _on: None, seconds, window)
                sent = "-"
            else:
                try:
                    group = IdleCgroup() if label == IDLE_CGROUP else None
                except OSError as e:
                    print(f"{label}: skipped ({e})")
                    continue
                sender = Sender(root, send_cfg, own_session=label == OWN_GROUP)
                sender.pause(True)
                try:
                    if group:
                        group.add(sender.proc.pid)
                    found = windows(cfg, lambda on_, s=sender: s.pause(not on_), seconds, window)
                    sent = str(sender.sent(pacs.url))
                finally:
                    sender.stop()
                    if group:
                        group.close()
            (f_off, c_off), (f_on, c_on) = ([statistics.median(v) for v in zip(*found[k])] for k in (False, True))
            ratio = f_on / f_off
            rows.append([str(t), label, f"{f_off:.1f}", f"{f_on:.1f}", f"{ratio:.3f}", "yes" if ratio >= TARGET else
                         "NO", f"{c_off:.2f}", f"{c_on:.2f}", str(len(found[False]) + len(found[True])), sent])
            print(" | ".join(rows[-1]), f"({load()})", flush=True)
    print(f"\n## 3. Loop FPS while sending ({before} before, {load()} after)\n\n{bench.board_model()}, "
          f"{os.cpu_count()} CPUs; one `run` of the demo MicroMPoxNet 128 (tflite int8, Grad-CAM every frame) on "
          f"the 640x480 clip, looped, null 480x320 display, for {seconds:.0f} s; the sender paused (SIGSTOP) and "
          f"resumed (SIGCONT) every {window:g} s; FPS per window, medians over the windows of each kind\n")
    print("\n".join(bench.md_table(["threads", "beside the loop", "FPS (sender paused)", "FPS (sender running)",
                                     "ratio", f">= {TARGET}", "loop CPU ms/frame (paused)", "(running)", "windows",
                                     "captures sent"], rows)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--captures", type=int, default=1000)
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=60.0, help="part 3: how long the loop runs per setting")
    ap.add_argument("--window", type=float, default=1.0, help="part 3: seconds between pausing and resuming")
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
        if "2" in parts:
            crashes(store, n, a.kills, work).kill()
        if "3" in parts:  # the hospital's disk is not the board's: Orthanc stores in memory here
            with tempfile.TemporaryDirectory(prefix="skinedge-forward-", dir="/dev/shm") as shm:
                pacs = Orthanc(Path(shm) / "orthanc-3").start()
                try:
                    fps(store, pacs, work, a.seconds, a.window, [int(t) for t in a.threads.split(",")])
                finally:
                    pacs.kill()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
