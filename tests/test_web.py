"""The page's server and API over real HTTP(S) against a running board (tests/_board.py): pairing, sessions, CSRF,
Host and Origin checks, rate limiting, headers, capture with a visit, review, export, health, TLS."""

from __future__ import annotations

import http.client
import io
import json
import re
import ssl
import zipfile

import cv2
import numpy as np
import pytest

from edge.overlay import hud
from edge.record.zipcheck import verify_zip
from edge.web import security
from edge.web.app import STATIC
from edge.web.tls import fingerprint, make_certificate
from tests._board import Board, Client, board_config


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    # forwarding configured (nothing sends in this process: the forwarder is its own service), so health counts unsent
    b = Board(board_config(tmp_path_factory.mktemp("web"), **{"forward.url": "https://127.0.0.1:9/dicom-web"}))
    b.wait_frames(3)
    yield b
    b.close()


@pytest.fixture
def client(board):
    c = Client(board)
    assert c.pair(board.page.pairing.current())[0] == 200
    return c


def test_unpaired_requests_are_refused_and_pairing_gives_a_strict_cookie(board):
    c = Client(board)
    for path in ("/api/v1/health", "/api/v1/latest", "/api/v1/captures", "/api/v1/live.jpg", "/api/v1/export"):
        status, headers, _ = c.request("GET", path)
        assert status == 401, path
        assert headers["content-security-policy"] == security.CSP and headers["x-frame-options"] == "DENY"
    status, session = c.json("GET", "/api/v1/session")
    assert status == 200 and session["paired"] is False and session["csrf"] is None
    code = board.page.pairing.current()
    assert len(code) == 8 and code.isdigit()
    status, headers, data = c.request("POST", "/api/v1/pair", {"code": f"{code[:4]} {code[4:]}"},
                                      {"Origin": f"http://127.0.0.1:{board.page.port}"})
    assert status == 200, data
    attrs = [a.strip() for a in headers["set-cookie"].split(";")]
    assert {"HttpOnly", "SameSite=Strict", "Path=/"} <= set(attrs)
    assert f"Max-Age={int(board.cfg.web.session_hours * 3600)}" in attrs and "Secure" not in attrs  # plain HTTP
    c.cookie, c.csrf = attrs[0], json.loads(data)["csrf"]
    assert c.json("GET", "/api/v1/health")[0] == 200
    assert board.page.pairing.current() != code  # single use: the screen shows a new code
    assert Client(board).pair(code)[0] == 403


def test_pairing_is_rate_limited(tmp_path):
    b = Board(board_config(tmp_path))
    try:
        c = Client(b)
        wrong = "0" * 8 if b.page.pairing.current() != "0" * 8 else "1" * 8
        statuses = [c.pair(wrong)[0] for _ in range(security.PAIR_ATTEMPTS)]
        assert statuses == [403] * security.PAIR_ATTEMPTS
        status, headers, _ = c.request("POST", "/api/v1/pair", {"code": b.page.pairing.current()},
                                       {"Origin": f"http://127.0.0.1:{b.page.port}"})
        assert status == 429 and int(headers["retry-after"]) > 0  # even the right code waits now
    finally:
        b.close()


def test_state_changes_need_csrf_and_the_same_origin(board, client):
    origin = f"http://127.0.0.1:{board.page.port}"
    body = {"visit": "V-2026-0100"}
    assert client.json("POST", "/api/v1/visit", body, {"Origin": origin})[0] == 403  # no CSRF token
    assert client.json("POST", "/api/v1/visit", body, {"X-CSRF-Token": "x" * 43, "Origin": origin})[0] == 403
    for cross in ({"Origin": "http://evil.example"}, {"Origin": origin, "Sec-Fetch-Site": "cross-site"}):
        status, data = client.json("POST", "/api/v1/visit", body, {"X-CSRF-Token": client.csrf, **cross})
        assert status == 403 and data["error"] == "cross-site request refused"
    assert board.poc.visits.current is None or board.poc.visits.current.id != "V-2026-0100"
    status, data = client.post("/api/v1/visit", body)
    assert status == 200 and data == {"visit": "V-2026-0100", "source": "page"}
    assert board.poc.visits.current.id == "V-2026-0100"
    status, data = client.post("/api/v1/visit", {"visit": "Jane Doe"})  # a name is not a visit ID
    assert status == 400 and data["error"].startswith("Not a valid visit ID") and "visits.pattern" in data["detail"]
    assert client.post("/api/v1/visit", {"visit": ""}) == (200, {"visit": None})


