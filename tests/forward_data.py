"""Capture stores for the forwarding tests and benchmark: real photographs (scikit-image's samples, cropped) as
frames, the board's own HUD renderer for the overlays, and a device config pointing at a test Orthanc."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from edge.record.store import CaptureStore

LABELS = ["monkeypox", "chickenpox", "measles", "normal"]
FRAME = 64  # px: small frames keep 1,000 captures quick; the encoder does not care about size
SCREEN = (192, 128)  # the overlay as a small panel renders it


def fill_store(root: Path, n: int, device_id: str = "test-board", seed: int = 0) -> CaptureStore:
    """A store of `n` captures of real photo crops, each with its rendered overlay and a gate record."""
    from calibration.photos import find_photos, photo_crops
    from edge.overlay import Prediction, render

    photos = find_photos()
    assert photos, "no sample photographs installed (scikit-image is in the dev extra)"
    crops, _ = photo_crops(photos, FRAME, per_photo=max(1, -(-n // len(photos))), seed=seed)
    rng = np.random.default_rng(seed)
    store = CaptureStore(root, device_id=device_id)
    for i in range(n):
        frame = crops[i % len(crops)]
        probs = rng.dirichlet(np.ones(len(LABELS)) * 0.5)
        cam = rng.random((7, 7)).astype(np.float32)
        overlay = render(frame, cam, Prediction(LABELS, probs), size=SCREEN, min_confidence=0.6, fps=None)
        gate = {"gate": "pass", "gate_sharpness": round(float(rng.uniform(50, 500)), 4),
                "gate_ood_score": round(float(rng.uniform(0, 3)), 4), "gate_ood_threshold": 3.5}
        store.add(frame, overlay, probs, LABELS, "f" * 64, gate=gate)
    return store


def write_config(folder: Path, store: Path, url: str, credentials: dict | None = None, **forward) -> Path:
    """A device config (null display, folder source) whose forward section names `url`; credentials 0600."""
    lines = ["source: {kind: folder, path: .}", "display: {kind: 'null'}", f"store: {{path: '{store}'}}",
             "forward:", f"  url: '{url}'"]
    if credentials is not None:
        cred = folder / "pacs.cred"
        fd = os.open(cred, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("".join(f"{k}: '{v}'\n" for k, v in credentials.items()))
        lines.append(f"  credentials: '{cred}'")
    lines += [f"  {k}: {v!r}" if isinstance(v, str) else f"  {k}: {v}" for k, v in forward.items()]
    cfg = folder / "device.yaml"
    cfg.write_text("\n".join(lines) + "\n")
    return cfg


def send_child(cfg: str) -> None:
    """The `captures send` CLI in a process forked from a forkserver that has imported everything already, so the
    SIGKILL loop costs no interpreter start per kill (tests/test_forward.py)."""
    import sys

    from edge.cli import main

    sys.exit(main(["captures", "send", "--config", cfg, "--priority", "normal"]))
