"""fp32 ONNX -> int8 QDQ ONNX with onnxruntime.quantization.

QDQ with per-channel symmetric int8 weights and symmetric int8 activations is the form TensorRT accepts
as explicit quantisation, so one artefact serves ONNX Runtime on a Pi and TensorRT on a Jetson. The
in-graph normalisation (Cast, Mul, Add on the raw pixels) stays in float: quantising the 0..255 pixels
symmetrically would throw away one bit of every input pixel.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from edge.preprocess import to_layout

# Quantise the compute ops; leave the cheap elementwise ones (Sigmoid, Mul of SiLU and squeeze-excitation
# gates, pooling) in float between QDQ pairs. Measured on a trained MicroMPoxNet (see the issue note):
# quantising every op cost ~1 point of top-1 agreement with the float model.
OP_TYPES = ["Conv", "Gemm", "MatMul", "ConvTranspose"]
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
            "ActivationSymmetric": True,
            "WeightSymmetric": True,
            # Percentile on ~100 images: clip the top 0.01% of each activation's histogram.
            "CalibPercentile": 99.99,
        }
        quantize_static(
            str(prepped),
            str(out),
            _Reader(input_name, calib),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            weight_type=QuantType.QInt8,
            activation_type=QuantType.QInt8,
            calibrate_method=METHODS[method],
            nodes_to_exclude=input_normalisation_nodes(onnx.load(str(prepped))),
            op_types_to_quantize=OP_TYPES,
            extra_options=extra,
        )
    return Path(out)
