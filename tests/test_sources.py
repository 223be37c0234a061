"""Sources on real files through the real OpenCV decoder, and the capture thread's queue and reconnects."""

from __future__ import annotations

import logging
import os
import shutil
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.config import SourceConfig
from edge.sources import (
    CaptureThread,
    FolderSource,
    OpenCVSource,
    SourceError,
    open_source,
)
from tests._wait import until

W, H, N = 64, 48, 12


def frame_bgr(i: int) -> np.ndarray:
    """Top half pure red (to check RGB order), bottom half grey level 10*i + 20 (to identify frames 0..22)."""
    f = np.zeros((H, W, 3), np.uint8)
    f[: H // 2] = (0, 0, 255)
    f[H // 2 :] = (10 * i + 20) % 250
    return f


def index_of(rgb: np.ndarray) -> int:
    return round((float(rgb[H // 2 + 4 :, 8:-8].mean()) - 20) / 10)


def write_video(path: Path, n: int = N) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 10, (W, H))
    assert writer.isOpened()
    for i in range(n):
        writer.write(frame_bgr(i))
    writer.release()
    return path


@pytest.fixture
def video(tmp_path) -> Path:
    return write_video(tmp_path / "clip.avi")


def test_video_file_all_frames_rgb(video):
    src = OpenCVSource(str(video))
    frames = []
    while (f := src.read()) is not None:
        frames.append(f)
    src.close()
    assert len(frames) == N
    assert [index_of(f) for f in frames] == list(range(N))
    top = frames[0][: H // 2 - 4]
    assert frames[0].shape == (H, W, 3) and frames[0].dtype == np.uint8
    assert top[..., 0].mean() > 230  # red is channel 0
    assert top[..., 1].mean() < 25 and top[..., 2].mean() < 25
    assert not src.live


def test_video_loop_rewinds(video):
    src = OpenCVSource(str(video), loop=True)
    got = [index_of(src.read()) for _ in range(2 * N + 3)]
    src.close()
    assert got == list(range(N)) * 2 + [0, 1, 2]


def test_open_errors(tmp_path):
    with pytest.raises(SourceError, match="not found"):
        OpenCVSource(str(tmp_path / "missing.mp4"))
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(os.urandom(2000))
    with pytest.raises(SourceError, match="cannot open"):
        OpenCVSource(str(junk))
    with pytest.raises(SourceError, match="does not exist"):
        OpenCVSource("/dev/video-nonexistent-97")
    with pytest.raises(SourceError, match="not found"):
        FolderSource(tmp_path / "nofolder")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="no images"):
        FolderSource(tmp_path / "empty")


def test_gstreamer_without_support_says_so():
    if "GStreamer:                   YES" in cv2.getBuildInformation():
        pytest.skip("this OpenCV has GStreamer")
    with pytest.raises(SourceError, match="without GStreamer"):
        OpenCVSource("videotestsrc num-buffers=1 ! videoconvert ! appsink")


def test_folder_sorted_skips_bad_files_and_loops(tmp_path, caplog):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in (2, 0, 1):
        cv2.imwrite(str(folder / f"img_{i}.png"), frame_bgr(i))
    (folder / "img_1b.png").write_bytes(b"not a png")
    (folder / "notes.txt").write_text("ignored")
    src = FolderSource(folder)
    with caplog.at_level(logging.WARNING, logger="edge.sources"):
        got = [src.read() for _ in range(4)]
    assert [index_of(f) for f in got[:3]] == [0, 1, 2] and got[3] is None
    assert got[0][0, 0].tolist() == [255, 0, 0]
    assert src.skipped == 1 and "img_1b.png" in caplog.text
    looping = FolderSource(folder, loop=True)
    assert [index_of(looping.read()) for _ in range(5)] == [0, 1, 2, 0, 1]


def test_open_source_from_config(video, tmp_path):
    src = open_source(SourceConfig(kind="video", path=str(video)))
    assert src.read().shape == (H, W, 3)
    src.close()
    with pytest.raises(SourceError):
        open_source(SourceConfig(kind="folder", path=str(tmp_path / "none")))


def test_capture_thread_plays_a_file_to_the_end_without_dropping(video):
    cap = CaptureThread(lambda: OpenCVSource(str(video)), reconnect=False, end_on_eof=True)
    cap.start()
    seen = []
    while (got := cap.get(timeout=10)) is not None:
        frame, info = got
        seen.append((info.index, index_of(frame)))
    cap.stop()
    assert cap.finished and not cap.camera_lost
    assert seen == [(i, i) for i in range(N)]
    assert cap.frames == N and cap.dropped == 0 and cap.decode_seconds > 0


def test_capture_thread_prepares_each_frame_in_its_own_thread(video):
    cap = CaptureThread(lambda: OpenCVSource(str(video)), reconnect=False, end_on_eof=True,
                        prepare=lambda frame: (index_of(frame), threading.current_thread().name))
    cap.start()
    seen = []
    while (got := cap.get(timeout=10)) is not None:
        seen.append(got[0])
    cap.stop()
    assert seen == [(i, "capture") for i in range(N)]


def test_an_error_in_prepare_reaches_the_consumer_after_the_frames_before_it(video):
    def prepare(frame):
        if index_of(frame) == 3:
            raise ValueError("frame 3 cannot be preprocessed")
        return index_of(frame)

    cap = CaptureThread(lambda: OpenCVSource(str(video)), reconnect=False, end_on_eof=True, prepare=prepare)
    cap.start()
    seen = []
    with pytest.raises(ValueError, match="frame 3 cannot"):
        while (got := cap.get(timeout=10)) is not None:
            seen.append(got[0])
    cap.stop()
    assert seen == [0, 1, 2] and cap.finished


def test_newest_frame_wins_for_a_slow_consumer(video):
    first_taken = threading.Event()

    def prepare(frame: np.ndarray) -> np.ndarray:
        if index_of(frame) > 0:  # hold the reader until the consumer has frame 0, however slow its start
            first_taken.wait(10)
        return frame

    cap = CaptureThread(lambda: OpenCVSource(str(video)), end_on_eof=True, drop=True, prepare=prepare)
    cap.start()
    _, info = cap.get(timeout=10)
    first_taken.set()
    assert info.index == 0
    until("the whole file is read", lambda: cap.finished, seconds=60)  # the consumer is "busy" while the whole file is read
    last, info = cap.get(timeout=10)
    assert info.index == N - 1 and index_of(last) == N - 1
    assert cap.dropped == N - 2
    assert cap.get(timeout=0.05) is None
    cap.stop()


def test_start_raises_when_the_source_cannot_open(tmp_path):
    cap = CaptureThread(lambda: OpenCVSource(str(tmp_path / "missing.avi")))
    with pytest.raises(SourceError):
        cap.start()


def test_reconnect_after_the_camera_vanishes(tmp_path):
    """A file that breaks off mid-stream and then disappears stands in for an unplugged camera.

    The file source is lossless (the thread waits for the consumer), so the test sets the pace.
    """
    cam = tmp_path / "cam.avi"
    good = write_video(tmp_path / "long.avi", n=20)
    data = good.read_bytes()
    cam.write_bytes(data[: len(data) * 7 // 10])  # truncated: the first 9 frames decode, then it fails
    cap = CaptureThread(lambda: OpenCVSource(str(cam)), reconnect=True, backoff=(0.02, 0.1))
    cap.start()
    cam.unlink()  # the open file keeps decoding; reopening fails until the "camera" is back
    seen = []
    while not cap.camera_lost:
        if (got := cap.get(timeout=0.2)) is not None:
            seen.append(index_of(got[0]))
    while (got := cap.get(timeout=0.2)) is not None:  # the frame put just before the loss
        seen.append(index_of(got[0]))
    assert 2 <= len(seen) < 20 and seen[:-1] == list(range(len(seen) - 1))  # the last one may be half-decoded
    assert cap.reconnects == 0 and not cap.finished
    assert cap.camera_lost  # and nothing came while it was gone
    shutil.copy(good, cam)
    frame, info = cap.get(timeout=20)
    assert not cap.camera_lost and cap.reconnects == 1
    assert index_of(frame) == 0 and info.index == len(seen)  # the new stream from its start; counting goes on
    assert [index_of(cap.get(timeout=20)[0]) for _ in range(3)] == [1, 2, 3]
    cap.stop()
