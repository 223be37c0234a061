"""The loop's threads: frames go capture -> main loop (infer) -> presenter (render, show, captures, on_frame).

Real OpenCV decoding of the demo clip, real LiteRT, real PNG files and a real capture store: every frame is
shown exactly once and in order, errors on the presenter thread reach the caller, a capture the store
cannot keep is shown on screen without stopping the loop, and Ctrl-C ends the run with every inferred
frame shown and no thread left behind.
"""

from __future__ import annotations

import _thread
import gc
import signal
import threading
import time

import cv2
import numpy as np
import pytest

from edge.config import load_config
from edge.interrupt import CtrlC
from edge.overlay import hud
from edge.pipeline import run
from edge.record.store import CaptureStore
from edge.sinks import SinkError
from tests.test_faults import _is_lost_screen
from tests.test_run import DEMO

ENOUGH = 400  # frames of a looping source: a run that lost the error or the interrupt ends here and fails


def _config(out, **overrides):
    return load_config(DEMO / "demo.yaml", {"display.path": str(out), "backend": "tflite", **overrides})


def _clip() -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(DEMO / "clip.mp4"))
    frames = []
    while (got := cap.read())[0]:
        frames.append(cv2.cvtColor(got[1], cv2.COLOR_BGR2RGB))
    cap.release()
    return frames


def _png(path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def _loop_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name in ("capture", "presenter")]


def test_every_frame_shown_once_in_order(tmp_path):
    out = tmp_path / "screen"
    seen = []
    stats = run(_config(out), on_frame=lambda frame, res, overlay: seen.append((frame, overlay)))
    clip = _clip()
    assert stats.frames == len(seen) == len(clip)
    for i, ((frame, _), expected) in enumerate(zip(seen, clip)):
        assert np.array_equal(frame, expected), f"on_frame call {i} got another frame than the clip's frame {i}"
    files = sorted(out.glob("*.png"))
    assert len(files) == len(clip)
    for i, (f, (_, overlay)) in enumerate(zip(files, seen)):
        assert np.array_equal(_png(f), overlay), f"{f.name} is not overlay {i}"
    assert {v.count for v in stats.stage_ms.values()} == {len(clip)}  # render/display timed on the presenter too
    assert stats.wait_capture_ms.count == stats.wait_presenter_ms.count == len(clip)
    assert not _loop_threads()


def test_presenter_error_reaches_the_caller(tmp_path):
    """The display breaks (its folder is replaced by a file) on a looping source: run() raises at once."""
    out = tmp_path / "screen"
    shown = []

    def break_display(frame, res, overlay):
        shown.append(1)
        if len(shown) == 3:
            out.rename(tmp_path / "moved")
            out.write_text("not a folder")

    with pytest.raises(SinkError, match="cannot write"):
        run(_config(out, **{"source.loop": True}), frames=ENOUGH, on_frame=break_display)
    assert len(shown) == 3 and not _loop_threads()


def test_keyboard_interrupt_shows_what_was_inferred(tmp_path):
    out = tmp_path / "screen"
    seen = []

    def ctrl_c(frame, res, overlay):
        seen.append(1)
        if len(seen) == 5:
            _thread.interrupt_main()  # SIGINT as the main thread gets it

    stats = run(_config(out, **{"source.loop": True}), frames=ENOUGH, on_frame=ctrl_c)
    assert 5 <= stats.frames == len(seen) == len(list(out.glob("*.png"))) < ENOUGH
    assert not _loop_threads()


def test_ctrl_c_landing_in_a_finalizer_still_stops_the_loop():
    """The cause of a flaky Ctrl-C test: a KeyboardInterrupt raised inside a __del__ that the garbage collector
    runs on the main thread is printed as "Exception ignored" and lost. CtrlC's flag cannot be lost that way."""

    class Garbage:
        def __del__(self):
            sum(range(20_000))  # bytecode inside the finalizer, where the signal handler may run

    def collect_garbage_until(done) -> None:  # ends at the state (pressed); the deadline only stops a failure
        deadline = time.monotonic() + 60.0
        while time.monotonic() < deadline and not done():
            a, b = Garbage(), Garbage()
            a.other, b.other = b, a
            del a, b
            gc.collect()

    ctrl_c = CtrlC()
    try:
        _thread.interrupt_main()
        collect_garbage_until(lambda: ctrl_c.pressed)
    finally:
        ctrl_c.restore()
    assert ctrl_c.pressed
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_capture_keeps_the_overlay_on_screen_with_a_clinical_footer(tmp_path):
    """The kept overlay is the screen's picture and prediction; under them the model and the time replace FPS."""
    out = tmp_path / "screen"
    trigger = threading.Event()
    trigger.set()
    cfg = _config(out, **{"gates.stable_frames": 1})  # the class on screen from the first frame (no CHECKING)
    with CaptureStore(tmp_path / "store") as store:
        stats = run(cfg, frames=4, store=store, trigger=trigger)
        caps = store.list()
        assert stats.captures == len(caps) == 1 and not trigger.is_set()
        kept = _png(store.root / caps[0].overlay_file)
    screen = _png(out / "frame_00000.png")  # the first frame's screen
    layout = hud(None, cfg.display.size, 0.6, None, warning="UNSIGNED MODEL")  # the demo bundle is unsigned
    x, y, w, h = layout.image
    assert np.array_equal(kept[y:y + h, x:x + w], screen[y:y + h, x:x + w])  # the same picture and heat map
    px, py, pw, ph = layout.panel
    top = slice(py, py + ph // 3)
    assert np.array_equal(kept[top, px:px + pw], screen[top, px:px + pw])  # the same class and confidence
    assert not np.array_equal(kept, screen)  # model and time instead of FPS
    assert caps[0].model == "demo-micro_mpoxnet-synthetic" and caps[0].signature == "UNSIGNED"
    assert caps[0].software and caps[0].utc_offset[0] in "+-"


def test_capture_not_saved_is_shown_and_the_loop_goes_on(tmp_path):
    out = tmp_path / "screen"
    store = CaptureStore(tmp_path / "store")
    store.close()  # every add() now raises StoreError
    trigger = threading.Event()
    trigger.set()
    stats = run(_config(out), frames=4, store=store, trigger=trigger)
    screens = sorted(out.glob("*.png"))
    assert stats.frames == 4 and stats.captures == 0
    # the red full-screen warning right after the frame whose capture failed
    assert [_is_lost_screen(p) for p in screens] == [False, True, False, False, False]


def test_config_precision_picks_the_artefact(tmp_path):
    """`precision: fp32` (a board where int8 does not pay) runs the fp32 artefact, the default the int8 one."""
    from edge.answer import prepare
    from edge.classify import Classifier
    from edge.trust.bundle import load_bundle

    bundle = load_bundle(DEMO / "bundle")
    image = prepare(_clip()[0], bundle.input_size).image
    shown = {}
    for precision in ("int8", "fp32"):
        run(_config(tmp_path / precision, precision=precision), frames=1,
            on_frame=lambda frame, res, overlay, p=precision: shown.setdefault(p, res.probs))
        assert np.array_equal(shown[precision], Classifier(bundle, "tflite", precision=precision).probs(image))
    assert not np.array_equal(shown["int8"], shown["fp32"])
