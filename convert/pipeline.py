"""convert = load -> export -> calibrate -> quantize -> validate -> write bundle.

The bundle is assembled in `<out>.partial` and renamed into place only when every artefact has been
built, run and validated, so an interrupted conversion never leaves something that looks like a bundle.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import pickle
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

import edge
from calibration.dataset import DatasetError, load_batch, sample_per_class, scan
from convert import adaround, auto_method, bias_correction, golden, mixed, validate
from convert.calibrate import Ranges
from convert.card import (
    ZOO_DEFAULT,
    CardError,
    default_card,
    evaluation_section,
    load_card,
    training_section,
    use_section,
)
from convert.export import PRESETS, FeatureTap, Preprocessing, export_onnx, head_arrays
from convert.labels import resolve as resolve_labels
from convert.memory import peak_rss_mb
from convert.ood import bundle_model, card_section, fit_for_set
from convert.quantize import LATE_SHARE, METHODS, int8_ranges, quantize_int8
from convert.runlog import Stages, terminal
from convert.zoo import UnknownArchError, check_arch, split_model
from edge import gradcam
from edge.classify import Classifier, softmax
from edge.gates import GATE_FILE
from edge.trust import safeyaml, semver
from edge.trust.bundle import ARTEFACT_FILES, FORMAT, MANIFEST, hash_tree, load_bundle

FORMATS = ("fp32_onnx", "int8_onnx", "int8_tflite", "fp32_tflite")
# backend kind and precision that run each artefact through the board's own code
RUNNERS = {"fp32_onnx": ("onnx", "fp32"), "int8_onnx": ("onnx", "int8"), "int8_tflite": ("tflite", "int8"),
           "fp32_tflite": ("tflite", "fp32")}
TENSORRT_FORM = "int8_onnx (TensorRT form)"  # a validation row, not a file in the bundle
CALIB_PER_CLASS = 32  # calibration images per class of a class tree, unless --calib-per-class says otherwise
# A flat (unlabelled) calibration folder gives all its images up to this many: activation ranges and AdaRound
# improve with more images, and the memory bar (convert.memory: <= 3 GB at 224 px) was measured at 512.
FLAT_CALIB_CAP = 512


class ConvertError(RuntimeError):
    """A conversion that cannot go on; the message is one line naming the input at fault."""


@dataclass
class Options:
    arch: str
    calib: Path
    val: Path
    out: Path
    checkpoint: Path | None = None
    random_init: bool = False
    trust_checkpoint: bool = False
    labels: list[str] | str | None = None  # names, or a --labels string (a file, or comma-separated)
    preprocessing: Preprocessing = PRESETS["imagenet"]
    input_size: int = 224
    calib_method: str = "minmax"  # with bias correction (below): issue 21, benchmarks/README.md "Bias correction"
    reduce_range: bool = False  # 7-bit int8 weights: only for ONNX Runtime on x86 without VNNI (convert.quantize)
    mixed_precision: float | None = None  # agreement bar below which convs keep float weights (convert.mixed)
    adaround: int | None = None  # AdaRound iterations per layer (AMD Quark, convert.adaround) for every int8 artefact
    quark_python: str | None = None  # the Python that has AMD Quark (else $SKINEDGE_QUARK_PYTHON)
    bias_correction: bool = True  # conv biases corrected for the int8 weights' rounding (convert.bias_correction)
    calib_per_class: int | None = None  # None: CALIB_PER_CLASS per class; a flat folder: all, up to FLAT_CALIB_CAP
    val_per_class: int | None = None
    formats: tuple[str, ...] = FORMATS
    name: str | None = None
    version: str = "0.1.0"  # the model's semantic version: boards refuse one older than they accepted
    card: Path | None = None  # the user's card file (convert/card.py): intended use, users, limitations
    n_golden: int = 24
    gate_per_class: int = 100  # calibration images per class (of all, if unlabelled) the OOD gate is fitted on
    force: bool = False
    progress: bool = True
    log: list[str] = field(default_factory=list)


def load_checkpoint(model: torch.nn.Module, path: Path, trust: bool) -> dict | None:
    """Load weights with torch.load(weights_only=True) unless trusted; list missing/unexpected keys on mismatch.
    Returns the training record `skinedge train` keeps beside the weights (None for other checkpoints)."""
    path = Path(path)
    if not path.is_file():
        raise ConvertError(f"{path}: checkpoint not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=not trust)
    except pickle.UnpicklingError as e:
        raise ConvertError(f"{path}: refused by torch.load(weights_only=True) ({str(e).splitlines()[0][:160]}); "
                           "pass --trust-checkpoint only if you trust this file, since a full pickle can run code") from e
    except Exception as e:  # torch raises RuntimeError/EOFError/zipfile errors for files that are not checkpoints
        raise ConvertError(f"{path}: not a PyTorch checkpoint ({type(e).__name__}: {str(e).splitlines()[0][:160]})") from e
    training = obj.get("training") if isinstance(obj, dict) and isinstance(obj.get("training"), dict) else None
    if isinstance(obj, torch.nn.Module):
        obj = obj.state_dict()
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ConvertError(f"{path}: no state dict found (expected a dict of tensors, or one under 'state_dict')")
    state = {k.removeprefix("module."): v for k, v in obj.items()}
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
                  if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or mismatched:
        parts = []
        for what, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)):
            if keys:
                parts.append(f"{len(keys)} {what}: " + ", ".join(keys[:6]) + (" ..." if len(keys) > 6 else ""))
        raise ConvertError(f"{path}: does not fit the architecture: " + "; ".join(parts))
    model.load_state_dict(state)
    return training


MANIFEST_FIGURES = ("top1_agreement", "accuracy", "macro_f1", "max_dprob", "cam_correlation")  # per validation row


def _members(model: torch.nn.Module, arch: str) -> list[tuple[str, float, torch.nn.Module]]:
    """(name, weight, module) per member: one for a single model, several for a WeightedEnsemble."""
    if hasattr(model, "members") and hasattr(model, "weights"):
        return list(zip(model.member_names, [float(w) for w in model.weights], model.members))
    return [(arch.replace(":", "_").replace(".", "_"), 1.0, model)]


def _float_outputs(taps: list[FeatureTap], weights: list[float], images: np.ndarray, batch: int = 16
                   ) -> validate.Outputs:
    """The float torch model's probabilities and Grad-CAM on the validation images."""
    heads = [gradcam.head_from_arrays(head_arrays(t.head)) for t in taps]
    probs, cams = [], []
    with torch.no_grad():
        for start in range(0, len(images), batch):  # batched: several times faster than image by image
            x = torch.from_numpy(images[start:start + batch]).permute(0, 3, 1, 2)
            outs = [(lg.numpy(), f.numpy()) for lg, f in (t(x) for t in taps)]
            for i in range(len(x)):
                p = sum(w * softmax(lg[i].astype(np.float64)) for w, (lg, _) in zip(weights, outs)) / sum(weights)
                target = int(np.argmax(p))
                maps = [gradcam.gradcam(f[i], h, target)[0] for (_, f), h in zip(outs, heads)]
                probs.append(p)
                cams.append(gradcam.combine(maps, weights))
    return validate.Outputs(np.array(probs), np.array(cams))


