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
- the best `MAX_UNITS` units with a gain stay float, if together they lower the KL on the other calibration images
  below the plain symmetric form's; where the plain form is already about as close to the float model there as the
  int8 ONNX (within `MIN_GAP`: a random-init head's near-uniform answers differ in the 8th decimal), nothing is
  searched.

Why this rule (benchmarks/README.md, EfficientNet-Lite1/2 on the two selection photo sources, 400 held-out crops):
keeping 8 chains float left the form within 1 point of the exact int8 ONNX on all four cases (-0.75 to +0.75), where
the plain rewrite lost up to 3.5; stopping early when the KL of 32 held-out images closed 90 % of the gap to the int8
ONNX stopped at one chain on Lite2 and lost 2.5 points: at that size KL is too noisy to stop on.

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

from convert.mixed import kl, logits
from edge.backends.tensorrt import symmetric_qdq

ACTIVATIONS = ("Clip", "Relu")  # the float tensor before one of these and the one after share a grid
MAX_UNITS = 8  # chains kept float at most (measured: 4, 8, 16, 32; see the module docstring)
RANK_IMAGES = 16  # one exact pass per chain on these
CHECK_IMAGES = 128  # the other calibration images, at most: three exact passes
MIN_CHECK = 8  # with fewer other images than this, the check uses every calibration image
MIN_GAP = 1e-5  # the plain form's KL must exceed the int8 ONNX's by this much to search (Lite0-2: 2e-3 to 3e-2)


@dataclass
class Result:
    float_tensors: list[str]
    units: int  # kept float, of `candidates`
    candidates: int
    kl_int8: float  # on the check images: the int8 ONNX, the plain symmetric form, the chosen form
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
    """(rank images, check images): RANK_IMAGES spread over the calibration images, and up to CHECK_IMAGES of the
    others (all of them, rank images included, when fewer than MIN_CHECK are left)."""
    every = np.arange(len(images))
    ranked = _spread(every, RANK_IMAGES)
    others = np.setdiff1d(every, ranked)
    return images[ranked], images[_spread(others if len(others) >= MIN_CHECK else every, CHECK_IMAGES)]


def _spread(index: np.ndarray, n: int) -> np.ndarray:
    return index[np.linspace(0, len(index) - 1, min(n, len(index))).round().astype(int)]


def search(fp32: bytes, int8: bytes, rank_images: np.ndarray, check_images: np.ndarray,
           progress: bool = False) -> Result:
    """The chains to keep float in the TensorRT form of `int8` (see the module docstring)."""
    t0 = time.perf_counter()
    ref = logits(fp32, check_images)
    kl_int8, kl_plain = kl(ref, logits(int8, check_images)), kl(ref, logits(symmetric_qdq(int8), check_images))
    chains = units(onnx.load_from_string(int8))
    best = Result([], 0, len(chains), kl_int8, kl_plain, kl_plain, 0.0)
    if kl_plain - kl_int8 > MIN_GAP:
        chosen = rank(fp32, int8, chains, rank_images, progress)[:MAX_UNITS]
        tensors = [t for unit in chosen for t in unit]
        got = kl(ref, logits(symmetric_qdq(int8, tensors), check_images)) if tensors else kl_plain
        if got < kl_plain:
            best = Result(tensors, len(chosen), len(chains), kl_int8, kl_plain, got, 0.0)
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
             f"KL from the float model on {e['check_images']} calibration images {e['kl_plain']:.4f} -> "
             f"{e['kl_chosen']:.4f} (int8 ONNX {e['kl_int8']:.4f})" for name, e in entries.items()]
    return ("The TensorRT form (symmetric activations, as a Jetson builds it) keeps float the activation chains where "
            f"the symmetric grid costs most (ranked on {next(iter(entries.values()))['rank_images']} calibration "
            "images, convert/tensorrt_form.py): " + "; ".join(parts) + ".\n")
