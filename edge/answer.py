"""One path from a camera frame to an answer: preprocess -> infer -> gates -> Grad-CAM -> `Answer`.

Softmax gives a class to anything, a black frame included, so a class may be shown, kept or reported only
beside the gates' verdict on the same frame. Every entry point that does so gets it from here: `skinedge
run` (screen, captures, `--results`, `--record`), `capture`, `demo`, the pipeline run of `bench`, and the
board's web page. An `Answer` whose gates refused the frame has no label, confidence, top-k or heat map:
it can only be shown, kept or reported as what it is (RETAKE - too dark, NOT RECOGNISED, ...), and
`keep()` refuses to store it. The classifier underneath (edge.classify) is used directly only by the golden
self-test, the converter and bench's bare-inference timing, none of which report a class.

    answerer, ready = open_answerer(cfg)      # admit the bundle, self-test, gates; Startup with one line
    answer = answerer(frame_rgb)              # or answerer.answer(answerer.prepare(frame)) across threads
    answer.label, answer.verdict.record()     # None and {'gate': 'too dark', ...} for a black frame
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from edge.backends.cpu import check_threads
from edge.classify import Classifier
from edge.gates import GateError, Gates, Verdict, for_bundle, message
from edge.preprocess import centre_crop, to_model_input
from edge.trust.admit import Provenance, accept, admit
from edge.trust.bundle import BundleError
from edge.trust.rollback import VersionBook
from edge.trust.selftest import selftest

if TYPE_CHECKING:
    from edge.config import DeviceConfig
    from edge.record.store import Capture, CaptureStore


log = logging.getLogger(__name__)


class Startup(RuntimeError):
    """Start-up failed (bundle, signature, self-test, gates, camera, display): exit non-zero with this one line."""


class NotKept(ValueError):
    """A capture refused because the gates refused its frame: the message says why (what the HUD said)."""


@dataclass(frozen=True)
class Prepared:
    """A camera frame, the centre crop the model sees (and the screen shows) and the model input made from it."""

    frame: np.ndarray  # as the camera gave it
    view: np.ndarray  # the centre crop
    image: np.ndarray  # the model input
    ms: float  # time the crop and resize took


def prepare(frame: np.ndarray, input_size: tuple[int, int]) -> Prepared:
    """The centre crop of the model's aspect and the model input (edge.preprocess) of one camera frame."""
    t = time.perf_counter()
    h, w = input_size
    view = centre_crop(frame, w / h)
    return Prepared(frame, view, to_model_input(view, (h, w)), (time.perf_counter() - t) * 1e3)


@dataclass(frozen=True)
class Answer:
    """What the board concluded about one frame. The class is there only when every gate passed."""

    verdict: Verdict  # the gates' outcome and scores, always
    labels: tuple[str, ...]
    probs: np.ndarray  # the model's probabilities, recorded beside the verdict (never shown without it)
    logits: np.ndarray  # (members, K)
    target: int  # the model's top class (what stability follows)
    cam: np.ndarray | None  # Grad-CAM of the top class: only for a passed answer, and only when asked for
    model: Provenance
    member_ms: list[float]
    infer_ms: float
    cam_ms: float

    @property
    def passed(self) -> bool:
        return self.verdict.passed

    @property
    def label(self) -> str | None:
        """The class, or None when a gate refused the frame."""
        return self.labels[self.target] if self.passed else None

    @property
    def confidence(self) -> float | None:
        return float(self.probs[self.target]) if self.passed else None

    def top(self, k: int = 3) -> list[tuple[str, float]]:
        """The k best classes with their probabilities, best first; empty when a gate refused the frame."""
        if not self.passed:
            return []
        order = np.argsort(-self.probs, kind="stable")[:k]
        return [(self.labels[i], float(self.probs[i])) for i in order]

    @property
    def refusal(self) -> str | None:
        """What the screen says instead of a class ('RETAKE - too dark'), or None when the gates passed."""
        return None if self.passed else message(self.verdict.reason)

    def record(self) -> dict[str, object]:
        """The gate outcome and scores and the model's identity, flat and JSON-ready (captures, results)."""
        return {**self.verdict.record(), **self.model.record()}


