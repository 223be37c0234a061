"""LiteRT (TFLite) backend: the full-integer int8 artefact on XNNPACK's CPU kernels.

Imports ai_edge_litert, else tflite_runtime, else tensorflow.lite — the last only as a fallback inside
a function, so the board never loads tensorflow when a light runtime is installed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _interpreter_class():
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter
        except ImportError:
            import tensorflow as tf  # last resort on a workstation

            Interpreter = tf.lite.Interpreter
    return Interpreter


def runtime_name() -> str:
    mod = _interpreter_class().__module__.split(".")[0]
    from importlib import metadata

    for dist in ("ai-edge-litert", "tflite-runtime", "tensorflow"):
        try:
            return f"{mod} {metadata.version(dist)}"
        except metadata.PackageNotFoundError:
            continue
    return mod


def load_interpreter(path: Path, threads: int = 1):
    """An allocated interpreter, or a RuntimeError naming the file."""
    try:
        interp = _interpreter_class()(model_path=str(path), num_threads=threads)
        interp.allocate_tensors()
    except (ValueError, RuntimeError) as e:
        raise RuntimeError(f"{path}: LiteRT cannot load it: {e}") from e
    return interp


def _dequantize(interp, detail: dict) -> np.ndarray:
    x = interp.get_tensor(detail["index"])
    scale, zp = detail["quantization"]
    return (x.astype(np.float32) - zp) * scale if scale else x.astype(np.float32)


class TfliteBackend:
    name = "tflite"
    artefact = "int8_tflite"

    def __init__(self, model_path: Path, outputs: dict[str, int], threads: int = 1):
        self.interp = load_interpreter(model_path, threads)
        self.input = self.interp.get_input_details()[0]
        details = self.interp.get_output_details()
        try:
            self.logits, self.features = details[outputs["logits"]], details[outputs["features"]]
        except (KeyError, IndexError, TypeError) as e:
            raise RuntimeError(f"{model_path}: output mapping {outputs} does not fit its {len(details)} outputs") from e
        if len(self.features["shape"]) != 4:
            raise RuntimeError(f"{model_path}: features output has shape {list(self.features['shape'])}, expected 4-D NHWC")
        self.input_size = (int(self.input["shape"][1]), int(self.input["shape"][2]))

    def run(self, img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = img[None]
        scale, zp = self.input["quantization"]
        if self.input["dtype"] == np.float32:
            x = x.astype(np.float32)
        elif (scale, zp) != (1.0, 0):
            info = np.iinfo(self.input["dtype"])
            x = np.clip(np.round(x / scale + zp), info.min, info.max)
        self.interp.set_tensor(self.input["index"], np.ascontiguousarray(x, dtype=self.input["dtype"]))
        self.interp.invoke()
        logits = _dequantize(self.interp, self.logits).reshape(-1)
        features = _dequantize(self.interp, self.features)[0].transpose(2, 0, 1)
        return logits, np.ascontiguousarray(features)
