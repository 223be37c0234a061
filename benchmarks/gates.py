"""The gates' bars, measured on the board's runtime (int8 ONNX through edge.classify), for two bundles.

    python -m benchmarks.gates [--bundle demo,mobilenetv2]

- demo: the shipped demo bundle (MicroMPoxNet, 128 px, synthetic lesions; `python -m convert.demo_bundle`);
- mobilenetv2: MobileNetV2 (`mobilenetv2_tl`, 1280 feature channels) trained from scratch on the synthetic
  set at 96 px for 5 epochs (benchmarks/_trained.py, cached), converted to fp32 + int8 ONNX with its gate.

Per bundle: the in-distribution flag rate on its validation set (and its 'normal' images: healthy skin must not
pass for a featureless field) and on unseen synthetic lesions; OOD AUROC of the score the board thresholds, and of
its feature part and image-statistics part alone, and flag rate against natural photographs that ship in packages (the converter's 'report' split: photographs
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
from convert.ood import Outputs, auroc, ood_sets, quality_rates, scores_by_part
from convert.pipeline import Options, convert
from edge.classify import Classifier
from edge.gates import Gates, GatesConfig, for_bundle, image_stats, measure, pooled, quality_reason
from edge.trust.bundle import load_bundle

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


def measure_bundle(root: Path, val: np.ndarray, normal: np.ndarray) -> dict:
    """Every figure for one bundle; `normal` marks the validation images of healthy skin."""
    bundle = load_bundle(root)
    clf = Classifier(bundle, "onnx", threads=1, precision="int8")
    gates = for_bundle(bundle, GatesConfig(), use_motion=False)
    if gates.ood is None:
        raise SystemExit(f"{root}: this bundle has no OOD gate (made before the gates): reconvert it")
    size = bundle.input_size[0]

    def scores(images: np.ndarray) -> dict[str, np.ndarray]:
        """The combined score the board thresholds, and the features' and image statistics' parts alone."""
        outs = [clf.run_members(im) for im in images]
        out = Outputs([np.stack([o[i][0] for o in outs]) for i in range(len(bundle.members))],
                      [pooled(np.stack([o[i][1] for o in outs])) for i in range(len(bundle.members))],
                      image_stats(images))
        return scores_by_part(gates.ood, out)

    inside = scores(val)
    unseen = np.stack([synth(c, np.random.default_rng([321, i, j]), size)[0] for i, c in enumerate(CLASSES)
                       for j in range(25)])
    t = gates.ood.threshold
    fig = {"in_flag_val": float((inside["combined"] > t).mean()), "n_val": len(val),
           "in_flag_normal": float((inside["combined"][normal] > t).mean()),
           "in_flag_unseen": float((scores(unseen)["combined"] > t).mean()), "auroc": {}, "flagged": {}}
    sets = {}
    photos = ood_sets(size, "report", crops=16).get("natural photographs")
    if photos is not None:
        sets["natural photographs"] = scores(photos), np.ones(len(photos), bool)
    synthetic, kind = nonlesion_frames(25, size, seed=7)
    s = scores(synthetic)
    sets["synthetic non-lesion"] = s, np.ones(len(synthetic), bool)
    sets.update({f"  {name}": (s, kind == k) for k, name in enumerate(KINDS)})
    # what the screen does: RETAKE (a quality gate) or NOT RECOGNISED (the OOD gate)
    quality = np.array([quality_reason(measure(im)[0], GatesConfig()) is not None for im in synthetic])
    fig["any_gate"] = {"synthetic non-lesion": ((s["combined"] > t) | quality).mean()}
    for name, (sc, part) in sets.items():
        fig["auroc"][name] = {p: auroc(inside[p], v[part]) for p, v in sc.items()}
        fig["flagged"][name] = (sc["combined"][part] > t).mean()
        if sc is s:
            fig["any_gate"][name] = ((s["combined"] > t) | quality)[part].mean()
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
          f"set on these; {fig['in_flag_normal']:.1%} of the 'normal' ones), {fig['in_flag_unseen']:.1%} of 100 "
          "unseen synthetic lesions   [bar <= 5 %]")
    for k, a in fig["auroc"].items():
        bar = "" if k.startswith(" ") else "   [bar >= 0.95]" if "photo" in k else "   [bar >= 0.99]"
        anyg = f"; {fig['any_gate'][k]:.0%} with the quality gates" if k in fig["any_gate"] else ""
        alone = ", ".join(f"{p} alone {v:.4f}" for p, v in a.items() if p != "combined")
        print(f"OOD AUROC vs {k}: {a['combined']:.4f} as the board scores it ({fig['flagged'][k]:.0%} flagged by the "
              f"OOD gate{anyg}); {alone}{bar}")
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
            normal = np.arange(len(val)) < len(val) // len(CLASSES)  # rendered in CLASSES order
        else:
            root, folder = mobilenet_bundle()
            data = scan(folder)
            batch = load_batch(data.samples, MOBILENET[1])
            val, normal = batch.images, batch.labels == data.classes.index("normal")
        report(name, root, measure_bundle(root, val, normal))


if __name__ == "__main__":
    main()
