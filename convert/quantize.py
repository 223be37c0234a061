"""fp32 ONNX -> int8 QDQ ONNX with onnxruntime.quantization.

Per-channel symmetric int8 weights and asymmetric uint8 activations (U8S8): ONNX Runtime's own
recommendation for CPUs, and measured here on a trained MobileNetV2 (400 held-out images) against the
symmetric int8 activations this project started with: top-1 agreement with the float model 100% vs 99.0%,
max |Δlogit| 0.61 vs 3.70, and 1.6 ms vs 4.6 ms per image (fp32: 3.0 ms; ONNX Runtime 1.32, x86, 1 thread).
Symmetric activations waste half the int8 range on every ReLU/ReLU6 output, which is most of a CNN's.

Weights use all 8 bits. 7-bit weights (`reduce_range`) cost ~12 points of top-1 agreement on a real
ImageNet-pretrained EfficientNet-Lite0 (76.5 % vs 88.5 % on 400 natural-photo crops, issue 11) and are what a
Pi or Jetson would run. They exist for one reason, kept as an explicit opt-in (`reduce_range=True`,
`skinedge convert --reduce-range`) for an artefact that will only run in ONNX Runtime on an x86 CPU without
VNNI: there uint8 x int8 products are summed pairwise into int16, which saturates for full-range weights and
gives wrong sums on some images (measured: max |Δprob| 0.78 vs 0.22 on a trained MicroMPoxNet, 0.24 vs 0.075
on MobileNetV2, same 100% agreement). ARM (NEON/dotprod), x86 with VNNI and TensorRT do not saturate; the
workstation's own deviation is accounted for in the golden tolerances, not by degrading the artefact.

Clip and Relu are quantised and kept in the graph: their input takes their output's range (so a Conv
followed by ReLU6 is quantised over 0..6, not over its pre-activation range), and because the activation
is still there, `edge.backends.tensorrt.symmetric_qdq` can turn the artefact into the symmetric form
TensorRT requires (zero points 0) without losing the ReLUs that a uint8 range would otherwise imply.
The in-graph normalisation (Cast, Mul, Add on the raw pixels) stays in float.

A clipping method (percentile, entropy) clips only the first half of the network (`full_range_tensors`): the
head between the logits and the `features` output, and the later half of the activations in graph order, keep
their full observed range. A percentile range drops exactly the rare large values a confident answer is made of:
clipping the head too lost 6-9 % of the answers the float model was >= 50 % sure of (issue 21, EfficientNet-
Lite0/1/2, natural photographs), and clipping all but the head still lost up to 2 % of them on photographs from a
source the ranges were not calibrated on. In the early layers the clipped range is what buys the percentile its
finer grid. Over EfficientNet-Lite0/1/2 on four photo sources (the share chosen on two; benchmarks/README.md) the
int8 ONNX changed 7 confident answers of 2,011 where min-max changed 10 and percentile over all but the head 16, at
89.7 % mean agreement with float against 89.3 and 89.2 %. With the conv biases corrected for the weights' rounding
(convert.bias_correction) the default is min-max: the correction cancels the weights' mean error, and a clipped
range adds one of its own that it does not see (a clipped tail lowers the tensor's mean).
The logits themselves are not quantised at all (`_float_logits`): the last layer takes int8 and writes float, since
no range calibrated on some photographs holds every other photograph's largest logit, and a saturated logit ties.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from convert.calibrate import METHODS, Ranges, calibrate_pass, write_cache
from convert.onnx_graph import readers

# Quantise the compute ops and the activations that follow them; leave the other elementwise ops (Sigmoid,
# Mul of SiLU and squeeze-excitation gates, Add, pooling) in float between QDQ pairs. Measured on a trained
# MicroMPoxNet (see the issue note): quantising every op cost ~1 point of top-1 agreement with the float model.
OP_TYPES = ["Conv", "Gemm", "MatMul", "ConvTranspose", "Clip", "Relu"]
LATE_SHARE = 0.5  # of the activations, counted from the end, that a clipping method leaves at min-max
__all__ = ["LATE_SHARE", "METHODS", "OP_TYPES", "full_range_tensors", "input_normalisation_nodes", "int8_ranges",
           "logit_tensors", "quantize_int8"]


def input_normalisation_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the elementwise nodes between the graph input and the first compute op."""
    consumers = readers(model.graph)
    found, frontier = [], [model.graph.input[0].name]
    while frontier:
        for node in consumers.get(frontier.pop(), []):
            if node.op_type in ("Cast", "Mul", "Add", "Sub", "Div") and node.name not in found:
                found.append(node.name)
                frontier.extend(node.output)
    return found


