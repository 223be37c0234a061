"""`skinedge val`: how a model does on a labelled folder, the float model and every artefact side by side.

Each image is read by the board's reader (edge.imagefile, via the folder source `run` uses) and prepared as the
board prepares a frame (edge.answer.prepare: centre crop, resize); each artefact answers it through the board's one
gated path (edge.answer.Answerer: infer, then the quality gates and, where the bundle has one, the
out-of-distribution gate), as `skinedge run` does. An image a column's gates held back got no answer on the board:
it is counted as "not answered" and left out of that column's accuracy, F1 and calibration.

Columns: the float model (torch, from a checkpoint, where given and torch is installed; otherwise the bundle's
fp32 ONNX, so a board without torch still has a float reference) and each artefact of the bundle whose runtime is
installed. Per column: accuracy, macro-F1, per-class precision / recall / F1, a confusion matrix with a
not-answered column (CSV, Markdown, PNG), expected calibration error and a reliability diagram (PNG), top-1
agreement with the float column. PNGs need matplotlib (the workstation extra); the rest runs anywhere.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge import metrics, plots
from edge.answer import Answerer, Prepared, prepare
from edge.classify import Classifier
from edge.gates import GatesConfig, Verdict, for_bundle
from edge.sources import FolderSource, SourceError
from edge.trust.admit import Provenance
from edge.trust.bundle import Bundle

# backend kind and precision of each artefact column, in the order they are shown
# (column, bundle artefact, backend kind, precision), in the order shown. TensorRT (a Jetson: built from the int8
# ONNX at first use) only where its runtime is installed, without a note elsewhere; unverified on hardware.
ARTEFACTS = (("fp32_onnx", "fp32_onnx", "onnx", "fp32"), ("int8_onnx", "int8_onnx", "onnx", "int8"),
             ("int8_tflite", "int8_tflite", "tflite", "int8"), ("fp32_tflite", "fp32_tflite", "tflite", "fp32"),
             ("int8 TensorRT", "int8_onnx", "tensorrt", "int8"))
PROGRESS_ABOVE = 50  # images: a progress bar for folders larger than this
Predict = Callable[[Prepared], tuple[np.ndarray, Verdict]]  # a prepared image -> probabilities, gates' verdict


class ValError(ValueError):
    """Input val cannot use: one line naming it."""


@dataclass
class Column:
    name: str
    predict: Predict
    close: Callable[[], None] = lambda: None
    is_float: bool = False  # the float reference the others' agreement is measured against
    probs: list[np.ndarray] = field(default_factory=list)
    gate: list[str] = field(default_factory=list)  # 'pass' or the gate that tripped

    def __call__(self, prep: Prepared) -> None:
        probs, verdict = self.predict(prep)
        self.probs.append(probs)
        self.gate.append("pass" if verdict.passed else verdict.reason)


def answer_predict(answerer: Answerer) -> Predict:
    """A bundle artefact on the board's one gated path: what `run` would have answered."""
    def predict(prep: Prepared) -> tuple[np.ndarray, Verdict]:
        answer = answerer.answer(prep, want_cam=False)
        return answer.probs, answer.verdict
    return predict


def bundle_columns(bundle: Bundle, model: Provenance, gates_cfg: GatesConfig, threads: int,
                   float_given: bool) -> tuple[list[Column], list[str]]:
    """A column per artefact of the bundle whose runtime is installed (the fp32 ONNX one named as the float
    reference when no torch float column is given); and a note per artefact left out."""
    from edge.backends import RuntimeMissing, runtime_available

    columns, notes = [], []
    for name, artefact, kind, precision in ARTEFACTS:
        if not bundle.has(artefact):
            continue
        if not runtime_available(kind):
            if kind != "tensorrt":
                notes.append(f"{name}: left out, its runtime ({kind}) is not installed here")
            continue
        try:
            clf = Classifier(bundle, kind, threads=threads, precision=precision)
        except RuntimeMissing as e:
            notes.append(f"{name}: left out ({e})")
            continue
        is_float = artefact == "fp32_onnx" and not float_given
        answerer = Answerer(clf, for_bundle(bundle, gates_cfg, use_motion=False), model)  # unrelated images
        columns.append(Column(f"{name} (float reference)" if is_float else name, answer_predict(answerer),
                              answerer.close, is_float))
    return columns, notes


