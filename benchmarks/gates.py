"""The gates' bars, measured on the board's runtime (int8 ONNX through edge.classify), for two bundles.

    python -m benchmarks.gates [--bundle demo,mobilenetv2]

- demo: the shipped demo bundle (MicroMPoxNet, 128 px, synthetic lesions; `python -m convert.demo_bundle`);
- mobilenetv2: MobileNetV2 (`mobilenetv2_tl`, 1280 feature channels) trained from scratch on the synthetic
  set at 96 px for 5 epochs (benchmarks/_trained.py, cached), converted to fp32 + int8 ONNX with its gate.

Per bundle: the in-distribution flag rate on its validation set and on unseen synthetic lesions; OOD AUROC
and flag rate against natural photographs that ship in packages (the converter's 'report' split: photographs
the gate's method was not chosen on) and synthetic non-lesion frames (a seed the converter never used), per
kind; the quality gates on clean, blurred (sigma 3), darkened (x0.2) and over-exposed (x4) validation images;
and the gates' median cost per frame beside the median inference time, in one run. Bars: AUROC >= 0.95
(photographs) and >= 0.99 (synthetic), flag rate <= 5 %, quality catch >= 90 % with <= 2 % of clean frames
flagged, gates <= 1 ms.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from benchmarks import _trained
from benchmarks._assets import CACHE, DEMO_BUNDLE
from calibration.dataset import load_batch, scan
from calibration.nonlesion import KINDS
from calibration.nonlesion import frames as nonlesion_frames
from calibration.synthetic import CLASSES
from calibration.synthetic import render as synth
from convert.ood import auroc, ood_sets, quality_rates
from convert.pipeline import Options, convert
from edge.bundle import load_bundle
from edge.classify import Classifier
from edge.gates import Gates, GatesConfig, for_bundle, measure, quality_reason

MOBILENET = ("mobilenetv2_tl", 96, 5)  # arch, input size, epochs


def mobilenet_bundle() -> tuple[Path, Path]:
    """(bundle, validation folder) of the trained MobileNetV2, converted once and cached."""
    arch, size, epochs = MOBILENET
    ckpt, acc = _trained.checkpoint(arch, size, epochs)
    print(f"{arch} {size} px {epochs} epochs: float accuracy {acc:.1%} on the synthetic validation set")
    data = _trained.dataset(size)
    out = CACHE / "gates" / ckpt.stem
    if not (out / "manifest.yaml").is_file():
        convert(Options(arch=arch, checkpoint=ckpt, calib=data["calib"], val=data["val"], out=out, input_size=size,
                        formats=("fp32_onnx", "int8_onnx"), force=True, progress=False))
    return out, data["val"]


def demo_validation(size: int) -> np.ndarray:
    """The demo bundle's validation images, rendered again (convert.demo_bundle: 50 per class, seed 13)."""
    return np.stack([synth(c, np.random.default_rng([13, CLASSES.index(c), i]), size)[0] for c in CLASSES
                     for i in range(50)])


