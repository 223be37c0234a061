"""systemd integration: sd_notify over $NOTIFY_SOCKET, and a watchdog fed only by processed frames.

The protocol is one datagram of newline-separated KEY=VALUE lines to an AF_UNIX socket, so it is
written here directly rather than pulling in a dependency. With `Type=notify` and `WatchdogSec=`,
systemd waits for READY=1 before calling the unit started, and restarts it when WATCHDOG=1 stops
arriving: pinging only while frames flow turns a wedged camera or a hung backend into a restart.
"""

from __future__ import annotations

import math
import os
import socket
import sys
import time
from collections.abc import Callable

SEND_TIMEOUT = 1.0  # seconds a READY/STATUS/STOPPING send may wait for room in systemd's queue


class Notifier:
    """sd_notify client; every method is a no-op when there is no notify socket (run by hand, tests)."""

    def __init__(self, socket_path: str | None = None):
        path = socket_path if socket_path is not None else os.environ.get("NOTIFY_SOCKET", "")
        self._addr: str | None = None
        self._sock: socket.socket | None = None
        if path.startswith("@"):  # abstract namespace: a leading NUL byte instead of '@'
            self._addr = "\0" + path[1:]
        elif path.startswith("/"):
            self._addr = path
        elif path:  # e.g. systemd 253's vsock: form, only used inside VMs
            print(f"skinedge: NOTIFY_SOCKET={path!r} is not a Unix socket path; systemd notifications are off",
                  file=sys.stderr)
        if self._addr is not None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.setblocking(False)

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def send(self, *fields: str, wait: bool = True) -> bool:
        """Send KEY=VALUE fields in one datagram; False if disabled or the send failed (never raises).

        The kernel queues only a few datagrams per socket; when systemd's is full, a send retries for at
        most SEND_TIMEOUT seconds, or not at all with wait=False: the frame loop never hangs on its own
        watchdog.
        """
        if self._sock is None:
            return False
        data = "\n".join(fields).encode()
        deadline = time.monotonic() + (SEND_TIMEOUT if wait else 0.0)
        while True:
            try:
                self._sock.sendto(data, self._addr)
                return True
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    return False
                time.sleep(0.01)
            except OSError:  # systemd gone or restarting: losing one message must not stop the loop
                return False

    def ready(self, status: str = "") -> bool:
        return self.send("READY=1", *([_status(status)] if status else []))

    def status(self, text: str) -> bool:
        return self.send(_status(text))

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1", wait=False)  # a dropped ping is replaced by the next one

    def stopping(self) -> bool:
        return self.send("STOPPING=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _status(text: str) -> str:
    return "STATUS=" + " ".join(text.split())  # one line: a newline would start a new field


def watchdog_interval() -> float | None:
    """Seconds between WATCHDOG=1 pings: half of $WATCHDOG_USEC, as sd_watchdog_enabled(3) advises.

    None when the watchdog is off, or when $WATCHDOG_PID names another process (the variables were
    inherited from a parent that systemd watches, not meant for us).
    """
    usec = os.environ.get("WATCHDOG_USEC", "").strip()
    if not usec:
        return None
    pid = os.environ.get("WATCHDOG_PID", "").strip()
    if pid:
        if not pid.isdigit():
            raise ValueError(f"WATCHDOG_PID: expected a process id, found {pid!r}")
        if int(pid) != os.getpid():
            return None
    if not usec.isdigit() or int(usec) == 0:
        raise ValueError(f"WATCHDOG_USEC: expected a positive number of microseconds, found {usec!r}")
    return int(usec) / 2e6


class FrameWatchdog:
    """Feeds systemd's watchdog from the frame loop: WATCHDOG=1 at most every `interval` seconds.

    A frame counts as flow only if it came within `stall_after` seconds of the previous one (or of
    start-up): a camera that delivers a frame now and then after long gaps is stalled, not flowing,
    and with no pings systemd restarts the service `WatchdogSec` later.
    """

    def __init__(self, notifier: Notifier, interval: float, stall_after: float,
                 clock: Callable[[], float] = time.monotonic):
        if not (interval > 0 and stall_after > 0):
            raise ValueError(f"FrameWatchdog: interval and stall_after must be > 0, found {interval}, {stall_after}")
        self.notifier, self.interval, self.stall_after, self.clock = notifier, interval, stall_after, clock
        self._last_frame = clock()
        self._last_ping = -math.inf
        self.pings = 0

    def frame(self) -> None:
        now = self.clock()
        flowing = now - self._last_frame <= self.stall_after
        self._last_frame = now
        if flowing and now - self._last_ping >= self.interval:
            self._last_ping = now
            if self.notifier.watchdog():
                self.pings += 1