class Answerer:
    """The gated path for one stream of frames (the gates keep the previous frame, for motion)."""

    def __init__(self, clf: Classifier, gates: Gates, model: Provenance):
        self.clf, self.gates, self.model = clf, gates, model
        self.labels = tuple(clf.bundle.labels)
        self.input_size = clf.bundle.input_size

    def prepare(self, frame: np.ndarray) -> Prepared:
        """Crop and resize one camera frame (RGB uint8); the pipeline runs this on its capture thread."""
        return prepare(frame, self.input_size)

    def answer(self, prep: Prepared, want_cam: bool = True) -> Answer:
        """Infer, run the gates, and (when they pass and `want_cam`) explain the class with Grad-CAM."""
        t0 = time.perf_counter()
        outs = self.clf.run_members(prep.image)
        t1 = time.perf_counter()
        probs = self.clf.combine(outs)
        verdict = self.gates(prep.image, [lg for lg, _, _ in outs], [f for _, f, _ in outs])
        target = int(np.argmax(probs))
        t2 = time.perf_counter()
        cam = self.clf.explain(outs, target) if want_cam and verdict.passed else None
        return Answer(verdict, self.labels, probs, np.stack([lg for lg, _, _ in outs]), target, cam, self.model,
                      [ms for _, _, ms in outs], (t1 - t0) * 1e3, (time.perf_counter() - t2) * 1e3)

    def __call__(self, frame: np.ndarray, want_cam: bool = True) -> Answer:
        return self.answer(self.prepare(frame), want_cam)

    @property
    def kind(self) -> str:
        return self.clf.kind

    def close(self) -> None:
        self.clf.close()


def open_answerer(cfg: DeviceConfig, allow_downgrade: bool = False) -> tuple[Answerer, str]:
    """Admit the config's bundle (signature policy, no rollback below the highest version accepted from its
    signer unless `allow_downgrade`), open its backend, pass the golden self-test and load its gates; then
    record its version as accepted. Returns the answerer and the ready line; Startup with one line on any
    failure, with nothing left open."""
    if not cfg.bundle:
        raise Startup(f"{cfg.path}: no bundle given (set 'bundle' or pass --bundle)")
    clf = None
    book = VersionBook(cfg.state_dir)
    try:
        bundle, model = admit(cfg.bundle, cfg.trust, book, allow_downgrade)
        clf = Classifier(bundle, cfg.backend, threads=cfg.threads, precision=cfg.precision,
                         parallel_members=cfg.parallel_members)
        test = selftest(bundle, clf)
        if not test.ok:
            raise Startup(f"bundle refused: golden self-test failed on {clf.kind}: {test.line()}")
        # a folder holds unrelated images: no motion between them
        gates = for_bundle(bundle, cfg.gates, use_motion=cfg.source.kind != "folder")
        accept(book, model)
    except (BundleError, GateError, ValueError, RuntimeError, OSError) as e:
        if clf is not None:
            clf.close()
        raise (e if isinstance(e, Startup) else Startup(f"bundle refused: {e}")) from e
    if many := check_threads(cfg.threads, f"{cfg.path}: threads"):
        log.warning("%s", many)
    if model.downgrade_from:
        log.warning("running %s %s below %s, accepted before from the same signer (--allow-downgrade)", model.name,
                    model.version, model.downgrade_from)
    ready = f"{model.describe()} on {clf.kind}; self-test {test.line()}; OOD gate {gates.ood_state}"
    return Answerer(clf, gates, model), ready


def keep(store: CaptureStore, answer: Answer, view: np.ndarray, overlay: np.ndarray, note: str = "",
         **fields) -> Capture:
    """Store a capture of a passed answer with its gate outcome and model; NotKept for a refused one. `fields`:
    the capture's other record fields (visit_id, duplicate_of, when, ...: CaptureStore.add)."""
    if not answer.passed:
        raise NotKept(f"not kept: {answer.refusal}")
    m = answer.model
    return store.add(view, overlay, answer.probs, answer.labels, m.digest, note=note, gate=answer.verdict.record(),
                     model=m.name, model_version=m.version, signature=m.signature,
                     downgrade_from=m.downgrade_from or "", **fields)
