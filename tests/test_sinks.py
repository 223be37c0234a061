"""Sinks: the framebuffer writer against a regular file and a fake sysfs, file writers decoded back."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.config import DisplayConfig
from edge.sinks import (
    FileSink,
    FramebufferSink,
    NullSink,
    SinkError,
    WindowSink,
    apply_rotation,
    letterbox,
    open_sink,
)

W, H = 96, 64


def fake_fb(tmp_path: Path, bpp: int, stride: int, virtual=(W, H), modes: str | None = None
            ) -> tuple[str, str]:
    """A regular file as /dev/fb1 and a folder as /sys/class/graphics holding fb1's geometry."""
    sysfs = tmp_path / "graphics"
    info = sysfs / "fb1"
    info.mkdir(parents=True)
    (info / "virtual_size").write_text(f"{virtual[0]},{virtual[1]}\n")
    (info / "bits_per_pixel").write_text(f"{bpp}\n")
    (info / "stride").write_text(f"{stride}\n")
    if modes is not None:
        (info / "modes").write_text(modes)
    device = tmp_path / "fb1"
    device.write_bytes(b"\xAB" * stride * virtual[1])  # padding we must not care about
    return str(device), str(sysfs)


def image() -> np.ndarray:
    rng = np.random.default_rng(1)
    return rng.integers(0, 256, (H, W, 3), dtype=np.uint8)


def decode_565(raw: bytes, stride: int, w: int, h: int) -> np.ndarray:
    rows = np.frombuffer(raw, np.uint8)[: stride * h].reshape(h, stride)[:, : 2 * w]
    v = rows.copy().view("<u2").astype(np.int32)
    return np.stack([(v >> 11) << 3, ((v >> 5) & 0x3F) << 2, (v & 0x1F) << 3], axis=-1)


def test_rgb565_with_stride_padding(tmp_path):
    stride = W * 2 + 24
    device, sysfs = fake_fb(tmp_path, 16, stride)
    sink = FramebufferSink(device, sysfs_root=sysfs)
    assert (sink.size, sink.bpp, sink.stride) == ((W, H), 16, stride)
    rgb = image()
    sink.show(rgb)
    sink.close()
    got = decode_565(Path(device).read_bytes(), stride, W, H)
    quantised = rgb.astype(np.int32) & np.array([0xF8, 0xFC, 0xF8])  # RGB565 keeps 5, 6, 5 high bits
    assert np.array_equal(got, quantised)
    assert np.abs(got - rgb).max() <= 7


def test_xrgb8888_with_stride_padding(tmp_path):
    stride = W * 4 + 64
    device, sysfs = fake_fb(tmp_path, 32, stride)
    sink = FramebufferSink(device, sysfs_root=sysfs)
    rgb = image()
    sink.show(rgb)
    sink.close()
    raw = np.frombuffer(Path(device).read_bytes(), np.uint8).reshape(H, stride)
    bgrx = raw[:, : 4 * W].reshape(H, W, 4)
    assert np.array_equal(bgrx[..., 2::-1], rgb)  # bytes B, G, R, X in memory
    assert (bgrx[..., 3] == 255).all()
    assert len(Path(device).read_bytes()) == stride * H


def test_framebuffer_letterboxes_other_sizes(tmp_path):
    device, sysfs = fake_fb(tmp_path, 32, W * 4)
    sink = FramebufferSink(device, sysfs_root=sysfs)
    sink.show(np.full((32, 32, 3), (255, 0, 0), np.uint8))  # a square onto a 96x64 panel
    sink.close()
    px = np.frombuffer(Path(device).read_bytes(), np.uint8).reshape(H, W, 4)[..., 2::-1]
    assert (px[:, 16:80] == (255, 0, 0)).all() and (px[:, :16] == 0).all() and (px[:, 80:] == 0).all()


def test_double_buffered_virtual_screen_uses_the_visible_mode(tmp_path):
    device, sysfs = fake_fb(tmp_path, 16, W * 2, virtual=(W, 2 * H), modes=f"U:{W}x{H}p-0\n")
    sink = FramebufferSink(device, sysfs_root=sysfs)
    assert sink.size == (W, H)
    sink.close()


