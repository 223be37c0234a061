"""Bounded per-frame statistics: a window holds at most its size however many frames pass through it."""

from __future__ import annotations

import numpy as np
import pytest

from edge.pipeline import Stats
from edge.stats import WINDOW, Window, percentiles


def test_window_keeps_the_newest_values_only():
    w = Window(4)
    for v in range(10):
        w.append(float(v))
    assert len(w) == 4 and w.count == 10
    assert w.last().tolist() == [6.0, 7.0, 8.0, 9.0]
    assert w.last(2).tolist() == [8.0, 9.0]
    assert w.last(100).tolist() == [6.0, 7.0, 8.0, 9.0]
    assert w.median() == 7.5 and w.median(3) == 8.0


def test_empty_window_and_bad_size():
    assert Window().median() == 0.0 and len(Window().last()) == 0
    with pytest.raises(ValueError, match="size must be >= 1"):
        Window(0)


def test_pipeline_stats_are_bounded():
    """Every per-frame record of the loop is a Window: a day of frames keeps WINDOW values each."""
    stats = Stats()
    windows = [*stats.stage_ms.values(), stats.wait_capture_ms, stats.wait_presenter_ms]
    for i in range(3 * WINDOW):
        for w in windows:
            w.append(float(i))
    assert all(len(w) == WINDOW and w.count == 3 * WINDOW for w in windows)
    assert stats.median_ms()["infer"] == float(np.median(np.arange(2 * WINDOW, 3 * WINDOW)))
    assert "median ms" in stats.summary()


def test_percentiles():
    p = percentiles(range(1, 101))
    assert p["min"] == 1 and p["max"] == 100 and p["p50"] == 50.5 and p["mean"] == 50.5
    assert 90 < p["p90"] < 91 and 99 < p["p99"] < 100
