"""Bundle + backend -> probabilities and Grad-CAM for one model input.

A bundle is a weighted list of members (one for a single model): probabilities are the weighted average
of the members' softmaxes, and the Grad-CAM map the weighted average of the members' maps for the
ensemble's top class.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from edge import gradcam
from edge.backends import open_backend, resolve
from edge.gates import Gates, Verdict
from edge.trust.bundle import Bundle


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max())
    return e / e.sum()


@dataclass
class Result:
    probs: np.ndarray  # (K,)
    logits: np.ndarray  # (members, K)
    cam: np.ndarray | None  # (h, w) in [0, 1]
    target: int
    member_ms: list[float]  # inference time per member
    infer_ms: float
    cam_ms: float
    verdict: Verdict | None = None  # the gates' outcome, when the caller gave gates


class Classifier:
    """Runs every member of a bundle on one backend kind."""

    def __init__(self, bundle: Bundle, backend: str = "auto", threads: int = 1, precision: str = "int8",
                 parallel_members: bool = False, reference: bool = False):
        self.bundle = bundle
        self.kind = resolve(backend, bundle, precision)
        self.backends = [open_backend(self.kind, m, bundle.root, threads, precision, reference) for m in bundle.members]
        self.artefact = self.backends[0].artefact
        self.heads = [gradcam.load_head(m.files["head"]) for m in bundle.members]
        self.weights = np.array(bundle.weights, np.float64) / sum(bundle.weights)
        # Members run in threads only where it can help: the runtimes release the GIL inside run().
        self._pool = ThreadPoolExecutor(len(self.backends)) if parallel_members and len(self.backends) > 1 else None

    def _run_member(self, i: int, img: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        t = time.perf_counter()
        logits, features = self.backends[i].run(img)
        return logits, features, (time.perf_counter() - t) * 1e3

    def run_members(self, img: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, float]]:
        if self._pool is not None:
            return list(self._pool.map(lambda i: self._run_member(i, img), range(len(self.backends))))
        return [self._run_member(i, img) for i in range(len(self.backends))]

    def _combine(self, outs: list[tuple[np.ndarray, np.ndarray, float]]) -> np.ndarray:
        """Weighted average of the members' softmax probabilities."""
        return sum(w * softmax(logits) for w, (logits, _, _) in zip(self.weights, outs))

    def probs(self, img: np.ndarray) -> np.ndarray:
        return self._combine(self.run_members(img))

    def __call__(self, img: np.ndarray, want_cam: bool = True, target: int | None = None,
                 gates: Gates | None = None) -> Result:
        """Probabilities, (with `want_cam`) the Grad-CAM map of `target` (by default the top class) and, given
        `gates`, their verdict on this image."""
        t0 = time.perf_counter()
        outs = self.run_members(img)
        t1 = time.perf_counter()
        probs = self._combine(outs)
        target = int(np.argmax(probs)) if target is None else target
        cam = None
        if want_cam:
            cams = [gradcam.gradcam(features, head, target)[0] for (_, features, _), head in zip(outs, self.heads)]
            cam = gradcam.combine(cams, list(self.weights))
        t2 = time.perf_counter()
        verdict = None if gates is None else gates(img, [lg for lg, _, _ in outs], [f for _, f, _ in outs])
        return Result(probs, np.stack([logits for logits, _, _ in outs]), cam, target, [ms for _, _, ms in outs],
                      (t1 - t0) * 1e3, (t2 - t1) * 1e3, verdict)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