def test_framebuffer_errors(tmp_path):
    device, sysfs = fake_fb(tmp_path, 24, W * 3)
    with pytest.raises(SinkError, match="24 bits per pixel"):
        FramebufferSink(device, sysfs_root=sysfs)
    with pytest.raises(SinkError, match="geometry"):
        FramebufferSink(str(tmp_path / "fb7"), sysfs_root=sysfs)
    (Path(sysfs) / "fb1" / "bits_per_pixel").write_text("16\n")
    (Path(sysfs) / "fb1" / "stride").write_text("10\n")
    with pytest.raises(SinkError, match="stride"):
        FramebufferSink(device, sysfs_root=sysfs)
    (Path(sysfs) / "fb1" / "stride").write_text(f"{W * 2}\n")
    Path(device).unlink()
    with pytest.raises(SinkError, match="cannot open"):
        FramebufferSink(device, sysfs_root=sysfs)


def test_file_sink_folder_is_lossless(tmp_path):
    out = tmp_path / "frames"
    sink = FileSink(out)
    frames = [image(), image()[::-1].copy()]
    for f in frames:
        sink.show(f)
    sink.close()
    files = sorted(out.iterdir())
    assert [p.name for p in files] == ["frame_00000.png", "frame_00001.png"]
    for p, f in zip(files, frames):
        assert np.array_equal(cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB), f)


@pytest.mark.parametrize("suffix", [".mp4", ".avi"])
def test_file_sink_video_decodes_back(tmp_path, suffix):
    path = tmp_path / "sub" / f"out{suffix}"
    sink = FileSink(path, fps=10)
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (200, 200, 200)]
    for c in colours:
        sink.show(np.full((H, W, 3), c, np.uint8))
    sink.close()
    cap = cv2.VideoCapture(str(path))
    got = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        got.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    cap.release()
    assert len(got) == len(colours) and got[0].shape == (H, W, 3)
    for g, c in zip(got, colours):
        assert np.abs(g[8:-8, 8:-8].astype(int).mean(axis=(0, 1)) - c).max() < 20


def test_rotation():
    img = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    assert apply_rotation(img, 0) is img
    assert np.array_equal(apply_rotation(img, 90), np.rot90(img, k=-1))  # clockwise
    assert np.array_equal(apply_rotation(img, 180), img[::-1, ::-1])
    assert np.array_equal(apply_rotation(img, 270), np.rot90(img, k=1))
    with pytest.raises(ValueError, match="rotation"):
        apply_rotation(img, 45)


def test_letterbox_keeps_aspect():
    out = letterbox(np.full((10, 20, 3), 255, np.uint8), (40, 40))
    assert out.shape == (40, 40, 3)
    assert (out[10:30] == 255).all() and (out[:10] == 0).all() and (out[30:] == 0).all()


def test_window_sink_refuses_headless_opencv():
    if "NONE" not in next(line for line in cv2.getBuildInformation().splitlines() if "GUI:" in line):
        pytest.skip("this OpenCV has a GUI")
    with pytest.raises(SinkError, match="opencv-python"):
        WindowSink()


def test_auto_display_is_a_window_where_it_can_be_and_files_elsewhere(tmp_path, monkeypatch, caplog):
    """device_configs/desktop.yaml's display: with headless OpenCV or no desktop, the overlays go to display.path
    and one line says so (with neither a window nor a path: nowhere, said too)."""
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with caplog.at_level("WARNING", logger="edge.sinks"):
        sink = open_sink(DisplayConfig(kind="auto", path=str(tmp_path / "frames")))
        assert isinstance(sink, FileSink)
        assert isinstance(open_sink(DisplayConfig(kind="auto")), NullSink)
    assert [r.getMessage().split(";")[1].strip() for r in caplog.records] == [
        f"overlays written to {tmp_path / 'frames'}", "overlays not shown (set display.path)"]


def test_open_sink(tmp_path):
    assert isinstance(open_sink(DisplayConfig(kind="null")), NullSink)
    sink = open_sink(DisplayConfig(kind="files", path=str(tmp_path / "o")))
    assert isinstance(sink, FileSink) and not sink.is_video
    with pytest.raises(SinkError):
        open_sink(DisplayConfig(kind="framebuffer", device=str(tmp_path / "fb9")))


def test_file_sink_replaces_earlier_frames_and_refuses_other_files(tmp_path):
    from edge.sinks import FileSink

    out = tmp_path / "frames"
    for n in (3, 1):  # a second, shorter run leaves no frame of the first behind
        sink = FileSink(out)
        for _ in range(n):
            sink.show(np.zeros((8, 8, 3), np.uint8))
        sink.close()
        assert sorted(p.name for p in out.iterdir()) == [f"frame_{i:05d}.png" for i in range(n)]
    (out / "notes.txt").write_text("mine")
    with pytest.raises(SinkError, match="is not empty \\(holds notes.txt\\)"):
        FileSink(out)
    assert (out / "notes.txt").read_text() == "mine" and (out / "frame_00000.png").exists()