def full_range_tensors(model: onnx.ModelProto, late: float = LATE_SHARE) -> list[str]:
    """The tensors that keep their observed min-max under a clipping method: `logits` and every tensor of the head
    back to `features` (pooled features included), then the last `late` share of the activations `OP_TYPES` read
    or write, in graph order (the module docstring). Empty for a graph without `logits` and `features` outputs."""
    outputs = {o.name for o in model.graph.output}
    if not {"logits", "features"} <= outputs:
        return []
    written_at = {o: i for i, n in enumerate(model.graph.node) for o in n.output}
    constants = {t.name for t in model.graph.initializer}
    found: list[str] = []
    frontier = ["logits"]
    while frontier:  # the head: no convolutions between the pooled features and the logits
        name = frontier.pop()
        if name in found or name in constants:
            continue
        found.append(name)
        node = model.graph.node[written_at[name]] if name in written_at else None
        if name != "features" and node is not None and node.op_type not in ("Conv", "Constant"):
            frontier += [i for i in node.input if i]
    activations = list(dict.fromkeys(t for n in model.graph.node if n.op_type in OP_TYPES
                                     for t in (*n.input, *n.output) if t and t not in constants))
    activations.sort(key=lambda t: written_at.get(t, -1))
    return found + [t for t in activations[round(len(activations) * (1 - late)):] if t not in found]


def logit_tensors(model: onnx.ModelProto) -> list[str]:
    """`logits` and every tensor back from it to the nearest Gemm/MatMul outputs (those included): what the
    classifier's last layer writes and anything that only combines such outputs (an ensemble's weighted sum)."""
    producer = {o: n for n in model.graph.node for o in n.output}
    found, frontier = [], ["logits"] if any(o.name == "logits" for o in model.graph.output) else []
    while frontier:
        name = frontier.pop()
        node = producer.get(name)
        if name in found or node is None:
            continue
        found.append(name)
        if node.op_type not in ("Gemm", "MatMul", "Conv"):
            frontier += [i for i in node.input if i in producer]
    return found


def _float_logits(path: Path) -> None:
    """Remove the QuantizeLinear/DequantizeLinear pairs on `logit_tensors`: the last layer still multiplies int8 by
    int8, and writes float. Quantised, a logit above the calibration images' largest saturates at the top of
    the range, ties with every other saturated class, and the first of them in label order wins: one photograph
    unlike the calibration photographs lost 22-30 % of its confident answers that way (EfficientNet-Lite0/1 on
    `plasma`, benchmarks/README.md), with every calibration method."""
    from edge.backends.qdq_shift import prune, unquantise

    model = onnx.load(str(path))
    quantised = {n.input[0] for n in model.graph.node if n.op_type == "QuantizeLinear"}
    tensors = set(logit_tensors(model)) & quantised
    if tensors:
        unquantise(model, tensors)
        prune(model)
        onnx.save(model, str(path))


def _prepped(fp32: Path, folder: Path) -> Path:
    """onnxruntime's recommended pre-processing (shape inference, graph clean-up) of `fp32`, in `folder`."""
    prepped = Path(folder) / "prepped.onnx"
    quant_pre_process(str(fp32), str(prepped), skip_symbolic_shape=True)
    return prepped


def int8_ranges(fp32: Path, calib: np.ndarray, method: str, *, progress: bool = False) -> Ranges:
    """The calibration pass of `quantize_int8` alone: one pass gives the method's ranges and the observed min-max,
    which several int8 models can then share (`quantize_int8(..., ranges=)`)."""
    with tempfile.TemporaryDirectory() as tmp:
        return calibrate_pass(_prepped(fp32, Path(tmp)), calib, method, OP_TYPES, progress=progress)


def quantize_int8(fp32: Path, out: Path, calib: np.ndarray, method: str = "minmax", *,
                  reduce_range: bool = False, keep_answer: bool = True, progress: bool = False,
                  ranges: Ranges | None = None) -> Path:
    """Write the int8 QDQ model calibrated on `calib` ((N,H,W,3) uint8 through edge.preprocess) in bounded
    memory (convert.calibrate); `reduce_range`: 7-bit weights, only for ONNX Runtime on x86 without VNNI;
    `keep_answer`: `full_range_tensors` keep their min-max range and the logits stay float (see the module
    docstring; False: both quantised like the rest, as before issue 21); `ranges`: a pass
    `int8_ranges` made of the same model and images already (then `calib` is not run again)."""
    if method not in METHODS:
        raise ValueError(f"unknown calibration method {method!r}: expected one of {sorted(METHODS)} or 'auto'")
    with tempfile.TemporaryDirectory() as tmp:
        prepped = _prepped(fp32, Path(tmp))
        graph = onnx.load(str(prepped), load_external_data=False)  # structure only: which tensors, which nodes
        keep = full_range_tensors(graph) if keep_answer else []
        ranges = ranges or calibrate_pass(prepped, calib, method, OP_TYPES, progress=progress)
        cache = write_cache(ranges.merged(keep), Path(tmp) / "ranges.json")
        extra = {
            "ActivationSymmetric": False,
            "WeightSymmetric": True,
            "QDQKeepRemovableActivations": True,  # see the module docstring
        }
        quantize_static(
            str(prepped),
            str(out),
            None,  # the ranges come from the cache written above
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            reduce_range=reduce_range,
            weight_type=QuantType.QInt8,
            activation_type=QuantType.QUInt8,
            calibrate_method=METHODS[method],
            nodes_to_exclude=input_normalisation_nodes(graph),
            op_types_to_quantize=OP_TYPES,
            extra_options=extra,
            calibration_cache_path=str(cache),
        )
    if keep_answer:
        _float_logits(Path(out))
    return Path(out)
