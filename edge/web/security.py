"""Who may use the page: pairing by a one-time code shown on the board's own screen, then a session cookie.

A listener on a medical device is an attack surface, so every request is checked here before it reaches a view:
- **Pairing.** The board's HUD shows an 8-digit code; a browser that POSTs it gets a session. The code is
  single-use and replaced after `CODE_SECONDS`; wrong codes are rate-limited per client address and in all
  (`PAIR_ATTEMPTS` per `PAIR_WINDOW` seconds), so guessing 10^8 codes is out of reach.
- **Sessions.** A random 256-bit token in a cookie that is HttpOnly, SameSite=Strict, Secure under TLS, with
  Max-Age; the server keeps its expiry (a stolen old cookie is refused) and at most `MAX_SESSIONS`.
- **CSRF.** Every state-changing request needs the session's CSRF token in `X-CSRF-Token` and, where the
  browser sends them, an Origin equal to the page's own and no cross-site `Sec-Fetch-Site`.
- **Host.** Requests whose Host header is not the board's own address are refused (DNS rebinding).
- **Headers.** A Content-Security-Policy that allows nothing but the page's own origin, no referrer, no framing,
  no MIME sniffing, no caching of API answers.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass

CODE_DIGITS = 8
CODE_SECONDS = 600.0  # a pairing code shown on the screen is replaced after this long, and after each use
PAIR_ATTEMPTS = 5  # wrong codes allowed per client address within PAIR_WINDOW ...
PAIR_ATTEMPTS_ALL = 20  # ... and from all clients together
PAIR_WINDOW = 60.0
MAX_SESSIONS = 16  # paired browsers at once; the oldest goes when a new one pairs
COOKIE = "skinedge_session"
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
           "X-Frame-Options": "DENY", "Cross-Origin-Opener-Policy": "same-origin",
           "Cross-Origin-Resource-Policy": "same-origin", "Permissions-Policy": "camera=(), microphone=(), geolocation=()"}


@dataclass
class Session:
    token: str
    csrf: str
    expires: float  # time.monotonic()
    client: str


class Refused(Exception):
    """A request the security layer refuses: HTTP status and one line for the client."""

    def __init__(self, status: int, message: str, retry_after: int | None = None):
        super().__init__(message)
        self.status, self.message, self.retry_after = status, message, retry_after


class PairingCode:
    """The one-time code the HUD shows (thread-safe)."""

    def __init__(self, clock=time.monotonic):
        self._clock = clock
        self._lock = threading.Lock()
        self._code, self._made = "", 0.0
        self._renew()

    def _renew(self) -> None:
        self._code = "".join(secrets.choice("0123456789") for _ in range(CODE_DIGITS))
        self._made = self._clock()

    def current(self) -> str:
        """The code to show, renewed when it has expired."""
        with self._lock:
            if self._clock() - self._made > CODE_SECONDS:
                self._renew()
            return self._code

    def shown(self) -> str:
        """'1234 5678': the code as the HUD prints it."""
        code = self.current()
        return f"{code[:4]} {code[4:]}"

    def redeem(self, typed: str) -> bool:
        """True (and a new code) if `typed` is the current code; spaces are ignored."""
        typed = "".join(str(typed).split())
        with self._lock:
            ok = self._clock() - self._made <= CODE_SECONDS and hmac.compare_digest(typed.encode(), self._code.encode())
            if ok:
                self._renew()
            return ok


class RateLimit:
    """At most `per_client` failures per client and `total` in all within `window` seconds."""

    def __init__(self, per_client: int = PAIR_ATTEMPTS, total: int = PAIR_ATTEMPTS_ALL, window: float = PAIR_WINDOW,
                 clock=time.monotonic):
        self.per_client, self.total, self.window, self._clock = per_client, total, window, clock
        self._failures: deque[tuple[float, str]] = deque()
        self._lock = threading.Lock()

    def check(self, client: str) -> None:
        """Refused(429) while `client` (or everyone) is over the limit."""
        with self._lock:
            now = self._clock()
            while self._failures and now - self._failures[0][0] > self.window:
                self._failures.popleft()
            mine = [t for t, c in self._failures if c == client]
            if len(mine) >= self.per_client or len(self._failures) >= self.total:
                oldest = mine[0] if len(mine) >= self.per_client else self._failures[0][0]
                raise Refused(429, "too many pairing attempts; wait and read the code on the board's screen again",
                              retry_after=max(1, int(self.window - (now - oldest)) + 1))

    def failed(self, client: str) -> None:
        with self._lock:
            self._failures.append((self._clock(), client))


class Sessions:
    """Paired browsers: token -> Session, expiring after `seconds`."""

    def __init__(self, seconds: float, clock=time.monotonic):
        self.seconds, self._clock = seconds, clock
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def create(self, client: str) -> Session:
        s = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(32), self._clock() + self.seconds, client)
        with self._lock:
            self._drop_expired()
            while len(self._sessions) >= MAX_SESSIONS:
                oldest = min(self._sessions.values(), key=lambda x: x.expires)
                del self._sessions[oldest.token]
            self._sessions[s.token] = s
        return s

    def get(self, token: str | None) -> Session | None:
        if not token:
            return None
        with self._lock:
            self._drop_expired()
            return self._sessions.get(token)

    def end(self, token: str) -> None:
        with self._lock:
            self._sessions.pop(token, None)

    def _drop_expired(self) -> None:
        now = self._clock()
        for token in [t for t, s in self._sessions.items() if s.expires <= now]:
            del self._sessions[token]


def cookie(session: Session, seconds: float, secure: bool) -> str:
    """The Set-Cookie value for a new session."""
    return (f"{COOKIE}={session.token}; Path=/; Max-Age={int(seconds)}; HttpOnly; SameSite=Strict"
            + ("; Secure" if secure else ""))


def clearing_cookie(secure: bool) -> str:
    return f"{COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict" + ("; Secure" if secure else "")


def check_host(host: str | None, allowed: set[str]) -> None:
    """Refused(421) unless the Host header names the board (its address, with the port) as configured."""
    if (host or "").lower() not in allowed:
        raise Refused(421, "this page is served only under the board's own address")


def check_same_origin(headers: dict[str, str], origin: str) -> None:
    """Refused(403) for a cross-site request: a foreign Origin, or Sec-Fetch-Site other than same-origin."""
    sent = headers.get("origin")
    if sent is not None and sent != origin:
        raise Refused(403, "cross-site request refused")
    site = headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        raise Refused(403, "cross-site request refused")


def check_csrf(session: Session, headers: dict[str, str]) -> None:
    if not hmac.compare_digest(headers.get("x-csrf-token", "").encode(), session.csrf.encode()):
        raise Refused(403, "missing or wrong CSRF token; reload the page")
