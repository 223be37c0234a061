"""`skinedge run`, `capture` and `demo`: the point-of-care loop and its scripted forms."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edge.cli.common import bounded, count, given, load_cfg, threads

LIVE_ENDED = 1  # exit status when a live source (camera, stream) ends: systemd's Restart=on-failure restarts


def _run(a: argparse.Namespace) -> int:
    from edge.config import display_overrides, source_overrides
    from edge.outputs import OutputError, probe
    from edge.pipeline import Startup, run
    from edge.pointofcare import PointOfCare
    from edge.record.results import ResultsLog, check_results_path
    from edge.record.store import StoreError, StoreOnFirstCapture
    from edge.record.visits import VisitError
    from edge.sinks import SinkError
    from edge.sources import SourceError
    from edge.web import WebError

    overrides = {}
    if a.bundle:
        overrides["bundle"] = str(a.bundle.resolve())
    if a.source:
        overrides.update(source_overrides(a.source))
    if a.display:
        overrides.update(display_overrides(a.display))
    if a.backend:
        overrides["backend"] = a.backend
    if a.threads is not None:
        overrides["threads"] = a.threads
    cfg = load_cfg(a.config, overrides)
    try:  # where the results go, before the run that makes them (a record written at the end must not be lost)
        if a.results:
            check_results_path(a.results)
            probe(a.results, "--results")
        if a.record:
            if a.record.suffix != ".npz":
                raise OutputError(f"--record {a.record}: expected a .npz file name")
            probe(a.record, "--record")
    except ValueError as e:
        print(f"skinedge run: {e}", file=sys.stderr)
        return 2
    try:
        poc = PointOfCare(cfg, a.visit, live=cfg.web.enabled)
    except VisitError as e:
        print(f"skinedge run: --visit: {e}", file=sys.stderr)
        return 2
    try:
        results = ResultsLog(a.results, echo=cfg.source.kind == "folder")
    except OSError as e:
        print(f"skinedge run: --results {a.results}: {e.strerror or e}", file=sys.stderr)
        return 2
    keeps = cfg.trigger.key or cfg.trigger.gpio_pin is not None or cfg.web.enabled
    store = StoreOnFirstCapture(cfg.store.path) if keeps else None
    page = None
    try:
        page = _page(cfg, poc)
        trigger = _gpio_trigger(cfg.trigger.gpio_pin) if cfg.trigger.gpio_pin is not None else None
        recorder = Recorder() if a.record else None
        stats = run(cfg, frames=a.frames, store=store, trigger=trigger, on_frame=recorder, on_record=results,
                    on_ready=_say_ready, allow_downgrade=a.allow_downgrade, poc=poc)
        if recorder:
            recorder.save(a.record)
    except (Startup, StoreError, WebError, SinkError, SourceError, OSError) as e:
        print(f"skinedge run: {e}", file=sys.stderr)
        return 2
    finally:
        if page is not None:
            page.stop()
        results.close()
        if store is not None:
            store.close()
    print(stats.summary())
    if stats.live_source_ended:
        print(f"skinedge run: {cfg.path}: the live source {stats.source_name} ended: exit {LIVE_ENDED}, so a service "
              "with Restart=on-failure starts again", file=sys.stderr)
        return LIVE_ENDED
    if stats.frames == 0:  # e.g. a video file OpenCV opens but cannot decode
        print(f"skinedge run: {cfg.path}: the source ({cfg.source.kind} {cfg.source.path or cfg.source.device or ''}) "
              "gave no frame", file=sys.stderr)
        return 2
    for line in (results.summary(), f"results written to {a.results}" if a.results else None):
        if line:
            print(line)
    return 0


def _page(cfg, poc):
    """The page's server when `web.enabled` (listening before the self-test, so its health says 'starting')."""
    if not cfg.web.enabled:
        return None
    from edge.web.server import PageServer

    page = PageServer(poc, cfg.store.path)
    page.start()
    print(f"page on {page.url}: pair with the code on the board's screen", flush=True)
    return page


def _say_ready(line: str) -> None:
    print(f"ready: {line}", file=sys.stderr, flush=True)


class Recorder:
    """--record: every frame's probabilities, Grad-CAM map and gate outcome, for comparing boards (ARM vs x86).
    A frame the gates refused has no map: its row of `cams` is all zeros and its `gate` says why."""

    def __init__(self):
        self.probs, self.cams, self.gates = [], [], []

    def __call__(self, frame, answer, overlay) -> None:
        self.probs.append(answer.probs)
        self.cams.append(answer.cam)
        self.gates.append(answer.verdict.reason or "pass")

    def save(self, path: Path) -> None:
        import numpy as np

        shape = next((c.shape for c in self.cams if c is not None), (1, 1))
        cams = [np.zeros(shape, np.float32) if c is None else c for c in self.cams]
        np.savez(path, probs=np.array(self.probs), cams=np.array(cams), gate=np.array(self.gates))


