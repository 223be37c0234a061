"""ONNX Runtime backend (CPU): the int8 QDQ or the fp32 ONNX artefact."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from edge.preprocess import to_layout


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

    def __init__(self, model_path: Path, threads: int = 1, artefact: str = "int8_onnx", reference: bool = False):
        """`reference`: exact QDQ integer semantics (see session_options)."""
        self.artefact = artefact
        try:
            self.session = ort.InferenceSession(str(model_path), session_options(threads, reference),
                                                providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types for bad files
            raise RuntimeError(f"{model_path}: ONNX Runtime cannot load it: {e}") from e
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.input_size = (int(inp.shape[2]), int(inp.shape[3]))
        names = [o.name for o in self.session.get_outputs()]
        if sorted(names) != ["features", "logits"]:
            raise RuntimeError(f"{model_path}: outputs should be 'logits' and 'features', found {names}")

    def run(self, img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        logits, features = self.session.run(["logits", "features"], {self.input_name: to_layout(img, "NCHW")})
        return logits[0].astype(np.float32), features[0].astype(np.float32)
