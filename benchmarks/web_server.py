"""Which HTTP server for the board's page: memory it adds and the classification loop's frame rate with a viewer.

Each run is a fresh process running the real loop (`edge.pipeline.run`: the shipped demo bundle on LiteRT, its
clip looping, no screen) for a fixed number of frames. `none` is the page off; every other variant serves the live
feed (edge.web.live, fed by the loop) while one viewer in another process polls it as the page's script does
(newest result, then its JPEG, at `web.live_fps` = 10 per second). Variants:

- cheroot, waitress, wsgiref (the standard library's http.server, the baseline): the real page application
  (edge.web.app.PageApp: security checks, sessions, JSON), a session made for the viewer;
- flask+waitress, starlette+uvicorn, aiohttp: the two live endpoints written natively in each framework
  (no pairing or CSRF layer: lighter than the real application, so their figures are a lower bound).

RSS added = the process's resident memory at the end minus `none`'s, median over repeats run interleaved
(none, a, b, ..., none, a, b, ...) so load from other work hits every variant alike; FPS likewise.

    nice -n 10 python -m benchmarks.web_server [--frames 400] [--repeats 3] [--variants cheroot,waitress,...]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "edge" / "demo_assets"
VARIANTS = ("none", "cheroot", "waitress", "wsgiref", "flask+waitress", "starlette+uvicorn", "aiohttp")
INSTALL = {  # checked with `pip install --only-binary=:all:` into an emulated aarch64 Python 3.11 (README)
    "none": "-", "cheroot": "pure Python", "waitress": "pure Python (no TLS)", "wsgiref": "standard library (no TLS)",
    "flask+waitress": "pure Python (no TLS)", "starlette+uvicorn": "pure Python (h11)",
    "aiohttp": "aarch64 wheels (C extensions)",
}


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# ---- the board side (a child process) ----

def _serve(variant: str, poc, port_file: Path) -> object:
    """Start `variant` on a free loopback port serving poc's live feed; write 'port cookie' to port_file."""
    from edge.web import security

    feed = poc.live
    cookie = ""
    if variant in ("cheroot", "waitress", "wsgiref"):
        from edge.web.app import PageApp

        app = PageApp(poc, Path(poc.cfg.store.path), set(), False, security.PairingCode())
        session = app.sessions.create("127.0.0.1")
        cookie = f"{security.COOKIE}={session.token}"
    if variant == "cheroot":
        from cheroot.wsgi import Server

        server = Server(("127.0.0.1", 0), app, numthreads=8)
        server.prepare()
        port = server.bind_addr[1]
        threading.Thread(target=server.serve, daemon=True).start()
    elif variant == "waitress":
        from waitress.server import create_server

        server = create_server(app, host="127.0.0.1", port=0, threads=8)
        port = server.effective_port
        threading.Thread(target=server.run, daemon=True).start()
    elif variant == "wsgiref":
        from socketserver import ThreadingMixIn
        from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

        class Quiet(WSGIRequestHandler):
            def log_message(self, *args):
                pass

        class Threading(ThreadingMixIn, WSGIServer):
            daemon_threads = True

        server = make_server("127.0.0.1", 0, app, server_class=Threading, handler_class=Quiet)
        port = server.server_port
        threading.Thread(target=server.serve_forever, daemon=True).start()
    elif variant == "flask+waitress":
        from flask import Flask, Response, jsonify, request
        from waitress.server import create_server

        fl = Flask("bench")

        @fl.get("/api/v1/latest")
        def latest():
            snap = feed.wait(int(request.args.get("after", -1)), 2.0)
            return jsonify(snap.result(0.6)) if snap else Response(status=204)

        @fl.get("/api/v1/live.jpg")
        def live():
            got = feed.jpeg(int(request.args.get("seq", -1)))
            return Response(got[1], mimetype="image/jpeg") if got else Response(status=204)

        server = create_server(fl, host="127.0.0.1", port=0, threads=8)
        port = server.effective_port
        threading.Thread(target=server.run, daemon=True).start()
    elif variant == "starlette+uvicorn":
        import socket

        import uvicorn
        from starlette.applications import Starlette
        from starlette.responses import JSONResponse, Response
        from starlette.routing import Route

        def latest(request):  # sync endpoints: Starlette runs them in its thread pool
            snap = feed.wait(int(request.query_params.get("after", -1)), 2.0)
            return JSONResponse(snap.result(0.6)) if snap else Response(status_code=204)

        def live(request):
            got = feed.jpeg(int(request.query_params.get("seq", -1)))
            return Response(got[1], media_type="image/jpeg") if got else Response(status_code=204)

        st = Starlette(routes=[Route("/api/v1/latest", latest), Route("/api/v1/live.jpg", live)])
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        server = uvicorn.Server(uvicorn.Config(st, log_level="warning", lifespan="off"))
        threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True).start()
        while not server.started:
            time.sleep(0.01)
    elif variant == "aiohttp":
        import asyncio

        from aiohttp import web

        async def latest(request):
            snap = await asyncio.to_thread(feed.wait, int(request.query.get("after", -1)), 2.0)
            return web.json_response(snap.result(0.6)) if snap else web.Response(status=204)

        async def live(request):
            got = await asyncio.to_thread(feed.jpeg, int(request.query.get("seq", -1)))
            return web.Response(body=got[1], content_type="image/jpeg") if got else web.Response(status=204)

        ready, holder = threading.Event(), {}

        def loop_thread():
            loop = asyncio.new_event_loop()
            aio = web.Application()
            aio.add_routes([web.get("/api/v1/latest", latest), web.get("/api/v1/live.jpg", live)])
            runner = web.AppRunner(aio, access_log=None)
            loop.run_until_complete(runner.setup())
            site = web.TCPSite(runner, "127.0.0.1", 0)
            loop.run_until_complete(site.start())
            holder["port"] = site._server.sockets[0].getsockname()[1]
            ready.set()
            loop.run_forever()

        threading.Thread(target=loop_thread, daemon=True).start()
        ready.wait()
        port, server = holder["port"], None
    else:
        raise SystemExit(f"unknown variant {variant}")
    if cookie:
        app.hosts = {f"127.0.0.1:{port}"}
    port_file.write_text(f"{port} {cookie}")
    return server


