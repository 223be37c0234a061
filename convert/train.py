"""`skinedge train`: fit a zoo or torchvision architecture on an ImageFolder tree, saying every epoch how it
does on held-out images, so an under-trained model is seen before it is converted.

    skinedge train --arch micro_mpoxnet --data data/train --size 224 --epochs 15 --out micro.pth

Images go through the board's own preprocessing (edge.preprocess via calibration.dataset) and the model
sees them normalised as the exported graph will. Per epoch: train and validation loss, accuracy and
macro-F1; the best epoch by validation macro-F1 is written to --out as soon as it is reached; training stops
early after --patience epochs without improvement. With --freeze-epochs N the head is trained first with the
feature extractor frozen (useful after --init with pretrained weights), then everything is fine-tuned at a
tenth of the learning rate. Without --val, a stratified --val-fraction of --data is held out.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import sys
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

import edge
from calibration.dataset import Batch, DatasetError, ImageSet, Sample, files_digest, load_batch, scan, split
from convert.export import IMAGENET_MEAN, IMAGENET_STD
from convert.validate import chance_warning
from convert.zoo import UnknownArchError, build_model, check_arch, split_model
from edge import about, plots
from edge.metrics import macro_f1
from edge.outputs import probe


def _normalise(x: torch.Tensor) -> torch.Tensor:
    """uint8 NHWC -> the float NCHW the model sees after the exported graph's first ops."""
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x.permute(0, 3, 1, 2).float() / 255.0 - mean) / std


@dataclass(frozen=True)
class Augment:
    """Random flips (both axes: a lesion has no up), rotation by up to ±`rotate` degrees and zoom-in by up to
    `zoom` (0.2 = 20 %), as the skin-lesion papers this project follows train; one affine warp per image."""

    flip: bool = True
    rotate: float = 30.0
    zoom: float = 0.2

    def __call__(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        n = x.shape[0]
        angle = (torch.rand(n, generator=g) * 2 - 1) * math.radians(self.rotate)
        scale = 1 / (1 + torch.rand(n, generator=g) * self.zoom)
        fx, fy = (torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0) if self.flip else torch.ones(n)
                  for _ in range(2))
        cos, sin, zero = torch.cos(angle) * scale, torch.sin(angle) * scale, torch.zeros(n)
        theta = torch.stack([torch.stack([cos * fx, -sin * fy, zero], 1), torch.stack([sin * fx, cos * fy, zero], 1)], 1)
        grid = nn.functional.affine_grid(theta, list(x.shape), align_corners=False)
        return nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


NO_AUGMENT = Augment(flip=False, rotate=0.0, zoom=0.0)


@dataclass
class Fit:
    """How to train: epochs per stage, optimiser, augmentation, class weighting, early stopping."""

    epochs: int = 15  # fine-tuning epochs (everything trainable)
    freeze_epochs: int = 0  # before those: head only, feature extractor frozen
    lr: float = 2e-3
    batch: int = 32
    patience: int = 5  # stop a stage after this many epochs without a better validation macro-F1; 0: never
    class_weights: bool = False  # weight the loss by inverse class frequency (imbalanced data)
    augment: Augment = field(default_factory=Augment)
    seed: int = 0
    progress: bool = True


@dataclass
class Epoch:
    stage: str
    epoch: int
    train_loss: float
    train_accuracy: float
    train_f1: float
    val_loss: float | None = None
    val_accuracy: float | None = None
    val_f1: float | None = None
    best: bool = False

    def line(self, of: int) -> str:
        s = (f"epoch {self.epoch:>2}/{of} {self.stage}: train loss {self.train_loss:.3f} acc {self.train_accuracy:.1%} "
             f"F1 {self.train_f1:.3f}")
        if self.val_loss is not None:
            s += f" | val loss {self.val_loss:.3f} acc {self.val_accuracy:.1%} F1 {self.val_f1:.3f}"
        return s + ("  * best" if self.best else "")


def _loss_fn(labels: np.ndarray, k: int, weighted: bool) -> nn.Module:
    weight = None
    if weighted:
        counts = np.bincount(labels, minlength=k).astype(np.float64)
        weight = torch.tensor(len(labels) / (k * np.maximum(counts, 1)), dtype=torch.float32)
    return nn.CrossEntropyLoss(weight=weight, label_smoothing=0.05)


def _backbones(model: nn.Module) -> list[nn.Module]:
    """The feature extractors to freeze: one per member for an ensemble."""
    members = list(model.members) if hasattr(model, "members") else [model]
    return [split_model(m).features for m in members]


