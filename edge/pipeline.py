"""The capture -> infer -> explain -> render loop, in three threads.

The capture thread decodes and preprocesses (centre crop, resize) into a one-slot queue (newest frame
wins on a live camera); the main loop runs inference, the gates and Grad-CAM (edge.answer: the one gated
path from frame to answer); a presenter thread renders, shows,
keeps captures and calls on_frame one frame behind. So frame n+1 is decoded and frame n-1 drawn while
frame n is inferred (OpenCV and the inference runtimes release the GIL), and a frame costs about the
longest of the three stages instead of their sum. The model sees the centre crop of the frame and the
screen shows that same crop, so the heat map lies on exactly the pixels that were classified.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np

from edge import __version__
from edge.answer import Answer, NotKept, Startup, keep, open_answerer
from edge.config import DeviceConfig
from edge.gates import Stability, shown_message
from edge.i18n import ENGLISH, Messages
from edge.imagefile import conversions_text
from edge.interrupt import CtrlC
from edge.overlay import Prediction, footer_lines, render
from edge.pointofcare import Board, CaptureRequest, PointOfCare
from edge.record.outbox import Waiting
from edge.record.results import FrameRecord
from edge.record.store import CaptureStore, StoreError
from edge.service import FrameWatchdog, Notifier, watchdog_interval
from edge.sinks import Sink, SinkError, open_sink
from edge.sources import CaptureThread, FrameInfo, SourceError, open_source
from edge.stats import Window
from edge.web.live import Snapshot

log = logging.getLogger(__name__)
CAMERA_LOST = "CAMERA LOST - reconnecting"
CAPTURE_NOT_SAVED = "CAPTURE NOT SAVED"
CAPTURE_NOT_KEPT = "CAPTURE NOT KEPT"  # the gates refused the frame: its reason follows
VISIT_REQUIRED = "VISIT REQUIRED - scan the patient card"
STAGES = ("preprocess", "infer", "gradcam", "gates", "render", "display")


@dataclass
class Stats:
    """Per-stage timings (ms per frame, rolling windows of the newest frames) and counters; `fps` is over the
    whole run."""

    frames: int = 0
    captures: int = 0
    camera_lost_screens: int = 0
    seconds: float = 0.0
    # one entry per frame: preprocess (timed in the capture thread), infer and gradcam appended by the
    # main loop, render and display by the presenter thread
    stage_ms: dict[str, Window] = field(default_factory=lambda: {s: Window() for s in STAGES})
    # per frame, the main loop idle: waiting for the capture thread (> 0: decoding is not hidden) and for the
    # presenter (> 0: rendering and display are slower than inference)
    wait_capture_ms: Window = field(default_factory=Window)
    wait_presenter_ms: Window = field(default_factory=Window)
    dropped: int = 0
    skipped: int = 0  # undecodable images of a folder source, passed over
    converted: str | None = None  # edge.imagefile.conversions_text of a folder source's images
    decode_ms: float = 0.0
    live_source_ended: bool = False  # a camera or stream ended (not a file or folder): the CLI exits non-zero
    source_name: str = ""

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def median_ms(self) -> dict[str, float]:
        return {s: v.median() for s, v in self.stage_ms.items()}

    def summary(self) -> str:
        ms = self.median_ms()
        stages = ", ".join(f"{s} {v:.1f}" for s, v in ms.items())
        waits = [v.median() for v in (self.wait_capture_ms, self.wait_presenter_ms)]
        return (f"{self.frames} frames in {self.seconds:.1f} s = {self.fps:.1f} FPS "
                f"(median ms: {stages}; decode {self.decode_ms:.1f} ms/frame in the capture thread; "
                f"inference waited {waits[0]:.1f} ms/frame for the camera and {waits[1]:.1f} for the display; "
                f"{self.dropped} frames dropped)" + (f"; {self.skipped} unreadable image(s) skipped" if self.skipped
                                                     else "") + (f"; {self.converted}" if self.converted else ""))


def screen(cfg: DeviceConfig, view: np.ndarray, answer: Answer, cam: np.ndarray | None, fps: float | None,
           shown: str | None, msgs: Messages = ENGLISH, footer: list | None = None, rotation: int | None = None
           ) -> np.ndarray:
    """The screen for one answer: the class and heat map only when the gates passed and `shown` (the HUD message
    replacing the class: RETAKE, NOT RECOGNISED, CHECKING) is None; `footer` rows (visit, page, FPS) under it."""
    pred = Prediction(list(answer.labels), answer.probs) if answer.passed else None
    return render(view, cam, pred, size=cfg.display.size, min_confidence=cfg.thresholds.min_confidence, fps=fps,
                  colormap=cfg.gradcam.colormap, alpha=cfg.gradcam.alpha,
                  rotation=cfg.display.rotation if rotation is None else rotation, gate=shown,
                  warning=answer.model.warning, msgs=msgs, footer=footer)


def clinical_overlay(cfg: DeviceConfig, view: np.ndarray, answer: Answer, visit: str, when: datetime,
                     msgs: Messages = ENGLISH) -> np.ndarray:
    """The overlay a capture keeps: what the screen showed, with the visit, the model and the local time under it
    instead of the frame rate (a reviewer reads it months later, on another screen), upright."""
    rows = [(msgs.hud("Visit {visit}", visit=visit), (255, 255, 255))] if visit else []
    rows.append((msgs.hud("Model {name} {version}", name=answer.model.name, version=answer.model.version),
                 (175, 175, 175)))
    rows.append((when.astimezone().strftime("%Y-%m-%d %H:%M:%S %z"), (175, 175, 175)))
    return screen(cfg, view, answer, answer.cam, None, answer.refusal, msgs, rows, rotation=0)


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


@dataclass
class Shown:
    """One classified frame on its way to the screen."""

    frame: np.ndarray  # as the camera gave it
    view: np.ndarray  # the centre crop the model saw
    answer: Answer
    cam: np.ndarray | None  # the newest Grad-CAM map (with every_n > 1, an earlier frame's)
    fps: float | None
    info: FrameInfo | None = None
    gate: str | None = None  # RETAKE / NOT RECOGNISED / CHECKING, shown instead of the class


class Presenter:
    """The display side of the loop, on its own thread: render, show, keep captures, call on_frame.

    The queue holds one item and `show()` blocks while it is full: back-pressure instead of dropping, so
    every frame is shown, in order (file sinks and tests rely on it), and the main loop runs at most two
    frames ahead of the screen. The sink is opened, used and closed on this thread only, because an
    OpenCV window belongs to the thread that created it (Qt builds deadlock when another thread draws).
    An exception here (sink, on_frame, a bug) is re-raised in the main loop by the next `show()` or by
    `close()`; a capture the store cannot keep is shown on screen and the loop goes on.
    """

    def __init__(self, cfg: DeviceConfig, stats: Stats, store: CaptureStore | None = None,
                 trigger: threading.Event | None = None, on_frame: Callable | None = None,
                 notifier: Notifier | None = None, watchdog: FrameWatchdog | None = None, on_record: Callable | None = None,
                 warning: str | None = None, poc: PointOfCare | None = None):
        self.cfg, self.stats, self.warning = cfg, stats, warning  # warning: UNSIGNED MODEL, on every screen
        self.store, self.trigger, self.on_frame, self.watchdog = store, trigger, on_frame, watchdog
        self.on_record = on_record
        self.poc = poc or PointOfCare(cfg)
        self.notifier = notifier or Notifier()
        # forwarding on: how many captures wait for the PACS, under the prediction (read every few seconds)
        self.waiting = Waiting(cfg.store.path, cfg.forward.url) if cfg.forward.enabled else None
        self._queue: queue.Queue[Shown | str | None] = queue.Queue(maxsize=1)
        self._error: BaseException | None = None
        self._opened = threading.Event()
        self._thread = threading.Thread(target=self._run, name="presenter", daemon=True)

    def start(self) -> None:
        """Start the thread and open the display on it; SinkError or OSError here if it cannot be opened."""
        self._thread.start()
        self._opened.wait()
        self._reraise()

    def show(self, item: Shown | str) -> None:
        """Queue a frame, or a status screen (str); waits while the previous one is still queued."""
        self._reraise()
        self._queue.put(item)

    def close(self) -> None:
        """Show what is queued, close the display, end the thread; re-raise its exception if not yet raised."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        self._reraise()

    def _reraise(self) -> None:
        error, self._error = self._error, None
        if error is not None:
            raise error

    def _run(self) -> None:
        try:
            sink = open_sink(self.cfg.display)
        except BaseException as e:  # noqa: BLE001 - handed to the main thread by start()
            self._error = e
            return
        finally:
            self._opened.set()
        failed = False
        try:
            while (item := self._queue.get()) is not None:
                if failed:  # keep draining, so the main loop never blocks on a full queue
                    continue
                try:
                    if isinstance(item, str):
                        self._status(sink, item)
                    else:
                        self._frame(sink, item)
                except BaseException as e:  # noqa: BLE001 - re-raised in the main thread
                    self._error, failed = e, True
        finally:
            sink.close()

    def _status(self, sink: Sink, status: str, view: np.ndarray | None = None) -> None:
        """A full-screen warning (camera lost, capture not saved) over a blank screen or the given view."""
        d = self.cfg.display
        if view is None:
            view = np.zeros((d.size[1], d.size[0], 3), np.uint8)
        sink.show(render(view, None, None, size=d.size, min_confidence=1.0, fps=None, status=status,
                         rotation=d.rotation, warning=self.warning, msgs=self.poc.msgs))

    def _frame(self, sink: Sink, item: Shown) -> None:
        cfg, stats, poc = self.cfg, self.stats, self.poc
        t0 = time.perf_counter()
        visit = poc.visits.current
        footer = footer_lines(item.fps, visit.id if visit else None, tuple(poc.pairing()), poc.msgs,
                              self.waiting() if self.waiting else None)
        overlay = screen(cfg, item.view, item.answer, item.cam, item.fps, item.gate, poc.msgs, footer)
        t1 = time.perf_counter()
        sink.show(overlay)
        t2 = time.perf_counter()
        stats.stage_ms["render"].append((t1 - t0) * 1e3)
        stats.stage_ms["display"].append((t2 - t1) * 1e3)
        stats.frames += 1
        if self.watchdog:
            self.watchdog.frame()
        self._share(item, visit.id if visit else None)
        key = sink.poll_key()
        pressed = (cfg.trigger.key and key == cfg.trigger.key) or (self.trigger is not None and self.trigger.is_set())
        request = poc.next_request()
        if (pressed or request) and self.store is not None:
            self._keep(sink, item, request)
        elif request:
            request.answer(error="this board keeps no captures")
        if pressed and self.trigger is not None:
            self.trigger.clear()  # once the press is handled: kept, or the screen says why not
        if self.on_frame:
            self.on_frame(item.frame, item.answer, overlay)
        if self.on_record and item.info is not None:
            info = item.info
            self.on_record(FrameRecord.of(info.index, info.name, item.answer, cfg.thresholds.min_confidence,
                                          item.cam if item.answer.passed else None, info.label))

    def _share(self, item: Shown, visit: str | None) -> None:
        """Hand the frame to the card reader and the page's viewers (each only swaps a reference here)."""
        poc = self.poc
        if poc.reader is not None:
            poc.reader.offer(item.frame)
        if poc.live is not None:
            answer = item.answer
            gate = answer.verdict.reason or ("checking" if item.gate else "pass")
            poc.live.publish(Snapshot(poc.live.next_seq(), utc_now(), item.view, item.cam, list(answer.labels),
                                      [float(p) for p in answer.probs], gate, item.gate, answer.verdict.record(),
                                      item.fps, visit))

    def _keep(self, sink: Sink, item: Shown, request: CaptureRequest | None) -> None:
        """Keep this frame (key, button or the page's request) with the visit, flagged if it repeats the last one;
        only a frame the gates passed (edge.answer.keep), only with a visit where the config requires one."""
        poc, answer = self.poc, item.answer
        current = poc.visits.current
        visit = request.visit if request and request.visit else (current.id if current else "")
        if self.cfg.visits.required and not visit:
            return self._not_kept(sink, item, request, VISIT_REQUIRED)
        when = datetime.now(timezone.utc)
        try:
            cap = keep(self.store, answer, item.view, clinical_overlay(self.cfg, item.view, answer, visit, when,
                                                                       poc.msgs),
                       when=when, visit_id=visit, duplicate_of=poc.duplicates.of(item.view, visit) or "",
                       software=__version__)
        except NotKept as e:  # the gates refused this frame: nothing is kept without a class the screen showed
            self.notifier.status(f"capture {e}")
            return self._not_kept(sink, item, request, f"{CAPTURE_NOT_KEPT} - {answer.refusal}")
        except StoreError as e:  # e.g. disk full: say so and keep screening; the store is intact
            log.error("capture NOT saved: %s", e)
            self.notifier.status(f"capture NOT saved: {e}")
            return self._not_kept(sink, item, request, CAPTURE_NOT_SAVED)
        poc.duplicates.kept(cap.uuid, item.view, visit)
        if request:
            request.answer(cap)
        self.stats.captures += 1
        self.notifier.status(f"capture saved ({self.stats.captures} this session)")

    def _not_kept(self, sink: Sink, item: Shown, request: CaptureRequest | None, why: str) -> None:
        self._status(sink, why, item.view)
        if request:
            request.answer(error=why)


