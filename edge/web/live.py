"""The newest classified frame, handed from the camera loop to the page's viewers.

The loop's presenter thread calls `publish()` once per frame: it only swaps a reference, so the loop pays
nothing for the page (or for a page nobody is looking at). The heat-map blend and the JPEG are made on a
viewer's request thread, once per frame however many viewers ask (`jpeg()` caches the newest), and viewers
wait for a newer frame with `wait()` instead of polling. The live view is the model's own crop, as on the
board's screen, with the heat map hidden while a gate has tripped (it would explain a class not shown).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field

import cv2
import numpy as np

from edge.overlay import blend
from edge.sinks import resize_to

LIVE_SIDE = 480  # the live JPEG's longer side in pixels: sharp on a phone, ~25 kB
JPEG_QUALITY = 80
KEEP = 4  # recent snapshots kept, so a viewer gets the picture of the very result it was shown


@dataclass(frozen=True)
class Snapshot:
    """One classified frame as the page shows it."""

    seq: int
    time_utc: str
    view: np.ndarray  # the model's crop, RGB
    cam: np.ndarray | None  # Grad-CAM map, None when off
    labels: list[str]
    probs: list[float]
    gate: str  # 'pass', or the outcome that replaced the class: 'blurred', 'not recognised', 'checking', ...
    message: str | None  # what the HUD shows instead of the class (English msgid), None when the class is shown
    scores: dict = field(default_factory=dict)  # edge.gates.Verdict.record()
    fps: float | None = None
    visit: str | None = None

    def result(self, min_confidence: float) -> dict:
        """JSON-ready: the top class and its confidence (unless a gate replaced it), top-3, gate, visit."""
        order = np.argsort(-np.asarray(self.probs), kind="stable")
        top = [{"label": self.labels[i], "p": round(float(self.probs[i]), 4)} for i in order[:3]]
        shown = self.message is None
        return {"seq": self.seq, "time_utc": self.time_utc, "label": top[0]["label"] if shown else None,
                "confidence": top[0]["p"] if shown else None,
                "uncertain": shown and top[0]["p"] < min_confidence, "top": top, "gate": self.gate,
                "message": self.message, "scores": self.scores,
                "fps": None if self.fps is None else round(self.fps, 1), "visit": self.visit}


class LiveFeed:
    """Newest snapshot in, JPEGs and results out; thread-safe."""

    def __init__(self, colormap: str = "jet", alpha: float = 0.45):
        self.colormap, self.alpha = colormap, alpha
        self._snap: Snapshot | None = None
        self._recent: deque[Snapshot] = deque(maxlen=KEEP)
        self._jpeg: tuple[int, bytes] | None = None
        self._cond = threading.Condition()
        self._encode = threading.Lock()
        self._seq = 0

    def next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def publish(self, snap: Snapshot) -> None:
        with self._cond:
            self._snap = snap
            self._recent.append(snap)
            self._cond.notify_all()

    def latest(self) -> Snapshot | None:
        with self._cond:
            return self._snap

    def wait(self, after: int, timeout: float) -> Snapshot | None:
        """The newest snapshot once its seq is above `after`; None if none came within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._snap is None or self._snap.seq <= after:
                left = deadline - time.monotonic()
                if left <= 0 or not self._cond.wait(left):
                    return None
            return self._snap

    def jpeg(self, seq: int | None = None) -> tuple[int, bytes] | None:
        """(seq, JPEG) of snapshot `seq` (if still among the recent ones, else the newest) with its heat map;
        encoded once per frame however many viewers ask."""
        with self._cond:
            snap = next((s for s in self._recent if s.seq == seq), self._snap)
        if snap is None:
            return None
        with self._encode:
            if self._jpeg is None or self._jpeg[0] != snap.seq:
                self._jpeg = (snap.seq, encode(snap, self.colormap, self.alpha))
            return self._jpeg


def encode(snap: Snapshot, colormap: str, alpha: float) -> bytes:
    """The snapshot's view at LIVE_SIDE with the heat map blended in, as a JPEG."""
    h, w = snap.view.shape[:2]
    scale = min(1.0, LIVE_SIDE / max(h, w))
    view = resize_to(snap.view, (max(1, round(w * scale)), max(1, round(h * scale))))
    if snap.cam is not None and snap.message is None:
        view = blend(view, snap.cam, alpha, colormap)
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(view, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise RuntimeError("OpenCV could not encode the live frame as JPEG")
    return buf.tobytes()