def evaluate_batches(model: nn.Module, images: np.ndarray, labels: np.ndarray, loss_fn: nn.Module,
                     batch: int = 64) -> tuple[float, float, float]:
    """(loss, accuracy, macro-F1) of the model in eval mode."""
    model.eval()
    losses, preds = [], []
    with torch.no_grad():
        for i in range(0, len(images), batch):
            logits = model(_normalise(torch.from_numpy(images[i : i + batch])))
            losses.append(float(loss_fn(logits, torch.from_numpy(labels[i : i + batch]))) * len(logits))
            preds.append(logits.argmax(1).numpy())
    pred = np.concatenate(preds)
    k = int(max(labels.max(), pred.max())) + 1
    return sum(losses) / len(images), float(np.mean(pred == labels)), macro_f1(labels, pred, k)


def fit(model: nn.Module, images: np.ndarray, labels: np.ndarray, opts: Fit, val: tuple[np.ndarray, np.ndarray] | None = None,
        on_best=None) -> list[Epoch]:
    """Train in place; returns one record per epoch. With `val`, the weights of the best epoch (validation
    macro-F1, then loss) are restored at the end and `on_best(model, record, history so far)` is called whenever
    one is reached."""
    torch.manual_seed(opts.seed)
    g = torch.Generator().manual_seed(opts.seed)
    rng = np.random.default_rng(opts.seed)
    k = int(labels.max()) + 1
    loss_fn = _loss_fn(labels, k, opts.class_weights)
    x_all, y_all = torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64))
    frozen = _backbones(model) if opts.freeze_epochs else []
    stages = [("head", opts.freeze_epochs, opts.lr), ("fine-tune", opts.epochs, opts.lr / 10 if frozen else opts.lr)]
    total = opts.freeze_epochs + opts.epochs
    history: list[Epoch] = []
    best_key, best_state = None, None
    for stage, epochs, lr in stages:
        if not epochs:
            continue
        for p in (p for b in frozen for p in b.parameters()):
            p.requires_grad_(stage != "head")
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
        steps_per_epoch = int(np.ceil(len(images) / opts.batch))
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps_per_epoch)
        stale = 0
        for _ in range(epochs):
            model.train()
            for b in frozen if stage == "head" else []:
                b.eval()  # frozen BatchNorm statistics stay as they are
            order = rng.permutation(len(images))
            loss_sum, preds = 0.0, np.empty(len(images), np.int64)
            bar = tqdm(range(0, len(order), opts.batch), desc=f"epoch {len(history) + 1}/{total} {stage}",
                       disable=not opts.progress, leave=False, unit="batch")
            for i in bar:
                idx = torch.from_numpy(order[i : i + opts.batch])
                x = opts.augment(_normalise(x_all[idx]), g)
                logits = model(x)
                loss = loss_fn(logits, y_all[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                loss_sum += loss.item() * len(idx)
                preds[i : i + len(idx)] = logits.argmax(1).numpy()
                bar.set_postfix(loss=f"{loss.item():.3f}")
            y_seen = labels[order]
            rec = Epoch(stage, len(history) + 1, loss_sum / len(images), float(np.mean(preds == y_seen)),
                        macro_f1(y_seen, preds, k))
            if val is not None:
                rec.val_loss, rec.val_accuracy, rec.val_f1 = evaluate_batches(model, *val, loss_fn)
                key = (rec.val_f1, -rec.val_loss)
                if best_key is None or key > best_key:
                    best_key, rec.best, stale = key, True, 0
                    best_state = {n: t.detach().clone() for n, t in model.state_dict().items()}
                    if on_best:
                        on_best(model, rec, [*history, rec])
                else:
                    stale += 1
            history.append(rec)
            if opts.progress:
                tqdm.write(rec.line(total))
            if val is not None and opts.patience and stale >= opts.patience:
                if opts.progress:
                    tqdm.write(f"{stage}: no better validation macro-F1 for {stale} epochs: stopping this stage")
                break
    for p in model.parameters():
        p.requires_grad_(True)
    if best_state is not None:
        model.load_state_dict(best_state)
    return history


def train(model: nn.Module, images: np.ndarray, labels: np.ndarray, epochs: int = 5, lr: float = 2e-3,
          batch: int = 32, seed: int = 0, progress: bool = True) -> nn.Module:
    """The fixed recipe the benchmarks' cached models and the test fixture are trained with (their published
    figures depend on it, so it stays as it was): all images, no validation, AdamW + one-cycle, a random
    horizontal flip and quarter turn per batch. `fit` is the general trainer behind `skinedge train`."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * int(np.ceil(len(images) / batch))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    x_all = torch.from_numpy(images)
    y_all = torch.from_numpy(labels.astype(np.int64))
    model.train()
    bar = tqdm(total=steps, desc="train", disable=not progress, leave=False)
    for _ in range(epochs):
        order = rng.permutation(len(images))
        for i in range(0, len(order), batch):
            idx = torch.from_numpy(order[i : i + batch])
            x = _normalise(x_all[idx])
            if rng.random() < 0.5:
                x = x.flip(3)
            x = torch.rot90(x, int(rng.integers(4)), (2, 3))
            loss = nn.functional.cross_entropy(model(x), y_all[idx], label_smoothing=0.05)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            bar.update()
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    return model.eval()


def evaluate(model: nn.Module, images: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy."""
    return evaluate_batches(model, images, labels, nn.CrossEntropyLoss())[1]


def run_record(a: argparse.Namespace, opts: Fit, ds: ImageSet, train: tuple[list[Sample], Batch],
               val: tuple[list[Sample], Batch]) -> dict:
    """What the model card's training section says (convert carries it from the checkpoint): the data (folder,
    digest of its files, images per class), the recipe, the initial weights, the seed, the software."""
    classes = ds.classes

    def data(folder: Path, samples: list[Sample], batch: Batch) -> dict:
        counts = np.bincount(batch.labels, minlength=len(classes))
        return {"folder": str(folder), "digest": files_digest([s.path for s in samples], folder),
                "images": len(batch.labels), "per_class": {c: int(n) for c, n in zip(classes, counts)},
                "skipped": len(batch.skipped)}

    return {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "arch": a.arch, "size": a.size, "classes": classes,
        "data": {"folder": str(a.data), "digest": files_digest([s.path for s in ds.samples], a.data),
                 "images": len(ds.samples)},
        "train": data(a.data, *train),
        "validation": {**data(a.val or a.data, *val), "source": f"--val {a.val}" if a.val else
                       f"{a.val_fraction:.0%} of each class held out of --data (seed {a.seed})"},
        "epochs_planned": opts.freeze_epochs + opts.epochs, "freeze_epochs": opts.freeze_epochs,
        "patience": opts.patience, "lr": opts.lr, "batch": opts.batch, "class_weights": opts.class_weights,
        "optimiser": "AdamW (weight decay 1e-4), one-cycle learning rate, label smoothing 0.05",
        "augmentation": asdict(opts.augment),
        "init": "random" if a.init is None else f"{a.init} (sha256 {hashlib.sha256(a.init.read_bytes()).hexdigest()[:16]})",
        "seed": a.seed, "selection": "best epoch by validation macro-F1, then loss",
        "software": {"skinedge": f"{edge.__version__} (commit {about.commit() or 'unknown'})",
                     **about.versions(("torch", "torchvision", "numpy"))},
    }


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="skinedge train", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--arch", required=True, help="zoo name, torchvision classifier name, or package.module:factory")
    p.add_argument("--data", required=True, type=Path, help="ImageFolder tree (one sub-folder of images per class)")
    p.add_argument("--val", type=Path, help="ImageFolder tree of validation images (default: hold out --val-fraction)")
    p.add_argument("--val-fraction", type=float, default=0.2, help="share of each class held out when --val is absent")
    p.add_argument("--out", required=True, type=Path, help="checkpoint to write (the best epoch)")
    p.add_argument("--size", type=int, default=224, help="input size (square), as for convert --input-size")
    p.add_argument("--epochs", type=int, default=15, help="fine-tuning epochs (all layers trainable)")
    p.add_argument("--freeze-epochs", type=int, default=0, help="head-only epochs first, feature extractor frozen")
    p.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (fine-tuning after a frozen stage: lr/10)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--patience", type=int, default=5, help="early stopping: epochs without a better validation "
                                                          "macro-F1 (0: off)")
    p.add_argument("--class-weights", action="store_true", help="weight the loss by inverse class frequency")
    p.add_argument("--no-flip", action="store_true", help="no random horizontal/vertical flips")
    p.add_argument("--rotate", type=float, default=30.0, help="random rotation up to ± this many degrees")
    p.add_argument("--zoom", type=float, default=0.2, help="random zoom-in up to this fraction")
    p.add_argument("--init", type=Path, help="start from these weights (tensors whose name and shape fit; e.g. "
                                             "ImageNet weights for the backbone)")
    p.add_argument("--seed", type=int, default=0)
    return p


def _init_from(model: nn.Module, path: Path) -> str:
    """Load the tensors of a checkpoint that fit by name and shape (a pretrained backbone with another head)."""
    obj = torch.load(path, map_location="cpu", weights_only=True)
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else {}
    own = model.state_dict()
    fits = {k: v for k, v in state.items() if k in own and getattr(v, "shape", None) == own[k].shape}
    if not fits:
        raise ValueError(f"{path}: no tensor fits the architecture by name and shape")
    model.load_state_dict(fits, strict=False)
    return f"init: {len(fits)} of {len(own)} tensors from {path}"


def _check(a: argparse.Namespace) -> None:
    """Everything that can be checked before loading images: a typo fails in a second, not after minutes."""
    check_arch(a.arch)
    for name in ("epochs", "batch", "size"):
        if getattr(a, name) < 1:
            raise ValueError(f"--{name} must be at least 1, got {getattr(a, name)}")
    if a.freeze_epochs < 0 or a.patience < 0 or a.rotate < 0 or a.zoom < 0:
        raise ValueError("--freeze-epochs, --patience, --rotate and --zoom cannot be negative")
    if a.init is not None and not a.init.is_file():
        raise ValueError(f"--init {a.init}: no such file")
    try:  # the checkpoint is written after minutes of training: its place is checked now
        a.out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"--out {a.out}: cannot create {a.out.parent} ({e.strerror or e})") from None
    probe(a.out, "--out")


