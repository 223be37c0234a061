"""fp32 ONNX -> int8 QDQ ONNX with onnxruntime.quantization.

Per-channel symmetric int8 weights and asymmetric uint8 activations (U8S8): ONNX Runtime's own
recommendation for CPUs, and measured here on a trained MobileNetV2 (400 held-out images) against the
symmetric int8 activations this project started with: top-1 agreement with the float model 100% vs 99.0%,
max |Δlogit| 0.61 vs 3.70, and 1.6 ms vs 4.6 ms per image (fp32: 3.0 ms; ONNX Runtime 1.32, x86, 1 thread).
Symmetric activations waste half the int8 range on every ReLU/ReLU6 output, which is most of a CNN's.

Weights use 7 of their 8 bits (`reduce_range`): x86 CPUs without VNNI (this project's workstations) multiply
uint8 by int8 with a pairwise add that saturates at int16, so a full-range weight gives wrong sums on some
images (measured: max |Δprob| 0.78 vs 0.22 on a trained MicroMPoxNet, 0.24 vs 0.075 on MobileNetV2, same
100% agreement). ARM has no such saturation; without reduce_range the workstation's validation and golden
outputs would differ from what a Pi computes.

Clip and Relu are quantised and kept in the graph: their input takes their output's range (so a Conv
followed by ReLU6 is quantised over 0..6, not over its pre-activation range), and because the activation
is still there, `edge.backends.tensorrt.symmetric_qdq` can turn the artefact into the symmetric form
TensorRT requires (zero points 0) without losing the ReLUs that a uint8 range would otherwise imply.
The in-graph normalisation (Cast, Mul, Add on the raw pixels) stays in float.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from edge.preprocess import to_layout

# Quantise the compute ops and the activations that follow them; leave the other elementwise ops (Sigmoid,
# Mul of SiLU and squeeze-excitation gates, Add, pooling) in float between QDQ pairs. Measured on a trained
# MicroMPoxNet (see the issue note): quantising every op cost ~1 point of top-1 agreement with the float model.
OP_TYPES = ["Conv", "Gemm", "MatMul", "ConvTranspose", "Clip", "Relu"]
METHODS = {
    "minmax": CalibrationMethod.MinMax,
    "entropy": CalibrationMethod.Entropy,
    "percentile": CalibrationMethod.Percentile,
}


class _Reader(CalibrationDataReader):
    """Feeds preprocessed uint8 images, one at a time, in the ONNX input layout."""

    def __init__(self, input_name: str, images: np.ndarray):
        self._it = iter([{input_name: to_layout(img, "NCHW")} for img in images])

    def get_next(self):
        return next(self._it, None)


def input_normalisation_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the elementwise nodes between the graph input and the first compute op."""
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    found, frontier = [], [model.graph.input[0].name]
    while frontier:
        for node in consumers.get(frontier.pop(), []):
            if node.op_type in ("Cast", "Mul", "Add", "Sub", "Div") and node.name not in found:
                found.append(node.name)
                frontier.extend(node.output)
    return found


def quantize_int8(fp32: Path, out: Path, calib: np.ndarray, method: str = "minmax") -> Path:
    """Write the int8 QDQ model calibrated on `calib` ((N,H,W,3) uint8 through edge.preprocess)."""
    if method not in METHODS:
        raise ValueError(f"unknown calibration method {method!r}: expected one of {sorted(METHODS)} or 'auto'")
    if len(calib) == 0:
        raise ValueError("no calibration images")
    input_name = onnx.load(str(fp32)).graph.input[0].name
    with tempfile.TemporaryDirectory() as tmp:
        prepped = Path(tmp) / "prepped.onnx"
        quant_pre_process(str(fp32), str(prepped), skip_symbolic_shape=True)
        extra = {
            "ActivationSymmetric": False,
            "WeightSymmetric": True,
            "QDQKeepRemovableActivations": True,  # see the module docstring
            # Percentile on ~100 images: clip the top 0.01% of each activation's histogram.
            "CalibPercentile": 99.99,
        }
        quantize_static(
            str(prepped),
            str(out),
            _Reader(input_name, calib),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            reduce_range=True,  # see the module docstring
            weight_type=QuantType.QInt8,
            activation_type=QuantType.QUInt8,
            calibrate_method=METHODS[method],
            nodes_to_exclude=input_normalisation_nodes(onnx.load(str(prepped))),
            op_types_to_quantize=OP_TYPES,
            extra_options=extra,
        )
    return Path(out)
