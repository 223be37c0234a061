"""Ctrl-C as a flag the loop reads between frames.

Python's default SIGINT handler raises KeyboardInterrupt wherever the main thread happens to be. When that
is inside a finalizer (a `__del__` or weakref callback run by the garbage collector), CPython prints
"Exception ignored in ..." and drops the exception, so the loop would go on as if Ctrl-C had never been
pressed. A handler that only sets a flag cannot be lost that way.
"""

from __future__ import annotations

import signal
import threading


class CtrlC:
    """From construction until `restore()`: on the main thread, where SIGINT has Python's default handler,
    SIGINT sets `pressed` instead of raising KeyboardInterrupt; `restore()` puts the previous handler back."""

    def __init__(self) -> None:
        self.pressed = False
        self._previous = None
        if (threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
            self._previous = signal.signal(signal.SIGINT, self._handler)

    def _handler(self, signum, frame) -> None:
        self.pressed = True

    def restore(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None
