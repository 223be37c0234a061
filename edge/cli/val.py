"""`skinedge val`: a bundle or a checkpoint on a labelled folder, float and every artefact side by side."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from edge.cli.common import bounded, load_cfg, needs_extra, threads

if TYPE_CHECKING:
    from edge.trust.admit import Provenance
    from edge.trust.bundle import Bundle
    from edge.val import Column


@dataclass
class Models:
    """What is evaluated: the bundle (if any), its classes and input size, a name, and the columns."""

    bundle: Bundle | None
    labels: list[str]
    size: tuple[int, int]
    name: str
    provenance: Provenance | None = None  # the bundle's, as admitted
    out: Path = Path()  # the folder for summary.md, metrics.json and the figures
    columns: list[Column] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _val(a: argparse.Namespace) -> int:
    from edge.gates import GatesConfig
    from edge.outputs import probe
    from edge.record.results import check_results_path
    from edge.trust.bundle import BundleError
    from edge.val import ValError, open_folder, read_folder, score_all

    cfg = load_cfg(a.config, {}) if a.config else None
    gates_cfg = GatesConfig(enabled=False) if a.no_gates else cfg.gates if cfg else GatesConfig()
    models = None
    try:
        if a.results:  # outputs are checked before the work that produces them
            check_results_path(a.results)
            probe(a.results, "--results")
        models, checkpoint = _identify(a, cfg)  # no runtime opened yet
        src = open_folder(a.data, models.labels)  # a wrong folder is refused before any model loads
        models.out = a.out or Path(f"val-{models.name}")
        try:
            models.out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ValError(f"--out {models.out}: cannot create it ({e.strerror or e})") from None
        _add_columns(a, models, checkpoint, gates_cfg)
        print(f"val: {models.name} on {a.data}: {', '.join(c.name for c in models.columns)}; gates "
              f"{'on' if gates_cfg.enabled else 'off'}" + "".join(f"\n  {n}" for n in models.notes))
        images = read_folder(src, models.labels, models.size, models.columns)
    except (ValError, BundleError, ValueError, OSError) as e:  # SignatureError is a ValueError
        print(f"skinedge val: {e}", file=sys.stderr)
        return 2
    finally:
        for c in models.columns if models else []:
            c.close()
    if not len(images.labels):
        print(f"skinedge val: {a.data}: no readable labelled image", file=sys.stderr)
        return 2
    return _report(a, models, images, score_all(models.columns, images.labels, len(models.labels)))


def _identify(a: argparse.Namespace, cfg) -> tuple[Models, Path | None]:
    """The bundle (admitted as the board admits it: hashes, and with --config its signature policy) or the
    checkpoint's recorded classes and size; and the checkpoint to run in torch, if any."""
    from edge.trust.admit import admit
    from edge.trust.signing import Trust
    from edge.val import ValError

    if a.model.is_dir():
        bundle, provenance = admit(str(a.model), cfg.trust if cfg else Trust())
        return Models(bundle, list(bundle.labels), bundle.input_size, bundle.name, provenance=provenance), a.checkpoint
    if not a.model.is_file():
        raise ValError(f"{a.model}: neither a bundle directory nor a checkpoint file")
    meta = _meta(a.model)
    labels = meta.get("labels") or (a.labels.split(",") if a.labels else None)
    if not labels:
        raise ValError(f"{a.model}: no class names recorded in it: give --labels a,b,c (in training order)")
    side = a.input_size or int(meta.get("size") or 224)
    return Models(None, list(labels), (side, side), a.model.stem), a.model


def _add_columns(a: argparse.Namespace, models: Models, checkpoint: Path | None, gates_cfg) -> None:
    """The checkpoint's float model, then every artefact of the bundle whose runtime is installed."""
    from edge.val import bundle_columns

    if checkpoint is not None:
        models.columns.append(_float_column(a, checkpoint, models, gates_cfg))
    if models.bundle is not None:
        more, models.notes = bundle_columns(models.bundle, models.provenance, gates_cfg, a.threads,
                                            float_given=checkpoint is not None)
        models.columns += more