def _artefact_outputs(root: Path, artefact: str, images: np.ndarray, progress: bool,
                      reference: bool = False, fused: bool = False) -> validate.Outputs:
    """Run one artefact through the board's own Classifier; `reference`: ONNX Runtime without graph
    optimisation (exact QDQ integer arithmetic, what ARM and TensorRT compute; see convert.golden); `fused`:
    this CPU's fused kernels, even where they saturate (the card's CPU note)."""
    kind, precision = RUNNERS[artefact]
    clf = Classifier(load_bundle(root, verify=False), kind, threads=2, precision=precision, reference=reference,
                     fused=fused)
    probs, cams = [], []
    for img in tqdm(images, desc=f"validate {artefact}", disable=not progress, leave=False):
        r = clf(img)
        probs.append(r.probs)
        cams.append(r.cam)
    return validate.Outputs(np.array(probs), np.array(cams))


def _lesion_masks(paths: list[Path], size: tuple[int, int]) -> list[np.ndarray | None] | None:
    """Lesion masks written beside synthetic images, cropped and resized as the images were; None if none."""
    from calibration.synthetic import load_mask
    from edge.preprocess import centre_crop

    masks = []
    for p in paths:
        m = load_mask(p)
        if m is not None:
            crop = centre_crop(m[:, :, None].astype(np.uint8), size[1] / size[0])[:, :, 0]
            m = cv2.resize(crop, (size[1], size[0]), interpolation=cv2.INTER_NEAREST) > 0
        masks.append(m)
    return masks if any(m is not None for m in masks) else None


