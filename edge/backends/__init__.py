"""Inference backends: one protocol, one module per runtime, imported only when chosen.

Every backend takes the (H, W, 3) uint8 RGB image from edge.preprocess and returns float32
(logits (K,), features (C, h, w)), whatever the artefact's layout and quantisation.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Protocol

import numpy as np

from edge.trust.bundle import Bundle, BundleError, Member

KINDS = ("tflite", "onnx", "tensorrt")
PRECISIONS = ("int8", "fp32")
# auto: the fastest available for the bundle — TensorRT on a Jetson, else LiteRT's int8 XNNPACK kernels, else ONNX Runtime.
AUTO_ORDER = ("tensorrt", "tflite", "onnx")
# what to install when a backend's runtime is missing: one line instead of an ImportError traceback
MISSING = {
    "tflite": "the tflite backend needs a LiteRT runtime: pip install ai-edge-litert (or tflite-runtime)",
    "onnx": "the onnx backend needs ONNX Runtime: pip install onnxruntime",
    "tensorrt": "the tensorrt backend needs TensorRT's Python package (tensorrt), which comes with JetPack on a "
                "Jetson (python3-libnvinfer; create the venv with --system-site-packages); it is not on PyPI for "
                "Jetson, and this machine has none",
}


class RuntimeMissing(RuntimeError):
    """The runtime of the chosen backend is not installed; the message names the package."""


class Backend(Protocol):
    name: str
    artefact: str  # the bundle artefact kind it runs, e.g. "int8_tflite"
    note: str  # how it runs here where that differs from the board's usual kernels (else "")

    def run(self, img: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


def backend_list(spec: str) -> list[str]:
    """'tflite,onnx' -> ['tflite', 'onnx']; ValueError naming every unknown name, so a typo is refused before
    any backend runs."""
    kinds = [k.strip() for k in spec.split(",") if k.strip()]
    unknown = [k for k in kinds if k != "auto" and k not in KINDS]
    if unknown or not kinds:
        raise ValueError(f"unknown backend {', '.join(unknown) or '(none)'}: expected some of {', '.join(KINDS)}, auto")
    return kinds


def artefact_for(kind: str, precision: str = "int8") -> str:
    """The bundle artefact a backend runs."""
    if kind not in KINDS:
        raise ValueError(f"unknown backend {kind!r}: expected one of {KINDS} or 'auto'")
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}: expected one of {PRECISIONS}")
    return f"{precision}_{'tflite' if kind == 'tflite' else 'onnx'}"


def runtime_available(kind: str) -> bool:
    if kind == "tflite":
        return any(importlib.util.find_spec(m) for m in ("ai_edge_litert", "tflite_runtime"))
    if kind == "onnx":
        return importlib.util.find_spec("onnxruntime") is not None
    if kind == "tensorrt":
        return importlib.util.find_spec("tensorrt") is not None
    return False


def resolve(kind: str, bundle: Bundle, precision: str = "int8") -> str:
    """'auto' -> the first backend whose runtime is installed and whose artefact the bundle has."""
    if kind != "auto":
        artefact_for(kind, precision)
        return kind
    for k in AUTO_ORDER:
        if runtime_available(k) and bundle.has(artefact_for(k, precision)):
            return k
    raise BundleError(f"{bundle.root}: no installed runtime can run this bundle (tried {', '.join(AUTO_ORDER)})")


def open_backend(kind: str, member: Member, bundle_root: Path, threads: int = 1, precision: str = "int8",
                 reference: bool = False, fused: bool = False) -> Backend:
    """Instantiate backend `kind` for one bundle member; `reference`: the runtime's unoptimised kernels, whose
    integer results do not depend on the CPU (the converter's golden outputs); `fused`: ONNX Runtime's fused
    int8 kernels even on a CPU where they saturate (measurements; the board runs the exact session there)."""
    artefact = artefact_for(kind, precision)
    if not runtime_available(kind):
        raise RuntimeMissing(MISSING[kind])
    path = member.files.get(artefact)
    if path is None:
        raise BundleError(f"{bundle_root}: member {member.name} has no {artefact} artefact for the {kind} backend")
    if kind == "onnx":
        from edge.backends.onnx import OnnxBackend

        return OnnxBackend(path, threads=threads, artefact=artefact, reference=reference, fused=fused)
    if kind == "tflite":
        from edge.backends.tflite import TfliteBackend

        if artefact not in member.tflite_outputs:
            raise BundleError(f"{bundle_root}: member {member.name} has no tflite_outputs mapping for {artefact} "
                              "in the manifest")
        return TfliteBackend(path, member.tflite_outputs[artefact], threads=threads, artefact=artefact,
                             reference=reference)
    from edge.backends.tensorrt import TensorrtBackend

    return TensorrtBackend(path, bundle_root=bundle_root, threads=threads, artefact=artefact)
