"""What the camera loop shares with the people around it: the visit, the page's capture requests and live feed.

The loop (edge.pipeline) keeps captures on its presenter thread; the page (edge.web) and the card reader run on
threads of their own. They meet here: `PointOfCare` holds the current visit, the duplicate check, the live feed
the page's viewers read, the queue of capture requests the page's button makes (each answered with the kept
capture or why it was not kept), and what the page's health view reports about the board.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from edge.config import DeviceConfig
from edge.i18n import Messages
from edge.record.capture import Capture
from edge.record.visits import CardReader, Duplicates, VisitState
from edge.trust.admit import Provenance
from edge.web.live import LiveFeed

PENDING_MAX = 4  # capture requests waiting for a frame; more are refused (a stuck loop must not pile them up)


@dataclass
class CaptureRequest:
    """One press of the page's capture button, answered by the loop with the capture or a reason."""

    visit: str | None  # typed with the request; None: the current visit
    done: threading.Event = field(default_factory=threading.Event)
    capture: Capture | None = None
    error: str | None = None  # English msgid (translated by the page) or a store error line

    def answer(self, capture: Capture | None = None, error: str | None = None) -> None:
        self.capture, self.error = capture, error
        self.done.set()


@dataclass
class Board:
    """What the health view says about the running model (set by the loop once the bundle passed its checks)."""

    model: Provenance
    backend: str
    ready: str  # the ready line: model and signature, backend, golden self-test, OOD gate


class PointOfCare:
    def __init__(self, cfg: DeviceConfig, visit: str | None = None, live: bool = False):
        self.cfg = cfg
        self.msgs = Messages(cfg.language)
        self.visits = VisitState(cfg.visits, visit)
        self.duplicates = Duplicates(cfg.visits)
        self.reader: CardReader | None = None
        self.live = LiveFeed(cfg.gradcam.colormap, cfg.gradcam.alpha) if live else None
        self.board: Board | None = None
        # HUD lines for the page (its address and pairing code, the TLS fingerprint), set by edge.web
        self.pairing: Callable[[], list[str]] = list
        self._requests: queue.Queue[CaptureRequest] = queue.Queue(maxsize=PENDING_MAX)

    def start_reader(self) -> None:
        if self.cfg.visits.scan and self.reader is None:
            self.reader = CardReader(self.visits)

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()
            self.reader = None

    def request_capture(self, visit: str | None) -> CaptureRequest:
        """Queue a capture for the loop's next frame; queue.Full when too many are waiting."""
        req = CaptureRequest(visit)
        self._requests.put_nowait(req)
        return req

    def next_request(self) -> CaptureRequest | None:
        try:
            return self._requests.get_nowait()
        except queue.Empty:
            return None

    def cancel_requests(self, why: str) -> None:
        """Answer every waiting request (the loop has ended)."""
        while (req := self.next_request()) is not None:
            req.answer(error=why)