def _gpio_trigger(pin: int):
    """A threading.Event set by a gpiozero button press (gpiozero is the pi extra)."""
    import threading

    try:
        from gpiozero import Button
    except ImportError as e:
        raise SystemExit(f"skinedge: trigger.gpio_pin={pin} needs gpiozero (pip install 'skinedge[pi]')") from e
    event = threading.Event()
    button = Button(pin)
    button.when_pressed = event.set
    event.button = button  # keep the Button alive as long as the event
    return event


def _demo(a: argparse.Namespace) -> int:
    from edge.config import source_overrides
    from edge.pipeline import Startup, run
    from edge.record.results import ResultsLog
    from edge.sinks import SinkError

    assets = Path(__file__).resolve().parent.parent / "demo_assets"  # edge/demo_assets
    out = a.out.resolve()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        print(f"skinedge demo: --out {out}: cannot create it ({e.strerror or e})", file=sys.stderr)
        return 2
    overrides = {"display.kind": "files", "display.path": str(out), "backend": a.backend}
    if a.source:
        overrides.update(source_overrides(a.source))
    cfg = load_cfg(assets / "demo.yaml", overrides)
    results = ResultsLog(echo=cfg.source.kind == "folder")  # a line per image of a folder, as `run` prints
    try:
        stats = run(cfg, frames=a.frames, on_record=results, on_ready=_say_ready)
    except (Startup, SinkError) as e:
        print(f"skinedge demo: {e}", file=sys.stderr)
        return 2
    print(f"demo: {cfg.backend} backend, overlays in {out}; {stats.summary()}")
    if line := results.summary():
        print(line)
    return 0


def _capture(a: argparse.Namespace) -> int:
    """Scripted capture: classify frames through the gated path and keep those the gates pass, or (--calib) save
    raw frames for calibration. Exit 0 when every frame was kept, 1 when the gates refused some (each named)."""
    from edge.calibframes import calib_folder, save_frames
    from edge.config import source_overrides
    from edge.record.visits import check_visit
    from edge.sources import SourceError, open_source

    overrides = source_overrides(a.source) if a.source else {}
    if a.bundle:
        overrides["bundle"] = str(a.bundle.resolve())
    cfg = load_cfg(a.config, overrides)
    try:
        calib = calib_folder(a.calib, a.label) if a.calib else None  # before the camera: no frame taken in vain
        visit = check_visit(a.visit, cfg.visits.pattern) if a.visit else ""
        if cfg.visits.required and not visit and calib is None:
            raise ValueError(f"{cfg.path}: visits.required is true: give --visit ID")
        source = open_source(cfg.source)
    except (SourceError, ValueError) as e:
        print(f"skinedge capture: {e}", file=sys.stderr)
        return 2
    try:
        frames = [f for f in (source.read() for _ in range(a.count)) if f is not None]
    finally:
        source.close()
    if not frames:
        print(f"skinedge capture: {cfg.path}: the source gave no frame", file=sys.stderr)
        return 2
    if calib is not None:
        try:
            save_frames(calib, frames)
        except ValueError as e:
            print(f"skinedge capture: {e}", file=sys.stderr)
            return 2
        print(f"saved {len(frames)} calibration frame(s) to {calib}")
        return 0
    return _keep_frames(cfg, frames, a.store or Path(cfg.store.path), a.note, a.allow_downgrade, visit)