def board(variant: str, frames: int, port_file: Path, result_file: Path) -> None:
    from edge.config import load_config
    from edge.pipeline import run
    from edge.pointofcare import PointOfCare

    cfg = load_config(DEMO / "demo.yaml", {"display.kind": "null", "display.path": None, "backend": "tflite",
                                           "source.loop": True, "threads": 1, "store.path": str(port_file.parent / "s")})
    poc = PointOfCare(cfg, live=variant != "none")
    if variant != "none":
        _serve(variant, poc, port_file)
    before = resource.getrusage(resource.RUSAGE_SELF)
    stats = run(cfg, frames=frames, poc=poc)
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) / max(1, stats.frames) * 1e3
    result_file.write_text(json.dumps({"fps": stats.fps, "rss_mb": rss_mb(), "cpu_ms": cpu}))
    os._exit(0)  # servers' worker threads may still hold the viewer's connection: end here, results are written


# ---- the viewer (another child process) ----

def viewer(port_file: Path, count_file: Path, fps: float) -> None:
    """Poll the newest result and its JPEG as the page's script does, at most `fps` per second, until killed."""
    import http.client

    while not port_file.exists() or not port_file.read_text():
        time.sleep(0.05)
    port, _, cookie = port_file.read_text().partition(" ")
    conn = http.client.HTTPConnection("127.0.0.1", int(port), timeout=10)
    headers = {"Host": f"127.0.0.1:{port}", "Cookie": cookie}
    seq, shown, t0 = -1, 0, None
    while True:
        try:
            seq, shown, t0 = _view_once(conn, headers, seq, shown, t0, count_file, fps)
        except (OSError, http.client.HTTPException):  # the board's run ended: the driver kills this process
            time.sleep(0.1)


