"""The page's HTTP application (WSGI, PEP 3333): the static page, and the JSON API under /api/v1/.

Every request passes edge.web.security first (Host, then session, then same-origin and CSRF for anything that
changes state); the views below only read the board's state (edge.pointofcare, the capture store) or ask the
camera loop to keep a capture. The API (documented in README.md, "The page"):

    GET  /api/v1/session                    public: paired or not, CSRF token when paired, language, messages
    POST /api/v1/pair      {"code"}         public, same-origin, rate-limited: a session cookie
    POST /api/v1/logout
    GET  /api/v1/latest?after=SEQ           newest result (waits up to 2 s for one newer than SEQ; 204 if none)
    GET  /api/v1/live.jpg?seq=SEQ           that (recent) frame, else the newest, with its heat map (header X-Seq)
    POST /api/v1/visit     {"visit"}        set the current visit ("" clears it)
    POST /api/v1/capture   {"visit"?}       keep the next frame; 201 with the capture
    GET  /api/v1/captures?visit=&since=&until=&limit=   newest first
    GET  /api/v1/captures/UUID              one capture in full (probabilities, gate, model, signature state)
    GET  /api/v1/captures/UUID/frame.png | overlay.png
    GET  /api/v1/export?visit=&since=&until=            the export ZIP (edge.record.export)
    GET  /api/v1/health                     model, self-test, FPS, temperature, free disk, kept captures
"""

from __future__ import annotations

import json
import logging
import queue
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from pathlib import Path
from urllib.parse import parse_qs

from edge.pointofcare import PointOfCare
from edge.record.store import DB_NAME, Capture, CaptureStore, StoreError
from edge.record.visits import VisitError, check_visit
from edge.web import health, security

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"
STATIC_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                ".css": "text/css; charset=utf-8", ".png": "image/png", ".svg": "image/svg+xml"}
BODY_MAX = 4096  # bytes of a JSON request body: a visit ID or a code, nothing more
LONG_POLL = 2.0  # seconds /latest waits for a newer frame
CAPTURE_WAIT = 10.0  # seconds a capture request waits for the loop to keep it
LIST_MAX = 500
VISIT_INVALID = "Not a valid visit ID: use letters, digits, '.', '_' or '-', with a digit; never a name"
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: bytes
    client: str
    session: security.Session | None = None

    def json(self) -> dict:
        try:
            data = json.loads(self.body or b"{}")
        except ValueError:
            raise security.Refused(400, "expected a JSON object") from None
        if not isinstance(data, dict):
            raise security.Refused(400, "expected a JSON object")
        return data


@dataclass
class Response:
    status: int
    body: bytes | Iterable[bytes] = b""
    content_type: str = "application/json"
    headers: list[tuple[str, str]] = field(default_factory=list)


def as_json(data: object, status: int = 200, headers: list[tuple[str, str]] | None = None) -> Response:
    return Response(status, json.dumps(data, ensure_ascii=False).encode(), headers=headers or [])


def error(status: int, message: str, headers: list[tuple[str, str]] | None = None) -> Response:
    return as_json({"error": message}, status, headers)


def capture_json(cap: Capture, full: bool = False) -> dict:
    """A capture as the page and the API show it (`full`: probabilities, scores, hashes)."""
    data = {"uuid": cap.uuid, "id": cap.id, "created_utc": cap.created_utc, "created_local": cap.created_local,
            "visit": cap.visit_id, "label": cap.label, "confidence": round(cap.confidence, 4),
            "gate": cap.gate.get("gate", ""), "duplicate_of": cap.duplicate_of,
            "model": {"name": cap.model, "version": cap.model_version, "signature": cap.signature,
                      "software": cap.software},
            "signature": signature_state(cap.signature),
            "frame": f"/api/v1/captures/{cap.uuid}/frame.png", "overlay": f"/api/v1/captures/{cap.uuid}/overlay.png"}
    if full:
        data.update(probs={k: round(v, 6) for k, v in cap.probs.items()}, scores=cap.gate, bundle_hash=cap.bundle_hash,
                    device_id=cap.device_id, note=cap.note, frame_sha256=cap.frame_sha256,
                    overlay_sha256=cap.overlay_sha256, utc_offset=cap.utc_offset)
    return data


