"""Synthetic frames that are not skin lesions, for measuring the out-of-distribution gate.

What a camera in a clinic sees between patients: a featureless skin-coloured field (a skin-toned wall or
cloth, or skin filling the frame out of focus: the synthetic `normal` class is textured skin and stays in
distribution), a solid colour, sensor noise, and printed text. Every frame depends only on (seed, index).
"""

from __future__ import annotations

import cv2
import numpy as np

from calibration.synthetic import _TONES

KINDS = ("blank_skin", "solid", "noise", "text")
_WORDS = ("patient", "clinic", "form", "name", "date", "2026", "ward", "notes", "dose", "mg", "A4", "page")


def _blank_skin(rng: np.random.Generator, s: int) -> np.ndarray:
    tone = _TONES[rng.integers(len(_TONES))] * rng.uniform(0.9, 1.1, 3)
    ramp = np.linspace(-1, 1, s, dtype=np.float32)
    gain = 1 + rng.uniform(-0.15, 0.15) * ramp[None, :] + rng.uniform(-0.15, 0.15) * ramp[:, None]
    return tone[None, None, :] * gain[..., None]


def _solid(rng: np.random.Generator, s: int) -> np.ndarray:
    return np.broadcast_to(rng.uniform(0, 255, 3), (s, s, 3)).astype(np.float32)


def _noise(rng: np.random.Generator, s: int) -> np.ndarray:
    cell = int(rng.choice([1, 2, 4, 8]))  # from per-pixel noise to coarse blocks
    grid = rng.uniform(0, 255, (max(1, s // cell), max(1, s // cell), 3)).astype(np.float32)
    return cv2.resize(grid, (s, s), interpolation=cv2.INTER_NEAREST)


def _text(rng: np.random.Generator, s: int) -> np.ndarray:
    paper = rng.uniform(200, 255) * rng.uniform(0.92, 1.0, 3)
    img = np.empty((s, s, 3), np.uint8)
    img[:] = paper.astype(np.uint8)
    scale = s / 224 * rng.uniform(0.5, 0.9)
    ink = tuple(float(v) for v in rng.uniform(0, 80, 3))
    y = int(rng.uniform(10, 30) * s / 224)
    while y < s:
        words = " ".join(rng.choice(_WORDS, int(rng.integers(2, 6))))
        cv2.putText(img, words, (int(rng.uniform(0, 20) * s / 224), y), cv2.FONT_HERSHEY_SIMPLEX, scale, ink,
                    max(1, round(scale * 1.5)), cv2.LINE_AA)
        y += int(30 * scale + 6)
    return img.astype(np.float32)


_MAKERS = {"blank_skin": _blank_skin, "solid": _solid, "noise": _noise, "text": _text}


def frames(n_per_kind: int, size: int, seed: int = 0, kinds: tuple[str, ...] = KINDS) -> tuple[np.ndarray, np.ndarray]:
    """(images (N, size, size, 3) uint8 RGB, kind index (N,) into `kinds`), `n_per_kind` of each kind, with a
    little sensor noise on every frame as a camera would add."""
    unknown = [k for k in kinds if k not in _MAKERS]
    if unknown or n_per_kind < 1 or size < 16:
        raise ValueError(f"need kinds from {KINDS}, n_per_kind >= 1 and size >= 16; got {kinds}, {n_per_kind}, {size}")
    out = np.empty((len(kinds) * n_per_kind, size, size, 3), np.uint8)
    for k, kind in enumerate(kinds):
        for i in range(n_per_kind):
            rng = np.random.default_rng([seed, KINDS.index(kind), i])
            img = _MAKERS[kind](rng, size) + rng.standard_normal((size, size, 3)).astype(np.float32) * rng.uniform(1, 4)
            out[k * n_per_kind + i] = np.clip(img + 0.5, 0, 255).astype(np.uint8)
    return out, np.repeat(np.arange(len(kinds)), n_per_kind)
