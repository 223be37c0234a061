"""ONNX Runtime backend (CPU): the int8 QDQ or the fp32 ONNX artefact.

On an x86 CPU without VNNI ONNX Runtime's fused int8 kernels saturate (edge.backends.cpu), so there the int8
artefact runs through the exact session (no graph optimisation: DequantizeLinear -> float op -> QuantizeLinear,
the integer semantics a Pi, a Jetson or TensorRT computes), slower but right, and `note` says so: an answer the
board would not give is worse than a slow one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from edge.backends.cpu import u8s8_saturates
from edge.preprocess import to_layout

EXACT_NOTE = ("this x86 CPU has no VNNI and ONNX Runtime's fused int8 kernels saturate on it: the int8 ONNX runs "
              "through the exact (unoptimised) session here")


def session_options(threads: int = 1, reference: bool = False) -> ort.SessionOptions:
    """The board's session options. `reference`: no graph optimisation, so a QDQ model runs DequantizeLinear ->
    float op -> QuantizeLinear, the exact integer semantics without any CPU's fused-kernel saturation (golden
    outputs). Otherwise every optimisation except `WeightBiasQuantization`, which would quantise the float
    weights of the convs that mixed precision keeps float (convert.mixed); with none it has nothing to do."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    if reference:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    else:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.add_session_config_entry("optimization.disable_specified_optimizers", "WeightBiasQuantization")
    return opts


class OnnxBackend:
    name = "onnx"

    def __init__(self, model: Path | bytes, threads: int = 1, artefact: str = "int8_onnx", reference: bool = False,
                 fused: bool = False):
        """`reference`: exact QDQ integer semantics (see session_options); `fused`: this CPU's fused kernels even
        where they saturate (measurements only). `model`: a file, or a model's bytes (the converter's variants)."""
        self.artefact = artefact
        exact = reference or (artefact == "int8_onnx" and not fused and u8s8_saturates())
        self.note = EXACT_NOTE if exact and not reference else ""
        model_path = model if isinstance(model, bytes) else str(model)
        try:
            self.session = ort.InferenceSession(model_path, session_options(threads, exact),
                                                providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types for bad files
            raise RuntimeError(f"{_name(model)}: ONNX Runtime cannot load it: {e}") from e
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.input_size = (int(inp.shape[2]), int(inp.shape[3]))
        names = [o.name for o in self.session.get_outputs()]
        if sorted(names) != ["features", "logits"]:
            raise RuntimeError(f"{_name(model)}: outputs should be 'logits' and 'features', found {names}")

    def run(self, img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        logits, features = self.session.run(["logits", "features"], {self.input_name: to_layout(img, "NCHW")})
        return logits[0].astype(np.float32), features[0].astype(np.float32)


def _name(model: Path | bytes) -> str:
    return f"<{len(model)}-byte model>" if isinstance(model, bytes) else str(model)
