"""The page's server: cheroot (CherryPy's pure-Python WSGI server) on the configured address only, in threads.

cheroot was chosen by measurement (benchmarks/web_server.py, benchmarks/README.md "The page's server"): least
memory added among the servers that do TLS themselves, pure Python (installs on a Pi Zero 2 W without a
compiler), and the classification loop keeps its frame rate with a viewer connected. It listens only when
`web.enabled` is true, on `web.address` (127.0.0.1 by default) and `web.port`; with `web.tls_cert`/`tls_key`
it speaks HTTPS only, and the HUD shows the certificate's fingerprint so a user can check it in the browser.
"""

from __future__ import annotations

import ipaddress
import logging
import threading

from edge.pointofcare import PointOfCare
from edge.web import WebError, security, tls
from edge.web.app import PageApp

log = logging.getLogger(__name__)
THREADS = 8  # request threads: a viewer holds one while it waits for the next frame (edge.web.app.LONG_POLL)


class PageServer:
    def __init__(self, poc: PointOfCare, store_root: str):
        from cheroot.wsgi import Server

        cfg = poc.cfg.web
        self.poc, self.cfg = poc, cfg
        self.secure = cfg.tls_cert is not None
        self.fingerprint = tls.fingerprint(cfg.tls_cert) if self.secure else None
        self.pairing = security.PairingCode()
        self._store_root = store_root
        self.app: PageApp | None = None
        self._server = Server((cfg.address, cfg.port), self._wsgi, numthreads=THREADS, server_name="skinedge",
                              timeout=10, shutdown_timeout=2)
        if self.secure:
            from cheroot.ssl.builtin import BuiltinSSLAdapter

            try:
                self._server.ssl_adapter = BuiltinSSLAdapter(cfg.tls_cert, cfg.tls_key)
            except (OSError, ValueError) as e:
                raise WebError(f"web.tls_cert/tls_key: cannot load {cfg.tls_cert} / {cfg.tls_key}: {e}") from e
        self._thread: threading.Thread | None = None

    def _wsgi(self, environ, start_response):
        return self.app(environ, start_response)

    @property
    def port(self) -> int:
        return self._server.bind_addr[1]

    @property
    def url(self) -> str:
        return f"{'https' if self.secure else 'http'}://{_host(self.cfg.address)}:{self.port}/"

    def start(self) -> None:
        """Bind (WebError if the address cannot be used), then serve on a thread; the HUD shows the code."""
        try:
            self._server.prepare()
        except OSError as e:
            raise WebError(f"web: cannot listen on {self.cfg.address} port {self.cfg.port}: {e.strerror or e}") from e
        self.app = PageApp(self.poc, self._store_root, allowed_hosts(self.cfg.address, self.port), self.secure,
                           self.pairing)
        self.poc.pairing = self.hud_lines
        self._thread = threading.Thread(target=self._server.serve, name="page-server", daemon=True)
        self._thread.start()
        log.info("page on %s (pair with the code on the screen)%s", self.url,
                 f"; TLS certificate SHA-256 {self.fingerprint}" if self.fingerprint else "")

    def hud_lines(self) -> list[str]:
        msgs = self.poc.msgs
        lines = [msgs.hud("Page {address}", address=f"{_host(self.cfg.address)}:{self.port}"),
                 msgs.hud("Code {code}", code=self.pairing.shown())]
        if self.fingerprint:  # the first 8 of its 32 bytes: enough to tell a stranger's certificate apart
            lines.append(msgs.hud("TLS {fingerprint}", fingerprint=self.fingerprint[:23]))
        return lines

    def stop(self) -> None:
        self.poc.pairing = list
        self._server.stop()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.app is not None:
            self.app.close()


def _host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def allowed_hosts(address: str, port: int) -> set[str]:
    """Host header values the page answers to: its address with the port (and localhost for a loopback one)."""
    names = {_host(address)}
    if ipaddress.ip_address(address).is_loopback:
        names.add("localhost")
    return {f"{name}:{port}" for name in names}
