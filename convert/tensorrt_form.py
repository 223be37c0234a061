"""Which activations the TensorRT build keeps float, so that the TensorRT form of the int8 ONNX stays as faithful as
the int8 ONNX itself (issue 21).

TensorRT takes only symmetric activations, and the board rewrites each uint8 range as the int8 one covering it
(edge.backends.tensorrt.symmetric_qdq): half the resolution on every ReLU output. Measured on ImageNet-pretrained
EfficientNet-Lite1/2 (benchmarks/README.md) that cost up to 3.5 points of top-1 agreement, and the loss is spread
over the network: no fixed rule (the stem float, the head float, one kind of layer at uint8) won back more than it
lost elsewhere. What does work is a per-model search, as convert.mixed does for weights:

- the units are chains of activations through Clip/Relu (a convolution's output and its ReLU6 output are read on
  one grid, so floating only one of the pair buys nothing);
- each unit is ranked by the drop in mean KL divergence from the float model when it alone stays float in the
  symmetric form, on a few calibration images (exact ONNX Runtime session: the arithmetic TensorRT computes);
- the best 1, 2, 4, ... `MAX_UNITS` units stay float until the form's KL on other calibration images (the
  held-out split of `--calib-method auto`) closes `GAP_CLOSED` of the gap to the int8 ONNX's KL.

The names go into the member's manifest entry (`tensorrt_float`); the board drops those QuantizeLinear/
DequantizeLinear pairs before the build, and TensorRT runs those few layers in float.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

import numpy as np
import onnx
from tqdm import tqdm

from convert import auto_method
from convert.mixed import kl, logits
from edge.backends.tensorrt import symmetric_qdq

ACTIVATIONS = ("Clip", "Relu")  # the float tensor before one of these and the one after share a grid
MAX_UNITS = 8  # units kept float at most: beyond that (measured up to 32) agreement did not improve
STEPS = (1, 2, 4, MAX_UNITS)  # unit counts tried, fewest first (each costs one exact pass on the stop images)
GAP_CLOSED = 0.9  # of the KL gap between the plain symmetric form and the int8 ONNX, on the stop images
RANK_IMAGES = 16
STOP_IMAGES = 64


@dataclass
class Result:
    float_tensors: list[str]
    units: int  # kept float, of `candidates`
    candidates: int
    kl_int8: float  # on the stop images: the int8 ONNX, the plain symmetric form, the chosen form
    kl_plain: float
    kl_chosen: float
    seconds: float

    def as_dict(self) -> dict:
        return {"units_float": self.units, "units": self.candidates, "tensors_float": len(self.float_tensors),
                "kl_int8": round(self.kl_int8, 6), "kl_plain": round(self.kl_plain, 6),
                "kl_chosen": round(self.kl_chosen, 6), "seconds": round(self.seconds, 1)}


def units(model: onnx.ModelProto) -> list[list[str]]:
    """Quantised activations (QuantizeLinear inputs), grouped into chains through Clip/Relu, in graph order."""
    quantised = {n.output[0]: n.input[0] for n in model.graph.node if n.op_type == "QuantizeLinear"}
    source = {n.output[0]: quantised[n.input[0]] for n in model.graph.node
              if n.op_type == "DequantizeLinear" and n.input[0] in quantised}
    root = {t: t for t in quantised.values()}

    def find(t: str) -> str:
        while root[t] != t:
            t = root[t]
        return t

    for n in model.graph.node:
        before = source.get(n.input[0]) if n.op_type in ACTIVATIONS else None
        if before in root and n.output[0] in root:
            root[find(n.output[0])] = find(before)
    groups: dict[str, list[str]] = {}
    for t in root:
        groups.setdefault(find(t), []).append(t)
    return list(groups.values())


def split(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rank images, stop images) from the calibration images: `auto`'s fit and selection splits, evenly thinned."""
    fit, select = auto_method.split(len(images))
    return images[_spread(fit, RANK_IMAGES)], images[_spread(select, STOP_IMAGES)]


def _spread(index: np.ndarray, n: int) -> np.ndarray:
    return index[np.linspace(0, len(index) - 1, min(n, len(index))).round().astype(int)]


def search(fp32: bytes, int8: bytes, rank_images: np.ndarray, stop_images: np.ndarray,
           progress: bool = False) -> Result:
    """The fewest chains to keep float in the TensorRT form of `int8` (see the module docstring)."""
    t0 = time.perf_counter()
    plain = symmetric_qdq(int8)
    ref = logits(fp32, stop_images)
    kl_int8, kl_plain = kl(ref, logits(int8, stop_images)), kl(ref, logits(plain, stop_images))
    chains = units(onnx.load_from_string(int8))
    best = Result([], 0, len(chains), kl_int8, kl_plain, kl_plain, 0.0)
    if kl_plain > kl_int8:
        target = kl_plain - GAP_CLOSED * (kl_plain - kl_int8)
        ranked = rank(fp32, int8, chains, rank_images, progress)
        for k in [k for k in STEPS if k <= len(ranked)]:
            tensors = [t for unit in ranked[:k] for t in unit]
            got = kl(ref, logits(symmetric_qdq(int8, tensors), stop_images))
            if got < best.kl_chosen:
                best = Result(tensors, k, len(chains), kl_int8, kl_plain, got, 0.0)
            if got <= target:
                break
    best.seconds = time.perf_counter() - t0
    return best


def rank(fp32: bytes, int8: bytes, chains: list[list[str]], images: np.ndarray, progress: bool = False
         ) -> list[list[str]]:
    """The chains whose float keeping lowers the symmetric form's KL from the float model, most first."""
    ref = logits(fp32, images)
    base = kl(ref, logits(symmetric_qdq(int8), images))
    gains = [base - kl(ref, logits(symmetric_qdq(int8, unit), images))
             for unit in tqdm(chains, desc=f"TensorRT form: rank activations ({len(images)} images)",
                              disable=not progress, leave=False, file=sys.stderr)]
    order = np.argsort(-np.array(gains), kind="stable")
    return [chains[i] for i in order if gains[i] > 0]


def card_line(entries: dict[str, dict] | None) -> str:
    """MODEL_CARD.md's sentence on the search, per member (empty when it did not run)."""
    if not entries:
        return ""
    parts = [f"{name}: {e['units_float']} of {e['units']} activation chains float ({e['tensors_float']} tensors), "
             f"KL from the float model {e['kl_plain']:.4f} -> {e['kl_chosen']:.4f} (int8 ONNX {e['kl_int8']:.4f})"
             for name, e in entries.items()]
    return ("The TensorRT form (symmetric activations, as a Jetson builds it) keeps float the activation chains where "
            "the symmetric grid costs most, chosen on calibration images: " + "; ".join(parts) + ".\n")
