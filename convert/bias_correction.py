"""Bias correction of int8 weight rounding, written into the float graph that both int8 artefacts are made from.

Why: rounding each weight to the nearest int8 step is unbiased weight by weight but not channel by channel. A
depthwise 3x3 kernel has nine weights; their summed rounding error times the channel's mean input shifts that
channel's mean output, and EfficientNet-Lite's depthwise layers carry such shifts through the network: on photographs
unlike the calibration set, int8 lost answers the float model was sure of with every range method (issue 21). The
shift of output channel c is E[conv(x; Q(W) - W)]_c (Nagel et al. 2019, "Data-free quantization", section 4.2;
measured here by running the conv of the error on the calibration images, so the zero padding of small late feature
maps counts). Subtracting it from the float bias cancels it: exact int8 agreement with float 91.5 -> 95.75 % and
3 -> 0 confident answers lost on EfficientNet-Lite0, `plasma` photographs; over Lite0/1/2 and four photo sources
89.7 -> 93.6 % (benchmarks/README.md "Bias correction").

Only the weight error is corrected, not the activations': ONNX Runtime's quantiser and the TFLite converter put
different activation ranges on the same float graph, but both quantise conv weights per channel to the same grid
(symmetric, max|w|/127), so one corrected graph serves both. NNCF's bias correction, measured side by side, also
cancels its own activation quantisers' error, which belongs to neither artefact (its fast variant skips depthwise
convolutions): taken into skinedge's percentile recipe it gave 92.75-93.0 % there, against 96.0 % with this
correction. Convolutions only: the classifier's fully-connected layer stays float in the TFLite (and correcting the
int8 ONNX's changed no answer on Lite1, `plasma`). Not applied with `--reduce-range`: its 7-bit ONNX weights and the
TFLite's 8-bit ones round differently, and one float graph cannot correct both.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, numpy_helper
from onnxruntime.quantization.quant_utils import quantize_data
from tqdm import tqdm

from edge.backends.onnx import session_options
from edge.preprocess import to_layout

CORRECTED = "model.corrected.onnx"  # the float graph with corrected biases, made and removed inside a conversion


def _convs(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """The Conv nodes whose weights are constants (the ones the int8 quantisers round)."""
    constants = {t.name for t in model.graph.initializer}
    return [n for n in model.graph.node if n.op_type == "Conv" and n.input[1] in constants]


def rounding_error(w: np.ndarray) -> np.ndarray:
    """Q(w) - w for conv weights (O, I/g, kh, kw) quantised per output channel as convert.quantize does (ONNX
    Runtime's own `quantize_data`, symmetric int8: the TFLite converter's grid too)."""
    error = np.empty(w.shape, np.float64)
    for c, channel in enumerate(w):
        zero, scale, q = quantize_data(channel.ravel(), TensorProto.INT8, True)
        error[c] = ((q.astype(np.float64) - zero) * scale).reshape(channel.shape) - channel
    return error


def mean_shifts(model: onnx.ModelProto, errors: dict[str, np.ndarray], images: np.ndarray, progress: bool = False
                ) -> dict[str, np.ndarray]:
    """E[conv(x; error)] per output channel for each named conv of the float `model`, x its input, over `images`
    ((N,H,W,3) uint8): the conv of the weight error runs beside the conv (same padding, strides, groups), so zero
    padding at the borders of small late feature maps counts as it does in the network."""
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    del probe.graph.output[:]
    convs = [n for n in model.graph.node if n.name in errors]
    for node in convs:
        tag = f"bias_correction/{node.name}"
        probe.graph.initializer.append(numpy_helper.from_array(errors[node.name].astype(np.float32), f"{tag}/w"))
        probe.graph.node.extend([
            onnx.helper.make_node("Conv", [node.input[0], f"{tag}/w"], [f"{tag}/y"], name=f"{tag}/conv"),
            onnx.helper.make_node("GlobalAveragePool", [f"{tag}/y"], [tag], name=f"{tag}/mean")])
        probe.graph.node[-2].attribute.extend(node.attribute)
        probe.graph.output.append(onnx.helper.make_tensor_value_info(tag, TensorProto.FLOAT, None))
    sess = ort.InferenceSession(probe.SerializeToString(), session_options(1), providers=["CPUExecutionProvider"])
    name, outputs = sess.get_inputs()[0].name, [o.name for o in probe.graph.output]
    totals = [np.zeros(len(errors[n.name])) for n in convs]
    for img in tqdm(images, desc="bias correction", disable=not progress, leave=False, file=sys.stderr):
        for total, value in zip(totals, sess.run(outputs, {name: to_layout(img, "NCHW")})):
            total += value.ravel()
    return {n.name: total / len(images) for n, total in zip(convs, totals)}


def correct(source: Path, out: Path, images: np.ndarray, *, original: Path | None = None,
            progress: bool = False) -> dict:
    """Write `source` with every conv bias corrected for its weights' int8 rounding to `out`; returns a summary.
    `original`: the float model `source`'s weights were derived from (an AdaRound-rounded `source` is already on
    the int8 grid: its error is measured against the original weights), else `source` itself; the shifts are
    measured on the original float model's activations. A graph without convolutions is written unchanged."""
    model = onnx.load(str(source))
    reference = onnx.load(str(original)) if original and Path(original) != Path(source) else model
    convs = _convs(model)
    if len({n.name for n in convs}) < len(convs):
        raise ValueError(f"{source}: convolutions without unique names; cannot correct their biases")
    names = {n.input[1] for n in convs}
    weights = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in model.graph.initializer if t.name in names}
    first = {t.name: numpy_helper.to_array(t) for t in reference.graph.initializer if t.name in names}
    errors = {n.name: rounding_error(weights[n.input[1]]) + weights[n.input[1]] - first[n.input[1]] for n in convs}
    shifts = mean_shifts(reference, errors, images, progress) if convs else {}
    for node in convs:
        _add_to_bias(model, node, -shifts[node.name])
    onnx.save(model, str(out))
    largest = max((float(np.abs(v).max()) for v in shifts.values()), default=0.0)
    return {"convs": len(convs), "images": len(images), "largest_shift": round(largest, 6)}


