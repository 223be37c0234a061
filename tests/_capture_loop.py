"""Crash-test child: keep captures in a loop and acknowledge each one once add() has returned.

Usage: python tests/_capture_loop.py STORE_DIR SEED. Prints "OPEN" when the store is open, then
"ACK <uuid>" after every add(), flushed at once, until it is killed (tests/test_store.py sends SIGKILL).
"""

from __future__ import annotations

import sys

import numpy as np

from edge.record.store import CaptureStore

LABELS = ["monkeypox", "chickenpox", "measles", "normal"]


def main(root: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    store = CaptureStore(root, device_id="crash-test")
    print("OPEN", flush=True)
    while True:
        frame = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
        overlay = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
        cap = store.add(frame, overlay, rng.dirichlet(np.ones(len(LABELS))), LABELS, "crash-test-bundle")
        print(f"ACK {cap.uuid}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
