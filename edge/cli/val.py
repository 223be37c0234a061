"""`skinedge val`: a bundle or a checkpoint on a labelled folder, float and every artefact side by side."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edge.cli.common import bounded, load_cfg, needs_extra, threads


def _val(a: argparse.Namespace) -> int:
    from edge.gates import Gates, GatesConfig
    from edge.metrics import confusion_markdown, per_class_markdown
    from edge.outputs import probe
    from edge.record.results import check_results_path
    from edge.trust.admit import admit
    from edge.trust.bundle import BundleError
    from edge.trust.signing import SignatureError, Trust
    from edge.val import Column, ValError, bundle_columns, read_folder, score, summary_table, write_files, write_results

    cfg = load_cfg(a.config, {}) if a.config else None
    gates_cfg = cfg.gates if cfg else GatesConfig()
    if a.no_gates:
        gates_cfg = GatesConfig(enabled=False)
    columns: list[Column] = []
    try:
        if not a.data.is_dir():  # before any model is loaded
            raise ValError(f"--data {a.data}: not a folder (one sub-folder of images per class)")
        if a.results:
            check_results_path(a.results)
            probe(a.results, "--results")
        bundle = checkpoint = None
        if a.model.is_dir():
            # hashes (and, with --config, the board's signature policy) checked as the board checks them
            bundle, model = admit(str(a.model), cfg.trust if cfg else Trust())
            checkpoint = a.checkpoint
        elif a.model.is_file():
            checkpoint = a.model
        else:
            raise ValError(f"{a.model}: neither a bundle directory nor a checkpoint file")
        labels, size, name = _identity(a, bundle, checkpoint)
        out = a.out or Path(f"val-{name}")
        out.mkdir(parents=True, exist_ok=True)  # now, not after every image went through every model
        if checkpoint is not None:
            with needs_extra("val with a checkpoint"):
                from convert.float_column import float_predict
                from convert.pipeline import ConvertError
            arch = a.arch or _meta(checkpoint).get("arch") or (bundle and bundle.manifest["arch"])
            if not arch:
                raise ValError(f"{checkpoint}: no architecture recorded in it: give --arch")
            ood = None if bundle is None else _bundle_gates(bundle, gates_cfg).ood
            try:
                predict = float_predict(checkpoint, arch, labels, bundle and bundle.manifest["input"]["normalisation"],
                                        Gates(gates_cfg, ood, use_motion=False), a.trust_checkpoint)
            except ConvertError as e:
                raise ValError(str(e)) from e
            columns.append(Column("float (torch)", predict))
        notes: list[str] = []
        if bundle is not None:
            more, notes = bundle_columns(bundle, model, gates_cfg, a.threads, float_given=checkpoint is not None)
            columns += more
        print(f"val: {name} on {a.data}: {len(columns)} model(s): {', '.join(c.name for c in columns)}; gates "
              f"{'off' if not gates_cfg.enabled else 'on'}" + "".join(f"\n  {n}" for n in notes))
        images = read_folder(a.data, labels, size, columns)
    except (ValError, BundleError, SignatureError, ValueError, OSError) as e:
        print(f"skinedge val: {e}", file=sys.stderr)
        return 2
    finally:
        for c in columns:
            c.close()
    if not len(images.labels):
        print(f"skinedge val: {a.data}: no readable labelled image", file=sys.stderr)
        return 2
    float_col = next((c for c in columns if c.name.startswith(("float", "fp32_onnx (float"))), None)
    top1 = None if float_col is None else _top1(float_col, len(labels))
    scores = [score(c, images.labels, len(labels), None if c is float_col else top1) for c in columns]
    counts = f"{len(images.labels)} labelled images" + "".join(
        f"; {n} {what}" for n, what in ((images.unlabelled, "outside class sub-folders, left out"),
                                        (images.skipped, "unreadable, skipped")) if n) + (
        f"; {images.converted}" if images.converted else "")
    print(counts)
    print(summary_table(scores))
    shown = _board_column(scores, bundle)
    print(f"{shown.name}: confusion matrix (rows: true class; columns: predicted)\n"
          f"{confusion_markdown(shown.confusion, labels)}\n{per_class_markdown(shown.confusion, labels)}")
    try:
        written = write_files(out, scores, labels, f"{name} on `{a.data}`: {counts}.")
        if a.results:
            write_results(a.results, images, columns, labels)
    except OSError as e:  # checked before the run; a disk that filled up since is still one line
        print(f"skinedge val: cannot write the results: {e.strerror or e}: {e.filename}", file=sys.stderr)
        return 2
    print(f"written to {out}/: {', '.join(written)}" + ("" if any(w.endswith(".png") for w in written) else
                                                         " (no PNGs: matplotlib is not installed here)")
          + (f"; per image: {a.results}" if a.results else ""))
    return 0


def _identity(a: argparse.Namespace, bundle, checkpoint: Path | None) -> tuple[list[str], tuple[int, int], str]:
    """Class names, input size and a name for the output folder, from the bundle, else the checkpoint."""
    if bundle is not None:
        return bundle.labels, bundle.input_size, bundle.name
    meta = _meta(checkpoint)
    labels = meta.get("labels") or (a.labels.split(",") if a.labels else None)
    if not labels:
        from edge.val import ValError

        raise ValError(f"{checkpoint}: no class names recorded in it: give --labels a,b,c (in training order)")
    size = a.input_size or int(meta.get("size") or 224)
    return list(labels), (size, size), checkpoint.stem


def _meta(checkpoint: Path) -> dict:
    with needs_extra("val with a checkpoint"):
        from convert.float_column import checkpoint_meta
    return checkpoint_meta(checkpoint)


def _bundle_gates(bundle, cfg):
    from edge.gates import for_bundle

    return for_bundle(bundle, cfg, use_motion=False)


def _top1(col, k: int):
    import numpy as np

    return np.asarray(col.probs).reshape(-1, k).argmax(1)


def _board_column(scores, bundle):
    """The column of the artefact a board runs by default (`auto`), else the first."""
    if bundle is not None:
        from edge.backends import artefact_for, resolve

        try:
            want = artefact_for(resolve("auto", bundle), "int8")
            return next((s for s in scores if s.name == want), scores[0])
        except (ValueError, RuntimeError):
            pass
    return scores[0]


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
