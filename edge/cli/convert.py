"""`skinedge convert` (workstation: imports the converter lazily); `synth` and `train` are listed here for --help, and `main` hands their arguments to the workstation modules."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edge.cli.common import bounded, count, fraction, needs_extra


def _convert(a: argparse.Namespace) -> int:
    with needs_extra("convert"):
        from calibration.dataset import DatasetError, scan
    try:
        for folder in (a.calib, a.val):
            scan(folder)  # a wrong folder is refused at once, not after seconds of importing torch
    except DatasetError as e:
        print(f"skinedge convert: error: {e}", file=sys.stderr)
        return 2
    with needs_extra("convert"):
        from convert.export import preprocessing
        from convert.pipeline import ConvertError, Options, check, convert, partial_path
        from convert.runlog import logged
    from edge.outputs import OutputError

    try:
        pre = preprocessing(a.preprocess, a.mean, a.std, a.channel_order, a.pixel_units)
    except ValueError as e:
        print(f"skinedge convert: error: {e}", file=sys.stderr)
        return 2
    opts = Options(
        arch=a.arch, calib=a.calib, val=a.val, out=a.out, checkpoint=a.checkpoint, random_init=a.random_init,
        trust_checkpoint=a.trust_checkpoint, labels=a.labels, preprocessing=pre,
        input_size=a.input_size, calib_method=a.calib_method, reduce_range=a.reduce_range, mixed_precision=a.mixed_precision,
        adaround=a.adaround, quark_python=a.quark_python, bias_correction=not a.no_bias_correction,
        calib_per_class=a.calib_per_class, val_per_class=a.val_per_class, formats=tuple(a.formats.split(",")),
        name=a.name, version=a.version, force=a.force, card=a.card,
    )
    try:
        check(opts)  # before the log is opened beside an existing bundle
        log = _log(a.out)
        with logged(log):
            report = convert(opts)
    except (ConvertError, OutputError) as e:
        print(f"skinedge convert: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"skinedge convert: interrupted; nothing written ({partial_path(a.out)} and temporary folders removed)",
              file=sys.stderr)
        return 130
    print(summary(a.out, report, a.strict, log), file=sys.stderr if a.strict and report["warnings"] else sys.stdout)
    return 3 if a.strict and report["warnings"] else 0


def _log(out: Path) -> Path:
    """`<out>.convert.log`, beside the bundle, checked writable before the conversion starts."""
    from edge.outputs import OutputError, probe

    if not out.name or out.name in (".", ".."):
        raise OutputError(f"--out {str(out)!r}: give the bundle folder a name, e.g. bundles/micro")
    log = out.with_name(out.name + ".convert.log")
    try:
        log.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"--out {out}: cannot make its folder {log.parent} ({e.strerror or e})") from None
    return probe(log, "--out: the conversion log")


def summary(out: Path, report: dict, strict: bool, log: Path) -> str:
    """The last line: where the bundle is, and plainly whether it is below the bar."""
    below = [r["artefact"] for r in report["validation"] if r["warnings"]]
    if not below:
        return f"bundle written to {out}: every artefact meets the bars (log: {log})"
    what = f"BELOW THE BAR: {', '.join(below)} (see the warnings above)"
    if strict:
        return f"skinedge convert: --strict: refused: {what}; the bundle at {out} is not fit to deploy"
    return f"bundle written to {out}, but {what}; --strict makes this exit 3 (log: {log})"


def add_parsers(sub) -> None:
    c = sub.add_parser("convert", help="PyTorch checkpoint -> bundle (workstation; needs the convert extra)")
    c.add_argument("--arch", required=True, help="zoo name, torchvision classifier name, or package.module:factory")
    g = c.add_mutually_exclusive_group(required=True)
    g.add_argument("--checkpoint", type=Path)
    g.add_argument("--random-init", action="store_true",
                   help="no checkpoint: random weights (testing the toolchain), or those a factory loads itself")
    c.add_argument("--trust-checkpoint", action="store_true", help="allow a full pickle (it can run code)")
    c.add_argument("--labels", help="class names in training order: comma-separated, or a file (one per line, or "
                   "JSON) (default: the --calib class folders, sorted; else the model's own)")
    c.add_argument("--calib", required=True, type=Path,
                   help="calibration images: a flat folder (unlabelled) or one sub-folder per class")
    c.add_argument("--val", required=True, type=Path, help="held-out validation images: a flat folder (unlabelled: "
                   "agreement only) or one sub-folder per class (a subset of the classes is fine)")
    c.add_argument("--preprocess", choices=["imagenet", "inception", "lite", "raw", "caffe"],
                   help="the model's normalisation (default imagenet): inception (x-127.5)/127.5, lite (x-127)/128, "
                   "raw x/255, caffe x-mean in BGR; baked into the graph")
    c.add_argument("--mean", type=float, nargs="+", help="per-channel mean (1 or 3 values, in the model's channel "
                   "order), in 0..1 units like torchvision's Normalize (0..255 with --pixel-units); overrides the preset")
    c.add_argument("--std", type=float, nargs="+", help="per-channel std, units as --mean; overrides the preset")
    c.add_argument("--pixel-units", action="store_true", help="--mean/--std are in 0..255 pixel units (e.g. 127 128)")
    c.add_argument("--channel-order", choices=["RGB", "BGR"], help="the model's channel order (default: the preset's, "
                   "RGB except caffe); the graph takes RGB and reorders")
    c.add_argument("--out", required=True, type=Path, help="bundle directory to write")
    c.add_argument("--input-size", type=bounded(8, 8192), default=224)
    c.add_argument("--calib-method", default="minmax", choices=["minmax", "percentile", "entropy", "auto"],
                   help="minmax (default): every activation's observed range; percentile: clip the first half of the "
                   "network's activations, the rest min-max; auto: minmax or percentile, whichever keeps more answers "
                   "on held-out calibration images")
    c.add_argument("--reduce-range", action="store_true", help="7-bit int8 ONNX weights: only for ONNX Runtime on an "
                   "x86 CPU without VNNI (costs accuracy; never for a Pi or Jetson)")
    c.add_argument("--no-bias-correction", action="store_true", help="leave the conv biases as trained (default: "
                   "corrected for the int8 weights' rounding, which keeps answers int8 would lose; not with "
                   "--reduce-range)")
    c.add_argument("--mixed-precision", type=fraction, nargs="?", const=0.99, metavar="BAR",
                   help="if the int8 ONNX agrees with float on fewer than BAR of the calibration images (default "
                   "0.99), keep the convs that cost most in float, within >= 90%% int8 conv MACs and 1.2x size/latency")
    c.add_argument("--adaround", type=count, nargs="?", const=100, metavar="ITERATIONS",
                   help="round the int8 weights with AMD Quark's AdaRound (ITERATIONS per layer, default 100; minutes) "
                   "instead of to nearest; Quark runs in its own Python, see --quark-python")
    c.add_argument("--quark-python", metavar="PYTHON", help="a Python with amd-quark, onnx<=1.22, onnxruntime and torch "
                   "(default: $SKINEDGE_QUARK_PYTHON); Quark cannot share skinedge's onnx version")
    c.add_argument("--calib-per-class", type=count, default=None, help="calibration images per class (default 32); "
                   "for a flat, unlabelled folder: in all (default: all its images, up to 512)")
    c.add_argument("--val-per-class", type=count, default=None, help="as --calib-per-class (default: all)")
    c.add_argument("--formats", default="fp32_onnx,int8_onnx,int8_tflite,fp32_tflite",
                   help="comma-separated artefacts to write (default: all)")
    c.add_argument("--name")
    c.add_argument("--version", default="0.1.0", help="the model's semantic version, e.g. 1.2.0 (default 0.1.0); a "
                   "board refuses a bundle older than one it has accepted from the same signer, so raise it with "
                   "every release")
    c.add_argument("--card", type=Path, help="YAML file stating the model's intended use, intended users, "
                   "out-of-scope uses and limitations for MODEL_CARD.md (keys: intended_use, intended_users, "
                   "out_of_scope, limitations, contact); default: the zoo's skin-lesion wording for zoo models, "
                   "'not stated' for others")
    c.add_argument("--force", action="store_true", help="replace an existing bundle")
    c.add_argument("--strict", action="store_true", help="exit 3 when a fidelity bar is missed")
    c.set_defaults(fn=_convert)

    s = sub.add_parser("synth", help="write a synthetic lesion ImageFolder tree", add_help=False)
    s.set_defaults(fn=None)
    t = sub.add_parser("train", help="train a zoo or torchvision model on an ImageFolder tree, with validation "
                                     "figures every epoch (workstation; needs the convert extra)", add_help=False)
    t.set_defaults(fn=None)
