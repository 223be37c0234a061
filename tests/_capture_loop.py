"""Crash-test child: keep captures in a loop and acknowledge each one once add() has returned.

Usage: python tests/_capture_loop.py STORE_DIR SEED. Prints "OPEN" when the store is open, then
"ACK <uuid>" after every add(), flushed at once, until it is killed (tests/test_store.py sends SIGKILL).
`loop(root, seed, acks)` does the same into the file `acks`, each line in one write(), for children forked from a
forkserver that has imported the store already (no interpreter start per kill).
"""

from __future__ import annotations

import os
import sys

import numpy as np

from edge.record.store import CaptureStore

LABELS = ["monkeypox", "chickenpox", "measles", "normal"]


def main(root: str, seed: int, say=lambda line: print(line, flush=True)) -> None:
    rng = np.random.default_rng(seed)
    store = CaptureStore(root, device_id="crash-test")
    say("OPEN")
    while True:
        frame = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
        overlay = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
        cap = store.add(frame, overlay, rng.dirichlet(np.ones(len(LABELS))), LABELS, "crash-test-bundle")
        say(f"ACK {cap.uuid}")


def loop(root: str, seed: int, acks: str) -> None:
    """`main`, acknowledging into the file `acks`: a line is there in full only once add() returned."""
    fd = os.open(acks, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    main(root, seed, lambda line: os.write(fd, f"{line}\n".encode()))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