def _validate_tensorrt_form(partial: Path, man_models: list[dict], validate_artefact) -> validate.Row:
    """The int8 ONNX as TensorRT will build it (edge.backends.tensorrt.symmetric_qdq), run by ONNX Runtime:
    what a Jetson should expect, give or take TensorRT's own kernels."""
    from edge.backends.tensorrt import symmetric_qdq

    name = "model.int8.tensorrt-form.onnx"
    for m in man_models:
        mdir = partial / m["dir"]
        (mdir / name).write_bytes(symmetric_qdq((mdir / ARTEFACT_FILES["int8_onnx"]).read_bytes()))
        m["artefacts"]["int8_onnx"] = name
    try:
        return validate_artefact("int8_onnx", TENSORRT_FORM, reference=True)
    finally:
        for m in man_models:
            (partial / m["dir"] / name).unlink()
            m["artefacts"]["int8_onnx"] = ARTEFACT_FILES["int8_onnx"]


def _calib_text(calib_set, per_class: int, asked: int | None) -> str:
    """How the calibration images were taken from the folder, for the summary: a cap is never silent."""
    found = len(calib_set.samples)
    if calib_set.classes:
        return f"up to {per_class} per class ({'--calib-per-class' if asked else 'default'}) of {found} found"
    how = "--calib-per-class" if asked else f"the flat-folder cap {FLAT_CALIB_CAP}"
    return f"all {found} of the flat folder" if found <= per_class else f"{per_class} of {found}: {how}"


def _quantize_members(partial: Path, man: dict, sources: dict[str, Path], images: np.ndarray, method: str,
                      opts: Options, say, name: str = ARTEFACT_FILES["int8_onnx"],
                      ranges: dict[str, Ranges] | None = None) -> str:
    """Each member's int8 ONNX (`name`) calibrated with `method` on `images` (or from its pass in `ranges`); returns
    the method used: onnxruntime's histogram calibrators fail on a tensor with no spread (e.g. a dead channel group
    in an untrained model), and then minmax, which has no histogram, is used instead and said so."""
    try:
        for m in man["models"]:
            quantize_int8(sources[m["name"]], partial / m["dir"] / name, images, method, reduce_range=opts.reduce_range,
                          progress=opts.progress, ranges=ranges and ranges[m["name"]])
            m["artefacts"]["int8_onnx"] = name
    except ValueError as e:
        if method == "minmax":
            raise ConvertError(f"minmax calibration failed: {e}") from e
        say(f"WARNING: {method} calibration failed ({e}); using minmax")
        return _quantize_members(partial, man, sources, images, "minmax", opts, say, name)
    _write_manifest(partial, man, with_hashes=False)
    return method


def _candidate_passes(man: dict, sources: dict[str, Path], images: np.ndarray, opts: Options, say
                      ) -> dict[str, dict[str, Ranges]]:
    """{candidate: {member: ranges}} for `auto`, from one calibration pass per member (auto_method.candidates); only
    minmax's, from a pass of its own, if the histograms fail."""
    try:
        passes = {m["name"]: auto_method.candidates(int8_ranges(sources[m["name"]], images, auto_method.PASS,
                                                                progress=opts.progress)) for m in man["models"]}
    except ValueError as e:
        say(f"WARNING: {auto_method.PASS} calibration failed ({e}); auto can only keep minmax")
        return {"minmax": {m["name"]: int8_ranges(sources[m["name"]], images, "minmax") for m in man["models"]}}
    return {method: {member: ranges[method] for member, ranges in passes.items()} for method in auto_method.ORDER}


