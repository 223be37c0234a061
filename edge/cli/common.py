"""Helpers shared by the verbs: the config loader and argument types that refuse odd values before any work."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path


class Parser(argparse.ArgumentParser):
    """argparse with its errors as one line (which verb, which option, what was wrong), exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def load_cfg(path: Path, overrides: dict):
    from edge.config import ConfigError, load_config

    try:
        return load_config(path, overrides)
    except ConfigError as e:
        print(f"skinedge: config error: {e}", file=sys.stderr)
        raise SystemExit(2) from e


# How to install what a verb needs, by setup.py extra.
INSTALL = {"convert": "on a workstation: pip install torch==2.14.1 torchvision==0.29.1 && pip install -e \".[convert]\" "
                      "in a skinedge checkout"}


@contextlib.contextmanager
def needs_extra(verb: str, extra: str = "convert") -> Iterator[None]:
    """Around a verb's imports: a module of an extra that is not installed (torch on a board) ends the command
    with one line saying which extra and how to install it, not a traceback."""
    try:
        yield
    except ModuleNotFoundError as e:
        print(f"skinedge {verb}: needs the {extra} extra, which is not installed here (no module {e.name!r}); "
              f"{INSTALL[extra]}", file=sys.stderr)
        raise SystemExit(2) from None


def bounded(lo: int, hi: int):
    """An argparse type: an integer in lo..hi."""
    def parse(text: str) -> int:
        return _int(text, lo, hi)
    parse.__name__ = f"integer {lo}..{hi}"
    return parse


def fraction(text: str) -> float:
    """A number in (0, 1] (a bar such as --mixed-precision's)."""
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], found {text[:40]!r}") from None
    if not 0 < x <= 1:  # also refuses nan
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], found {text[:40]}")
    return x


def count(text: str) -> int:
    """An integer >= 1 (frames, captures)."""
    return _int(text, 1, 10**9)


def given(text: str) -> str:
    """A value that must say something: an empty --display or --source would silently mean the config's own (whose
    relative paths resolve beside the config: for the shipped demo.yaml, inside the installed package)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a value, found an empty string")
    return text


def non_negative(text: str) -> int:
    return _int(text, 0, 10**9)


def threads(text: str) -> int:
    """A thread count within 1..4 x cores (edge.backends.cpu); above the cores is allowed, with a warning later."""
    from edge.backends.cpu import check_threads

    try:
        n = int(text)
        check_threads(n)
    except ValueError as e:
        why = str(e).removeprefix("threads: ") if text.strip().lstrip("-").isdigit() else f"found {text[:40]!r}"
        raise argparse.ArgumentTypeError(why) from None
    return n


def _int(text: str, lo: int, hi: int) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, found {text[:40]!r}") from None
    if not lo <= n <= hi:
        raise argparse.ArgumentTypeError(f"expected an integer in {lo}..{hi}, found {text[:40]}")
    return n


def warn(line: str | None) -> None:
    if line:
        print(line, file=sys.stderr, flush=True)
