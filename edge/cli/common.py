"""Helpers shared by the verbs."""

from __future__ import annotations

from pathlib import Path


def load_cfg(path: Path, overrides: dict):
    from edge.config import ConfigError, load_config

    try:
        return load_config(path, overrides)
    except ConfigError as e:
        raise SystemExit(f"skinedge: config error: {e}") from e
