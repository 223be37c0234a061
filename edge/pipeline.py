"""The capture -> infer -> explain -> render loop, in three threads.

The capture thread decodes and preprocesses (centre crop, resize) into a one-slot queue (newest frame
wins on a live camera); the main loop runs inference and Grad-CAM; a presenter thread renders, shows,
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

from edge.classify import Classifier, Result
from edge.config import DeviceConfig
from edge.gates import GateError, Stability, for_bundle, shown_message
from edge.interrupt import CtrlC
from edge.overlay import Prediction, footer_lines, render
from edge.pointofcare import Board, CaptureRequest, PointOfCare
from edge.preprocess import centre_crop, to_model_input
from edge.record.capture import ModelInfo
from edge.record.results import FrameRecord
from edge.record.store import CaptureStore, StoreError
from edge.service import FrameWatchdog, Notifier, watchdog_interval
from edge.sinks import Sink, SinkError, open_sink
from edge.sources import CaptureThread, FrameInfo, SourceError, open_source
from edge.stats import Window
from edge.trust.bundle import BundleError, load_bundle
from edge.trust.selftest import selftest
from edge.web.live import Snapshot

log = logging.getLogger(__name__)
CAMERA_LOST = "CAMERA LOST - reconnecting"
CAPTURE_NOT_SAVED = "CAPTURE NOT SAVED"
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
    decode_ms: float = 0.0

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
                                                     else ""))


class Startup(RuntimeError):
    """Start-up failed (bundle, self-test, camera, display): exit non-zero with this one line."""


def model_info(clf: Classifier) -> ModelInfo:
    """How captures name the model that produced them."""
    from edge import __version__
    from edge.trust.signing import key_id

    bundle = clf.bundle
    return ModelInfo(bundle.name, str(bundle.manifest.get("version", "")),
                     key_id(bundle.signer) if bundle.signer else "UNSIGNED", __version__)


def prepare(cfg: DeviceConfig) -> tuple[Classifier, str]:
    """Load and verify the bundle, open the backend, run the golden self-test; refuse on any failure."""
    if not cfg.bundle:
        raise Startup(f"{cfg.path}: no bundle given (set 'bundle' or pass --bundle)")
    try:
        bundle = load_bundle(cfg.bundle, trust=cfg.trust)
        clf = Classifier(bundle, cfg.backend, threads=cfg.threads, precision=cfg.precision,
                         parallel_members=cfg.parallel_members)
        test = selftest(bundle, clf)
    except (BundleError, ValueError, RuntimeError, OSError) as e:
        raise Startup(f"bundle refused: {e}") from e
    if not test.ok:
        raise Startup(f"bundle refused: golden self-test failed on {clf.kind}: {test.line()}")
    return clf, test.line()


@dataclass
class Prepared:
    """A camera frame with the crop the screen shows and the model input made from it (capture thread)."""

    frame: np.ndarray  # as the camera gave it
    view: np.ndarray  # the centre crop the model sees
    image: np.ndarray  # the model input
    ms: float  # time the crop and resize took


def preparer(input_size: tuple[int, int]) -> Callable[[np.ndarray], Prepared]:
    """The preprocessing the capture thread runs on each frame for a model of input_size (h, w)."""
    h, w = input_size

    def prepare(frame: np.ndarray) -> Prepared:
        t = time.perf_counter()
        view = centre_crop(frame, w / h)
        image = to_model_input(view, (h, w))
        return Prepared(frame, view, image, (time.perf_counter() - t) * 1e3)

    return prepare


@dataclass
class Shown:
    """One classified frame on its way to the screen."""

    frame: np.ndarray  # as the camera gave it
    view: np.ndarray  # the centre crop the model saw
    result: Result
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

    def __init__(self, cfg: DeviceConfig, labels: list[str], digest: str, stats: Stats, store: CaptureStore | None = None,
                 trigger: threading.Event | None = None, on_frame: Callable | None = None,
                 notifier: Notifier | None = None, watchdog: FrameWatchdog | None = None, on_record: Callable | None = None,
                 poc: PointOfCare | None = None, model: ModelInfo | None = None):
        self.cfg, self.labels, self.digest, self.stats = cfg, labels, digest, stats
        self.store, self.trigger, self.on_frame, self.watchdog = store, trigger, on_frame, watchdog
        self.on_record, self.model = on_record, model
        self.poc = poc or PointOfCare(cfg)
        self.notifier = notifier or Notifier()
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
                         rotation=d.rotation, msgs=self.poc.msgs))

    def _frame(self, sink: Sink, item: Shown) -> None:
        cfg, stats, poc = self.cfg, self.stats, self.poc
        t0 = time.perf_counter()
        visit = poc.visits.current
        footer = footer_lines(item.fps, visit.id if visit else None, tuple(poc.pairing()), poc.msgs)
        overlay = render(item.view, item.cam, Prediction(self.labels, item.result.probs), size=cfg.display.size,
                         min_confidence=cfg.thresholds.min_confidence, fps=item.fps, colormap=cfg.gradcam.colormap,
                         alpha=cfg.gradcam.alpha, rotation=cfg.display.rotation, gate=item.gate, msgs=poc.msgs,
                         footer=footer)
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
        if pressed and self.trigger is not None:
            self.trigger.clear()
        request = poc.next_request()
        if (pressed or request) and self.store is not None:
            self._keep(sink, item, request)
        elif request:
            request.answer(error="this board keeps no captures")
        if self.on_frame:
            self.on_frame(item.frame, item.result, overlay)
        if self.on_record and item.info is not None:
            info = item.info
            verdict = item.result.verdict
            self.on_record(FrameRecord.of(info.index, info.name, item.result.probs, self.labels,
                                          cfg.thresholds.min_confidence, item.cam, info.label,
                                          verdict.record() if verdict else None))

    def _share(self, item: Shown, visit: str | None) -> None:
        """Hand the frame to the card reader and the page's viewers (each only swaps a reference here)."""
        poc = self.poc
        if poc.reader is not None:
            poc.reader.offer(item.frame)
        if poc.live is not None:
            verdict = item.result.verdict
            gate = verdict.reason if verdict and verdict.reason else ("checking" if item.gate else "pass")
            poc.live.publish(Snapshot(poc.live.next_seq(), utc_now(), item.view, item.cam, self.labels,
                                      [float(p) for p in item.result.probs], gate, item.gate,
                                      verdict.record() if verdict else {}, item.fps, visit))

    def _keep(self, sink: Sink, item: Shown, request: CaptureRequest | None) -> None:
        """Keep this frame (key, button or the page's request): with the visit, flagged if it repeats the last."""
        poc, cfg = self.poc, self.cfg
        current = poc.visits.current
        visit = request.visit if request and request.visit else (current.id if current else "")
        if cfg.visits.required and not visit:
            self._status(sink, VISIT_REQUIRED, item.view)
            if request:
                request.answer(error=VISIT_REQUIRED)
            return
        when = datetime.now(timezone.utc)
        record = clinical_overlay(cfg, item, self.labels, visit, self.model, when, poc.msgs)
        model = self.model.record() if self.model else {}
        try:
            cap = self.store.add(item.view, record, item.result.probs, self.labels, self.digest,
                                 gate=item.result.verdict.record() if item.result.verdict else None, visit_id=visit,
                                 duplicate_of=poc.duplicates.of(item.view, visit) or "", model=model, when=when)
        except StoreError as e:  # e.g. disk full: say so and keep screening; the store is intact
            log.error("capture NOT saved: %s", e)
            self.notifier.status(f"capture NOT saved: {e}")
            self._status(sink, CAPTURE_NOT_SAVED, item.view)
            if request:
                request.answer(error=CAPTURE_NOT_SAVED)
            return
        poc.duplicates.kept(cap.uuid, item.view, visit)
        if request:
            request.answer(cap)
        self.stats.captures += 1
        self.notifier.status(f"capture saved ({self.stats.captures} this session)")


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def clinical_overlay(cfg: DeviceConfig, item: Shown, labels: list[str], visit: str, model: ModelInfo | None,
                     when: datetime, msgs) -> np.ndarray:
    """The overlay a capture keeps: what the screen showed, with the visit, the model and the local time under
    it instead of the frame rate (a reviewer reads it months later, on another screen), upright."""
    rows = [(msgs.hud("Visit {visit}", visit=visit), (255, 255, 255))] if visit else []
    if model is not None:
        rows.append((msgs.hud("Model {name} {version}", name=model.name, version=model.version), (175, 175, 175)))
        if model.signer == "UNSIGNED":
            rows.append((msgs.hud("UNSIGNED MODEL"), (255, 176, 0)))
    rows.append((when.astimezone().strftime("%Y-%m-%d %H:%M:%S %z"), (175, 175, 175)))
    return render(item.view, item.cam, Prediction(labels, item.result.probs), size=cfg.display.size,
                  min_confidence=cfg.thresholds.min_confidence, fps=None, colormap=cfg.gradcam.colormap,
                  alpha=cfg.gradcam.alpha, gate=item.gate, msgs=msgs, footer=rows)


