"""Faults in the field: a camera that breaks off mid-stream and vanishes, then comes back; a capture store
on a path that cannot be a store; scripted captures through the CLI."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time

import cv2
import numpy as np
import yaml

from edge.config import load_config
from edge.pipeline import run
from tests.test_run import DEMO

RED = np.array([200, 30, 30])


def _is_lost_screen(png) -> bool:
    bgr = cv2.imread(str(png))
    if bgr is None:  # still being written
        return False
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB).astype(int)
    return float(np.mean(np.abs(rgb - RED).sum(-1) < 120)) > 0.3


def _mjpeg_copy(src, dst):
    """The demo clip as MJPEG AVI: a truncated copy still opens and decodes up to the cut, like a camera."""
    cap = cv2.VideoCapture(str(src))
    writer = None
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        writer = writer or cv2.VideoWriter(str(dst), cv2.VideoWriter_fourcc(*"MJPG"), 12, bgr.shape[1::-1])
        writer.write(bgr)
    writer.release()
    return dst


def test_camera_lost_screen_then_resume(tmp_path):
    good = _mjpeg_copy(DEMO / "clip.mp4", tmp_path / "good.avi")
    cam = tmp_path / "cam.avi"
    data = good.read_bytes()
    cam.write_bytes(data[: len(data) * 3 // 10])  # a stream that breaks off after a few frames
    out = tmp_path / "screen"
    cfg = load_config(DEMO / "demo.yaml", {"source.kind": "opencv", "source.device": str(cam),
                                           "display.path": str(out), "backend": "onnx"})
    result = {}
    worker = threading.Thread(target=lambda: result.setdefault("stats", run(cfg, frames=30)))
    worker.start()
    deadline = time.time() + 60
    while time.time() < deadline and not list(out.glob("*.png")):
        time.sleep(0.05)
    cam.unlink()  # unplugged: the open stream still breaks off, and reopening fails until it is back
    while time.time() < deadline and not any(_is_lost_screen(p) for p in sorted(out.glob("*.png"))[-3:]):
        time.sleep(0.2)
    shutil.copy(good, cam)  # plugged back in
    worker.join(timeout=120)
    assert not worker.is_alive(), "the loop did not resume after the camera came back"
    stats = result["stats"]
    assert stats.frames == 30 and stats.camera_lost_screens > 0, stats.summary()
    screens = sorted(out.glob("*.png"))
    lost = [i for i, p in enumerate(screens) if _is_lost_screen(p)]
    assert lost and lost[0] > 0 and lost[-1] < len(screens) - 1  # live frames before and after the loss


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "edge.cli", *args], check=False, capture_output=True, text=True,
                          timeout=300)


def test_scripted_capture_list_export_verify(tmp_path):
    store = tmp_path / "store"
    r = _cli("capture", "--config", str(DEMO / "demo.yaml"), "--store", str(store), "--count", "3", "--note", "site A")
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("kept capture") == 3
    key = (tmp_path / "device-key.pub").read_text().strip()  # made at the first capture, beside the store
    assert f"made this board's device key {tmp_path / 'device-key'}" in r.stderr and key in r.stderr
    r = _cli("captures", "list", "--store", str(store))
    assert r.returncode == 0 and "3 capture(s)" in r.stdout and "site A" in r.stdout
    header, *rows = r.stdout.strip().splitlines()[:4]
    columns = ["id", "time (UTC)", "visit", "class", "confidence", "gate", "model", "version", "bundle", "duplicate",
               "note"]
    assert header.split("\t") == columns and all(len(row.split("\t")) == len(columns) for row in rows)
    demo = yaml.safe_load((DEMO / "bundle" / "manifest.yaml").read_text())
    assert all(row.split("\t")[6:8] == [demo["name"], str(demo["version"])] for row in rows)  # which model answered
    assert [row.split("\t")[-1] for row in rows] == ["site A"] * 3
    r = _cli("captures", "export", "--store", str(store), "--out", str(tmp_path / "x.zip"))
    assert r.returncode == 0 and "exported 3" in r.stdout
    import zipfile

    names = zipfile.ZipFile(tmp_path / "x.zip").namelist()
    assert "index.csv" in names and sum(n.endswith(".png") for n in names) == 6
    assert _cli("captures", "verify", "--store", str(store)).returncode == 0
    r = _cli("captures", "verify", "--zip", str(tmp_path / "x.zip"), "--key", key)
    assert r.returncode == 0 and r.stdout.startswith("ZIP OK: 3 capture(s), 6 image(s)"), r.stdout + r.stderr


def test_calibration_frames_from_the_camera(tmp_path):
    r = _cli("capture", "--config", str(DEMO / "demo.yaml"), "--calib", str(tmp_path / "calib"), "--count", "4",
             "--label", "clinic_a")
    assert r.returncode == 0, r.stderr
    assert len(list((tmp_path / "calib" / "clinic_a").glob("*.png"))) == 4
    r = _cli("capture", "--config", str(DEMO / "demo.yaml"), "--calib", str(tmp_path / "flat"), "--count", "3")
    assert r.returncode == 0, r.stderr
    from calibration.dataset import UNLABELLED, scan

    ds = scan(tmp_path / "flat")  # without --label: an unlabelled folder `skinedge convert --calib` takes as it is
    assert ds.classes is None and [s.label for s in ds.samples] == [UNLABELLED] * 3


def test_calibration_frames_stay_inside_their_folder(tmp_path):
    """--label is one folder name: '../../x', '..', 'a/b', an absolute path, '' and a symlink out of DIR are
    refused before the camera opens, as is a DIR that cannot be made (/proc); one line each, nothing written."""
    base = tmp_path / "site" / "calib"
    base.mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (base / "out").symlink_to(tmp_path / "elsewhere")
    cases = {("--calib", str(base), "--label", "../../x"): "--label '../../x': expected one folder name",
             ("--calib", str(base), "--label", ".."): "--label '..': expected one folder name",
             ("--calib", str(base), "--label", "a/b"): "--label 'a/b'",
             ("--calib", str(base), "--label", "/etc"): "--label '/etc'",
             ("--calib", str(base), "--label", ""): "--label '': expected one folder name",
             ("--calib", str(base), "--label", "out"): "leads outside",
             ("--calib", "/proc/cal"): "--calib /proc/cal: the folder cannot be made"}
    for args, message in cases.items():
        r = _cli("capture", "--config", str(DEMO / "demo.yaml"), *args, "--count", "1")
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and message in lines[0], (args, r.stderr)
    assert sorted(os.listdir(tmp_path)) == ["elsewhere", "site"] and os.listdir(tmp_path / "elsewhere") == []
    assert os.listdir(tmp_path / "site") == ["calib"] and os.listdir(base) == ["out"] and not os.path.exists("/proc/cal")


def test_store_on_a_file_is_one_clear_line(tmp_path):
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("x")
    r = _cli("captures", "list", "--store", str(blocker))
    assert r.returncode == 2
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "not_a_dir" in lines[0]
    assert blocker.read_text() == "x"
