"""Runs inside the emulated aarch64 Python under profile.c's plugin: one bundle, several backend × precision, its
runtime's own work between marks.

For the i-th backend × precision, with b = 10 * (i + 1): mark b (the plugin starts simulating caches), `warmup`
inferences (they fill the caches and leave first-run effects behind), then
  span "invoke": k inferences, each with marks b + 1 / b + 2 right around the runtime's native call (LiteRT's
  Invoke, ONNX Runtime's InferenceSession run), reported at b + 3: the runtime's work alone, what published
  benchmarks time, and bit-identical between runs;
  span "inference" (unless job["inference_span"] is false): k × edge's Classifier.run_members between b + 4 / b + 5
  (the Python around the call as well: input layout, set/get tensor, dequantisation), reported at b + 6.
Prints one JSON line about what ran.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2

from benchmarks.arm_cost.guest import frames, mark
from edge.classify import Classifier
from edge.trust.bundle import load_bundle


class Marked:
    """`inner` (a runtime's native object) with `method` called between marks a and b; the rest passes through."""

    def __init__(self, inner, method: str, a: int, b: int):
        self._inner, self._method, self._a, self._b = inner, method, a, b

    def __getattr__(self, name: str):
        attr = getattr(self._inner, name)
        if name != self._method:
            return attr

        def marked(*args, **kwargs):
            mark(self._a)
            try:
                return attr(*args, **kwargs)
            finally:
                mark(self._b)
        return marked


def mark_native_calls(clf: Classifier, a: int, b: int) -> list:
    """Wrap each member's native call in marks a / b; returns what undoes it."""
    undo = []
    for backend in clf.backends:
        if backend.name == "tflite":
            owner, attr, method = backend.interp, "_interpreter", "Invoke"
        else:
            owner, attr, method = backend.session, "_sess", "run"
        undo.append((owner, attr, getattr(owner, attr)))
        setattr(owner, attr, Marked(getattr(owner, attr), method, a, b))
    return undo


def restore(undo: list) -> None:
    """Put the native objects back (LiteRT refuses to invoke while anything else holds its interpreter)."""
    while undo:
        owner, attr, inner = undo.pop()
        setattr(owner, attr, inner)


def main(job: dict) -> dict:
    cv2.setNumThreads(0)
    bundle = load_bundle(job["bundle"])
    inputs = frames(Path(job["clip"]), bundle.input_size, 2)
    runs = []
    for i, (backend, precision) in enumerate(job["combos"]):
        base, k = 10 * (i + 1), job["k"]
        clf = Classifier(bundle, backend, threads=job["threads"], precision=precision)
        mark(base)
        for n in range(job["warmup"]):
            clf.run_members(inputs[n % len(inputs)].image)
        undo = mark_native_calls(clf, base + 1, base + 2)
        for n in range(k):
            clf.run_members(inputs[n % len(inputs)].image)
        restore(undo)
        mark(base + 3)
        spans = {"invoke": [base + 1, base + 2]}
        if job["inference_span"]:
            for n in range(k):
                mark(base + 4)
                clf.run_members(inputs[n % len(inputs)].image)
                mark(base + 5)
            mark(base + 6)
            spans["inference"] = [base + 4, base + 5]
        runs.append({"backend": clf.kind, "precision": precision, "artefact": clf.artefact, "spans": spans})
        clf.close()
    return {"runs": runs, "bundle_name": bundle.name, "input_size": list(bundle.input_size),
            "members": len(bundle.members), "arch": bundle.manifest.get("arch")}


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]))))