def run(cfg: DeviceConfig, frames: int | None = None, store=None, on_frame=None, notifier: Notifier | None = None,
        trigger: threading.Event | None = None, on_record: Callable[[FrameRecord], None] | None = None,
        poc: PointOfCare | None = None, stop: threading.Event | None = None) -> Stats:
    """Run until the source ends, `frames` frames are shown, Ctrl-C (SIGINT) or `stop` is set.

    `store` (a CaptureStore) keeps a capture when the configured key is pressed, `trigger` is set or the page
    asks (`poc`: the visit, the card reader, the page's feed and requests; set up by the caller);
    `on_frame(frame, result, overlay)` is called after each frame is shown, on the presenter thread, in
    order (tests, tools), and `on_record(FrameRecord)` likewise (`skinedge run --results`). An exception in
    the presenter thread is raised here.
    """
    clf, selftest_line = prepare(cfg)
    bundle = clf.bundle
    folder = cfg.source.kind == "folder"  # unrelated images: no motion between them, no need to wait
    try:
        gates = for_bundle(bundle, cfg.gates, use_motion=not folder)
    except GateError as e:
        clf.close()
        raise Startup(f"bundle refused: {e}") from e
    stability = Stability(1 if folder else cfg.gates.stable_frames)
    notifier = notifier or Notifier()
    interval = watchdog_interval()
    watchdog = FrameWatchdog(notifier, interval, cfg.watchdog.stall_seconds) if interval and cfg.watchdog.enabled else None
    stats = Stats()
    poc = poc or PointOfCare(cfg)
    model = model_info(clf)
    poc.board = Board(model, bundle.digest, clf.kind, selftest_line, bundle.labels)
    presenter = Presenter(cfg, bundle.labels, bundle.digest, stats, store, trigger, on_frame, notifier, watchdog,
                          on_record, poc, model)
    finite = cfg.source.kind in ("video", "folder") and not cfg.source.loop
    cap = CaptureThread(lambda: open_source(cfg.source), reconnect=not finite, end_on_eof=finite,
                        prepare=preparer(bundle.input_size))
    try:
        presenter.start()  # opens the display
        cap.start()  # opens the camera here: a missing one fails start-up
    except (SourceError, SinkError, OSError) as e:
        presenter.close()
        clf.close()
        raise Startup(f"{cfg.path}: {e}") from e
    poc.start_reader()
    every = cfg.gradcam.every_n
    cam = None
    inferred = 0
    recent = deque(maxlen=30)
    notifier.ready(f"{bundle.name} on {clf.kind}; {selftest_line}; OOD gate {gates.ood_state}")
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
            res = clf(prep.image, want_cam=every > 0 and inferred % every == 0, gates=gates)
            if res.cam is not None:
                cam = res.cam
            recent.append(time.perf_counter())
            fps = (len(recent) - 1) / (recent[-1] - recent[0]) if len(recent) > 1 and recent[-1] > recent[0] else None
            for stage, ms in (("preprocess", prep.ms), ("infer", res.infer_ms), ("gradcam", res.cam_ms),
                              ("gates", res.verdict.ms)):
                stats.stage_ms[stage].append(ms)
            gate = shown_message(res.verdict, stability.update(res.target, res.verdict.passed))
            t2 = time.perf_counter()
            presenter.show(Shown(prep.frame, prep.view, res, cam if every > 0 else None, fps, info, gate))
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
            poc.close()
            poc.cancel_requests("the camera loop has stopped")
            clf.close()
    return stats
