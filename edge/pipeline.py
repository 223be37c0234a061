"""The capture -> infer -> explain -> render loop.

Capture runs in its own thread into a one-slot queue (newest frame wins), so camera I/O overlaps
inference; inference, Grad-CAM and rendering run here. The model sees the centre crop of the frame and
the screen shows that same crop, so the heat map lies on exactly the pixels that were classified.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from edge.bundle import BundleError, load_bundle, selftest
from edge.classify import Classifier
from edge.config import DeviceConfig
from edge.overlay import Prediction, render
from edge.preprocess import centre_crop, to_model_input
from edge.service import FrameWatchdog, Notifier, watchdog_interval
from edge.sinks import SinkError, open_sink
from edge.sources import CaptureThread, SourceError, open_source
from edge.store import StoreError

log = logging.getLogger(__name__)
CAMERA_LOST = "CAMERA LOST - reconnecting"
STAGES = ("preprocess", "infer", "gradcam", "render", "display")


@dataclass
class Stats:
    """Per-stage timings (ms per frame) and counters; `fps` is over the whole run."""

    frames: int = 0
    captures: int = 0
    camera_lost_screens: int = 0
    seconds: float = 0.0
    stage_ms: dict[str, list[float]] = field(default_factory=lambda: {s: [] for s in STAGES})
    dropped: int = 0
    decode_ms: float = 0.0

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def median_ms(self) -> dict[str, float]:
        return {s: float(np.median(v)) if v else 0.0 for s, v in self.stage_ms.items()}

    def summary(self) -> str:
        ms = self.median_ms()
        stages = ", ".join(f"{s} {v:.1f}" for s, v in ms.items())
        return (f"{self.frames} frames in {self.seconds:.1f} s = {self.fps:.1f} FPS "
                f"(median ms: {stages}; decode {self.decode_ms:.1f} ms/frame in the capture thread; "
                f"{self.dropped} frames dropped)")


class Startup(RuntimeError):
    """Start-up failed (bundle, self-test, camera, display): exit non-zero with this one line."""


def prepare(cfg: DeviceConfig) -> tuple[Classifier, str]:
    """Load and verify the bundle, open the backend, run the golden self-test; refuse on any failure."""
    if not cfg.bundle:
        raise Startup(f"{cfg.path}: no bundle given (set 'bundle' or pass --bundle)")
    try:
        bundle = load_bundle(cfg.bundle)
        clf = Classifier(bundle, cfg.backend, threads=cfg.threads, parallel_members=cfg.parallel_members)
        test = selftest(bundle, clf.artefact, clf.probs)
    except (BundleError, ValueError, RuntimeError, OSError) as e:
        raise Startup(f"bundle refused: {e}") from e
    if not test.ok:
        raise Startup(f"bundle refused: golden self-test failed on {clf.kind}: {test.line()}")
    return clf, test.line()


def run(cfg: DeviceConfig, frames: int | None = None, store=None, on_frame=None, notifier: Notifier | None = None,
        trigger: threading.Event | None = None) -> Stats:
    """Run until the source ends, `frames` frames are shown, or KeyboardInterrupt.

    `store` (a CaptureStore) keeps a capture when the configured key is pressed or `trigger` is set;
    `on_frame(frame, result, overlay)` is called after each frame (tests, tools).
    """
    clf, selftest_line = prepare(cfg)
    bundle = clf.bundle
    notifier = notifier or Notifier()
    finite = cfg.source.kind in ("video", "folder") and not cfg.source.loop
    cap = CaptureThread(lambda: open_source(cfg.source), reconnect=not finite, end_on_eof=finite)
    try:
        sink = open_sink(cfg.display)
        cap.start()  # opens the camera here: a missing one fails start-up
    except (SourceError, SinkError, OSError) as e:
        clf.close()
        raise Startup(f"{cfg.path}: {e}") from e
    interval = watchdog_interval()
    watchdog = FrameWatchdog(notifier, interval, cfg.watchdog.stall_seconds) if interval and cfg.watchdog.enabled else None
    stats = Stats()
    h, w = bundle.input_size
    every = cfg.gradcam.every_n
    cam = None
    recent = deque(maxlen=30)
    notifier.ready(f"{bundle.name} on {clf.kind}; {selftest_line}")
    t_start = time.perf_counter()
    try:
        while frames is None or stats.frames < frames:
            got = cap.get(timeout=0.5)
            if got is None:
                if cap.finished:
                    break
                if cap.camera_lost:
                    blank = np.zeros((cfg.display.size[1], cfg.display.size[0], 3), np.uint8)
                    sink.show(render(blank, None, None, size=cfg.display.size, min_confidence=1.0, fps=None,
                                     status=CAMERA_LOST, rotation=cfg.display.rotation))
                    stats.camera_lost_screens += 1
                    notifier.status(CAMERA_LOST)
                continue
            frame, _info = got
            t0 = time.perf_counter()
            view = centre_crop(frame, w / h)
            img = to_model_input(view, (h, w))
            t1 = time.perf_counter()
            want_cam = every > 0 and stats.frames % every == 0
            res = clf(img, want_cam=want_cam)
            if res.cam is not None:
                cam = res.cam
            t2 = time.perf_counter()
            recent.append(t2)
            fps = (len(recent) - 1) / (recent[-1] - recent[0]) if len(recent) > 1 and recent[-1] > recent[0] else None
            overlay = render(view, cam if every > 0 else None, Prediction(bundle.labels, res.probs),
                             size=cfg.display.size, min_confidence=cfg.thresholds.min_confidence, fps=fps,
                             colormap=cfg.gradcam.colormap, alpha=cfg.gradcam.alpha, rotation=cfg.display.rotation)
            t3 = time.perf_counter()
            sink.show(overlay)
            t4 = time.perf_counter()
            for stage, dt in zip(STAGES, (t1 - t0, res.infer_ms / 1e3, res.cam_ms / 1e3, t3 - t2, t4 - t3)):
                stats.stage_ms[stage].append(dt * 1e3)
            stats.frames += 1
            if watchdog:
                watchdog.frame()
            key = sink.poll_key()
            pressed = (cfg.trigger.key and key == cfg.trigger.key) or (trigger is not None and trigger.is_set())
            if pressed and store is not None:
                if trigger is not None:
                    trigger.clear()
                try:
                    store.add(view, overlay, res.probs, bundle.labels, bundle.digest)
                    stats.captures += 1
                    notifier.status(f"capture saved ({stats.captures} this session)")
                except StoreError as e:  # e.g. disk full: say so and keep screening; the store is intact
                    log.error("capture NOT saved: %s", e)
                    notifier.status(f"capture NOT saved: {e}")
                    sink.show(render(view, None, None, size=cfg.display.size, min_confidence=1.0, fps=None,
                                     status="CAPTURE NOT SAVED", rotation=cfg.display.rotation))
            if on_frame:
                on_frame(frame, res, overlay)
    except KeyboardInterrupt:
        pass
    finally:
        stats.seconds = time.perf_counter() - t_start
        stats.dropped, stats.decode_ms = cap.dropped, 1e3 * cap.decode_seconds / max(1, cap.frames)
        notifier.stopping()
        cap.stop()
        sink.close()
        clf.close()
    return stats
