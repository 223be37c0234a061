"""Bounded per-frame statistics: a service runs for months, so nothing it records may grow per frame.

`Window` keeps the newest `size` values of a per-frame measurement (a rolling window: medians and
percentiles describe the recent past, which is what a HUD or a benchmark's steady state wants) plus a
running count, so memory is fixed however long the loop runs. `percentiles` summarises any sample.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

import numpy as np

WINDOW = 2048  # frames: over a minute at 30 FPS, 16 KiB per window as floats


class Window:
    """The newest `size` values appended (older ones fall out) and how many were appended in all."""

    def __init__(self, size: int = WINDOW):
        if size < 1:
            raise ValueError(f"Window: size must be >= 1, found {size}")
        self._values: deque[float] = deque(maxlen=size)
        self.count = 0

    def append(self, value: float) -> None:
        self._values.append(value)
        self.count += 1

    def __len__(self) -> int:
        return len(self._values)

    def last(self, n: int | None = None) -> np.ndarray:
        """The newest n values still held (all held values when n is None), oldest first."""
        values = np.fromiter(self._values, np.float64, len(self._values))
        return values if n is None else values[max(0, len(values) - n):]

    def median(self, n: int | None = None) -> float:
        """Median of the newest n held values; 0.0 when there are none."""
        values = self.last(n)
        return float(np.median(values)) if len(values) else 0.0


def percentiles(ms: Iterable[float]) -> dict[str, float]:
    """min, p50, p90, p99, max and mean of a sample (e.g. latencies in ms)."""
    a = np.asarray(list(ms), np.float64)
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    return {"min": float(a.min()), "p50": float(p50), "p90": float(p90), "p99": float(p99),
            "max": float(a.max()), "mean": float(a.mean())}
