"""The capture store at clinic scale: `captures verify`, `captures export` and `captures verify --zip` on a store
of 5,000 captures (issue 20 bars: verify <= 60 s, export peak RSS <= 100 MB on this machine).

Builds the store once (kept in --dir for later runs) through the real `CaptureStore.add`: each capture a 480x480
frame (the centre crop a 640x480 dermatoscope gives) and an 800x480 overlay (a 7-inch panel), cut at random
from scikit-image's sample photographs, so the PNGs are natural images of a camera's size, not noise or flat
colour. Then runs each command as a user would (`python -m edge.cli captures ...`) under /usr/bin/time -v and
prints wall time and peak RSS (the largest of the process and its children, as time(1) reports it). `--cold`
drops the page cache before each command (root only), so the images are read from the disk.

    nice -n 10 python -m benchmarks.store_scale [--captures 5000] [--dir /tmp/skinedge-store-scale] [--cold]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from edge.record.store import CaptureStore

REPO = Path(__file__).resolve().parents[1]
LABELS = ["melanoma", "nevus", "keratosis", "normal"]


def photos() -> list[np.ndarray]:
    """scikit-image's colour sample photographs, enlarged so that 800x480 windows fit inside."""
    from skimage import data

    out = []
    for name in ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "retina"):
        img = getattr(data, name)()[..., :3]
        scale = max(1.0, 900 / min(img.shape[:2]))
        out.append(cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC))
    return out


def window(rng: np.random.Generator, img: np.ndarray, h: int, w: int) -> np.ndarray:
    y, x = rng.integers(0, img.shape[0] - h + 1), rng.integers(0, img.shape[1] - w + 1)
    return np.ascontiguousarray(img[y:y + h, x:x + w])


def build(root: Path, n: int) -> None:
    """Add captures until the store holds n (resumable: an interrupted build goes on where it stopped)."""
    rng = np.random.default_rng(20)
    pics = photos()
    with CaptureStore(root, device_id="scale-test") as store:
        have = len(store.list())
        t0 = time.monotonic()
        for i in range(have, n):
            frame = window(rng, pics[rng.integers(len(pics))], 480, 480)
            overlay = window(rng, pics[rng.integers(len(pics))], 480, 800)
            store.add(frame, overlay, rng.dirichlet(np.ones(len(LABELS))), LABELS, "b" * 64, note=f"scale {i}",
                      gate={"gate": "pass", "gate_ood_score": float(rng.random())})
            if (i + 1) % 500 == 0:
                print(f"  built {i + 1}/{n} captures ({time.monotonic() - t0:.0f} s)", flush=True)


def timed(args: list[str], cold: bool) -> tuple[float, float, float, int, str]:
    """(wall s, CPU s (user + system), peak RSS MB, exit status, last stdout line) of `python -m edge.cli ARGS`
    under /usr/bin/time -v. On a shared machine the CPU time is the steadier figure."""
    if cold:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    r = subprocess.run(["/usr/bin/time", "-v", sys.executable, "-m", "edge.cli", *args], capture_output=True,
                       text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, check=False)
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (?:(\d+):)?(\d+):([\d.]+)", r.stderr)
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", r.stderr)
    cpu = sum(float(m) for m in re.findall(r"(?:User|System) time \(seconds\): ([\d.]+)", r.stderr))
    seconds = int(wall[1] or 0) * 3600 + int(wall[2]) * 60 + float(wall[3])
    last = (r.stdout.strip().splitlines() or [""])[-1]
    return seconds, cpu, int(rss[1]) / 1024, r.returncode, last


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--captures", type=int, default=5000)
    p.add_argument("--dir", type=Path, default=Path("/tmp/skinedge-store-scale"))
    p.add_argument("--cold", action="store_true", help="drop the page cache before each command (root)")
    a = p.parse_args(argv)
    root, out = a.dir / "store", a.dir / "export.zip"
    print(f"store {root}: building to {a.captures} captures", flush=True)
    build(root, a.captures)
    size = sum(f.stat().st_size for f in root.rglob("*") if f.is_file())
    print(f"store: {a.captures} captures, {size / 1e9:.2f} GB on disk ({size / a.captures / 1e3:.0f} KB per capture)")
    print(f"load average before: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}"
          f" ({'cold' if a.cold else 'warm'} page cache)")
    out.unlink(missing_ok=True)
    rows = [("captures verify --store", ["captures", "verify", "--store", str(root)]),
            ("captures export", ["captures", "export", "--store", str(root), "--out", str(out)]),
            ("captures verify --zip", ["captures", "verify", "--zip", str(out)]),
            ("captures list", ["captures", "list", "--store", str(root)])]
    print(f"{'command':26} {'wall s':>8} {'CPU s':>7} {'peak RSS MB':>12} {'exit':>5}  output")
    for name, args in rows:
        wall, cpu, rss, code, last = timed(args, a.cold)
        print(f"{name:26} {wall:8.1f} {cpu:7.1f} {rss:12.1f} {code:5d}  {last[:80]}", flush=True)
    print(f"load average after: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
