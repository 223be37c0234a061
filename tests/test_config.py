"""Device configs: every shipped one loads; each kind of mistake gives one ConfigError naming file and key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge.backends.cpu import max_threads
from edge.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted((ROOT / "device_configs").glob("*.yaml"))
MINIMAL = "source:\n  kind: picamera2\ndisplay:\n  kind: null\n"


def write(tmp_path: Path, text: str, name: str = "board.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def error(path: Path, overrides: dict | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as e:
        load_config(path, overrides)
    assert str(e.value).startswith(f"{path}: "), str(e.value)
    assert "\n" not in str(e.value)
    return e.value


def test_all_six_boards_are_shipped():
    boards = {"rpi-zero2w", "rpi4", "rpi5", "jetson-orin-nano", "jetson-nano", "desktop"}
    assert {p.stem for p in SHIPPED} >= boards


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_config_loads(path):
    cfg = load_config(path)
    assert cfg.device_name == path.stem
    assert cfg.source.kind in ("picamera2", "opencv")
    assert cfg.display.size[0] >= 320 and cfg.display.size[1] >= 240
    if path.stem != "desktop":
        assert cfg.bundle == "/opt/skinedge/bundle"
        assert cfg.store.path == "/var/lib/skinedge/captures"


def test_board_specifics():
    zero = load_config(ROOT / "device_configs" / "rpi-zero2w.yaml")
    assert (zero.backend, zero.gradcam.every_n, zero.source.resolution) == ("tflite", 2, (640, 480))
    display = zero.display
    assert (display.kind, display.device, display.size) == ("framebuffer", "/dev/fb1", (480, 320))
    orin = load_config(ROOT / "device_configs" / "jetson-orin-nano.yaml")
    assert orin.backend == "tensorrt" and orin.source.pipeline.startswith("nvarguscamerasrc sensor-id=0 !")
    desktop = load_config(ROOT / "device_configs" / "desktop.yaml")
    assert (desktop.source.device, desktop.display.kind, desktop.backend) == (0, "auto", "auto")
    assert not desktop.store.path.startswith("~")


def test_defaults_fill_optional_keys(tmp_path):
    cfg = load_config(write(tmp_path, MINIMAL))
    assert cfg.bundle is None and cfg.backend == "auto" and cfg.threads >= 1 and cfg.precision == "int8"
    assert cfg.source.resolution == (640, 480) and cfg.source.fps == 30 and cfg.source.loop is False
    assert cfg.display.size == (800, 480) and cfg.display.rotation == 0
    assert (cfg.gradcam.every_n, cfg.gradcam.alpha, cfg.gradcam.colormap) == (1, 0.45, "jet")
    assert cfg.thresholds.min_confidence == 0.6 and cfg.watchdog.enabled and cfg.trigger.key is None


def test_relative_paths_resolve_against_the_config_dir(tmp_path):
    sub = tmp_path / "conf"
    sub.mkdir()
    path = write(sub, "bundle: ../bundles/b1\nstore: {path: caps}\nsource: {kind: video, path: clips/a.mp4}\n"
                      "display: {kind: files, path: out}\n")
    cfg = load_config(path)
    assert cfg.bundle == str(tmp_path / "bundles" / "b1")
    assert cfg.store.path == str(sub / "caps")
    assert cfg.source.path == str(sub / "clips" / "a.mp4")
    assert cfg.display.path == str(sub / "out")


def test_json_is_accepted(tmp_path):
    """The benchmark writes its configs as JSON, which is YAML."""
    path = write(tmp_path, json.dumps({"source": {"kind": "folder", "path": "/x", "loop": True},
                                       "display": {"kind": "null", "size": [480, 320]},
                                       "gradcam": {"every_n": 0}, "threads": 2}), "bench.yaml")
    cfg = load_config(path)
    assert cfg.gradcam.every_n == 0 and cfg.display.size == (480, 320) and cfg.threads == 2


@pytest.mark.parametrize("text, key, words", [
    (MINIMAL + "thread: 2\n", "thread", ["unknown key", "did you mean 'threads'"]),
    (MINIMAL.replace("kind: picamera2", "kind: picamera2\n  resolutoin: [1, 2]"), "source.resolutoin",
     ["unknown key", "'resolution'"]),
    (MINIMAL + "threads: four\n", "threads", ["integer", "'four'"]),
    (MINIMAL + "threads: 0\n", "threads", [f"integer in 1..{max_threads()}", "found 0"]),
    (MINIMAL + "threads: true\n", "threads", ["integer", "True"]),
    (MINIMAL + "backend: tf-lite\n", "backend", ["one of", "'tflite'", "did you mean 'tflite'"]),
    (MINIMAL + "precision: int4\n", "precision", ["'int8'", "'fp32'", "'int4'"]),
    (MINIMAL.replace("kind: null", "kind: null\n  size: [480]"), "display.size", ["[width, height]"]),
    # bounded by real hardware: [40000, 40000] would be 4.5 GB per frame
    (MINIMAL.replace("kind: null", "kind: null\n  size: [40000, 40000]"), "display.size",
     ["120..7680", "33.2 megapixels (an 8K panel)", "found [40000, 40000]"]),
    (MINIMAL.replace("kind: null", "kind: null\n  size: [7680, 7680]"), "display.size", ["33.2 megapixels"]),
    (MINIMAL.replace("kind: picamera2", "kind: picamera2\n  resolution: [100000, 480]"), "source.resolution",
     ["16..9248", "64 MP"]),
    (MINIMAL.replace("kind: picamera2", "kind: picamera2\n  fps: 100000"), "source.fps", ["1..240"]),
    (MINIMAL + "threads: 100000\n", "threads", [f"1..{max_threads()}", "found 100000"]),
    (MINIMAL + "gradcam: {every_n: 10000000}\n", "gradcam.every_n", ["0..10000"]),
    (MINIMAL + "watchdog: {stall_seconds: 1.0e12}\n", "watchdog.stall_seconds", ["0.1..3600"]),
    (MINIMAL.replace("kind: null", "kind: null\n  size: [" + "1, " * 5000 + "1]"), "display.size",
     ["[width, height]"]),
    (MINIMAL.replace("kind: null", "kind: null\n  rotation: 45"), "display.rotation",
     ["0, 90, 180, 270", "found 45"]),
    (MINIMAL + "gradcam: {alpha: 1.5}\n", "gradcam.alpha", ["0.0..1.0", "1.5"]),
    (MINIMAL + "gradcam: {colormap: rainbowz}\n", "gradcam.colormap", ["'jet'", "did you mean 'rainbow'"]),
    (MINIMAL + "trigger: {key: 1}\n", "trigger.key", ["single character"]),
    (MINIMAL + "watchdog: {enabled: 'yes'}\n", "watchdog.enabled", ["true or false"]),
    (MINIMAL + "store: [a, b]\n", "store", ["mapping"]),
    ("display: {kind: null}\n", "source.kind", ["required"]),
    ("source: {kind: picamera2}\n", "display.kind", ["required"]),
    ("source: {kind: video}\ndisplay: {kind: null}\n", "source.path",
     ["required when source.kind is 'video'"]),
    ("source: {kind: opencv}\ndisplay: {kind: null}\n", "source.device", ["source.pipeline"]),
    ("source: {kind: picamera2}\ndisplay: {kind: files}\n", "display.path", ["required"]),
    ("source: {kind: webcam}\ndisplay: {kind: null}\n", "source.kind", ["'picamera2'", "'webcam'"]),
])
def test_each_mistake_names_file_and_key(tmp_path, text, key, words):
    e = error(write(tmp_path, text))
    assert e.key == key
    assert str(e).startswith(f"{tmp_path / 'board.yaml'}: {key}: ")
    assert len(str(e)) < 500  # one line that never echoes an unbounded value
    for w in words:
        assert w in str(e), (w, str(e))


def test_missing_file(tmp_path):
    e = error(tmp_path / "nope.yaml")
    assert "not found" in str(e)


def test_malformed_yaml_names_the_line(tmp_path):
    e = error(write(tmp_path, "source:\n  kind: picamera2\ndisplay: [unclosed\n  kind: null\n"))
    assert "line " in str(e) and "malformed YAML" in str(e)


def test_duplicate_key_is_refused(tmp_path):
    e = error(write(tmp_path, MINIMAL + "threads: 2\nthreads: 3\n"))
    assert "duplicate key 'threads'" in str(e) and "line 6" in str(e)


def test_top_level_must_be_a_mapping(tmp_path):
    assert "mapping" in str(error(write(tmp_path, "- a\n- b\n")))


def test_overrides_apply_and_resolve_against_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = ROOT / "device_configs" / "jetson-orin-nano.yaml"
    cfg = load_config(path, {"bundle": "b", "source.kind": "video", "source.path": "clip.mp4",
                             "display.kind": "files", "display.path": "out", "threads": 2, "backend": "onnx"})
    assert cfg.bundle == str(tmp_path / "b") and cfg.display.path == str(tmp_path / "out")
    assert (cfg.source.kind, cfg.source.path) == ("video", str(tmp_path / "clip.mp4"))
    assert (cfg.threads, cfg.backend) == (2, "onnx")
    assert cfg.source.pipeline is None  # a command-line source replaces the file's pipeline


def test_overrides_are_validated(tmp_path):
    path = write(tmp_path, MINIMAL)
    e = error(path, {"threads": "many"})
    assert e.key == "threads (override)" and "integer" in str(e)
    e = error(path, {"source.kindd": "video"})
    assert e.key == "source.kindd (override)" and "did you mean 'source.kind'" in str(e)
    e = error(path, {"source.kind": "video"})
    assert e.key == "source.path"
