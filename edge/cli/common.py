"""Helpers shared by the verbs."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path


def load_cfg(path: Path, overrides: dict):
    from edge.config import ConfigError, load_config

    try:
        return load_config(path, overrides)
    except ConfigError as e:
        raise SystemExit(f"skinedge: config error: {e}") from e


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