def _choose_method(partial: Path, man: dict, sources: dict[str, Path], images: np.ndarray, taps: list[FeatureTap],
                   weights: list[float], opts: Options, say) -> tuple[str, dict]:
    """`--calib-method auto` (convert.auto_method): each candidate calibrated on the fit split of the calibration
    images and scored, exactly, on the selection split; returns (method, the manifest's `calibration.auto`)."""
    fit, select = auto_method.split(len(images))
    ref = _float_outputs(taps, weights, images[select]).probs
    t = time.perf_counter()
    passes = _candidate_passes(man, sources, images[fit], opts, say)
    candidates, scores = {}, {}
    for method in auto_method.ORDER:
        if method not in passes:
            candidates[method] = {"failed": "histogram calibration failed"}
            continue
        _quantize_members(partial, man, sources, images[fit], method, opts, say, f"model.int8.{method}.onnx",
                          ranges=passes[method])
        got = _artefact_outputs(partial, "int8_onnx", images[select], opts.progress, reference=True).probs
        scores[method] = auto_method.score(ref, got)
        candidates[method] = scores[method].as_dict()
        say(f"auto: {method} calibration on {len(fit)} images, on {len(select)} others: {_score_text(scores[method])}")
    for m in man["models"]:
        for path in (partial / m["dir"]).glob("model.int8.*.onnx"):
            path.unlink()
    chosen = auto_method.choose(scores)
    return chosen, {"chosen": chosen, "fit_images": len(fit), "select_images": len(select),
                    "held_out": bool(len(fit) < len(images)), "seconds": round(time.perf_counter() - t, 2),
                    "candidates": candidates}


def _score_text(s: auto_method.Score) -> str:
    return (f"agreement {s.agreement:.2%}, where float >= 0.5 {s.agreement_sure:.2%} ({s.n_sure}), "
            f"float top-1 probability drop {s.top1_drop:.4f}")


def _sure_text(row: validate.Row) -> str:
    return "-" if row.agreement_sure is None else f"{row.agreement_sure:.2%} ({row.n_sure})"


def _write_manifest(root: Path, man: dict, with_hashes: bool) -> None:
    man = dict(man, artefacts=hash_tree(root) if with_hashes else {})
    (root / MANIFEST).write_text(safeyaml.dump(man))


def check(opts: Options) -> None:
    """What can be refused in a second, before any file is written: ConvertError naming the option."""
    if Path(opts.out).exists() and not opts.force:
        raise ConvertError(f"{opts.out}: already exists (use --force to replace it)")
    unknown = [f for f in opts.formats if f not in FORMATS]
    if unknown:
        raise ConvertError(f"unknown format(s) {unknown}: expected some of {list(FORMATS)}")
    if opts.calib_method != "auto" and opts.calib_method not in METHODS:
        raise ConvertError(f"unknown calibration method {opts.calib_method!r}: expected auto or one of {sorted(METHODS)}")
    if (opts.checkpoint is None) == (not opts.random_init):
        raise ConvertError("give exactly one of --checkpoint P or --random-init")
    try:
        semver.parse(opts.version)
    except ValueError as e:
        raise ConvertError(f"--version: {e}") from e
    try:
        check_arch(opts.arch)  # before minutes of loading images
        if opts.adaround:
            adaround.quark_python(opts.quark_python)
        if opts.card is not None:
            load_card(opts.card)
    except (UnknownArchError, adaround.QuarkUnavailable, CardError) as e:
        raise ConvertError(str(e)) from e


def partial_path(out: Path) -> Path:
    """Where the bundle is assembled before it is renamed into place."""
    return Path(out).with_name(Path(out).name + ".partial")


def convert(opts: Options) -> dict:
    """Run the whole conversion; returns the report (also written as report.json).

    Any failure is a ConvertError of one line (an unexpected one names the stage it happened in, and the log
    that holds the traceback, convert/runlog.py); on any failure or interruption (KeyboardInterrupt, re-raised)
    `<out>.partial` is removed, and the temporary folders of the stages remove themselves."""
    check(opts)
    stages = Stages()
    try:
        return _convert(opts, stages)
    except BaseException as e:
        shutil.rmtree(partial_path(opts.out), ignore_errors=True)
        if isinstance(e, ConvertError) or not isinstance(e, Exception):
            raise
        raise ConvertError(str(e) if isinstance(e, DatasetError) else stages.failed(e)) from e


