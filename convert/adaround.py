"""Weight rounding optimised by AMD Quark's AdaRound (or AdaQuant), kept in skinedge's own int8 graph.

Why: on a real ImageNet-pretrained EfficientNet-Lite0 the int8 loss is mostly weight rounding (int8 weights
alone: 89.5 % agreement with float; int8 activations alone: 94.25 %, issue 11). AdaRound picks, per weight,
round-up or round-down to minimise each layer's output error on calibration images instead of rounding to
nearest. Quark 0.13 pins onnx <= 1.22, so it runs in its own Python (convert/quark_worker.py, in a subprocess)
and only its rounded weights are taken: each conv's DequantizeLinear(int8) is written back into the fp32 graph
as float weights already on the int8 grid. Both Quark and convert.quantize use symmetric per-channel scales
max|w|/127, so skinedge's recipe (kept Clip/Relu, U8S8, TensorRT form, mixed precision) re-quantises them to
exactly Quark's integers; `round_into` checks the scales agree.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper
from tqdm import tqdm

from edge.preprocess import to_layout

QUARK_ENV = "SKINEDGE_QUARK_PYTHON"
ROUNDED = "model.rounded.onnx"  # the float graph with rounded weights, made and removed inside a conversion
IMAGES = 64  # calibration images the rounding is optimised on (Quark runs the model over them for every layer)
WORKER = Path(__file__).with_name("quark_worker.py")
ALGORITHMS = ("adaround", "adaquant")
_LAYER = re.compile(r"finetuning layer (\d+)")
_VERSION = re.compile(r"^amd-quark (\S+)")


class QuarkUnavailable(RuntimeError):
    """No Python with AMD Quark was given or found."""


class AimetUnavailable(RuntimeError):
    """aimet-onnx is not installed in this Python."""


def quark_python(python: str | Path | None = None) -> Path:
    """The interpreter that has AMD Quark: `python`, else $SKINEDGE_QUARK_PYTHON; refused in one line otherwise."""
    chosen = python or os.environ.get(QUARK_ENV)
    if not chosen:
        raise QuarkUnavailable(f"AMD Quark not configured: set {QUARK_ENV} (or pass its path) to a Python with "
                               "amd-quark, onnx<=1.22, onnxruntime and torch (Quark cannot share skinedge's onnx)")
    error = _import_error(str(chosen))
    if error:
        raise QuarkUnavailable(f"{chosen}: cannot import quark.onnx ({error[:160]})")
    return Path(chosen)


@functools.cache
def _import_error(python: str) -> str:
    """Why `python` cannot import quark.onnx ('' if it can). Asked once per interpreter and process: the import
    alone takes ~6-11 s, and a conversion asks before it starts and again for each ensemble member."""
    try:
        r = subprocess.run([python, "-c", "import quark.onnx"], capture_output=True, text=True, check=False)
    except OSError as e:  # no such file, not executable
        return str(e)
    return "" if r.returncode == 0 else (r.stderr.strip().splitlines() or ["not runnable"])[-1]


def conv_weights(qdq: onnx.ModelProto) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
    """Conv name -> (int8 weights, per-output-channel scale, float bias) of a QDQ model with per-channel weights."""
    init = {t.name: numpy_helper.to_array(t) for t in qdq.graph.initializer}
    producer = {o: n for n in qdq.graph.node for o in n.output}
    out = {}
    for n in qdq.graph.node:
        dq = producer.get(n.input[1]) if n.op_type == "Conv" else None
        if dq is None or dq.op_type != "DequantizeLinear":
            continue
        scale = init[dq.input[1]].astype(np.float32)
        if dq.input[0] in init:
            q = init[dq.input[0]]
        else:  # float weights still behind a QuantizeLinear with the same scale
            w = init[producer[dq.input[0]].input[0]]
            q = np.clip(np.round(w / scale.reshape((-1,) + (1,) * (w.ndim - 1))), -128, 127).astype(np.int8)
        if np.any(init[dq.input[2]] != 0) if len(dq.input) > 2 else False:
            raise ValueError(f"{n.name}: asymmetric weights (non-zero zero point); expected symmetric int8")
        bias = None
        if len(n.input) > 2 and n.input[2]:
            b = producer.get(n.input[2])
            bias = (init[b.input[0]] * init[b.input[1]]).astype(np.float32) if b is not None else init.get(n.input[2])
        out[n.name] = (q, np.broadcast_to(scale, q.shape[:1]), bias)
    return out


def channel_step(w: np.ndarray) -> np.ndarray:
    """skinedge's int8 weight grid: max|w|/127 per output channel, shaped to broadcast over `w` (0 for an all-zero
    channel)."""
    return (np.abs(w).max(axis=tuple(range(1, w.ndim)), keepdims=True) / 127).astype(np.float32)


def round_into(fp32: onnx.ModelProto, qdq: onnx.ModelProto, take_bias: bool) -> dict:
    """Replace each conv weight of `fp32` (in place) by Quark's DQ(int8); `take_bias` (AdaQuant, which moves
    biases too). Returns how many convs, how many integers differ from round-to-nearest, and the largest scale
    mismatch against max|w|/127 (0: skinedge re-quantises to the very same integers).

    Where AdaRound rounded a channel's largest weight down (126 instead of 127), skinedge's max|w|/127 gives that
    channel a slightly smaller scale and re-rounds it (0.15 % of EfficientNet-Lite0's and -Lite1's integers). Its
    values stay within half a step of Quark's. Pinning that one weight back at 127 keeps every other integer but
    undoes the choice AdaRound made for the channel's largest weight, and measured worse: exact-int8 agreement on
    Lite0 93.75 % against 95.50 %, Lite1 92.00 % both ways (benchmarks.real_weights, 400 crops)."""
    rounded = conv_weights(qdq)
    init = {t.name: t for t in fp32.graph.initializer}
    convs = [n for n in fp32.graph.node if n.op_type == "Conv"]
    missing = [n.name for n in convs if n.name not in rounded]
    if missing:
        raise ValueError(f"Quark's model has no int8 weights for {len(missing)} convs ({', '.join(missing[:4])})")
    flipped = total = 0
    mismatch = 0.0
    for n in convs:
        q, scale, bias = rounded[n.name]
        w = numpy_helper.to_array(init[n.input[1]])
        if q.shape != w.shape:
            raise ValueError(f"{n.name}: Quark's weights {q.shape} do not match the float weights {w.shape}")
        ours = channel_step(w).ravel()
        live = ours > 0  # an all-zero channel quantises to 0 whatever its scale
        if live.any():
            mismatch = max(mismatch, float(np.max(np.abs(scale[live] / ours[live] - 1))))
        shape = (-1,) + (1,) * (w.ndim - 1)
        flipped += int(np.sum(q != np.clip(np.round(w / scale.reshape(shape)), -127, 127)))
        total += q.size
        init[n.input[1]].CopyFrom(numpy_helper.from_array((q * scale.reshape(shape)).astype(np.float32), n.input[1]))
        if take_bias and bias is not None and len(n.input) > 2 and n.input[2] in init:
            init[n.input[2]].CopyFrom(numpy_helper.from_array(bias.astype(np.float32), n.input[2]))
    return {"convs": len(convs), "weights_changed": flipped / max(total, 1), "scale_mismatch": mismatch}


def same_integers(int8: onnx.ModelProto, qdq: onnx.ModelProto) -> float:
    """Share of conv weight integers of `int8` equal to `qdq`'s (1.0: skinedge kept Quark's rounding exactly)."""
    ours, theirs = conv_weights(int8), conv_weights(qdq)
    equal = sum(int(np.sum(q == theirs[name][0])) for name, (q, _, _) in ours.items() if name in theirs)
    return equal / max(sum(q.size for q, _, _ in ours.values()), 1)


def optimise(fp32: Path, out: Path, calib: np.ndarray, iterations: int, *, algorithm: str = "adaround",
             python: str | Path | None = None, progress: bool = True, quark_out: Path | None = None,
             log: Path | None = None) -> dict:
    """Write `out`: the fp32 model with conv weights rounded by Quark's `algorithm` on `calib` ((N,H,W,3) uint8
    through edge.preprocess). Runs Quark's Python in a subprocess with a progress bar over its layers;
    `quark_out`: also keep Quark's own QDQ model; `log`: Quark's output (else only its tail on failure)."""
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown rounding algorithm {algorithm!r}: expected one of {', '.join(ALGORITHMS)}")
    exe = quark_python(python)
    model = onnx.load(str(fp32))
    n_convs = sum(n.op_type == "Conv" for n in model.graph.node)
    with tempfile.TemporaryDirectory() as tmp:
        images, qdq = Path(tmp) / "calib.npy", Path(tmp) / "quark.onnx"
        np.save(images, np.concatenate([to_layout(img, "NCHW") for img in calib]))
        lines = []
        t = time.perf_counter()
        with subprocess.Popen([str(exe), str(WORKER), str(Path(fp32).resolve()), str(qdq), str(images), str(iterations),
                               algorithm],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp) as proc, \
                tqdm(total=n_convs, desc=f"{algorithm} ({iterations} iterations)", unit="layer",
                     disable=not progress, file=sys.stderr) as bar:
            for line in proc.stdout:
                lines.append(line)
                m = _LAYER.search(line)
                if m:
                    bar.n = min(int(m.group(1)) + 1, n_convs)
                    bar.refresh()
        seconds = time.perf_counter() - t
        if log is not None:
            Path(log).write_text("".join(lines))
        if proc.returncode != 0 or not qdq.is_file():
            raise RuntimeError(f"AMD Quark failed (exit {proc.returncode}): {''.join(lines[-5:]).strip()[-400:]}")
        stats = round_into(model, onnx.load(str(qdq)), take_bias=algorithm == "adaquant")
        stats["quark"] = next((m.group(1) for m in map(_VERSION.match, lines) if m), "")
        if quark_out is not None:
            shutil.copyfile(qdq, quark_out)
    onnx.save(model, str(out))
    return {"algorithm": algorithm, "iterations": iterations, "images": len(calib), "seconds": round(seconds, 1),
            **stats}


AIMET_CONFIG = {  # convert.quantize's grid: symmetric per-channel int8 weights (max|w|/127), biases float
    "defaults": {"ops": {"is_output_quantized": "True"}, "params": {"is_quantized": "True", "is_symmetric": "True"},
                 "strict_symmetric": "False", "per_channel_quantization": "True"},
    "params": {"bias": {"is_quantized": "False"}}, "op_type": {},
    "supergroups": [{"op_list": ["Conv", "Clip"]}, {"op_list": ["Conv", "Relu"]}],
    "model_input": {"is_input_quantized": "True"}, "model_output": {},
}


def _float_batch_input(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy that takes float32 raw pixels with a free batch size (AIMET feeds batches and quantises its input;
    the uint8 input's Cast goes, the normalisation stays, the weights keep their names)."""
    from convert.tflite import _remove_input_cast

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    _remove_input_cast(copy, Path("model"))
    for value in list(copy.graph.input) + list(copy.graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    del copy.graph.value_info[:]
    return copy


def _aimet_apply(model: onnx.ModelProto, calib: np.ndarray, algorithm: str, batch: int, **kwargs):
    """(QuantSim model, seconds, aimet version) after `aimet_onnx.<algorithm>(sim, batches, **kwargs)` on `calib`
    ((N,H,W,3) uint8 through edge.preprocess), in this process; the sim is configured to skinedge's weight grid."""
    import json

    try:
        import aimet_onnx
    except ImportError as e:
        raise AimetUnavailable(f"AIMET-ONNX is not installed here (pip install aimet-onnx): {e}") from e
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "config.json"
        config.write_text(json.dumps(AIMET_CONFIG))
        t = time.perf_counter()
        sim = aimet_onnx.QuantizationSimModel(_float_batch_input(model), param_type="int8", activation_type="int8",
                                              quant_scheme="min_max", config_file=str(config))
        name = model.graph.input[0].name
        x = np.stack([img.transpose(2, 0, 1) for img in calib]).astype(np.float32)
        getattr(aimet_onnx, algorithm)(sim, [{name: x[i:i + batch]} for i in range(0, len(x), batch)], **kwargs)
        return sim, time.perf_counter() - t, aimet_onnx.__version__


def aimet_optimise(fp32: Path, out: Path, calib: np.ndarray, iterations: int, *, batch: int = 16) -> dict:
    """Write `out`: the fp32 model with conv weights rounded by AIMET-ONNX's AdaRound on `calib`. AIMET writes its
    rounded weights into its QuantSim model as floats on the int8 grid; they are taken back by initializer name."""
    model = onnx.load(str(fp32))
    sim, seconds, version = _aimet_apply(model, calib, "apply_adaround", batch, num_iterations=iterations)
    stats = write_rounded(model, {t.name: numpy_helper.to_array(t) for t in sim.model.model.graph.initializer})
    onnx.save(model, str(out))
    return {"library": f"aimet-onnx {version}", "algorithm": "adaround", "iterations": iterations,
            "images": len(calib), "seconds": round(seconds, 1), **stats}


def aimet_seq_mse(fp32: Path, out: Path, calib: np.ndarray, candidates: int, *, batch: int = 16) -> dict:
    """Write `out`: the fp32 model with each conv's weights on the per-channel scales AIMET-ONNX's sequential MSE
    chose on `calib` (the scale, among `candidates` fractions of max|w|/127, that minimises the conv's output
    error), clipped and rounded to that grid, so that max|w| of what is written is 127 steps and skinedge's
    recipe and TFLite's converter re-quantise to the same integers. Measured against Quark's AdaRound in
    benchmarks/real_weights.py (`aimet_seq_mse`); not used by `skinedge convert`."""
    model = onnx.load(str(fp32))
    sim, seconds, version = _aimet_apply(model, calib, "apply_seq_mse", batch, num_candidates=candidates)
    init = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    rounded, narrowed, channels = {}, 0, 0
    for n in (n for n in model.graph.node if n.op_type == "Conv"):
        w = init[n.input[1]]
        top = channel_step(w).ravel()
        chosen = np.array([e.delta for e in sim.qc_quantize_op_dict[n.input[1]].get_encodings()])
        step = np.where(top > 0, np.minimum(chosen, top), 1).astype(np.float32).reshape(-1, *[1] * (w.ndim - 1))
        rounded[n.input[1]] = np.clip(np.round(w / step), -127, 127) * step
        narrowed, channels = narrowed + int(np.sum(chosen < top)), channels + len(top)
    stats = write_rounded(model, rounded)
    onnx.save(model, str(out))
    return {"library": f"aimet-onnx {version}", "algorithm": "seq_mse", "candidates": candidates,
            "images": len(calib), "seconds": round(seconds, 1), "channels_narrowed": narrowed / max(channels, 1), **stats}


def write_rounded(fp32: onnx.ModelProto, rounded: dict[str, np.ndarray]) -> dict:
    """Replace each conv weight of `fp32` (in place) by its rounded float values in `rounded` (by initializer
    name); returns how many convs, how many integers differ from round-to-nearest of `fp32`'s weights, and how far
    the rounded values lie off the grid skinedge's recipe will put them on, max|rounded|/127 (in steps; 0:
    convert.quantize re-quantises to the very same integers)."""
    init = {t.name: t for t in fp32.graph.initializer}
    changed = total = 0
    off = 0.0
    convs = [n for n in fp32.graph.node if n.op_type == "Conv"]
    for n in convs:
        w = numpy_helper.to_array(init[n.input[1]])
        r = rounded[n.input[1]].astype(np.float32)
        scale, own = channel_step(w), channel_step(r)
        scale[scale == 0] = 1
        own[own == 0] = 1
        q = r / own
        off = max(off, float(np.abs(q - np.round(q)).max()))
        changed += int(np.sum(np.round(r / scale) != np.clip(np.round(w / scale), -127, 127)))
        total += w.size
        init[n.input[1]].CopyFrom(numpy_helper.from_array(r, n.input[1]))
    return {"convs": len(convs), "weights_changed": changed / max(total, 1), "off_grid_steps": off}


def round_members(sources: dict[str, Path], calib: np.ndarray, iterations: int, python: str | None,
                  progress: bool) -> dict[str, dict]:
    """`skinedge convert --adaround`: each member's fp32 ONNX in `sources` gets a rounded copy (ROUNDED, beside
    it), which `sources` then points to for the int8 artefacts; returns the manifest's `calibration.adaround`."""
    entries = {}
    for name, fp32 in list(sources.items()):
        rounded = fp32.with_name(ROUNDED)
        entries[name] = {k: round(v, 6) if isinstance(v, float) else v for k, v in
                         optimise(fp32, rounded, calib[:IMAGES], iterations, python=python, progress=progress).items()}
        sources[name] = rounded
    return entries


def card_line(entries: dict[str, dict] | None) -> str:
    """MODEL_CARD.md's sentence on the rounding (empty without --adaround)."""
    if not entries:
        return ""
    e = next(iter(entries.values()))
    changed = ", ".join(f"{v['weights_changed']:.1%}" for v in entries.values())
    return (f"Int8 weights (ONNX and TFLite) rounded by AMD Quark {e.get('quark', '')} {e['algorithm']}: "
            f"{e['iterations']} iterations per layer on {e['images']} calibration images; {changed} of the conv "
            "weights rounded away from nearest.\n")
