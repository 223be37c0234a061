"""Accuracy-aware mixed precision for the int8 QDQ ONNX: the few convolutions whose int8 weights cost the most
agreement with the float model keep their float weights, until an agreement bar is met or a budget is hit.

Why measured, not guessed: on a real ImageNet-pretrained EfficientNet-Lite0 (issue 11) keeping its 16 depthwise
convs float (9 % of conv MACs) lifts exact-int8 agreement from 85 % to 91 %, while SQNR-ranked picks of 2-10
convs gave 80-89 %. So each conv is ranked by what keeping it float actually buys: the drop in the mean KL
divergence from the float model's probabilities, measured on ONNX Runtime's exact QDQ session (graph
optimisation off: the integer arithmetic a Pi, Jetson or TensorRT computes, without x86's u8s8 saturation). Then
convs are added in that order while the budget holds (>= `MIN_MAC_SHARE` of conv MACs stay int8, the file and
this CPU's latency within `MAX_COST` of plain int8; a conv that would break the budget is passed over), and the
first set that meets the bar is kept, or else the best one seen.

A kept conv reads its input through the same DequantizeLinear as before and its output is re-quantised as
before: only its weights and bias are float. ONNX Runtime's `WeightBiasQuantization` optimiser would quantise
such weights again at session start; the board's session disables it (edge.backends.onnx).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import shape_inference
from tqdm import tqdm

from edge.backends.onnx import session_options
from edge.backends.qdq_shift import prune
from edge.preprocess import to_layout

MIN_MAC_SHARE = 0.90  # of convolution multiply-accumulates that must stay int8 (issue 11)
MAX_COST = 1.2  # size and latency, relative to the plain int8 model
MAX_REFUSED = 5  # candidates in a row over the size/latency budget before the search gives up


@dataclass
class Result:
    model: onnx.ModelProto
    float_convs: dict[str, float]  # conv name -> its share of conv MACs
    agreement: float  # top-1 agreement with float on the search images, plain int8 -> chosen
    plain_agreement: float
    quantised_mac_share: float
    size_mb: tuple[float, float]  # plain int8, chosen
    ms: tuple[float, float]  # this CPU, board session, median per image: plain int8, chosen
    steps: list[dict] = field(default_factory=list)


def conv_macs(fp32: onnx.ModelProto) -> dict[str, int]:
    """Multiply-accumulates of each Conv per image (static shapes)."""
    inferred = shape_inference.infer_shapes(fp32)
    shapes = {vi.name: [d.dim_value for d in vi.type.tensor_type.shape.dim]
              for vi in [*inferred.graph.value_info, *inferred.graph.output]}
    weights = {t.name: list(t.dims) for t in fp32.graph.initializer}
    return {n.name: int(np.prod(shapes[n.output[0]]) * np.prod(weights[n.input[1]][1:]))
            for n in fp32.graph.node if n.op_type == "Conv"}


def keep_float(qdq: onnx.ModelProto, fp32: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    """`qdq` with the weights (and bias) of the named convs taken back from `fp32` (same node names), the
    DequantizeLinear nodes and int8 initializers they leave unused removed."""
    model = onnx.ModelProto()
    model.CopyFrom(qdq)
    src = {n.name: n for n in fp32.graph.node if n.op_type == "Conv"}
    floats = {t.name: t for t in fp32.graph.initializer}
    have = {t.name for t in model.graph.initializer}
    for node in model.graph.node:
        if node.name not in names:
            continue
        if node.name not in src:
            raise ValueError(f"conv {node.name!r} of the int8 model is not in the float model")
        for i in range(1, len(node.input)):
            name = src[node.name].input[i]
            node.input[i] = f"{name}_float"  # the int8 graph may use the float name for a DequantizeLinear output
            if node.input[i] not in have:
                tensor = onnx.TensorProto()
                tensor.CopyFrom(floats[name])
                tensor.name = node.input[i]
                model.graph.initializer.append(tensor)
                have.add(tensor.name)
    prune(model)
    return model


def logits(model: onnx.ModelProto | bytes, images: np.ndarray, exact: bool = True) -> np.ndarray:
    """The model's logits on (N,H,W,3) uint8 images; `exact`: graph optimisation off (QDQ as written)."""
    data = model if isinstance(model, bytes) else model.SerializeToString()
    sess = ort.InferenceSession(data, session_options(1, reference=exact), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return np.array([sess.run(["logits"], {name: to_layout(img, "NCHW")})[0][0] for img in images], np.float64)


def kl(ref: np.ndarray, got: np.ndarray) -> float:
    """Mean KL divergence of softmax(got) from softmax(ref), rows of logits."""
    p, q = softmax_rows(ref), softmax_rows(got)
    return float(np.mean(np.sum(p * (np.log(p + 1e-12) - np.log(q + 1e-12)), axis=1)))


def softmax_rows(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def agreement(ref: np.ndarray, got: np.ndarray) -> float:
    return float(np.mean(ref.argmax(1) == got.argmax(1)))


def latency_ms(model: onnx.ModelProto, image: np.ndarray, runs: int = 15) -> float:
    """Median ms per image in the board's session (fused kernels, WeightBiasQuantization off), 1 thread."""
    sess = ort.InferenceSession(model.SerializeToString(), session_options(1), providers=["CPUExecutionProvider"])
    feed = {sess.get_inputs()[0].name: to_layout(image, "NCHW")}
    sess.run(["logits"], feed)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        sess.run(["logits"], feed)
        times.append(time.perf_counter() - t)
    return 1000 * float(np.median(times))


def rank(qdq: onnx.ModelProto, fp32: onnx.ModelProto, images: np.ndarray, ref: np.ndarray,
         progress: bool = False) -> list[tuple[str, float]]:
    """(conv, drop in mean KL from the float model when only that conv keeps float weights), largest first."""
    base = kl(ref, logits(qdq, images))
    convs = [n.name for n in qdq.graph.node if n.op_type == "Conv"]
    gains = [(name, base - kl(ref, logits(keep_float(qdq, fp32, [name]), images)))
             for name in tqdm(convs, desc=f"mixed precision: rank convs ({len(images)} images)", disable=not progress,
                              leave=False, file=sys.stderr)]
    return sorted(gains, key=lambda g: -g[1])


def search(qdq: onnx.ModelProto, fp32: onnx.ModelProto, rank_images: np.ndarray, images: np.ndarray, bar: float,
           *, min_mac_share: float = MIN_MAC_SHARE, max_cost: float = MAX_COST, progress: bool = False) -> Result:
    """Keep the fewest, most harmful convs float until top-1 agreement with the float model on `images` reaches
    `bar` or the budget stops it; the ranking runs on `rank_images` (fewer: one exact pass per conv)."""
    macs = conv_macs(fp32)
    total = sum(macs.values())
    ref_rank, ref = logits(fp32, rank_images), logits(fp32, images)
    plain_agree = agreement(ref, logits(qdq, images))
    size0, ms0 = qdq.ByteSize() / 1e6, latency_ms(qdq, images[0])
    best = Result(qdq, {}, plain_agree, plain_agree, 1.0, (size0, size0), (ms0, ms0))
    if plain_agree >= bar:
        return best
    chosen: list[str] = []
    refused = 0
    for name, gain in rank(qdq, fp32, rank_images, ref_rank, progress):
        if gain <= 0 or refused == MAX_REFUSED:
            break
        share = 1 - sum(macs[n] for n in [*chosen, name]) / total
        if share < min_mac_share:
            continue  # too big for the budget; a smaller one further down may fit
        model = keep_float(qdq, fp32, [*chosen, name])
        size, ms = model.ByteSize() / 1e6, latency_ms(model, images[0])
        ms0 = latency_ms(qdq, images[0])  # again, side by side: the machine is shared
        step = {"conv": name, "kl_gain": gain, "mac_share": share, "size_ratio": size / size0, "ms_ratio": ms / ms0}
        if size > max_cost * size0 or ms > max_cost * ms0:
            best.steps.append({**step, "refused": "budget"})
            refused += 1  # a cheaper conv further down may still fit
            continue
        refused = 0
        chosen.append(name)
        step["agreement"] = agree = agreement(ref, logits(model, images))
        best.steps.append(step)
        if agree > best.agreement:
            best = Result(model, {n: macs[n] / total for n in chosen}, agree, plain_agree, share, (size0, size),
                          (ms0, ms), best.steps)
        if agree >= bar:
            break
    return best


def apply(fp32: Path, int8: Path, images: np.ndarray, bar: float, *, n_rank: int = 32, n_search: int = 200,
          progress: bool = False) -> dict:
    """Rewrite the int8 ONNX `int8` in place with mixed precision searched on `images` (calibration images:
    the validation images stay held out); returns the manifest's `calibration.mixed_precision` entry."""
    res = search(onnx.load(str(int8)), onnx.load(str(fp32)), images[-n_rank:], images[:n_search], bar,
                 progress=progress)
    onnx.save(res.model, str(int8))
    return {"bar": bar, "search_images": min(len(images), n_search), "rank_images": min(len(images), n_rank),
            "agreement_plain": round(res.plain_agreement, 6), "agreement": round(res.agreement, 6),
            "quantised_mac_share": round(res.quantised_mac_share, 6),
            "size_mb_plain": round(res.size_mb[0], 3), "size_mb": round(res.size_mb[1], 3),
            "ms_plain": round(res.ms[0], 2), "ms": round(res.ms[1], 2),
            "float_convs": {name[-100:]: round(share, 6) for name, share in res.float_convs.items()}}


def card_section(entry: dict | None) -> str:
    """MODEL_CARD.md's account of which convs stayed float and what that cost."""
    if not entry:
        return ""
    head = (f"## Mixed precision\nBar: top-1 agreement with the float model >= {entry['bar']:.2%} on "
            f"{entry['search_images']} calibration images; plain int8 {entry['agreement_plain']:.2%}")
    if entry["agreement_plain"] >= entry["bar"]:
        return head + ", so every conv stays int8.\n"
    convs = "".join(f"| `{n}` | {share:.2%} |\n" for n, share in entry["float_convs"].items()) or "| none | |\n"
    return head + f""". The convs whose int8 weights cost most (each ranked by the measured drop
in KL divergence from the float model when it alone keeps float weights, exact int8, on {entry['rank_images']}
calibration images) keep float weights while >= {MIN_MAC_SHARE:.0%} of conv MACs stay int8 and size and latency
stay within {MAX_COST}x of plain int8: agreement {entry['agreement']:.2%}; conv MACs int8
{entry['quantised_mac_share']:.2%}; size {entry['size_mb_plain']:.2f} -> {entry['size_mb']:.2f} MB; ONNX Runtime
on this CPU (1 thread, board session) {entry['ms_plain']:.1f} -> {entry['ms']:.1f} ms per image. The int8 TFLite
keeps its convolutions int8 (see the README).

| conv kept float | share of conv MACs |
|---|---|
{convs}"""