def _convert(opts: Options, stages: Stages) -> dict:
    t_start = time.perf_counter()
    out = Path(opts.out)

    def say(msg: str) -> None:
        opts.log.append(msg)
        if opts.progress:
            tqdm.write(msg, file=terminal())

    # 1. data, class names and the model (see convert/labels.py)
    stages.at("data")
    try:
        labels, model = resolve_labels(opts.arch, opts.labels, scan(opts.calib).classes)
        calib_set, val_set = scan(opts.calib, labels), scan(opts.val, labels)
    except ValueError as e:  # DatasetError, UnknownArchError, labels that do not fit the model
        raise ConvertError(str(e)) from e
    size = (opts.input_size, opts.input_size)
    per_class = opts.calib_per_class or (CALIB_PER_CLASS if calib_set.classes else FLAT_CALIB_CAP)
    calib = load_batch(sample_per_class(calib_set, per_class, seed=0), size)
    val = load_batch(sample_per_class(val_set, opts.val_per_class, seed=1), size)
    say(f"data: {len(calib.images)} calibration images ({_calib_text(calib_set, per_class, opts.calib_per_class)}; "
        f"{len(calib.skipped)} skipped), "
        f"{len(val.images)} validation images ({len(val.skipped)} skipped, "
        f"{'labelled' if val_set.classes else 'unlabelled'}), {len(labels)} classes "
        f"{', '.join(labels[:10])}{' ...' if len(labels) > 10 else ''}; {opts.preprocessing.describe()}")
    for batch, what in ((calib, "calibration"), (val, "validation")):
        if batch.converted:
            say(f"{what}: {batch.converted}")

    # 2. model
    stages.at("export")
    training = None
    if opts.checkpoint is not None:
        training = load_checkpoint(model, opts.checkpoint, opts.trust_checkpoint)
    model.eval()
    members = _members(model, opts.arch)
    taps = [FeatureTap(split_model(m), opts.preprocessing).eval() for _, _, m in members]
    weights = [w for _, w, _ in members]

    partial = partial_path(out)
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    timings: dict[str, float] = {}
    man_models = []
    for i, ((name, weight, _), tap) in enumerate(zip(members, taps)):
        mdir = "." if len(members) == 1 else f"members/{i}_{name}"
        (partial / mdir).mkdir(parents=True, exist_ok=True)
        t = time.perf_counter()
        export_onnx(tap, size, partial / mdir / ARTEFACT_FILES["fp32_onnx"])
        timings[f"export {name}"] = time.perf_counter() - t
        np.savez(partial / mdir / ARTEFACT_FILES["head"], **head_arrays(tap.head))
        with torch.no_grad():
            logits, feats = tap(torch.zeros(1, 3, *size, dtype=torch.uint8))
        man_models.append({
            "name": name, "arch": opts.arch if len(members) == 1 else name, "dir": mdir, "weight": weight,
            "outputs": {"logits": list(logits.shape), "features": list(feats.shape)},
            "artefacts": {"fp32_onnx": ARTEFACT_FILES["fp32_onnx"], "head": ARTEFACT_FILES["head"]},
        })
        say(f"exported {name}: features {list(feats.shape)}, {timings[f'export {name}']:.1f} s")

    man = {
        "format": FORMAT,
        "name": opts.name or out.name,
        "arch": opts.arch,
        "version": opts.version,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "labels": labels,
        "input": {"size": list(size), "dtype": "uint8", "layout": {"onnx": "NCHW", "tflite": "NHWC"},
                  "normalisation": opts.preprocessing.manifest()},
        "ensemble": {"weights": weights} if len(members) > 1 else None,
        "models": man_models,
    }
    _write_manifest(partial, man, with_hashes=False)

    # 3. float reference
    stages.at("float reference")
    ref = _float_outputs(taps, weights, val.images)
    masks = _lesion_masks(val.paths, size)
    rows = [validate.compare("float (torch)", ref, None, val.labels, labels, masks)]
    results: dict[str, validate.Row] = {}

    def validate_artefact(artefact: str, label: str | None = None, reference: bool = False,
                          fused: bool = False) -> validate.Row:
        _write_manifest(partial, man, with_hashes=False)
        got = _artefact_outputs(partial, artefact, val.images, opts.progress, reference, fused)
        return validate.compare(label or artefact, got, ref, val.labels, labels, masks)

    for m in man_models:
        m["artefacts"]["fp32_onnx"] = ARTEFACT_FILES["fp32_onnx"]
    results["fp32_onnx"] = validate_artefact("fp32_onnx")

    # 4. int8 ONNX from the float graph (AdaRound-rounded, bias-corrected) both int8 artefacts share; `auto` chooses
    # its calibration method on a split of the calibration images (convert.auto_method)
    stages.at("int8 sources")
    used = np.bincount(calib.labels[calib.labels >= 0], minlength=len(labels))  # none for a flat folder
    calibration = {"n": len(calib.images), "per_class": {lab: int(n) for lab, n in zip(labels, used) if n},
                   "taken": _calib_text(calib_set, per_class, opts.calib_per_class),
                   "weight_bits": 7 if opts.reduce_range else 8,
                   "source_digest": hashlib.sha256(calib.images.tobytes()).hexdigest()}
    floats = {m["name"]: partial / m["dir"] / ARTEFACT_FILES["fp32_onnx"] for m in man_models}
    sources = dict(floats)  # what each member's int8 artefacts are made from
    int8 = "int8_onnx" in opts.formats or "int8_tflite" in opts.formats
    if opts.adaround and int8:
        calibration["adaround"] = adaround.round_members(sources, calib.images, opts.adaround, opts.quark_python,
                                                         opts.progress)
    if opts.bias_correction and not opts.reduce_range and int8:
        stages.at("bias correction")
        calibration["bias_correction"] = bias_correction.correct_members(sources, floats, calib.images, opts.progress)
    made = [p.with_name(f) for p in floats.values() for f in (adaround.ROUNDED, bias_correction.CORRECTED)]
    stages.at("int8 ONNX")
    if int8:
        method = opts.calib_method
        if method == "auto":
            method, choice = _choose_method(partial, man, sources, calib.images, taps, weights, opts, say)
            calibration["auto"] = choice
        method = _quantize_members(partial, man, sources, calib.images, method, opts, say)
        calibration.update(method=method, requested=opts.calib_method, minmax_late_share=LATE_SHARE)
        results["int8_onnx"] = validate_artefact("int8_onnx", reference=True)
        say(f"int8 ONNX, {method} calibration: agreement {results['int8_onnx'].top1_agreement:.2%}, "
            f"where float >= 0.5 {_sure_text(results['int8_onnx'])}, max |dprob| {results['int8_onnx'].max_dprob:.4f}")
        if opts.mixed_precision is not None:
            calibration["mixed_precision"] = {m["name"]: mixed.apply(  # an ensemble gets one search per member
                partial / m["dir"] / ARTEFACT_FILES["fp32_onnx"], partial / m["dir"] / ARTEFACT_FILES["int8_onnx"],
                calib.images, opts.mixed_precision, progress=opts.progress) for m in man_models}
            results["int8_onnx"] = validate_artefact("int8_onnx", reference=True)
        if "int8_onnx" not in opts.formats:
            del results["int8_onnx"]
        else:
            fused = validate_artefact("int8_onnx", "int8_onnx (this CPU's fused kernels)", fused=True)
            cpu = golden.cpu()
            calibration["this_cpu_fused"] = {"top1_agreement": round(fused.top1_agreement, 6), "cpu": cpu["cpu"],
                                             "max_dprob": round(fused.max_dprob, 6), "vnni": cpu["vnni"]}
            results[TENSORRT_FORM] = _validate_tensorrt_form(partial, man_models, validate_artefact)

    # 5. TFLite: int8 (and onnx2tf's float32 model, the LiteRT float baseline)
    stages.at("TFLite")
    tflite_kinds = [f for f in ("int8_tflite", "fp32_tflite") if f in opts.formats]
    kernel_notes = []  # XNNPACK refused an int8 TFLite: the board runs LiteRT's built-in kernels (slower)
    if tflite_kinds:
        from convert.tflite import convert_float_tflite, convert_tflite

        for m in man_models:
            t = time.perf_counter()
            mdir = partial / m["dir"]
            fp32_onnx, fp32 = mdir / ARTEFACT_FILES["fp32_onnx"], mdir / ARTEFACT_FILES["fp32_tflite"]
            outputs = {}
            if "fp32_tflite" in tflite_kinds and ("int8_tflite" not in tflite_kinds or sources[m["name"]] != fp32_onnx):
                # the float model alone: no int8 wanted, or the int8 comes from other (--adaround's rounded) weights
                outputs["fp32_tflite"] = convert_float_tflite(fp32_onnx, calib.images[:1], fp32)
            if "int8_tflite" in tflite_kinds:
                both = "fp32_tflite" in tflite_kinds and "fp32_tflite" not in outputs
                res = convert_tflite(sources[m["name"]], calib.images, mdir / ARTEFACT_FILES["int8_tflite"],
                                     fp32_out=fp32 if both else None)
                outputs["int8_tflite"] = dict(res.outputs)
                if res.note:
                    kernel_notes.append(f"TFLite kernels ({m['name']}): {res.note}")
                if both:
                    outputs["fp32_tflite"] = res.fp32_outputs
            for kind in tflite_kinds:
                m["artefacts"][kind] = ARTEFACT_FILES[kind]
            m["tflite_outputs"] = {kind: outputs[kind] for kind in tflite_kinds}
            timings[f"tflite {m['name']}"] = time.perf_counter() - t
            say(f"TFLite {m['name']} ({', '.join(tflite_kinds)}): {timings['tflite ' + m['name']]:.1f} s")
        for kind in tflite_kinds:
            results[kind] = validate_artefact(kind)
    for path in made:
        path.unlink(missing_ok=True)
    if "int8_onnx" not in opts.formats:
        for m in man_models:
            m["artefacts"].pop("int8_onnx", None)
            (partial / m["dir"] / ARTEFACT_FILES["int8_onnx"]).unlink(missing_ok=True)
    if "fp32_onnx" not in opts.formats:
        results.pop("fp32_onnx")
    rows += list(results.values())

    # 6. the OOD gate (convert/ood.py): fitted on calibration images, threshold on the validation images
    stages.at("OOD gate")
    t = time.perf_counter()
    with bundle_model(partial) as float_model:
        gate = fit_for_set(float_model, weights, calib_set, opts.gate_per_class, val.images, say)
    if gate is not None:
        man["gates"] = {"ood": gate[0]}
        np.savez(partial / GATE_FILE, **gate[1])
    timings["gates"] = time.perf_counter() - t

    # 7. golden self-test data, its measured tolerances and what the numbers mean (gates included)
    stages.at("golden self-test")
    _write_manifest(partial, man, with_hashes=False)
    pick = golden.pick(ref.probs, val.labels, opts.n_golden)
    man.update(golden.write(load_bundle(partial, verify=False), [a for a in results if a in golden.RUNNERS],
                            val.images[pick], ref.probs[pick], ref.cams[pick]))

    # 8. report, model card, manifest with hashes
    stages.at("bundle")
    warnings = [w for r in rows for w in r.warnings] + kernel_notes
    sizes = {f"{m['dir']}/{f}".removeprefix("./"): (partial / m["dir"] / f).stat().st_size
             for m in man_models for f in m["artefacts"].values()}
    man["calibration"] = calibration
    row_dicts = [r.as_dict() for r in rows]  # figures rounded to 6 places
    man["validation"] = {r.artefact: {**{k: d[k] for k in MANIFEST_FIGURES},
                                      "cam_in_mask": None if r.cam_in_mask is None else round(r.cam_in_mask, 4)}
                         for r, d in zip(rows, row_dicts)}
    report = {
        "name": man["name"], "arch": opts.arch, "labels": labels, "input_size": list(size),
        "calibration": calibration, "validation": row_dicts, "warnings": warnings,
        "sizes_bytes": sizes, "timings_s": {k: round(v, 2) for k, v in timings.items()},
        "validation_images": len(val.images), "gates": gate and gate[2],
        "card": load_card(opts.card) if opts.card else default_card(opts.arch),
        "card_source": f"from {Path(opts.card).name}, the model owner's card file" if opts.card else
        "the zoo's default for skin-lesion models" if default_card(opts.arch) is ZOO_DEFAULT else "no card file given",
        "training": training,
    }
    report["timings_s"]["total"] = round(time.perf_counter() - t_start, 2)
    report["peak_rss_mb"] = peak_rss_mb()
    (partial / "report.json").write_text(json.dumps(report, indent=2))
    (partial / "MODEL_CARD.md").write_text(model_card(man, report, rows))
    _write_manifest(partial, man, with_hashes=True)
    load_bundle(partial)  # the bundle we hand over must pass the same checks as on the board
    if out.exists():
        shutil.rmtree(out)
    partial.rename(out)
    say(validate.table(rows))
    rss = report["peak_rss_mb"]
    say(f"time {report['timings_s']['total']:.0f} s, peak RSS {rss['peak']:.0f} MB (this process {rss['self']:.0f} MB, "
        f"largest child process {rss['children']:.0f} MB; /usr/bin/time counts the same way)")
    for w in warnings:
        say(f"WARNING: {w}")
    return report