def test_foreign_host_header_is_refused(board, client):
    """DNS rebinding: a page on evil.example whose name resolves to the board must not reach the API."""
    status, data = client.json("GET", "/api/v1/health", headers={"Host": f"evil.example:{board.page.port}"})
    assert status == 421 and "board's own address" in data["error"]
    assert client.json("GET", "/api/v1/health", headers={"Host": f"localhost:{board.page.port}"})[0] == 200


def test_static_page_has_no_external_url():
    for f in STATIC.iterdir():
        text = f.read_text()
        assert not re.search(r"(https?:)?//[a-z0-9]", text, re.IGNORECASE), f"{f.name} names an external URL"


def test_hud_shows_the_pairing_code(board):
    lines = board.poc.pairing()
    assert lines == [f"Page 127.0.0.1:{board.page.port}", f"Code {board.page.pairing.shown()}"]
    for size in ((320, 240), (480, 320), (800, 480), (480, 800)):  # shown whole on every panel we ship for
        layout = hud(None, size, 0.6, None, footer=[(line, (0, 0, 0)) for line in [*lines, "TLS " + "AB:" * 7 + "CD"]])
        shown = "".join(t.text for t in layout.texts)
        assert ".." not in shown and all(line.replace(" ", "") in shown.replace(" ", "") for line in lines), shown
        assert all(t.box[0] + t.box[2] <= size[0] for t in layout.texts)


def test_live_result_and_jpeg(board, client):
    status, first = client.json("GET", "/api/v1/latest")
    assert status == 200 and len(first["top"]) == 3 and first["gate"]
    status, later = client.json("GET", f"/api/v1/latest?after={first['seq']}")
    assert status == 200 and later["seq"] > first["seq"]  # waited for a newer frame
    status, headers, data = client.request("GET", "/api/v1/live.jpg")
    assert status == 200 and headers["content-type"] == "image/jpeg" and int(headers["x-seq"]) >= later["seq"]
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None and max(image.shape[:2]) <= 480


def test_capture_with_a_visit_review_and_export(board, client, tmp_path):
    before = client.json("GET", "/api/v1/captures?visit=V-2026-0200")[1]["total"]
    status, cap = client.post("/api/v1/capture", {"visit": "V-2026-0200"})
    assert status == 201, cap
    assert cap["visit"] == "V-2026-0200" and cap["model"]["name"] == "demo-micro_mpoxnet-synthetic"
    assert cap["signature"] == "unsigned" and cap["model"]["signature"] == "UNSIGNED"
    listed = client.json("GET", "/api/v1/captures?visit=V-2026-0200")[1]
    assert listed["total"] == before + 1 and listed["captures"][0]["uuid"] == cap["uuid"]
    status, detail = client.json("GET", f"/api/v1/captures/{cap['uuid']}")
    assert status == 200 and detail["intact"] and abs(sum(detail["probs"].values()) - 1) < 1e-4
    assert detail["scores"]["gate"] == detail["gate"] and "gate_sharpness" in detail["scores"]
    for name in ("frame.png", "overlay.png"):
        status, headers, data = client.request("GET", f"/api/v1/captures/{cap['uuid']}/{name}")
        assert status == 200 and headers["content-type"] == "image/png" and data[:4] == b"\x89PNG"
    assert client.json("GET", "/api/v1/captures/00000000-0000-0000-0000-000000000000")[0] == 404
    assert client.json("GET", "/api/v1/captures?since=yesterday")[0] == 400
    status, headers, data = client.request("GET", "/api/v1/export?visit=V-2026-0200")
    assert status == 200 and headers["content-type"] == "application/zip"
    assert 'filename="skinedge-V-2026-0200-' in headers["content-disposition"]
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert {"index.csv", "README.txt", "index.html", "chain.jsonl", "VERIFY.txt"} <= set(zf.namelist())
        assert "V-2026-0200" in zf.read("index.csv").decode() and cap["uuid"] in zf.read("index.html").decode()
    (tmp_path / "page.zip").write_bytes(data)
    audit = verify_zip(tmp_path / "page.zip")  # what the reviewer runs: the page's export checks out
    assert audit.problems == [] and audit.count == listed["total"]
    forged = tmp_path / "forged.zip"  # the same ZIP with one visit changed in the page a doctor reads
    with zipfile.ZipFile(io.BytesIO(data)) as zf, zipfile.ZipFile(forged, "w") as out:
        for item in zf.infolist():
            text = zf.read(item)
            out.writestr(item, text.replace(b"V-2026-0200", b"V-2026-0201") if item.filename == "index.html" else text)
    assert [p.text for p in verify_zip(forged).problems] == [
        "index.html: changed (differs from what the signed records say)"]


