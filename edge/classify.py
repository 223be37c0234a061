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
from edge.trust.bundle import Bundle

Outs = list[tuple[np.ndarray, np.ndarray, float]]  # per member: logits (K,), features (C, h, w), milliseconds


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


class Classifier:
    """Runs every member of a bundle on one backend kind: the engine under edge.answer, which adds the gates.

    Its raw probabilities are for the golden self-test, the converter and timing; anything that shows, keeps or
    reports a class goes through edge.answer instead, so the gate outcome is always beside the class."""

    def __init__(self, bundle: Bundle, backend: str = "auto", threads: int = 1, precision: str = "int8",
                 parallel_members: bool = False, reference: bool = False, fused: bool = False):
        self.bundle = bundle
        self.kind = resolve(backend, bundle, precision)
        self.backends = [open_backend(self.kind, m, bundle.root, threads, precision, reference, fused)
                         for m in bundle.members]
        self.artefact = self.backends[0].artefact
        self.note = self.backends[0].note  # e.g. the int8 ONNX runs exact on a CPU whose fused kernels saturate
        self.heads = [gradcam.load_head(m.files["head"]) for m in bundle.members]
        self.weights = np.array(bundle.weights, np.float64) / sum(bundle.weights)
        # Members run in threads only where it can help: the runtimes release the GIL inside run().
        self._pool = ThreadPoolExecutor(len(self.backends)) if parallel_members and len(self.backends) > 1 else None

    def _run_member(self, i: int, img: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        t = time.perf_counter()
        logits, features = self.backends[i].run(img)
        return logits, features, (time.perf_counter() - t) * 1e3

    def run_members(self, img: np.ndarray) -> Outs:
        if self._pool is not None:
            return list(self._pool.map(lambda i: self._run_member(i, img), range(len(self.backends))))
        return [self._run_member(i, img) for i in range(len(self.backends))]

    def combine(self, outs: Outs) -> np.ndarray:
        """Weighted average of the members' softmax probabilities."""
        return sum(w * softmax(logits) for w, (logits, _, _) in zip(self.weights, outs))

    def probs(self, img: np.ndarray) -> np.ndarray:
        return self.combine(self.run_members(img))

    def explain(self, outs: Outs, target: int) -> np.ndarray:
        """The Grad-CAM map of class `target` from the members' feature maps (ensembles: weighted average)."""
        cams = [gradcam.gradcam(features, head, target)[0] for (_, features, _), head in zip(outs, self.heads)]
        return gradcam.combine(cams, list(self.weights))

    def __call__(self, img: np.ndarray, want_cam: bool = True, target: int | None = None) -> Result:
        """Probabilities and (with `want_cam`) the Grad-CAM map of `target` (by default the top class)."""
        t0 = time.perf_counter()
        outs = self.run_members(img)
        t1 = time.perf_counter()
        probs = self.combine(outs)
        target = int(np.argmax(probs)) if target is None else target
        cam = self.explain(outs, target) if want_cam else None
        t2 = time.perf_counter()
        return Result(probs, np.stack([logits for logits, _, _ in outs]), cam, target, [ms for _, _, ms in outs],
                      (t1 - t0) * 1e3, (t2 - t1) * 1e3)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
