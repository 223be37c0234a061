"""Frames in: Raspberry Pi cameras (picamera2), OpenCV (V4L2, GStreamer, video files), image folders.

Every source returns RGB uint8 (H, W, 3) frames, or None when no frame comes (end of a file, a camera
that stopped answering). `CaptureThread` runs a source in its own thread so decoding overlaps
inference, keeps only the newest frame of a live camera (a late frame is worth less than a fresh one),
and reopens a lost camera with exponential back-off while the screen says so.
"""

from __future__ import annotations

import logging
import re
import stat
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from edge.config import MAX_CAMERA_INDEX, SourceConfig
from edge.imagefile import DEFAULT_LIMITS, ImageFileError, ImageLimits, count, decode, opencv_name

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


class SourceError(RuntimeError):
    """A source cannot be opened; the message says which and why."""


class Source(Protocol):
    name: str
    live: bool  # a camera (frames go stale) rather than a file (every frame can wait its turn)
    skipped: int  # files that could not be decoded and were passed over (image folders)

    def read(self) -> np.ndarray | None: ...
    def close(self) -> None: ...


class Picamera2Source:
    """Raspberry Pi camera through picamera2/libcamera (not testable off a Pi: kept this thin)."""

    live, skipped = True, 0

    def __init__(self, resolution: tuple[int, int], fps: int):
        try:
            from picamera2 import Picamera2
        except ImportError as e:
            raise SourceError("picamera2 is not installed: on Raspberry Pi OS run `sudo apt install "
                              "python3-picamera2` and create the venv with --system-site-packages") from e
        try:
            self._cam = Picamera2()
        except (IndexError, RuntimeError) as e:  # IndexError: libcamera lists no camera
            raise SourceError(f"no Raspberry Pi camera found by libcamera ({e}): check the ribbon cable") \
                from e
        self.name = f"picamera2 {resolution[0]}x{resolution[1]}"
        self._cam.configure(self._cam.create_video_configuration(
            main={"size": tuple(resolution), "format": "RGB888"}, controls={"FrameRate": fps}))
        self._cam.start()

    def read(self) -> np.ndarray | None:
        # picamera2's "RGB888" is libcamera's name for [B, G, R] bytes in memory: reverse to RGB.
        return np.ascontiguousarray(self._cam.capture_array("main")[..., ::-1])

    def close(self) -> None:
        self._cam.close()