def _per_class_text(counts: dict[str, int]) -> str:
    """'25 per class', or each class's count where they differ (a class with fewer images than asked for)."""
    if not counts:
        return "unlabelled"
    if len(set(counts.values())) == 1:
        return f"{next(iter(counts.values()))} per class"
    return ", ".join(f"{lab} {n}" for lab, n in counts.items())


def _fused_note(cal: dict) -> str:
    """Why the int8 ONNX rows are exact, and what this CPU's own kernels gave, as a note only."""
    note = cal.get("this_cpu_fused")
    if not note:
        return ""
    return (f"\nThe int8 ONNX rows run ONNX Runtime without graph optimisation: the exact QDQ integer arithmetic "
            f"that ARM boards and TensorRT compute. CPU note: this machine's fused kernels ({note['cpu']}, VNNI: "
            f"{'yes' if note['vnni'] else 'no'}) give top-1 agreement {note['top1_agreement']:.2%}, max abs dprob "
            f"{note['max_dprob']:.4f} (x86 without VNNI sums uint8 x int8 products in int16, which saturates).\n")


def _clipping_line(cal: dict) -> str:
    """What a clipping method clipped (empty for min-max, which clips nothing)."""
    if cal.get("method") not in ("percentile", "entropy"):
        return ""
    return (f"`{cal['method']}` clipped the first {1 - cal.get('minmax_late_share', LATE_SHARE):.0%} of the "
            "activations only: the head and the later activations keep their min-max range, since a clipped range "
            "there cuts exactly what a confident answer is made of. ")