def _float_column(a: argparse.Namespace, checkpoint: Path, models: Models, gates_cfg):
    """The checkpoint's float model in torch, gated with the bundle's gates (quality gates only without one)."""
    from edge.gates import Gates, for_bundle
    from edge.val import Column, ValError

    with needs_extra("val with a checkpoint"):
        from convert.float_column import float_predict
        from convert.pipeline import ConvertError
    bundle = models.bundle
    arch = a.arch or _meta(checkpoint).get("arch") or (bundle and bundle.manifest["arch"])
    if not arch:
        raise ValError(f"{checkpoint}: no architecture recorded in it: give --arch")
    ood = None if bundle is None else for_bundle(bundle, gates_cfg, use_motion=False).ood
    try:
        predict = float_predict(checkpoint, arch, models.labels, bundle and bundle.manifest["input"]["normalisation"],
                                Gates(gates_cfg, ood, use_motion=False), a.trust_checkpoint)
    except ConvertError as e:
        raise ValError(str(e)) from e
    return Column("float (torch)", predict, is_float=True)


def _meta(checkpoint: Path) -> dict:
    with needs_extra("val with a checkpoint"):
        from convert.float_column import checkpoint_meta
    return checkpoint_meta(checkpoint)


def _report(a: argparse.Namespace, models: Models, images, scores) -> int:
    """The table and the board artefact's confusion matrix on the terminal; the files."""
    from edge.metrics import confusion_markdown, per_class_markdown
    from edge.val import board_scores, summary_table, write_files, write_results

    counts = f"{len(images.labels)} labelled images" + "".join(
        f"; {n} {what}" for n, what in ((images.unlabelled, "outside class sub-folders, left out"),
                                        (images.skipped, "unreadable, skipped")) if n) + (
        f"; {images.converted}" if images.converted else "")
    shown = board_scores(scores, models.bundle)
    print(f"{counts}\n{summary_table(scores)}\n{shown.name}: confusion matrix (rows: true class; columns: predicted)"
          f"\n{confusion_markdown(shown.confusion, models.labels)}\n{per_class_markdown(shown.confusion, models.labels)}")
    out = models.out
    try:
        written = write_files(out, scores, models.labels, f"{models.name} on `{a.data}`: {counts}.")
        if a.results:
            write_results(a.results, images, models.columns, models.labels)
    except OSError as e:  # checked before the run; a disk that filled up since is still one line
        print(f"skinedge val: cannot write the results: {e.strerror or e}: {e.filename}", file=sys.stderr)
        return 2
    print(f"written to {out}/: {', '.join(written)}" + ("" if any(w.endswith(".png") for w in written) else
                                                         " (no PNGs: matplotlib is not installed here)")
          + (f"; per image: {a.results}" if a.results else ""))
    return 0


def add_parsers(sub) -> None:
    v = sub.add_parser("val", help="accuracy, per-class precision/recall/F1, confusion matrix and calibration of a "
                                   "bundle (every artefact) or a checkpoint on a labelled folder; gated images are "
                                   "'not answered'")
    v.add_argument("model", type=Path, help="a bundle directory, or a checkpoint (.pth: needs the convert extra)")
    v.add_argument("--data", type=Path, required=True, help="labelled images: one sub-folder per class, named as "
                                                            "the model's classes")
    v.add_argument("--checkpoint", type=Path, help="with a bundle: its float weights, for a torch float column "
                                                   "(default: the bundle's fp32 ONNX is the float reference)")
    v.add_argument("--arch", help="the checkpoint's architecture (default: recorded in it, else the bundle's)")
    v.add_argument("--labels", help="a checkpoint without recorded class names: comma-separated, in training order")
    v.add_argument("--input-size", type=bounded(8, 8192), help="a checkpoint alone: input size (default: recorded, "
                                                                "else 224)")
    v.add_argument("--trust-checkpoint", action="store_true", help="allow a full pickle (it can run code)")
    v.add_argument("--config", type=Path, help="device config whose gates limits to apply (default: the defaults)")
    v.add_argument("--no-gates", action="store_true", help="answer every image (the board would not)")
    v.add_argument("--threads", type=threads, default=2, help="1..4 x cores")
    v.add_argument("--out", type=Path, help="folder for summary.md, metrics.json, confusion matrices (CSV, PNG) and "
                                            "reliability diagrams (PNG) (default: val-NAME)")
    v.add_argument("--results", type=Path, help="per image, every model's top-1, probability, gate and whether it "
                                                "was right, to this .csv or .jsonl")
    v.set_defaults(fn=_val)