@dataclass
class Images:
    names: list[str]  # relative to the folder
    labels: np.ndarray  # index into the model's labels
    unlabelled: int  # images outside class sub-folders, left out
    skipped: int  # unreadable files
    converted: str | None  # edge.imagefile.conversions_text


def open_folder(folder: Path, labels: list[str]) -> FolderSource:
    """The labelled folder as the board's folder source reads it; ValError (before any model is opened) when it
    holds no class sub-folder or one naming no class of the model."""
    try:
        src = FolderSource(folder)
    except SourceError as e:
        raise ValError(str(e)) from e
    unknown = sorted({c for c in src.classes if c is not None and c not in labels})
    if unknown:
        raise ValError(f"{folder}: class folder(s) naming no class of the model: {', '.join(unknown[:8])} "
                       f"(its classes: {', '.join(labels[:8])}{' ...' if len(labels) > 8 else ''})")
    if not any(c is not None for c in src.classes):
        raise ValError(f"{folder}: no class sub-folders: val needs labelled images (one sub-folder per class, "
                       "named as the model's classes)")
    return src


def read_folder(src: FolderSource, labels: list[str], size: tuple[int, int], columns: list[Column],
                progress: bool = True) -> Images:
    """Every image in the class sub-folders, through every column, one image in memory at a time (a progress bar
    on stderr for more than PROGRESS_ABOVE images)."""
    from tqdm import tqdm

    from edge.imagefile import conversions_text

    names, y, unlabelled = [], [], 0
    bar = tqdm(total=len(src.files), desc="val", unit="img", leave=False,
               disable=not progress or len(src.files) <= PROGRESS_ABOVE)
    while (rgb := src.read()) is not None:
        bar.update()
        name, label = src.current
        if label is None:
            unlabelled += 1
            continue
        prep = prepare(rgb, size)
        for c in columns:
            c(prep)
        names.append(name)
        y.append(labels.index(label))
    bar.close()
    return Images(names, np.asarray(y, np.int64), unlabelled, src.skipped, conversions_text(src.converted))


@dataclass
class Scores:
    """One column's figures over the labelled images."""

    name: str
    answered: int
    total: int
    accuracy: float | None  # on the answered images
    macro_f1: float | None
    ece: float | None
    agreement: float | None  # top-1 agreement with the float column (all images, gates aside)
    confusion: np.ndarray  # edge.metrics.confusion
    calibration: metrics.Calibration | None
    not_answered: dict[str, int]  # by gate outcome


def score(col: Column, y: np.ndarray, k: int, float_top1: np.ndarray | None) -> Scores:
    probs = np.asarray(col.probs).reshape(len(y), k)
    pred = probs.argmax(1)
    answered = np.array([g == "pass" for g in col.gate], bool)
    cm = metrics.confusion(y, pred, k, answered)
    n = int(answered.sum())
    reasons: dict[str, int] = {}
    for g in col.gate:
        if g != "pass":
            reasons[g] = reasons.get(g, 0) + 1
    cal = metrics.calibration(probs[answered], y[answered]) if n else None
    return Scores(col.name, n, len(y), float(np.mean(pred[answered] == y[answered])) if n else None,
                  metrics.macro_f1(y[answered], pred[answered], k) if n else None, cal.ece if cal else None,
                  None if float_top1 is None else float(np.mean(pred == float_top1)), cm, cal, reasons)


def score_all(columns: list[Column], y: np.ndarray, k: int) -> list[Scores]:
    """Every column's figures, agreement measured against the float column (where there is one)."""
    ref = next((c for c in columns if c.is_float), None)
    top1 = None if ref is None else np.asarray(ref.probs).reshape(len(y), k).argmax(1)
    return [score(c, y, k, None if c is ref else top1) for c in columns]


def board_scores(scores: list[Scores], bundle: Bundle | None) -> Scores:
    """The column of the int8 artefact a board runs by default (`auto`), else the first."""
    from edge.backends import artefact_for, resolve

    if bundle is not None:
        try:
            want = artefact_for(resolve("auto", bundle), "int8")
            return next((s for s in scores if s.name == want), scores[0])
        except (ValueError, RuntimeError):  # no runtime for the int8 artefacts here
            pass
    return scores[0]