def _auto_section(auto: dict | None) -> str:
    """How `--calib-method auto` chose (empty for a method given by name)."""
    if not auto:
        return ""
    where = (f"calibrated on {auto['fit_images']} of the calibration images and scored on the other "
             f"{auto['select_images']}" if auto["held_out"] else
             f"calibrated and scored on all {auto['select_images']} calibration images (too few to hold some out)")
    rows = "".join(f"| {k} | failed: {v['failed']} | | |\n" if "failed" in v else
                   f"| {k} | {v['agreement']:.2%} | {v['agreement_sure']:.2%} ({v['n_sure']}) | {v['top1_drop']:.4f} |\n"
                   for k, v in auto["candidates"].items())
    return (f"\n`auto` chose `{auto['chosen']}`: each method {where} (exact int8 against the float model; both "
            "from one calibration pass), ranked by "
            "agreement where the float model is >= 50 % sure, then overall agreement, then the mean probability the "
            "float top-1 class loses; the validation images below played no part in the choice.\n\n"
            "| method | agreement | where float ≥ 50% (n) | float top-1 probability drop (mean) |\n|---|---|---|---|\n"
            + rows)


def model_card(man: dict, report: dict, rows: list[validate.Row]) -> str:
    """MODEL_CARD.md: what the model is, how it was converted, and how faithful each artefact is."""
    cal = report["calibration"]
    warn = "\n".join(f"- **{w}**" for w in report["warnings"]) or "- none: every artefact meets the bars."
    members = "".join(f"| {m['name']} | {m['weight']:.2f} | {m['outputs']['features']} |\n" for m in man["models"])
    return f"""# Model card: {man['name']}

- Architecture: `{man['arch']}`; classes: {', '.join(man['labels'])}
- Input: {man['input']['size'][0]}×{man['input']['size'][1]} uint8 RGB; inside the graph {man['input']['normalisation']['formula']}
- Version {man['version']}, created {man['created']} by skinedge {edge.__version__}

| member | weight | features |
|---|---|---|
{members}
{use_section(report['card'], report['card_source'])}{training_section(report.get('training'))}## Calibration
{cal.get('n', 0)} images ({_per_class_text(cal.get('per_class', {}))}; {cal.get('taken', '')}), method `{cal.get('method', 'n/a')}`
(requested `{cal.get('requested', 'n/a')}`), int8 ONNX weights use {cal.get('weight_bits', 8)} bits,
source digest `{cal.get('source_digest', '')[:16]}`.
{_clipping_line(cal)}The logits are not quantised.
{adaround.card_line(cal.get('adaround'))}{bias_correction.card_line(cal.get('bias_correction'))}{_auto_section(cal.get('auto'))}
## Fidelity on {report['validation_images']} held-out images
Bars: top-1 agreement with the float model ≥ {validate.MIN_AGREEMENT:.0%}, accuracy drop ≤ {validate.MAX_ACCURACY_DROP * 100:.0f} point.

{validate.table(rows)}{_fused_note(cal)}
{evaluation_section(rows, man['labels'])}{card_section(report["gates"])}## Warnings
{warn}

{''.join(mixed.card_section(e) for e in cal.get('mixed_precision', {}).values())}
{golden.card_section(man)}"""