def correct_members(sources: dict[str, Path], originals: dict[str, Path], images: np.ndarray, progress: bool
                    ) -> dict[str, dict]:
    """Each member's int8 source in `sources` gets a corrected copy (CORRECTED, beside it), which `sources` then
    points to for the int8 artefacts; `originals`: each member's float model; returns the manifest's
    `calibration.bias_correction`."""
    entries = {}
    for name, source in list(sources.items()):
        corrected = source.with_name(CORRECTED)
        entries[name] = correct(source, corrected, images, original=originals[name], progress=progress)
        sources[name] = corrected
    return entries


def card_line(entries: dict[str, dict] | None) -> str:
    """MODEL_CARD.md's sentence on the correction (empty where none was made)."""
    if not entries:
        return ""
    e = next(iter(entries.values()))
    return (f"Conv biases corrected for the int8 weights' rounding (ONNX and TFLite): the mean shift each conv's "
            f"rounded weights cause on the {e['images']} calibration images is subtracted from its bias "
            f"({', '.join(str(v['convs']) for v in entries.values())} convs).\n")


def _add_to_bias(model: onnx.ModelProto, node: onnx.NodeProto, delta: np.ndarray) -> None:
    """Add `delta` to the conv's bias (a new initializer where the conv had none)."""
    if len(node.input) > 2 and node.input[2]:
        bias = next(t for t in model.graph.initializer if t.name == node.input[2])
        value = numpy_helper.to_array(bias).astype(np.float64) + delta
        bias.CopyFrom(numpy_helper.from_array(value.astype(np.float32), bias.name))
    else:
        name = f"{node.input[1]}.corrected_bias"
        model.graph.initializer.append(numpy_helper.from_array(delta.astype(np.float32), name))
        del node.input[2:]
        node.input.append(name)