def summary_table(scores: list[Scores]) -> str:
    head = ("| model | answered | accuracy | macro-F1 | ECE | top-1 agreement with float | not answered, by gate |\n"
            "|---|---|---|---|---|---|---|\n")
    return head + "".join(
        f"| {s.name} | {s.answered}/{s.total} | {metrics.fmt(s.accuracy, '.1%')} | {metrics.fmt(s.macro_f1)} | {metrics.fmt(s.ece)} | "
        f"{metrics.fmt(s.agreement, '.1%')} | {', '.join(f'{n} {why}' for why, n in s.not_answered.items()) or '-'} |\n"
        for s in scores)


def slug(name: str) -> str:
    """'int8_onnx (float reference)' -> 'int8_onnx_float_reference': a file name part."""
    return re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_").lower()


def write_files(out: Path, scores: list[Scores], labels: list[str], header: str) -> list[str]:
    """summary.md, metrics.json and, per column, confusion CSV and (with matplotlib) confusion and reliability
    PNGs; returns the file names written."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    parts = [f"# skinedge val\n\n{header}\n\n{summary_table(scores)}"]
    for s in scores:
        name = slug(s.name)
        (out / f"confusion_{name}.csv").write_text(metrics.confusion_csv(s.confusion, labels))
        written.append(f"confusion_{name}.csv")
        if plots.available():
            plots.confusion_png(s.confusion, labels, f"{s.name}: confusion matrix", out / f"confusion_{name}.png")
            written.append(f"confusion_{name}.png")
            if s.calibration is not None:
                plots.reliability_png(s.calibration, f"{s.name}: reliability", out / f"reliability_{name}.png")
                written.append(f"reliability_{name}.png")
        parts.append(f"\n## {s.name}\n\n{metrics.confusion_markdown(s.confusion, labels)}\n"
                     f"{metrics.per_class_markdown(s.confusion, labels)}\nExpected calibration error {metrics.fmt(s.ece)} "
                     f"({metrics.ECE_BINS} confidence bins, answered images).\n")
    (out / "summary.md").write_text("".join(parts))
    (out / "metrics.json").write_text(json.dumps({"labels": labels, "columns": [
        {"name": s.name, "answered": s.answered, "images": s.total, "accuracy": s.accuracy, "macro_f1": s.macro_f1,
         "ece": s.ece, "top1_agreement_with_float": s.agreement, "not_answered": s.not_answered,
         "confusion": s.confusion.tolist(), "per_class": _per_class(s.confusion, labels)} for s in scores]},
        indent=2))
    return ["summary.md", "metrics.json", *written]


def _per_class(cm: np.ndarray, labels: list[str]) -> dict:
    pc = metrics.per_class(cm)
    nan = lambda v: None if not np.isfinite(v) else round(float(v), 6)
    return {lab: {"precision": nan(pc.precision[i]), "recall": nan(pc.recall[i]), "f1": nan(pc.f1[i]),
                  "images": int(pc.support[i]), "not_answered": int(cm[i, -1])} for i, lab in enumerate(labels)}


def write_results(path: Path, images: Images, columns: list[Column], labels: list[str]) -> None:
    """One row per image: file, true class, and per column its top-1, probability, gate and whether it was right."""
    rows = []
    for i, name in enumerate(images.names):
        row = {"source": name, "true_label": labels[images.labels[i]]}
        for c in columns:
            top = int(np.argmax(c.probs[i]))
            key = slug(c.name)
            row.update({f"{key}_label": labels[top], f"{key}_prob": round(float(c.probs[i][top]), 6),
                        f"{key}_gate": c.gate[i],
                        f"{key}_correct": "" if c.gate[i] != "pass" else bool(top == images.labels[i])})
        rows.append(row)
    with open(path, "w", newline="") as f:
        if path.suffix.lower() == ".jsonl":
            f.writelines(json.dumps(r) + "\n" for r in rows)
        else:
            w = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["source", "true_label"])
            w.writeheader()
            w.writerows(rows)
