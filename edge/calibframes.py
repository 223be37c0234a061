"""Raw frames kept for calibrating a bundle with this board's own camera and light (`skinedge capture --calib DIR
[--label CLASS]`): PNGs in DIR, or in DIR/CLASS for a labelled set. CLASS is one folder name, so nothing is
written outside DIR, and the folder is made (or refused) before the camera is opened."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from edge.record.durable import write_new


def calib_folder(base: Path, label: str | None) -> Path:
    """DIR or DIR/LABEL, made if missing; ValueError (one line) if LABEL is not a plain folder name or the folder
    cannot be made or written."""
    if label is not None and (label in ("", ".", "..") or any(c in label for c in "/\\\0")):
        raise ValueError(f"--label {label!r}: expected one folder name (a class such as 'nevus'), without '/' or '..'")
    folder = base / label if label else base
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"--calib {folder}: the folder cannot be made ({e.strerror or e})") from None
    if label and folder.resolve().parent != base.resolve():
        raise ValueError(f"--label {label!r}: {folder} leads outside {base} (a symlink)")
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"--calib {folder}: not a folder this user can write")
    return folder


def save_frames(folder: Path, frames: list[np.ndarray]) -> list[Path]:
    """Each RGB frame as the next free calib_NNNNN.png in `folder` (never over an existing file); ValueError (one
    line) when a file cannot be written."""
    saved: list[Path] = []
    index = len(list(folder.glob("calib_*.png")))
    for frame in frames:
        ok, png = cv2.imencode(".png", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        if not ok:
            raise ValueError(f"--calib {folder}: OpenCV could not encode a frame as PNG")
        while True:
            path = folder / f"calib_{index:05d}.png"
            index += 1
            try:
                if write_new(path, png.tobytes(), 0o644):
                    break
            except OSError as e:
                raise ValueError(f"--calib {path}: cannot be written ({e.strerror or e}); {len(saved)} frame(s) "
                                 "saved before it") from None
        saved.append(path)
    return saved