def test_health(board, client):
    status, h = client.json("GET", "/api/v1/health")
    assert status == 200 and h["state"] == "running"
    assert h["model"]["model"] == "demo-micro_mpoxnet-synthetic" and "self-test PASS" in h["ready"]
    assert h["warning"] == "UNSIGNED MODEL"  # the demo bundle runs only because its config says allow_unsigned
    assert h["fps"] > 0 and h["free_disk_bytes"] > 0 and h["backend"] == "tflite"
    assert h["kept"] == board.store._store.count() and h["unsent"] == h["kept"]  # nothing has been forwarded


def test_visit_required_refuses_a_capture_without_one(tmp_path):
    b = Board(board_config(tmp_path, **{"visits.required": True}))
    try:
        c = Client(b)
        c.pair(b.page.pairing.current())
        b.wait_frames(2)
        status, data = c.post("/api/v1/capture", {})
        assert status == 409 and data["error"] == "VISIT REQUIRED - scan the patient card"
        assert not (tmp_path / "store" / "captures.db").exists() or b.store._store.count() == 0
        status, cap = c.post("/api/v1/capture", {"visit": "V-2026-0300"})
        assert status == 201 and cap["visit"] == "V-2026-0300"
    finally:
        b.close()


def test_sessions_expire_and_are_bounded():
    now = [0.0]
    sessions = security.Sessions(60, clock=lambda: now[0])
    s = sessions.create("a")
    assert sessions.get(s.token) is s
    now[0] = 61
    assert sessions.get(s.token) is None
    tokens = [sessions.create(str(i)).token for i in range(security.MAX_SESSIONS + 3)]
    assert sessions.get(tokens[0]) is None and sessions.get(tokens[-1]) is not None


def test_pairing_code_expires():
    now = [0.0]
    code = security.PairingCode(clock=lambda: now[0])
    first = code.current()
    now[0] = security.CODE_SECONDS + 1
    assert not code.redeem(first) and code.current() != first


def test_tls_page_with_the_fingerprint_on_the_hud(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    fp = make_certificate(cert, key, "127.0.0.1")
    assert fp == fingerprint(cert) and len(fp) == 95 and oct(key.stat().st_mode)[-3:] == "600"
    b = Board(board_config(tmp_path, **{"web.tls_cert": str(cert), "web.tls_key": str(key)}))
    try:
        assert b.page.url.startswith("https://")
        assert b.poc.pairing()[2] == f"TLS {fp[:23]}"
        ctx = ssl.create_default_context(cafile=str(cert))  # the browser, once the user accepted the certificate
        conn = http.client.HTTPSConnection("127.0.0.1", b.page.port, context=ctx, timeout=10)
        conn.request("POST", "/api/v1/pair", body=json.dumps({"code": b.page.pairing.current()}),
                     headers={"Origin": f"https://127.0.0.1:{b.page.port}", "Content-Type": "application/json"})
        resp = conn.getresponse()
        assert resp.status == 200 and "; Secure" in resp.getheader("Set-Cookie")
        conn.close()
        plain = http.client.HTTPConnection("127.0.0.1", b.page.port, timeout=10)
        with pytest.raises((http.client.HTTPException, ConnectionError, OSError)):
            plain.request("GET", "/api/v1/session")
            plain.getresponse().read()
        plain.close()
    finally:
        b.close()
