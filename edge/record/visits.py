"""Visits: the pseudonymous visit (patient) ID every capture carries, where it comes from, and duplicates.

A visit ID is set on the command line (`--visit`), typed on the page, or read by the camera from the patient
card's QR code or barcode (OpenCV's own detectors: QR codes with any text, EAN-8/EAN-13/UPC barcodes). It is a
pseudonym, never a name: the default pattern (device config `visits.pattern`) needs a digit and allows no
spaces, so a typed name is refused. `visits.required` keeps no capture without one.

A health worker who presses the button three times on the same lesion should not get three captures that look
independent: a capture of the same visit within `visits.duplicate_seconds` of the previous one whose frame
changed by less than `visits.duplicate_change` is kept, but flagged as a duplicate of it.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass

import cv2
import numpy as np

from edge.config import VisitsConfig

log = logging.getLogger(__name__)
SOURCES = ("command line", "card", "page")
SCAN_INTERVAL = 0.5  # seconds between two card reads: a card is held up for seconds, decoding costs tens of ms
THUMB = 32  # duplicates are compared on grey thumbnails of this size: the scene, not sensor noise


class VisitError(ValueError):
    """A visit ID that cannot be used: one line saying what was expected."""


def check_visit(text: str, pattern: str = VisitsConfig.pattern) -> str:
    """The visit ID, stripped, if it matches `pattern` whole; VisitError otherwise (the value is not echoed
    beyond 40 characters: it may be something a person typed by mistake)."""
    visit = text.strip() if isinstance(text, str) else ""
    if not re.fullmatch(pattern, visit):
        shown = visit if len(visit) <= 40 else visit[:40] + "..."
        raise VisitError(f"visit ID {shown!r} does not match visits.pattern {pattern!r} (a pseudonymous ID such as "
                         "V-2026-0042: letters, digits, '.', '_' or '-', with a digit; never a name)")
    return visit


@dataclass(frozen=True)
class Visit:
    id: str
    source: str  # one of SOURCES
    since: float  # time.time() when it was set


class VisitState:
    """The current visit, shared by the camera loop, the card reader and the page (thread-safe)."""

    def __init__(self, cfg: VisitsConfig, initial: str | None = None):
        self.cfg = cfg
        self._lock = threading.Lock()
        self._visit = Visit(check_visit(initial, cfg.pattern), "command line", time.time()) if initial else None

    @property
    def current(self) -> Visit | None:
        with self._lock:
            return self._visit

    def set(self, text: str, source: str) -> Visit:
        """Make `text` the current visit (VisitError if it is not a valid ID)."""
        visit = Visit(check_visit(text, self.cfg.pattern), source, time.time())
        with self._lock:
            changed = self._visit is None or self._visit.id != visit.id
            self._visit = visit
        if changed:
            log.info("visit %s (from the %s)", visit.id, source)
        return visit

    def clear(self) -> None:
        with self._lock:
            self._visit = None


def read_card(rgb: np.ndarray, qr: cv2.QRCodeDetector, bars: cv2.barcode.BarcodeDetector) -> list[str]:
    """Every text a QR code or barcode in the frame decodes to (empty if none). Barcodes are tried at the
    frame's size and at half of it: OpenCV's barcode detector finds bars only within a range of widths."""
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    found: list[str] = []
    text, _, _ = qr.detectAndDecode(grey)
    if text:
        found.append(text)
    for image in (grey, cv2.resize(grey, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)):
        ok, texts, _, _ = bars.detectAndDecodeMulti(image)
        found += [t for t in (texts if ok else ()) if t and t not in found]
        if found:
            break
    return found


class CardReader:
    """Reads the patient card from camera frames on a thread of its own, at most every SCAN_INTERVAL seconds.

    `offer(frame)` costs nothing on the frame loop: the newest frame replaces one not yet read. A decoded
    text that is a valid visit ID becomes the current visit; any other (a product's barcode, a URL) is
    ignored with a log line once.
    """

    def __init__(self, state: VisitState, interval: float = SCAN_INTERVAL):
        self.state, self.interval = state, interval
        self._frame: np.ndarray | None = None
        self._cond = threading.Condition()
        self._stop = False
        self._ignored: set[str] = set()
        self.reads = 0  # frames decoded, for tests and the health view
        self._thread = threading.Thread(target=self._run, name="card-reader", daemon=True)
        self._thread.start()

    def offer(self, rgb: np.ndarray) -> None:
        with self._cond:
            self._frame = rgb
            self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify()
        self._thread.join()

    def _run(self) -> None:
        qr, bars = cv2.QRCodeDetector(), cv2.barcode.BarcodeDetector()
        while True:
            with self._cond:
                while self._frame is None and not self._stop:
                    self._cond.wait()
                if self._stop:
                    return
                frame, self._frame = self._frame, None
            started = time.monotonic()
            self._take(read_card(frame, qr, bars))
            with self._cond:
                self.reads += 1
                self._cond.notify_all()
                self._cond.wait_for(lambda: self._stop, timeout=max(0.0, self.interval - (time.monotonic() - started)))

    def _take(self, texts: list[str]) -> None:
        for text in texts:
            try:
                self.state.set(text, "card")
                return
            except VisitError as e:
                if text not in self._ignored and len(self._ignored) < 100:
                    self._ignored.add(text)
                    log.warning("card ignored: %s", e)

    def wait_reads(self, n: int, timeout: float) -> bool:
        """Block until `n` frames have been decoded in all (tests)."""
        with self._cond:
            return self._cond.wait_for(lambda: self.reads >= n, timeout=timeout)


def thumbnail(rgb: np.ndarray) -> np.ndarray:
    """Grey THUMB x THUMB float thumbnail, for comparing two captures of a scene."""
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    return cv2.resize(grey, (THUMB, THUMB), interpolation=cv2.INTER_AREA).astype(np.float32)


def change(a: np.ndarray, b: np.ndarray) -> float:
    """How much two thumbnails differ: mean |a - b| relative to their contrast (0 = the same picture)."""
    contrast = max(float(np.mean(np.abs(a - a.mean()))) + float(np.mean(np.abs(b - b.mean()))), 2.0) / 2
    return float(np.mean(np.abs(a - b))) / contrast


class Duplicates:
    """Flags a capture that repeats the previous one: same visit, within the window, nearly the same picture."""

    def __init__(self, cfg: VisitsConfig):
        self.cfg = cfg
        self._last: tuple[str, str | None, float, np.ndarray] | None = None  # uuid, visit, time, thumbnail
        self._lock = threading.Lock()

    def of(self, view: np.ndarray, visit: str | None, now: float | None = None) -> str | None:
        """The uuid of the capture this one repeats, or None."""
        now = time.monotonic() if now is None else now
        with self._lock:
            if self._last is None:
                return None
            uid, last_visit, when, thumb = self._last
        if last_visit != visit or now - when > self.cfg.duplicate_seconds:
            return None
        return uid if change(thumb, thumbnail(view)) < self.cfg.duplicate_change else None

    def kept(self, uid: str, view: np.ndarray, visit: str | None, now: float | None = None) -> None:
        with self._lock:
            self._last = (uid, visit, time.monotonic() if now is None else now, thumbnail(view))
