"""Trained zoo models and their bundles for the fidelity benchmarks, built once and cached.

Fidelity of int8 against float only means something for a network that has learnt something, so these
are trained on the synthetic lesion set (`calibration.synthetic`) with `convert.train`, then converted by
`convert.pipeline.convert` with the default calibration (min-max on bias-corrected weights). Everything is cached under
$SKINEDGE_BENCH_CACHE/trained (default /tmp/skinedge-bench-cache/trained), keyed by architecture, size and
epochs. The ensemble is assembled from its separately trained members (same architectures and sizes),
which is how the research ensemble was built and saves training it a second time.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from benchmarks._assets import CACHE
from calibration.dataset import load_batch, scan
from calibration.synthetic import write_imagefolder
from convert.pipeline import Options, convert
from convert.train import evaluate, train
from convert.zoo import build_model
from convert.zoo.ensemble import DEFAULT_MEMBERS

ROOT = CACHE / "trained"
# (images per class, seed) of each split; the validation set is what the fidelity table is measured on.
SPLITS = {"train": (300, 11), "calib": (64, 12), "val": (100, 13)}
# Epochs that bring each architecture to >= 95 % on the synthetic validation set at 96 px (measured). An
# under-trained network is no fair test of int8: EfficientNet-B1 after 10 epochs (87 % float accuracy) kept
# only 75 % (ONNX) / 57 % (TFLite) top-1 agreement; after 25 epochs (99.75 %) 100 % for both.
EPOCHS = {"micro_mpoxnet": 20, "mobilenetv2_msca_pfr": 15, "mobilenetv2_tl": 15, "efficientnet_b1_head": 25,
          "resnet50_head": 8, "resnet50_asff": 8}  # the ensemble is assembled from its members, not trained


def dataset(size: int) -> dict[str, Path]:
    """The synthetic train / calib / val ImageFolder trees at `size`, written on first use."""
    out = {}
    for split, (per_class, seed) in SPLITS.items():
        out[split] = ROOT / f"data{size}" / split
        if not out[split].is_dir():
            tmp = out[split].with_name(split + ".partial")
            write_imagefolder(tmp, per_class=per_class, size=size, seed=seed)
            tmp.rename(out[split])
    return out


def checkpoint(arch: str, size: int, epochs: int | None = None, init: Path | None = None) -> tuple[Path, float]:
    """Train `arch` at `size` (continuing from checkpoint `init` if given); returns the checkpoint and its
    validation accuracy. The ensemble's checkpoint is its members' checkpoints put together."""
    epochs = EPOCHS.get(arch, 10) if epochs is None else epochs
    members = [checkpoint(name, size)[0] for name in DEFAULT_MEMBERS] if arch == "ensemble" else []
    tag = f"{arch}_{size}px_{epochs}ep" + (f"_from_{init.stem}" if init else "")
    if members:  # e.g. ensemble_96px_15ep+25ep+8ep: the members' training, in DEFAULT_MEMBERS order
        tag = f"{arch}_{size}px_" + "+".join(m.stem.rsplit("_", 1)[-1] for m in members)
    path = ROOT / "ckpt" / f"{tag}.pth"
    data = dataset(size)
    if not path.is_file():
        model = build_model(arch, 4)
        if members:
            for member, ckpt in zip(model.members, members):
                member.load_state_dict(torch.load(ckpt, weights_only=True)["state_dict"])
        else:
            if init is not None:
                model.load_state_dict(torch.load(init, weights_only=True)["state_dict"])
            ds = scan(data["train"])
            batch = load_batch(ds.samples, size)
            train(model, batch.images, batch.labels, epochs, lr=2e-3 if init is None else 5e-4)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"arch": arch, "size": size, "state_dict": model.eval().state_dict()}, path)
    model = build_model(arch, 4)
    model.load_state_dict(torch.load(path, weights_only=True)["state_dict"])
    val = load_batch(scan(data["val"]).samples, size)
    return path, evaluate(model.eval(), val.images, val.labels)


def bundle(arch: str, size: int, ckpt: Path) -> tuple[Path, dict]:
    """The bundle of a trained checkpoint (every artefact, default calibration, every validation image); returns
    it and its report."""
    out = ROOT / "bundles" / ckpt.stem
    if not (out / "report.json").is_file():
        data = dataset(size)
        convert(Options(arch=arch, checkpoint=ckpt, calib=data["calib"], val=data["val"], out=out, input_size=size,
                        force=True, progress=False))
    return out, json.loads((out / "report.json").read_text())