def _check_video_file(path: Path) -> None:
    """SourceError naming what `path` is when it is not a video file OpenCV could seek in."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise SourceError(f"video file {path} not found") from None
    except OSError as e:
        raise SourceError(f"video file {path}: {e.strerror or e}") from None
    if stat.S_ISREG(mode):
        return
    kind = ("a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else
            "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a directory" if stat.S_ISDIR(mode) else
            "not a regular file")
    raise SourceError(f"{path} is {kind}, not a video file: give a video file, an image folder, a camera "
                      "(/dev/videoN or an index) or a stream URL")


class OpenCVSource:
    """cv2.VideoCapture on a camera index, /dev/videoN, a GStreamer pipeline ('!') or a video file/URL."""

    skipped = 0

    def __init__(self, target: int | str, resolution: tuple[int, int] | None = None, fps: int | None = None,
                 loop: bool = False):
        self.loop = loop
        self.gstreamer = isinstance(target, str) and "!" in target
        try:
            self._cap = self._open(target)
        except (TypeError, OverflowError, ValueError, cv2.error) as e:  # an index or a name OpenCV cannot take
            raise SourceError(f"cannot open {str(target)[:80]}: {str(e).splitlines()[0][:120]}") from None
        if not self._cap.isOpened():
            raise SourceError(f"cannot open {self.name}: {self._why()}")
        if self.live:
            self._cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # drivers that honour it hand over fresh frames
            if resolution and not self.gstreamer:  # a pipeline sets its own caps
                self._cap.set(cv2.CAP_PROP_FRAME_WIDTH, resolution[0])
                self._cap.set(cv2.CAP_PROP_FRAME_HEIGHT, resolution[1])
            if fps:
                self._cap.set(cv2.CAP_PROP_FPS, fps)

    def _open(self, target: int | str) -> cv2.VideoCapture:
        """Name the source, decide whether it is live, and open it."""
        if isinstance(target, int) or (isinstance(target, str) and target.isdigit()):
            if int(target) > MAX_CAMERA_INDEX:
                raise SourceError(f"camera index {str(target)[:40]} is out of range (0..{MAX_CAMERA_INDEX})")
            self.name, self.live = f"camera {target}", True
            return cv2.VideoCapture(int(target))
        if self.gstreamer:
            self.name, self.live = "GStreamer pipeline", True
            return cv2.VideoCapture(target, cv2.CAP_GSTREAMER)
        if target.startswith("/dev/"):
            if not Path(target).exists():
                raise SourceError(f"camera {target} does not exist "
                                  "(unplugged? see `v4l2-ctl --list-devices`)")
            self.name, self.live = target, True
            return cv2.VideoCapture(opencv_name(target), cv2.CAP_V4L2)
        if "://" not in target:
            _check_video_file(Path(target))
        self.name, self.live = target, "://" in target  # a stream (rtsp://, http://) is live
        return cv2.VideoCapture(opencv_name(target))

    def _why(self) -> str:
        if self.gstreamer and not re.search(r"GStreamer:\s*YES", cv2.getBuildInformation()):
            return ("this OpenCV was built without GStreamer (pip wheels are); use the distribution's "
                    "OpenCV, e.g. JetPack's python3-opencv")
        if self.live:
            return "no such camera, it is busy, or the user is not in the 'video' group"
        return "OpenCV cannot decode it (unsupported or damaged file)"

    def read(self) -> np.ndarray | None:
        ok, bgr = self._cap.read()
        if not ok and self.loop and not self.live:
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, bgr = self._cap.read()
        if not ok or bgr is None:
            return None
        return cv2.cvtColor(bgr, cv2.COLOR_GRAY2RGB if bgr.ndim == 2 else cv2.COLOR_BGR2RGB)

    def close(self) -> None:
        self._cap.release()


class FolderSource:
    """The images of a directory in sorted order, then those of its class sub-folders (an ImageFolder tree:
    the sub-folder's name is the image's true label); unreadable, truncated or undecodable files are skipped
    with a warning and counted in `skipped`, never classified. Opening decodes up to the first good image, so a
    folder without one is a SourceError at start-up (looping or not), not an empty run. `current` is (path
    relative to the folder, class or None) of the image decoded last."""

    live = False

    def __init__(self, path: str | Path, loop: bool = False, limits: ImageLimits = DEFAULT_LIMITS):
        folder = Path(path)
        self.limits = limits
        if not folder.is_dir():
            raise SourceError(f"image folder {folder} not found")
        entries = sorted(folder.iterdir())
        images = [(p, None) for p in entries if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
        for sub in (d for d in entries if d.is_dir() and not d.name.startswith(".")):
            images += [(p, sub.name) for p in sorted(sub.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]
        if not images:
            raise SourceError(f"image folder {folder} has no images ({', '.join(sorted(IMAGE_SUFFIXES))}), in "
                              "itself or in class sub-folders")
        self.files = [p for p, _ in images]
        self.classes = [c for _, c in images]
        self.name, self.loop, self.root = str(folder), loop, folder
        self.skipped = 0
        self.converted: Counter = Counter()  # edge.imagefile.count: transparency, 16-bit, grayscale
        self.current: tuple[str, str | None] | None = None
        self._next = 0
        self._first: np.ndarray | None = self._decode_next()
        if self._first is None:
            raise SourceError(f"image folder {folder}: none of its {len(self.files)} image file(s) can be decoded "
                              "(truncated, corrupt or empty; see the warnings above)")

    def read(self) -> np.ndarray | None:
        if self._first is not None:
            frame, self._first = self._first, None
            return frame
        return self._decode_next()

    def _decode_next(self) -> np.ndarray | None:
        for _ in range(len(self.files)):  # at most one pass, so a folder of bad files cannot spin forever
            if self._next >= len(self.files):
                if not self.loop:
                    return None
                self._next = 0
            path = self.files[self._next]
            self._next += 1
            try:
                got = decode(path, self.limits)
            except ImageFileError as e:
                self.skipped += 1
                log.warning("skipping image %s", e)
                continue
            count(self.converted, got)
            self.current = (path.relative_to(self.root).as_posix(), self.classes[self._next - 1])
            return got.rgb
        return None

    def close(self) -> None:
        pass


def open_source(cfg: SourceConfig) -> Source:
    """The source a config describes; SourceError when it cannot be opened."""
    if cfg.kind == "picamera2":
        return Picamera2Source(cfg.resolution, cfg.fps)
    if cfg.kind == "opencv":
        target = cfg.pipeline or cfg.device
        if target is None:
            raise SourceError("source.kind 'opencv' needs source.device or source.pipeline")
        return OpenCVSource(target, cfg.resolution, cfg.fps)
    if cfg.kind == "video":
        return OpenCVSource(str(cfg.path), loop=cfg.loop)
    if cfg.kind == "folder":
        return FolderSource(str(cfg.path), loop=cfg.loop, limits=ImageLimits(
            int(cfg.max_image_megapixels * 1e6), int(cfg.max_image_megabytes * 2**20)))
    raise SourceError(f"unknown source kind {cfg.kind!r}: expected picamera2, opencv, video or folder")


@dataclass
class FrameInfo:
    index: int  # frames read from the source so far (gaps = frames dropped)
    t_capture: float  # time.monotonic() when read() returned
    name: str | None = None  # image folders: the file, relative to the folder
    label: str | None = None  # image folders: the class sub-folder it is in


class CaptureThread:
    """Runs a source in a thread into a one-slot queue.

    Live sources: the newest frame wins (an unread frame is replaced and counted in `dropped`). Files and
    folders: the thread waits until the slot is free, so every frame is shown once and no decoding is
    wasted (`drop` overrides this). When read() returns None or raises: with `end_on_eof` the thread
    finishes; with `reconnect` it closes the source, sets `camera_lost` and calls `open_fn` again after
    back-off delays doubling from backoff[0] to backoff[1] seconds until a source opens; otherwise it
    finishes.

    `prepare(frame)`, if given, runs on each frame in this thread before it is queued, so the consumer's
    preprocessing overlaps its work as decoding does; get() then returns prepare's result in place of the
    frame, and an exception from prepare ends the thread and is raised by get().
    """

    def __init__(self, open_fn: Callable[[], Source], reconnect: bool = True,
                 backoff: tuple[float, float] = (0.5, 8.0), end_on_eof: bool = False,
                 drop: bool | None = None, prepare: Callable[[np.ndarray], Any] | None = None):
        self.open_fn, self.reconnect, self.backoff = open_fn, reconnect, backoff
        self.end_on_eof, self.drop, self.prepare = end_on_eof, drop, prepare
        self.camera_lost = False
        self.finished = False
        self.live_ended = False  # a live source (camera, stream) ended and was not reopened: a failure for a service
        self.source_name = ""
        self.dropped = 0
        self.frames = 0
        self.skipped = 0  # undecodable files the sources passed over, counted as each source is closed
        self.converted: Counter = Counter()  # image files converted on reading (image folders), likewise
        self.reconnects = 0
        self.decode_seconds = 0.0
        self._slot: tuple[Any, FrameInfo] | None = None
        self._error: Exception | None = None
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._source: Source | None = None

    def start(self) -> None:
        """Opens the source here, so a missing camera at start-up raises SourceError to the caller."""
        self._source = self.open_fn()
        self._thread = threading.Thread(target=self._run, name="capture", daemon=True)
        self._thread.start()

    def get(self, timeout: float) -> tuple[Any, FrameInfo] | None:
        """The newest unread frame (or prepare's result), waiting up to `timeout` s; None if none came (see
        `finished`, `camera_lost`)."""
        with self._cond:
            self._cond.wait_for(lambda: self._slot is not None or self.finished, timeout)
            got, self._slot = self._slot, None
            self._cond.notify_all()
        if got is None and self._error is not None:
            raise self._error
        return got

    def stop(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5.0)

    def _run(self) -> None:
        src = self._source
        delay = self.backoff[0]
        try:
            while not self._stop.is_set():
                if src is None:
                    src, delay = self._reopen(delay)
                    continue
                t0 = time.perf_counter()
                try:
                    frame = src.read()
                except Exception as e:  # noqa: BLE001 - a camera driver can raise anything when unplugged
                    log.warning("%s: read failed: %s", src.name, e)
                    frame = None
                self.decode_seconds += time.perf_counter() - t0
                if frame is None:
                    live, self.source_name = src.live, src.name
                    self._close(src)
                    src = None
                    if self.end_on_eof or not self.reconnect:
                        self.live_ended = live
                        break
                    log.warning("camera lost; reconnecting")
                    self.camera_lost = True
                    continue
                info = FrameInfo(self.frames, time.monotonic(), *(getattr(src, "current", None) or (None, None)))
                drop = src.live if self.drop is None else self.drop
                self._put(frame if self.prepare is None else self.prepare(frame), info, drop)
        except Exception as e:  # noqa: BLE001 - from prepare(): the consumer gets it from get()
            self._error = e
        finally:
            if src is not None:
                self._close(src)
            with self._cond:
                self.finished = True
                self._cond.notify_all()

    def _close(self, src: Source) -> None:
        self.skipped += src.skipped
        self.converted.update(getattr(src, "converted", {}))
        src.close()

    def _reopen(self, delay: float) -> tuple[Source | None, float]:
        """One reopen attempt after `delay` s; returns the source (or None) and the next delay."""
        if self._stop.wait(delay):
            return None, delay
        try:
            src = self.open_fn()
        except Exception as e:  # noqa: BLE001 - whatever the driver raises, try again later
            log.info("reopen failed: %s", e)
            return None, min(2 * delay, self.backoff[1])
        self.reconnects += 1
        self.camera_lost = False
        log.warning("camera back: %s", src.name)
        return src, self.backoff[0]

    def _put(self, frame: Any, info: FrameInfo, drop: bool) -> None:
        with self._cond:
            if not drop:
                self._cond.wait_for(lambda: self._slot is None or self._stop.is_set())
            if self._slot is not None:
                self.dropped += 1
            self._slot = (frame, info)
            self.frames += 1
            self._cond.notify_all()