def measure_bundle(root: Path, val: np.ndarray) -> dict:
    bundle = load_bundle(root)
    clf = Classifier(bundle, "onnx", threads=1, precision="int8")
    gates = for_bundle(bundle, GatesConfig(), use_motion=False)
    if gates.ood is None:
        raise SystemExit(f"{root}: this bundle has no OOD gate (made before the gates): reconvert it")
    size = bundle.input_size[0]

    def scores(images: np.ndarray) -> np.ndarray:
        outs = [clf.run_members(im) for im in images]
        return np.array([gates.ood.score([o[0] for o in out], [o[1] for o in out])[0] for out in outs])

    inside = scores(val)
    unseen = np.stack([synth(c, np.random.default_rng([321, i, j]), size)[0] for i, c in enumerate(CLASSES)
                       for j in range(25)])
    t = gates.ood.threshold
    fig = {"in_flag_val": float((inside > t).mean()), "in_flag_unseen": float((scores(unseen) > t).mean()),
           "n_val": len(val), "auroc": {}, "flagged": {}}
    photos = ood_sets(size, "report", crops=16).get("natural photographs")
    if photos is not None:
        s = scores(photos)
        fig["auroc"]["natural photographs"], fig["flagged"]["natural photographs"] = auroc(inside, s), (s > t).mean()
    synthetic, kind = nonlesion_frames(25, size, seed=7)
    s = scores(synthetic)
    fig["auroc"]["synthetic non-lesion"], fig["flagged"]["synthetic non-lesion"] = auroc(inside, s), (s > t).mean()
    # what the screen does: RETAKE (a quality gate) or NOT RECOGNISED (the OOD gate)
    quality = np.array([quality_reason(measure(im)[0], GatesConfig()) is not None for im in synthetic])
    fig["any_gate"] = {"synthetic non-lesion": ((s > t) | quality).mean()}
    for k, name in enumerate(KINDS):
        fig["auroc"][f"  {name}"] = auroc(inside, s[kind == k])
        fig["flagged"][f"  {name}"] = (s[kind == k] > t).mean()
        fig["any_gate"][f"  {name}"] = ((s > t) | quality)[kind == k].mean()
    fig["quality"] = quality_rates(val)
    fig.update(cost(clf, Gates(GatesConfig(), gates.ood), val))
    clf.close()
    return fig


def cost(clf: Classifier, gates: Gates, images: np.ndarray, n: int = 300) -> dict:
    """Median ms per frame of inference and of all gates (quality, motion, OOD), interleaved in one loop."""
    infer, gate = [], []
    for i in range(n):
        img = images[i % len(images)]
        t0 = time.perf_counter()
        outs = clf.run_members(img)
        t1 = time.perf_counter()
        gates(img, [o[0] for o in outs], [o[1] for o in outs])
        t2 = time.perf_counter()
        infer.append(t1 - t0)
        gate.append(t2 - t1)
    return {"infer_ms": 1e3 * float(np.median(infer)), "gates_ms": 1e3 * float(np.median(gate)),
            "features": list(clf.bundle.members[0].features_shape)}


def report(name: str, root: Path, fig: dict) -> None:
    print(f"\n## {name}: {root}")
    print(f"in-distribution flag rate: {fig['in_flag_val']:.1%} of {fig['n_val']} validation images (threshold "
          f"set on these), {fig['in_flag_unseen']:.1%} of 100 unseen synthetic lesions   [bar <= 5 %]")
    for k, v in fig["auroc"].items():
        bar = "" if k.startswith(" ") else "   [bar >= 0.95]" if "photo" in k else "   [bar >= 0.99]"
        anyg = f"; {fig['any_gate'][k]:.0%} with the quality gates" if k in fig["any_gate"] else ""
        print(f"OOD AUROC vs {k}: {v:.4f} ({fig['flagged'][k]:.0%} flagged by the OOD gate{anyg}){bar}")
    q = fig["quality"]
    print(f"quality gates: {q['clean']:.1%} of clean validation frames flagged [bar <= 2 %]; caught "
          + ", ".join(f"{v:.1%} {k}" for k, v in q.items() if k != "clean") + "   [bar >= 90 %]")
    print(f"cost per frame (median, features {fig['features']}): gates {fig['gates_ms']:.3f} ms beside int8 "
          f"inference {fig['infer_ms']:.2f} ms   [bar <= 1 ms]")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", default="demo,mobilenetv2", help="comma-separated: demo, mobilenetv2")
    a = p.parse_args()
    for name in a.bundle.split(","):
        if name == "demo":
            root = DEMO_BUNDLE
            val = demo_validation(load_bundle(root).input_size[0])
        else:
            root, folder = mobilenet_bundle()
            val = load_batch(scan(folder).samples, MOBILENET[1]).images
        report(name, root, measure_bundle(root, val))


if __name__ == "__main__":
    main()
