"""Runs inside the emulated aarch64 Python (count.c's plugin attached): one bundle, several backend × precision.

Each measured stretch sits between two marks, so the host takes the instructions of exactly `k` repetitions,
with start-up, model loading and first-run effects before the first mark:
  marks 1-2: k × (decode + preprocess) of a clip frame, the capture thread's work;
then for the i-th backend × precision, with b = 10 * i:
  marks b+1 - b+2: k bare inferences (all members) after `warmup` ones;
  marks b+3 - b+4: k × (Grad-CAM + overlay) for one frame, as the presenter draws it;
  marks b+5 - b+7 (int8, when asked): edge.pipeline.run to the end of clips of the demo clip's first n and
  n + k frames (decode → preprocess → infer → Grad-CAM → overlay → null display), after a 1-frame run that
  warms it: per frame = ((b+7 - b+6) - (b+6 - b+5)) / k. Clips that end, rather than run(frames=n), because
  the capture thread decodes ahead: how far it got when run() stops it depends on thread timing, and each
  frame more or less moved the figure by 1.6 %. And with the GIL's time slice (5 ms of host time) out of
  the way: emulated, a slice holds far less work than on a board, and how many forced hand-overs the
  three threads make follows the host's load (it moved the ONNX Runtime frame by 1.7 %). Without it, a thread hands
  the GIL over where it waits or calls C code that releases it, as the work itself decides. And with the HUD's FPS
  figure drawn as 10.0 (as cam_and_overlay draws it): measured, it is host time, and every run should draw the
  same text.
  Each run includes the bundle's golden self-test, which the difference cancels but the emulation pays: so this
  is for small bundles.
OpenCV runs single-threaded so that no worker thread spins between marks (spinning is not work, and its
length depends on host timing). Prints one JSON line about what ran.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

from edge import answer, gradcam, pipeline
from edge.classify import Classifier, softmax
from edge.config import load_config
from edge.overlay import Prediction, render
from edge.trust.bundle import load_bundle

MAGIC = 0x5EED0000
DISPLAY_SIZE = (480, 320)  # what skinedge bench renders: a 3.5" panel


def mark(n: int) -> None:
    """Tell the counting plugin to record its totals now (lseek(-1, ...) fails with EBADF and does nothing)."""
    try:
        os.lseek(-1, MAGIC + n, os.SEEK_SET)
    except OSError:
        pass


def frames(clip: Path, input_size: tuple[int, int], n: int) -> list[answer.Prepared]:
    """The first n frames of the clip, prepared as the capture thread does."""
    cap, out = cv2.VideoCapture(str(clip)), []
    while len(out) < n:
        ok, bgr = cap.read()
        if not ok:
            break
        out.append(answer.prepare(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), input_size))
    cap.release()
    return out


def cam_and_overlay(clf: Classifier, outs, view: np.ndarray) -> np.ndarray:
    """What a frame costs after inference: softmax, Grad-CAM of every member, and the rendered screen."""
    probs = sum(w * softmax(logits) for w, (logits, _, _) in zip(clf.weights, outs))
    target = int(np.argmax(probs))
    cams = [gradcam.gradcam(features, head, target)[0] for (_, features, _), head in zip(outs, clf.heads)]
    cam = gradcam.combine(cams, list(clf.weights))
    return render(view, cam, Prediction(clf.bundle.labels, probs), size=DISPLAY_SIZE, min_confidence=0.6, fps=10.0)


def trimmed(clip: Path, n: int, out: Path) -> Path:
    """The clip's first n frames as a clip of its own (same codec, MPEG-4 Part 2, as the demo clip)."""
    cap = cv2.VideoCapture(str(clip))
    size = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), cap.get(cv2.CAP_PROP_FPS), size)
    for _ in range(n):
        writer.write(cap.read()[1])
    writer.release()
    cap.release()
    return out


def fixed_fps(render):
    """render, with any FPS figure drawn as 10.0 (see the module's docstring)."""
    def drawn(*args, **kwargs):
        if kwargs.get("fps") is not None:
            kwargs["fps"] = 10.0
        return render(*args, **kwargs)
    return drawn


def pipeline_runs(bundle: Path, backend: str, threads: int, clip: Path, n: int, k: int, base: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        configs = {}
        for frames in (1, n, n + k):  # written before the marks: encoding is not the pipeline's work
            path = Path(tmp) / f"arm_cost_{frames}.yaml"
            path.write_text(json.dumps({
                "bundle": str(bundle), "backend": backend, "threads": threads,
                "source": {"kind": "video", "path": str(trimmed(clip, frames, Path(tmp) / f"{frames}.mp4")),
                           "loop": False},
                "display": {"kind": "null", "size": list(DISPLAY_SIZE)},
                "gradcam": {"every_n": 1}, "watchdog": {"enabled": False}, "allow_unsigned": True}))
            configs[frames] = load_config(path)
        switch, render = sys.getswitchinterval(), pipeline.render
        sys.setswitchinterval(1e6)  # these two: see the module's docstring
        pipeline.render = fixed_fps(render)
        pipeline.run(configs[1])
        mark(base + 5)
        pipeline.run(configs[n])
        mark(base + 6)
        pipeline.run(configs[n + k])
        mark(base + 7)
        sys.setswitchinterval(switch)
        pipeline.render = render


def measure(job: dict, base: int, bundle, backend: str, precision: str, clip: Path, inputs) -> dict:
    """Marks base+1..base+4 (and base+5..base+7 with the pipeline) for one backend × precision."""
    k = job["k"]
    clf = Classifier(bundle, backend, threads=job["threads"], precision=precision)
    for i in range(job["warmup"]):
        clf.run_members(inputs[i % len(inputs)].image)
    mark(base + 1)
    for i in range(k):
        clf.run_members(inputs[i % len(inputs)].image)
    mark(base + 2)
    outs = clf.run_members(inputs[0].image)
    cam_and_overlay(clf, outs, inputs[0].view)
    mark(base + 3)
    for _ in range(k):
        cam_and_overlay(clf, outs, inputs[0].view)
    mark(base + 4)
    kind, artefact = clf.kind, clf.artefact
    clf.close()
    # edge.pipeline opens the int8 artefact: its per-frame cost belongs to the int8 rows
    if job["pipeline"] and precision == "int8":
        pipeline_runs(Path(job["bundle"]), kind, job["threads"], clip, job["pipeline_n"], k, base)
    return {"backend": kind, "precision": precision, "artefact": artefact, "base": base}


def main(job: dict) -> dict:
    """Every backend × precision of job["combos"] in one process (start-up is paid once); marks 1-2 frame."""
    cv2.setNumThreads(0)
    bundle = load_bundle(job["bundle"])
    clip = Path(job["clip"])
    inputs = frames(clip, bundle.input_size, 4)
    frames(clip, bundle.input_size, 1)
    mark(1)
    frames(clip, bundle.input_size, job["k"])  # the capture thread's work: decode, colour, crop, resize
    mark(2)
    runs = [measure(job, 10 * (i + 1), bundle, backend, precision, clip, inputs)
            for i, (backend, precision) in enumerate(job["combos"])]
    return {"runs": runs, "members": len(bundle.members), "arch": bundle.manifest.get("arch"),
            "input_size": list(bundle.input_size), "bundle_name": bundle.name}


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]))))
