"""LiteRT (TFLite) backend: the int8 artefact (float last layer only) or the float32 one on XNNPACK, LiteRT's
default CPU delegate, or on LiteRT's built-in kernels where XNNPACK refuses the model (XNNPACK_NOTE).

Imports ai_edge_litert, else tflite_runtime; never tensorflow, which the board runtime must not load
(both light runtimes read the same .tflite files).
"""

from __future__ import annotations

import importlib
from importlib import metadata
from pathlib import Path

import numpy as np

from edge.preprocess import to_layout

# (module holding Interpreter, distribution that provides it), in order of preference.
RUNTIMES = (("ai_edge_litert.interpreter", "ai-edge-litert"), ("tflite_runtime.interpreter", "tflite-runtime"))


def interpreter_class() -> tuple[type, str]:
    """The Interpreter class and '<module> <version>' of the first runtime that imports."""
    for module, dist in RUNTIMES:
        try:
            cls = importlib.import_module(module).Interpreter
        except ImportError:
            continue
        return cls, f"{module.split('.')[0]} {metadata.version(dist)}"
    raise ImportError("no TFLite runtime: pip install ai-edge-litert (or tflite-runtime)")


def runtime_name() -> str:
    """Which runtime module the backend uses, with its version, e.g. 'ai_edge_litert 2.3.0'."""
    return interpreter_class()[1]


# XNNPACK refuses some valid int8 models at preparation: measured on a trained MobileNetV2-MSCA-PFR (96 px) whose
# channel-attention layer is calibrated to all zeros (output scale 7.8e-9, so a requantisation scale ~850, beyond
# XNNPACK's range). LiteRT's built-in int8 kernels run such a model; the board says so rather than refusing it.
XNNPACK_NOTE = ("XNNPACK, LiteRT's fast CPU kernels, refused this int8 model (a requantisation scale beyond its range, "
                "e.g. a layer calibrated to all zeros): LiteRT's built-in kernels run it, slower")


def _allocated(path: Path, threads: int, resolver: str | None):
    cls = interpreter_class()[0]
    kw = {} if resolver is None else {
        "experimental_op_resolver_type": getattr(importlib.import_module(cls.__module__).OpResolverType, resolver)}
    interp = cls(model_path=str(path), num_threads=threads, **kw)
    interp.allocate_tensors()
    return interp


def load_interpreter(path: Path, threads: int = 1, reference: bool = False) -> tuple[object, str]:
    """(an allocated interpreter, a note: XNNPACK_NOTE if XNNPACK refused the model, else ""), or a RuntimeError
    naming the file. `reference`: LiteRT's reference kernels (plain integer arithmetic, the same on every CPU)
    instead of XNNPACK, for golden outputs."""
    path = Path(path)
    if not path.is_file():
        raise RuntimeError(f"{path}: no such TFLite model file")
    try:
        return _allocated(path, threads, "BUILTIN_REF" if reference else None), ""
    except (ValueError, RuntimeError) as e:
        if reference or "XNNPACK" not in str(e):
            raise RuntimeError(f"{path}: LiteRT cannot load it: {e}") from e
        refused = e
    try:
        return _allocated(path, threads, "BUILTIN_WITHOUT_DEFAULT_DELEGATES"), XNNPACK_NOTE
    except (ValueError, RuntimeError) as e:
        raise RuntimeError(f"{path}: LiteRT cannot load it: {refused}; nor without XNNPACK: {e}") from e


def _dequantize(x: np.ndarray, detail: dict) -> np.ndarray:
    scale, zp = detail["quantization"]
    if x.dtype == np.float32 or not scale:
        return x.astype(np.float32)
    return ((x.astype(np.float32) - zp) * scale).astype(np.float32)


class TfliteBackend:
    name = "tflite"

    def __init__(self, model_path: Path, outputs: dict[str, int], threads: int = 1, artefact: str = "int8_tflite",
                 reference: bool = False):
        self.artefact = artefact
        self.interp, self.note = load_interpreter(model_path, threads, reference)  # note: XNNPACK refused it
        self.input = self.interp.get_input_details()[0]
        details = self.interp.get_output_details()
        try:
            self.logits, self.features = details[outputs["logits"]], details[outputs["features"]]
        except (KeyError, IndexError, TypeError) as e:
            raise RuntimeError(f"{model_path}: output mapping {outputs} does not fit its {len(details)} outputs") from e
        if len(self.logits["shape"]) != 2 or len(self.features["shape"]) != 4:
            raise RuntimeError(f"{model_path}: with mapping {outputs}, logits has shape {list(self.logits['shape'])} "
                               f"and features {list(self.features['shape'])}; expected [1, K] and NHWC [1, h, w, C]")
        shape = self.input["shape"]
        if len(shape) != 4 or shape[3] != 3:
            raise RuntimeError(f"{model_path}: input shape {list(shape)}, expected NHWC [1, H, W, 3]")
        self.input_size = (int(shape[1]), int(shape[2]))

    def _input(self, img: np.ndarray) -> np.ndarray:
        """uint8 pixels as the model wants them: as is (uint8, scale 1, zero point 0), quantised, or float."""
        if img.shape != (*self.input_size, 3) or img.dtype != np.uint8:
            raise ValueError(f"expected a {self.input_size[0]}x{self.input_size[1]}x3 uint8 image from "
                             f"edge.preprocess.to_model_input, got {img.shape} {img.dtype}")
        x = to_layout(img, "NHWC")
        dtype = self.input["dtype"]
        if dtype == np.float32:
            return x.astype(np.float32)
        scale, zp = self.input["quantization"]
        if (scale, zp) == (1.0, 0) and dtype == np.uint8:
            return x
        info = np.iinfo(dtype)
        return np.clip(np.round(x / scale + zp), info.min, info.max).astype(dtype)

    def run(self, img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(H, W, 3) uint8 RGB -> (logits (K,), features (C, h, w)), both float32."""
        self.interp.set_tensor(self.input["index"], self._input(img))
        self.interp.invoke()
        logits = _dequantize(self.interp.get_tensor(self.logits["index"]), self.logits)
        features = _dequantize(self.interp.get_tensor(self.features["index"]), self.features)
        return logits.reshape(-1), np.ascontiguousarray(features[0].transpose(2, 0, 1))