def _view_once(conn, headers: dict, seq: int, shown: int, t0: float | None, count_file: Path, fps: float):
    start = time.monotonic()
    conn.request("GET", f"/api/v1/latest?after={seq}", headers=headers)
    resp = conn.getresponse()
    body = resp.read()
    if resp.status == 200:
        seq = json.loads(body)["seq"]
        conn.request("GET", f"/api/v1/live.jpg?seq={seq}", headers=headers)
        jpeg = conn.getresponse()
        if jpeg.status == 200 and jpeg.read()[:2] == b"\xff\xd8":
            shown += 1
            t0 = t0 or time.monotonic()
            tmp = count_file.with_suffix(".tmp")
            tmp.write_text(f"{shown} {time.monotonic() - t0:.3f}")
            tmp.replace(count_file)  # whole, never half written when the driver reads it
    time.sleep(max(0.0, 1.0 / fps - (time.monotonic() - start)))
    return seq, shown, t0


# ---- the driver ----

def one_run(variant: str, frames: int, tmp: Path) -> dict:
    tmp.mkdir(parents=True, exist_ok=True)
    port_file, result_file, count_file = tmp / "port", tmp / "result.json", tmp / "count"
    for f in (port_file, result_file, count_file):
        f.unlink(missing_ok=True)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    me = [sys.executable, "-m", "benchmarks.web_server"]
    view = None
    if variant != "none":
        view = subprocess.Popen([*me, "--viewer", str(port_file), str(count_file)], env=env, cwd=REPO)
    try:
        subprocess.run([*me, "--board", variant, str(frames), str(port_file), str(result_file)], env=env, cwd=REPO,
                       check=True)
    finally:
        if view is not None:
            view.kill()
            view.wait()
    out = json.loads(result_file.read_text())
    if count_file.exists():
        shown, seconds = count_file.read_text().split()
        out["viewer_fps"] = int(shown) / float(seconds) if float(seconds) > 0 else 0.0
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", type=int, default=400)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--board", nargs=4, help=argparse.SUPPRESS)
    p.add_argument("--viewer", nargs=2, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.board:
        board(a.board[0], int(a.board[1]), Path(a.board[2]), Path(a.board[3]))
        return 0
    if a.viewer:
        viewer(Path(a.viewer[0]), Path(a.viewer[1]), 10.0)
        return 0
    import tempfile

    variants = ["none", *[v for v in a.variants.split(",") if v != "none"]]
    runs: dict[str, list[dict]] = {v: [] for v in variants}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(a.repeats):
            for v in variants:
                got = one_run(v, a.frames, Path(tmp) / v)
                runs[v].append(got)
                print(f"repeat {r + 1}/{a.repeats} {v}: {json.dumps({k: round(x, 1) for k, x in got.items()})}",
                      flush=True)
    base_rss = statistics.median(x["rss_mb"] for x in runs["none"])
    base_fps = statistics.median(x["fps"] for x in runs["none"])
    print(f"\nload average {os.getloadavg()[0]:.2f}; {a.frames} frames per run, medians of {a.repeats} interleaved runs")
    base_cpu = statistics.median(x["cpu_ms"] for x in runs["none"])
    print("| server | install on aarch64 | RSS added (MB) | loop FPS | vs page off | CPU ms/frame (page off "
          f"{base_cpu:.2f}) | viewer FPS |")
    print("|---|---|---|---|---|---|---|")
    for v in variants:
        rss = statistics.median(x["rss_mb"] for x in runs[v])
        fps = statistics.median(x["fps"] for x in runs[v])
        cpu = statistics.median(x["cpu_ms"] for x in runs[v])
        view = [x["viewer_fps"] for x in runs[v] if "viewer_fps" in x]
        print(f"| {v} | {INSTALL[v]} | {rss - base_rss:+.1f} | {fps:.1f} | {fps / base_fps:.0%} | {cpu:.2f} "
              f"({cpu - base_cpu:+.2f}) | {statistics.median(view):.1f} |" if view else
              f"| {v} | {INSTALL[v]} | {rss - base_rss:+.1f} | {fps:.1f} | {fps / base_fps:.0%} | {cpu:.2f} | - |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
