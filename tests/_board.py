"""A board in the test process: the camera loop on the shipped demo bundle (a looping clip, no screen) with its
page served on a loopback port, both on threads, stopped by `close()`. Real pipeline, real cheroot, real store."""

from __future__ import annotations

import http.client
import json
import threading
from pathlib import Path

from edge.config import DeviceConfig, load_config
from edge.pipeline import run
from edge.pointofcare import PointOfCare
from edge.record.store import StoreOnFirstCapture
from edge.web.server import PageServer

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "edge" / "demo_assets"


def board_config(tmp: Path, **overrides) -> DeviceConfig:
    # the demo clip moves: with the motion gate as shipped, a capture asked for at a random moment may be refused
    # (RETAKE - hold still, tested in tests/test_answer.py); here every lesion frame is kept
    base = {"display.kind": "null", "display.path": None, "backend": "tflite", "source.loop": True,
            "store.path": str(tmp / "store"), "web.enabled": True, "web.port": 0, "gates.stable_frames": 1,
            "gates.motion_max": 1000.0}
    return load_config(DEMO / "demo.yaml", {**base, **overrides})


class Board:
    def __init__(self, cfg: DeviceConfig, visit: str | None = None):
        self.cfg = cfg
        self.poc = PointOfCare(cfg, visit, live=True)
        self.page = PageServer(self.poc, cfg.store.path)
        self.store = StoreOnFirstCapture(cfg.store.path)
        self.trigger = threading.Event()
        self._stop = threading.Event()
        self.error: BaseException | None = None
        self.page.start()
        self._thread = threading.Thread(target=self._run, name="test-board", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            run(self.cfg, store=self.store, trigger=self.trigger, poc=self.poc, stop=self._stop)
        except BaseException as e:  # noqa: BLE001 - re-raised by close()
            self.error = e

    @property
    def url(self) -> str:
        return self.page.url.rstrip("/")

    def wait_frames(self, n: int = 1, timeout: float = 60.0) -> None:
        """Block until the loop has published frame number `n` (the page has something to show)."""
        if self.poc.live.wait(n - 1, timeout) is None:
            raise AssertionError(f"no frame {n} within {timeout} s (loop error: {self.error!r})")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)
        self.page.stop()
        self.store.close()
        if self.error is not None:
            raise self.error


class Client:
    """A plain HTTP client with a cookie jar of one cookie, as a paired browser would hold it."""

    def __init__(self, board: Board):
        self.host, self.port = board.cfg.web.address, board.page.port
        self.cookie: str | None = None
        self.csrf: str | None = None

    def request(self, method: str, path: str, body: object = None, headers: dict | None = None
                ) -> tuple[int, dict, bytes]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        hdrs = {"Host": f"{self.host}:{self.port}", **(headers or {})}
        if self.cookie:
            hdrs["Cookie"] = self.cookie
        data = None if body is None else json.dumps(body).encode()
        if data is not None:
            hdrs["Content-Type"] = "application/json"
        try:
            conn.request(method, path, body=data, headers=hdrs)
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()

    def json(self, method: str, path: str, body: object = None, headers: dict | None = None) -> tuple[int, dict]:
        status, _, data = self.request(method, path, body, headers)
        return status, (json.loads(data) if data else {})

    def pair(self, code: str) -> tuple[int, dict]:
        status, headers, data = self.request("POST", "/api/v1/pair", {"code": code},
                                             {"Origin": f"http://{self.host}:{self.port}"})
        if status == 200:
            self.cookie = headers["set-cookie"].split(";")[0]
            self.csrf = json.loads(data)["csrf"]
        return status, (json.loads(data) if data else {})

    def post(self, path: str, body: object) -> tuple[int, dict]:
        return self.json("POST", path, body, {"X-CSRF-Token": self.csrf or "", "Origin": f"http://{self.host}:{self.port}"})