def run(cfg: DeviceConfig, frames: int | None = None, store=None, on_frame=None, notifier: Notifier | None = None,
        trigger: threading.Event | None = None, on_record: Callable[[FrameRecord], None] | None = None,
        on_ready: Callable[[str], None] | None = None, allow_downgrade: bool = False,
        poc: PointOfCare | None = None, stop: threading.Event | None = None) -> Stats:
    """Run until the source ends, `frames` frames are shown, Ctrl-C (SIGINT) or `stop` is set.

    Every frame goes through edge.answer's gated path. `store` (a CaptureStore) keeps a capture when the
    configured key is pressed or `trigger` is set (only of a frame the gates passed); `on_frame(frame, answer,
    overlay)` is called after each frame is shown, on the presenter thread, in order (tests, tools), and
    `on_record(FrameRecord)` likewise (`skinedge run --results`); `on_ready(line)` once the loop starts (the
    ready line systemd gets too); `allow_downgrade`: run a signed bundle older than one accepted before
    (edge/trust/rollback.py); `poc`: the visit, the card reader, the page's live feed and capture requests
    (edge.pointofcare; the page's server is the caller's). An exception in the presenter thread is raised here.
    """
    try:  # the service's environment, before minutes of start-up
        interval = watchdog_interval()
    except ValueError as e:
        raise Startup(f"environment: {e}") from e
    answerer, ready = open_answerer(cfg, allow_downgrade)
    folder = cfg.source.kind == "folder"  # unrelated images: no need to wait for a stable class
    stability = Stability(1 if folder else cfg.gates.stable_frames)
    notifier = notifier or Notifier()
    watchdog = FrameWatchdog(notifier, interval, cfg.watchdog.stall_seconds) if interval and cfg.watchdog.enabled else None
    stats = Stats()
    poc = poc or PointOfCare(cfg)
    poc.board = Board(answerer.model, answerer.kind, ready)
    presenter = Presenter(cfg, stats, store, trigger, on_frame, notifier, watchdog, on_record, answerer.model.warning,
                          poc)
    finite = cfg.source.kind in ("video", "folder") and not cfg.source.loop
    cap = CaptureThread(lambda: open_source(cfg.source), reconnect=not finite, end_on_eof=finite,
                        prepare=answerer.prepare)
    try:
        presenter.start()  # opens the display
        cap.start()  # opens the camera here: a missing one fails start-up
    except (SourceError, SinkError, OSError) as e:
        presenter.close()
        answerer.close()
        raise Startup(f"{cfg.path}: {e}") from e
    poc.start_reader()
    every = cfg.gradcam.every_n
    cam = None
    inferred = 0
    recent = deque(maxlen=30)
    notifier.ready(ready)
    if on_ready:
        on_ready(ready)
    t_start = time.perf_counter()
    ctrl_c = CtrlC()
    try:
        while (frames is None or inferred < frames) and not ctrl_c.pressed and not (stop and stop.is_set()):
            t0 = time.perf_counter()
            got = cap.get(timeout=0.5)
            if got is None:
                if cap.finished:
                    break
                if cap.camera_lost:
                    presenter.show(CAMERA_LOST)
                    stats.camera_lost_screens += 1
                    notifier.status(CAMERA_LOST)
                continue
            prep, info = got
            t1 = time.perf_counter()
            answer = answerer.answer(prep, want_cam=every > 0 and inferred % every == 0)
            if answer.cam is not None:
                cam = answer.cam
            recent.append(time.perf_counter())
            fps = (len(recent) - 1) / (recent[-1] - recent[0]) if len(recent) > 1 and recent[-1] > recent[0] else None
            for stage, ms in (("preprocess", prep.ms), ("infer", answer.infer_ms), ("gradcam", answer.cam_ms),
                              ("gates", answer.verdict.ms)):
                stats.stage_ms[stage].append(ms)
            gate = shown_message(answer.verdict, stability.update(answer.target, answer.passed))
            t2 = time.perf_counter()
            presenter.show(Shown(prep.frame, prep.view, answer, cam if every > 0 else None, fps, info, gate))
            stats.wait_capture_ms.append((t1 - t0) * 1e3)
            stats.wait_presenter_ms.append((time.perf_counter() - t2) * 1e3)
            inferred += 1
    finally:
        try:
            presenter.close()  # every queued frame is shown before the run ends
        finally:
            ctrl_c.restore()
            stats.seconds = time.perf_counter() - t_start
            stats.dropped, stats.decode_ms = cap.dropped, 1e3 * cap.decode_seconds / max(1, cap.frames)
            notifier.stopping()
            cap.stop()
            stats.skipped = cap.skipped  # counted as the capture thread closes its source
            stats.converted = conversions_text(cap.converted)
            stats.live_source_ended, stats.source_name = cap.live_ended, cap.source_name
            poc.close()
            poc.cancel_requests("the camera loop has stopped")
            answerer.close()
    return stats