def signature_state(signature: str) -> str:
    """'signed', 'signer not pinned', 'unsigned' or '' (kept before models were recorded) for the page."""
    if not signature:
        return ""
    return "unsigned" if signature == "UNSIGNED" else "signer not pinned" if signature.endswith("not pinned") else "signed"


class PageApp:
    """The WSGI application: `PageApp(poc, store_root, origin_hosts, secure)(environ, start_response)`."""

    def __init__(self, poc: PointOfCare, store_root: Path, hosts: set[str], secure: bool,
                 pairing: security.PairingCode):
        self.poc, self.store_root, self.hosts, self.secure = poc, Path(store_root), hosts, secure
        self.pairing = pairing
        self.sessions = security.Sessions(poc.cfg.web.session_hours * 3600)
        self.limit = security.RateLimit()
        self._store: CaptureStore | None = None
        self.routes: dict[tuple[str, str], tuple[Callable[[Request], Response], str]] = {
            ("GET", "/api/v1/session"): (self.session, "public"),
            ("POST", "/api/v1/pair"): (self.pair, "public"),
            ("POST", "/api/v1/logout"): (self.logout, "change"),
            ("GET", "/api/v1/latest"): (self.latest, "read"),
            ("GET", "/api/v1/live.jpg"): (self.live_jpeg, "read"),
            ("POST", "/api/v1/visit"): (self.visit, "change"),
            ("POST", "/api/v1/capture"): (self.capture, "change"),
            ("GET", "/api/v1/captures"): (self.captures, "read"),
            ("GET", "/api/v1/export"): (self.export, "read"),
            ("GET", "/api/v1/health"): (self.health, "read"),
        }

    # ---- WSGI ----

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        try:
            req = self._request(environ)
            resp = self._dispatch(req)
        except security.Refused as e:
            resp = error(e.status, e.message, [("Retry-After", str(e.retry_after))] if e.retry_after else None)
        except Exception:
            log.exception("page: %s %s failed", environ.get("REQUEST_METHOD"), environ.get("PATH_INFO"))
            resp = error(500, "internal error (see the board's log)")
        body = [resp.body] if isinstance(resp.body, bytes) else resp.body  # a TempFile: the server closes it
        headers = [("Content-Type", resp.content_type), *security.HEADERS.items(), *resp.headers]
        if resp.content_type == "application/json" or not resp.content_type.startswith(("text/css", "text/javascript")):
            headers.append(("Cache-Control", "no-store"))
        if isinstance(resp.body, bytes):
            headers.append(("Content-Length", str(len(resp.body))))
        start_response(f"{resp.status} {HTTPStatus(resp.status).phrase}", headers)
        return body

    def _request(self, environ: dict) -> Request:
        headers = {k[5:].replace("_", "-").lower(): v for k, v in environ.items() if k.startswith("HTTP_")}
        security.check_host(headers.get("host"), self.hosts)
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            raise security.Refused(400, "bad Content-Length") from None
        if length > BODY_MAX:
            raise security.Refused(413, f"request body over {BODY_MAX} bytes")
        body = environ["wsgi.input"].read(length) if length else b""
        query = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", ""), max_num_fields=20).items()}
        req = Request(environ["REQUEST_METHOD"], environ.get("PATH_INFO", "/"), query, headers, body,
                      environ.get("REMOTE_ADDR", ""))
        req.session = self.sessions.get(_cookie(headers.get("cookie", "")))
        return req

    def _dispatch(self, req: Request) -> Response:
        if not req.path.startswith("/api/"):
            return self.static(req)
        view, level = self._route(req)
        if level != "public" and req.session is None:
            raise security.Refused(401, "not paired: enter the code shown on the board's screen")
        if req.method != "GET":
            security.check_same_origin(req.headers, self._origin(req))
            if level == "change":
                security.check_csrf(req.session, req.headers)
        return view(req)

    def _route(self, req: Request) -> tuple[Callable[[Request], Response], str]:
        if (req.method, req.path) in self.routes:
            return self.routes[(req.method, req.path)]
        parts = req.path.split("/")  # '', 'api', 'v1', 'captures', UUID[, file]
        if (req.method == "GET" and parts[:4] == ["", "api", "v1", "captures"] and len(parts) in (5, 6)
                and _UUID.fullmatch(parts[4]) and (len(parts) == 5 or parts[5] in ("frame.png", "overlay.png"))):
            return (lambda r: self.capture_detail(r, parts[4], parts[5] if len(parts) == 6 else None)), "read"
        if any(path == req.path for _, path in self.routes):
            raise security.Refused(405, f"{req.method} not allowed here")
        raise security.Refused(404, "no such API path")

    def _origin(self, req: Request) -> str:
        return f"{'https' if self.secure else 'http'}://{req.headers.get('host', '')}"

    # ---- views ----

    def static(self, req: Request) -> Response:
        if req.method != "GET":
            raise security.Refused(405, "only GET here")
        name = "index.html" if req.path in ("/", "/index.html") else req.path.removeprefix("/static/")
        path = STATIC / name
        if "/" in name or not name or path.suffix not in STATIC_TYPES or not path.is_file():
            raise security.Refused(404, "not found")
        return Response(200, path.read_bytes(), STATIC_TYPES[path.suffix])

    def session(self, req: Request) -> Response:
        msgs = self.poc.msgs
        return as_json({"paired": req.session is not None, "csrf": req.session.csrf if req.session else None,
                        "language": msgs.language, "messages": msgs.table(),
                        "visit_required": self.poc.cfg.visits.required, "live_fps": self.poc.cfg.web.live_fps})

    def pair(self, req: Request) -> Response:
        self.limit.check(req.client)
        code = str(req.json().get("code", ""))[:64]
        if not self.pairing.redeem(code):
            self.limit.failed(req.client)
            log.warning("page: wrong pairing code from %s", req.client)
            raise security.Refused(403, "wrong or expired code: read the code on the board's screen again")
        s = self.sessions.create(req.client)
        log.info("page: paired %s", req.client)
        return as_json({"paired": True, "csrf": s.csrf},
                       headers=[("Set-Cookie", security.cookie(s, self.sessions.seconds, self.secure))])

    def logout(self, req: Request) -> Response:
        self.sessions.end(req.session.token)
        return as_json({"paired": False}, headers=[("Set-Cookie", security.clearing_cookie(self.secure))])

    def latest(self, req: Request) -> Response:
        if self.poc.live is None:
            raise security.Refused(503, "no live view on this board")
        try:
            after = int(req.query.get("after", "-1"))
        except ValueError:
            raise security.Refused(400, "after: expected a frame number") from None
        snap = self.poc.live.wait(after, LONG_POLL) if after >= 0 else self.poc.live.latest()
        if snap is None:
            return Response(204)
        return as_json(snap.result(self.poc.cfg.thresholds.min_confidence))

    def live_jpeg(self, req: Request) -> Response:
        try:
            seq = int(req.query["seq"]) if "seq" in req.query else None
        except ValueError:
            raise security.Refused(400, "seq: expected a frame number") from None
        got = self.poc.live.jpeg(seq) if self.poc.live is not None else None
        if got is None:
            return Response(204)
        return Response(200, got[1], "image/jpeg", [("X-Seq", str(got[0]))])

    def visit(self, req: Request) -> Response:
        text = str(req.json().get("visit", ""))[:200]
        if not text.strip():
            self.poc.visits.clear()
            return as_json({"visit": None})
        try:
            visit = self.poc.visits.set(text, "page")
        except VisitError as e:
            return as_json({"error": VISIT_INVALID, "detail": str(e)}, 400)
        return as_json({"visit": visit.id, "source": visit.source})

    def capture(self, req: Request) -> Response:
        text = str(req.json().get("visit") or "")[:200]
        try:
            visit = check_visit(text, self.poc.cfg.visits.pattern) if text.strip() else None
        except VisitError as e:
            return as_json({"error": VISIT_INVALID, "detail": str(e)}, 400)
        try:
            request = self.poc.request_capture(visit)
        except queue.Full:
            raise security.Refused(429, "captures are still being kept; try again") from None
        if not request.done.wait(CAPTURE_WAIT):
            raise security.Refused(503, "the camera loop did not keep the capture in time")
        if request.capture is None:
            raise security.Refused(409, request.error or "CAPTURE NOT SAVED")  # English: the page translates
        return as_json(capture_json(request.capture, full=True), 201)

    def captures(self, req: Request) -> Response:
        try:
            limit = max(1, min(LIST_MAX, int(req.query.get("limit", "100"))))
        except ValueError:
            raise security.Refused(400, "limit: expected a number") from None
        caps = self._list(req)
        return as_json({"total": len(caps), "captures": [capture_json(c) for c in reversed(caps[-limit:])]})

    def capture_detail(self, req: Request, uid: str, file: str | None) -> Response:
        store = self._open_store()
        caps = store.list(uid=uid) if store else []
        if not caps:
            raise security.Refused(404, "no such capture")
        cap = caps[0]
        try:
            files = store.read_checked(cap)
            intact = None
        except StoreError as e:
            files, intact = {}, str(e)
        if file is not None:
            rel = cap.frame_file if file == "frame.png" else cap.overlay_file
            if rel not in files:
                raise security.Refused(410, intact or "file missing")
            return Response(200, files[rel], "image/png")
        return as_json({**capture_json(cap, full=True), "intact": intact is None, "damage": intact})

    def export(self, req: Request) -> Response:
        from edge.record.export import export_zip

        store = self._open_store()
        if store is None:
            raise security.Refused(404, "no captures kept yet")
        self._list(req)  # checks the filters before any work
        tmp = Path(tempfile.mkdtemp(prefix="skinedge-page-export-"))
        name = "skinedge-" + "-".join(filter(None, (req.query.get("visit"), time.strftime("%Y%m%d-%H%M%S")))) + ".zip"
        try:
            export_zip(store, tmp / "export.zip", req.query.get("since") or None, visit=req.query.get("visit") or None,
                       until=req.query.get("until") or None, msgs=self.poc.msgs)
        except BaseException as e:
            shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(e, StoreError):
                raise security.Refused(400, str(e)) from None
            raise
        size = (tmp / "export.zip").stat().st_size
        return Response(200, TempFile(tmp, tmp / "export.zip"), "application/zip",
                        [("Content-Disposition", f'attachment; filename="{name}"'), ("Content-Length", str(size))])

    def health(self, req: Request) -> Response:
        return as_json(health.report(self.poc, self.store_root, self._open_store()))

    # ---- the store ----

    def _open_store(self) -> CaptureStore | None:
        """The capture store, opened read-side once it exists (the loop creates it at the first capture)."""
        if self._store is None and (self.store_root / DB_NAME).is_file():
            self._store = CaptureStore(self.store_root, create=False)
        return self._store

    def _list(self, req: Request) -> list[Capture]:
        store = self._open_store()
        try:
            return store.list(req.query.get("since") or None, req.query.get("visit") or None,
                              req.query.get("until") or None) if store else []
        except StoreError as e:
            raise security.Refused(400, str(e)) from None

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None


class TempFile:
    """A response body read from a file in chunks (an export may be larger than a Pi's free memory); the WSGI
    server calls close() when the response ends, which removes the file's folder."""

    CHUNK = 1 << 16

    def __init__(self, folder: Path, path: Path):
        self.folder, self._file = folder, open(path, "rb")  # noqa: SIM115 - closed in close()

    def __iter__(self):
        while chunk := self._file.read(self.CHUNK):
            yield chunk

    def close(self) -> None:
        self._file.close()
        shutil.rmtree(self.folder, ignore_errors=True)


def _cookie(header: str) -> str | None:
    try:
        jar = SimpleCookie(header)
    except CookieError:
        return None
    morsel = jar.get(security.COOKIE)
    return morsel.value if morsel else None
