"""`skinedge run` end to end: a real video file through the real OpenCV decoder, real LiteRT and ONNX
Runtime, the numpy Grad-CAM and the overlay, into an image folder and a framebuffer (a regular file with
sysfs-style geometry beside it). Checks the pixels that land there, not just exit codes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.answer import Answerer
from edge.classify import Classifier
from edge.config import load_config
from edge.gates import Stability, for_bundle, shown_message
from edge.pipeline import screen
from edge.trust.admit import admit
from edge.trust.signing import Trust

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "edge" / "demo_assets"
CONFIG = DEMO / "demo.yaml"
FRAMES = 8
SIZE = (480, 320)


def _skinedge(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edge.cli", *args], check=False, capture_output=True, text=True,
                          timeout=300, env=env, cwd=REPO)


def _clip_frames(n: int) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(DEMO / "clip.mp4"))
    frames = []
    while len(frames) < n:
        ok, bgr = cap.read()
        assert ok
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    cap.release()
    return frames


def _answerer(backend: str, use_motion: bool = True, config: Path = CONFIG) -> Answerer:
    """The gated path of edge.answer, assembled here from its parts (no self-test: the bundle is the shipped one)."""
    bundle, model = admit(DEMO / "bundle", Trust())
    return Answerer(Classifier(bundle, backend, threads=2), for_bundle(bundle, load_config(config).gates, use_motion),
                    model)


def _expected(backend: str) -> list[np.ndarray]:
    """What the screen must show for each frame, computed here from the same parts: (answer, shown gate
    message or None, screen)."""
    answerer = _answerer(backend)
    cfg = load_config(CONFIG, {"display.size": list(SIZE)})
    stability = Stability(cfg.gates.stable_frames)
    out = []
    for frame in _clip_frames(FRAMES):
        prep = answerer.prepare(frame)
        ans = answerer.answer(prep)
        gate = shown_message(ans.verdict, stability.update(ans.target, ans.passed))
        out.append((ans, gate, screen(cfg, prep.view, ans, ans.cam, None, gate)))
    return out


def _image_region(img: np.ndarray) -> np.ndarray:
    """The camera view (left of the HUD panel): identical whatever the FPS text says."""
    return img[:260, :280]


@pytest.mark.parametrize("backend", ["tflite", "onnx"])
def test_run_video_to_image_folder(backend, tmp_path):
    out = tmp_path / "frames"
    r = _skinedge("run", "--config", str(CONFIG), "--bundle", str(DEMO / "bundle"), "--source", str(DEMO / "clip.mp4"),
                  "--display", str(out), "--frames", str(FRAMES), "--backend", backend, "--record", str(tmp_path / "r.npz"))
    assert r.returncode == 0, r.stderr
    assert f"{FRAMES} frames" in r.stdout
    files = sorted(out.glob("*.png"))
    assert len(files) == FRAMES
    expected = _expected(backend)
    rec = np.load(tmp_path / "r.npz")
    assert [g for _, g, _ in expected[:2]] == ["CHECKING - hold steady"] * 2  # stable_frames 3: no flicker
    assert any(g is None for _, g, _ in expected), "the clip's lesion frames pass every gate once stable"
    for i, (f, (res, gate, expected_screen)) in enumerate(zip(files, expected)):
        got = cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB)
        assert got.shape == (SIZE[1], SIZE[0], 3)
        np.testing.assert_allclose(rec["probs"][i], res.probs, atol=1e-5)
        diff = np.abs(_image_region(got).astype(int) - _image_region(expected_screen).astype(int))
        assert diff.max() <= 2, f"frame {i}: overlay pixels differ by {diff.max()}"
        assert (res.cam is not None) == res.passed  # the map explains a class: none for a refused frame
        assert rec["gate"][i] == (res.verdict.reason or "pass")


def test_run_to_framebuffer_file(tmp_path):
    sysfs = tmp_path / "sys"
    (sysfs / "fb1").mkdir(parents=True)
    (sysfs / "fb1" / "virtual_size").write_text(f"{SIZE[0]},{SIZE[1]}\n")
    (sysfs / "fb1" / "bits_per_pixel").write_text("16\n")
    (sysfs / "fb1" / "stride").write_text(f"{SIZE[0] * 2}\n")
    fb = tmp_path / "fb1"
    fb.write_bytes(b"\0" * SIZE[0] * SIZE[1] * 2)
    import os

    env = dict(os.environ, SKINEDGE_FB_SYSFS=str(sysfs))
    r = _skinedge("run", "--config", str(CONFIG), "--bundle", str(DEMO / "bundle"), "--source", str(DEMO / "clip.mp4"),
                  "--display", f"framebuffer:{fb}", "--frames", str(FRAMES), "--backend", "tflite", env=env)
    assert r.returncode == 0, r.stderr
    px = np.frombuffer(fb.read_bytes(), "<u2").reshape(SIZE[1], SIZE[0])
    rgb = np.stack([(px >> 11) << 3, ((px >> 5) & 0x3F) << 2, (px & 0x1F) << 3], -1).astype(int)
    _, _, last = _expected("tflite")[-1]
    diff = np.abs(_image_region(rgb) - _image_region(last).astype(int))
    assert diff.max() <= 8 + 2, f"framebuffer pixels differ by {diff.max()} (RGB565 allows 7)"
    assert rgb[:, :, 0].max() > 0  # not left blank


def test_run_on_class_folders_writes_results_and_accuracy(tmp_path):
    """An ImageFolder tree as the source: a console line per image, a results CSV whose rows match what the
    board's classifier says about each file, accuracy over the class sub-folders; and no capture store on
    disk, since nothing was captured (desktop.yaml has a capture key)."""
    import csv
    import os

    from calibration.synthetic import write_imagefolder

    images = write_imagefolder(tmp_path / "images", per_class=2, size=160, seed=9, classes=("normal", "pox_like"))
    loose = cv2.imread(str(min((images / "normal").glob("*.png"))))
    cv2.imwrite(str(images / "loose.png"), loose)  # an image with no class folder: no true label
    env = dict(os.environ, HOME=str(tmp_path / "home"))
    r = _skinedge("run", "--config", str(REPO / "device_configs" / "desktop.yaml"), "--bundle", str(DEMO / "bundle"),
                  "--source", str(images), "--display", "null", "--backend", "tflite", "--results",
                  str(tmp_path / "r.csv"), env=env)
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader((tmp_path / "r.csv").open()))
    names = ["loose.png"] + sorted(f"{c}/{p.name}" for c in ("normal", "pox_like") for p in (images / c).glob("*.png"))
    assert [row["source"] for row in rows] == names and [row["index"] for row in rows] == ["0", "1", "2", "3", "4"]
    answerer = _answerer("tflite", use_motion=False, config=REPO / "device_configs" / "desktop.yaml")
    right = answered = 0
    for row in rows:
        res = answerer(cv2.cvtColor(cv2.imread(str(images / row["source"])), cv2.COLOR_BGR2RGB))
        verdict = res.verdict.record()  # the gate outcome and scores are columns of the results
        assert row["gate"] == verdict["gate"] and float(row["gate_sharpness"]) == verdict["gate_sharpness"]
        assert float(row["gate_ood_score"]) == pytest.approx(verdict["gate_ood_score"], abs=1e-3)
        assert row["true_label"] == ("" if row["source"] == "loose.png" else row["source"].split("/")[0])
        if not res.passed:  # no class is written for a frame the gates refused
            assert [row[f"label_{i}"] for i in (1, 2, 3)] == ["", "", ""] and row["cam_x"] == ""
            continue
        top = res.top(3)
        assert [row[f"label_{i}"] for i in (1, 2, 3)] == [label for label, _ in top]
        assert float(row["prob_1"]) == pytest.approx(top[0][1], abs=1e-5)
        assert row["uncertain"] == str(top[0][1] < 0.6)
        y, x = np.unravel_index(np.argmax(res.cam), res.cam.shape)
        assert (float(row["cam_x"]), float(row["cam_y"])) == pytest.approx(
            ((x + 0.5) / res.cam.shape[1], (y + 0.5) / res.cam.shape[0]), abs=1e-4)
        answered += row["true_label"] != ""
        right += row["true_label"] == row["label_1"]
        assert f"{row['source']}: {row['label_1']} " in r.stdout  # one console line per image
    assert answered >= 3, "the synthetic lesions pass the gates"
    assert (f"accuracy {right}/{answered} = {right / answered:.1%} on the answered images in class sub-folders"
            in r.stdout)
    assert not (tmp_path / "home" / ".local" / "share" / "skinedge").exists(), "run created a store it never used"


def test_the_desktop_config_runs_headless(tmp_path):
    """After the README's install (headless OpenCV) and on a machine without a desktop, device_configs/desktop.yaml
    runs: no window can open, so the overlays go to its display.path, and one line says so."""
    import os

    from calibration.synthetic import write_imagefolder

    images = write_imagefolder(tmp_path / "images", per_class=1, size=96, seed=5, classes=("normal", "pox_like"))
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env["HOME"] = str(tmp_path / "home")
    r = _skinedge("run", "--config", str(REPO / "device_configs" / "desktop.yaml"), "--bundle", str(DEMO / "bundle"),
                  "--source", str(images), "--backend", "tflite", env=env)
    assert r.returncode == 0, r.stderr
    frames = tmp_path / "home" / ".local" / "share" / "skinedge" / "frames"
    assert "display: no window (" in r.stderr and f"overlays written to {frames}" in r.stderr
    assert sorted(p.name for p in frames.iterdir()) == ["frame_00000.png", "frame_00001.png"]


def test_results_file_name_is_checked_before_the_run(tmp_path):
    r = _skinedge("run", "--config", str(CONFIG), "--results", str(tmp_path / "r.txt"))
    assert r.returncode != 0 and "expected a .csv or .jsonl file name" in r.stderr
    assert "frames in" not in r.stdout  # refused before the loop ran


def test_results_jsonl_holds_the_record_fields(tmp_path):
    import json

    from edge.answer import Answer
    from edge.gates import Quality, Verdict
    from edge.record.results import FrameRecord, ResultsLog
    from edge.trust.admit import Provenance

    def answer(reason):
        verdict = Verdict(reason, Quality(30.0, 120.0, 0.0, 0.0, None), 1.5, 2.9, 0.1)
        return Answer(verdict, ("a", "b", "c"), np.array([0.1, 0.7, 0.2]), np.zeros((1, 3)), 1, None,
                      Provenance("m", "1.0.0", "d" * 64, None), [1.0], 1.0, 0.0)

    log = ResultsLog(tmp_path / "r.jsonl")
    cam = np.zeros((4, 4), np.float32)
    cam[3, 1] = 1.0
    log(FrameRecord.of(7, None, answer(None), 0.8, cam))
    log(FrameRecord.of(8, None, answer("blurred"), 0.8, cam, true_label="b"))
    log.close()
    rec, refused = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert rec["index"] == 7 and rec["source"] == "7" and rec["uncertain"] is True  # 0.7 < 0.8
    assert rec["top"] == [["b", 0.7], ["c", 0.2], ["a", 0.1]] and rec["cam_peak"] == [0.375, 0.875]
    assert rec["true_label"] is None
    assert rec["gate"]["gate"] == "pass" and rec["gate"]["gate_sharpness"] == 30.0
    assert rec["gate"]["signature"] == "UNSIGNED" and rec["gate"]["model_version"] == "1.0.0"
    assert refused["top"] == [] and refused["uncertain"] is None and refused["cam_peak"] is None
    assert refused["gate"]["gate"] == "blurred"
    assert log.summary() == "1 of 2 frame(s) not answered: the gates refused them"  # no answered labelled frame


def test_verify_refuses_a_backend_typo_before_running_any():
    r = _skinedge("verify", str(DEMO / "bundle"), "--backend", "tflite,onxx")
    assert r.returncode == 2 and "unknown backend onxx" in r.stderr
    assert r.stdout == ""  # nothing loaded or run first