def main(argv: list[str] | None = None) -> int:
    a = _parser().parse_args(argv)
    try:
        _check(a)
        ds = scan(a.data)
        if ds.classes is None:
            raise DatasetError(f"{a.data}: training needs labels: one sub-folder of images per class")
        if a.val is not None:
            train_samples, val_samples = ds.samples, scan(a.val, ds.classes).samples
        else:
            train_samples, val_samples = split(ds, a.val_fraction, seed=a.seed)
        model = build_model(a.arch, len(ds.classes))
        if a.freeze_epochs:
            _backbones(model)  # a model that cannot be split cannot be frozen: say so before loading images
        if a.init is not None:
            print(_init_from(model, a.init))
        tr, va = load_batch(train_samples, a.size), load_batch(val_samples, a.size)
    except (DatasetError, UnknownArchError, ValueError) as e:
        print(f"skinedge train: error: {e}", file=sys.stderr)
        return 2
    print(f"train: {a.arch} on {len(tr.labels)} images, validation on {len(va.labels)} "
          f"({'--val ' + str(a.val) if a.val else f'{a.val_fraction:.0%} held out of --data'}), classes {ds.classes}")
    for batch, what in ((tr, "train"), (va, "validation")):
        if batch.converted:
            print(f"{what}: {batch.converted}")
    meta = {"arch": a.arch, "labels": ds.classes, "size": a.size}
    opts = Fit(epochs=a.epochs, freeze_epochs=a.freeze_epochs, lr=a.lr, batch=a.batch, patience=a.patience,
               class_weights=a.class_weights, seed=a.seed,
               augment=Augment(flip=not a.no_flip, rotate=a.rotate, zoom=a.zoom))
    run = run_record(a, opts, ds, (train_samples, tr), (val_samples, va))

    def save(model: nn.Module, rec: Epoch, history: list[Epoch]) -> None:
        training = {**run, "best_epoch": rec.epoch, "epochs_run": len(history), "history": [asdict(h) for h in history]}
        torch.save({**meta, "epoch": rec.epoch, "validation": asdict(rec), "training": training,
                    "state_dict": model.state_dict()}, a.out)

    history = fit(model, tr.images, tr.labels, opts, val=(va.images, va.labels), on_best=save)
    best = [r for r in history if r.best][-1]
    save(model, best, history)  # the best epoch's weights (fit restored them) with the whole history
    print(f"best: epoch {best.epoch}, validation accuracy {best.val_accuracy:.1%}, macro-F1 {best.val_f1:.3f}; "
          f"wrote {a.out}")
    curves = a.out.with_suffix(".curves.png")
    if plots.available():
        plots.curves_png([asdict(h) for h in history], f"{a.arch} on {a.data}", curves)
        print(f"training curves: {curves}")
    else:
        print("no training curves: matplotlib is not installed (it comes with the convert extra)")
    warning = chance_warning("trained model", best.val_accuracy, va.labels, len(ds.classes))
    if warning:
        print(f"WARNING: {warning}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