def _keep_frames(cfg, frames: list, store_path: Path, note: str, allow_downgrade: bool, visit: str) -> int:
    """Each frame through edge.answer; kept with its gate outcome, model and visit (flagged when it repeats the
    one before), or named with why it was not."""
    from datetime import datetime, timezone

    from edge import __version__
    from edge.answer import NotKept, Startup, keep, open_answerer
    from edge.i18n import Messages
    from edge.pipeline import clinical_overlay
    from edge.record.store import CaptureStore, StoreError
    from edge.record.visits import Duplicates

    msgs, duplicates = Messages(cfg.language), Duplicates(cfg.visits)

    refused = 0
    try:
        answerer, ready = open_answerer(cfg, allow_downgrade)
        _say_ready(ready)
        try:
            with CaptureStore(store_path) as store:
                for i, frame in enumerate(frames, 1):
                    prep = answerer.prepare(frame)
                    answer = answerer.answer(prep)
                    when = datetime.now(timezone.utc)
                    try:
                        cap = keep(store, answer, prep.view, clinical_overlay(cfg, prep.view, answer, visit, when, msgs),
                                   note, when=when, visit_id=visit, software=__version__,
                                   duplicate_of=duplicates.of(prep.view, visit) or "")
                    except NotKept as e:
                        refused += 1
                        print(f"frame {i}: {e}")
                        continue
                    duplicates.kept(cap.uuid, prep.view, visit)
                    print(f"kept capture {cap.id}: {cap.label} {cap.confidence:.0%}"
                          + (f" visit {visit}" if visit else "")
                          + (" (duplicate of the previous one)" if cap.duplicate_of else "")
                          + (f" ({answer.model.warning})" if answer.model.warning else ""))
        finally:
            answerer.close()
    except (Startup, StoreError) as e:
        print(f"skinedge capture: {e}", file=sys.stderr)
        return 2
    if refused:
        print(f"{refused} of {len(frames)} frame(s) not kept: the gates refused them", file=sys.stderr)
    return 1 if refused else 0


DOWNGRADE_HELP = ("run a signed bundle older than the highest version this board has accepted from its signer "
                  "(refused otherwise); logged, and recorded in every capture")


def add_parsers(sub) -> None:
    r = sub.add_parser("run", help="the point-of-care loop: camera -> classify -> Grad-CAM -> display",
                       epilog=f"exit status: 0 the source (file, folder) ended or --frames were shown; {LIVE_ENDED} a "
                       "live source (camera, stream) ended, so that systemd restarts the service; 2 error")
    r.add_argument("--config", required=True, type=Path, help="device config YAML (see device_configs/)")
    r.add_argument("--bundle", type=Path)
    r.add_argument("--source", type=given, help="picamera2 | device index | /dev/videoN | GStreamer pipeline | video file | image folder")
    r.add_argument("--display", type=given, help="window | null | /dev/fbN | framebuffer:PATH | folder or .mp4/.avi to write overlays to")
    r.add_argument("--backend", choices=["tflite", "onnx", "tensorrt", "auto"], help="override the config's backend")
    r.add_argument("--threads", type=threads, help="override the config's thread count (1..4 x cores)")
    r.add_argument("--frames", type=count, help="stop after N frames")
    r.add_argument("--record", type=Path, help="save every frame's probabilities and Grad-CAM map to this .npz")
    r.add_argument("--results", type=Path, help="per-frame results (source, time, top-3, uncertain, heat-map peak, "
                                                "true label for class sub-folders) to this .csv or .jsonl")
    r.add_argument("--allow-downgrade", action="store_true", help=DOWNGRADE_HELP)
    r.add_argument("--visit", help="pseudonymous visit ID for the captures kept (a card or the page may change it)")
    r.set_defaults(fn=_run)

    cp = sub.add_parser("capture", help="scripted capture: classify frames and keep those the gates pass, or --calib: "
                                         "save raw frames", epilog="exit status: 0 every frame kept; 1 the gates "
                                         "refused some (each named, nothing stored for them); 2 error")
    cp.add_argument("--config", required=True, type=Path)
    cp.add_argument("--bundle", type=Path)
    cp.add_argument("--source", type=given)
    cp.add_argument("--store", type=Path, help="override the config's store.path")
    cp.add_argument("--count", type=bounded(1, 10_000), default=1, help="frames to take (kept in memory until classified)")
    cp.add_argument("--note", default="", help="free text stored with the capture (no patient identifiers)")
    cp.add_argument("--visit", help="pseudonymous visit ID stored with the capture (never a name)")
    cp.add_argument("--calib", type=Path, help="save raw frames in DIR (or DIR/LABEL/) for calibrating with this camera")
    cp.add_argument("--label", help="class folder for --calib frames (default: none, DIR is an unlabelled folder)")
    cp.add_argument("--allow-downgrade", action="store_true", help=DOWNGRADE_HELP)
    cp.set_defaults(fn=_capture)

    d = sub.add_parser("demo", help="the whole pipeline on the shipped demo bundle and clip; no camera or display needed")
    d.add_argument("--out", type=Path, default=Path("skinedge-demo"), help="folder for the overlay frames")
    d.add_argument("--frames", type=count)
    d.add_argument("--backend", default="auto")
    d.add_argument("--source", type=given, help="your own video file or image folder instead of the shipped clip")
    d.set_defaults(fn=_demo)
