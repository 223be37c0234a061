"""A short training loop, so the tests, the demo bundle and the fidelity report use models that have
learnt something (int8 fidelity of a random network says little). Not a research training recipe.

    python -m convert.train --arch micro_mpoxnet --data SYNTH_DIR --size 96 --epochs 6 --out ckpt.pth
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from calibration.dataset import load_batch, scan
from convert.export import IMAGENET_MEAN, IMAGENET_STD
from convert.zoo import build_model


def _normalise(x: torch.Tensor) -> torch.Tensor:
    """uint8 NHWC -> the float NCHW the model sees after the exported graph's first ops."""
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x.permute(0, 3, 1, 2).float() / 255.0 - mean) / std


def train(model: nn.Module, images: np.ndarray, labels: np.ndarray, epochs: int = 5, lr: float = 2e-3,
          batch: int = 32, seed: int = 0, progress: bool = True) -> nn.Module:
    """Adam + cosine schedule, random flips and 90° rotations (lesions have no up)."""
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
    with torch.no_grad():
        pred = torch.cat([model(_normalise(torch.from_numpy(images[i : i + 64]))).argmax(1)
                          for i in range(0, len(images), 64)])
    return float((pred.numpy() == labels).mean())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m convert.train", description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", required=True)
    p.add_argument("--data", required=True, type=Path, help="ImageFolder tree (class sub-folders)")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, type=Path)
    a = p.parse_args(argv)
    torch.manual_seed(a.seed)
    ds = scan(a.data)
    batch = load_batch(ds.samples, a.size)
    model = build_model(a.arch, len(ds.classes))
    train(model, batch.images, batch.labels, a.epochs, a.lr, a.batch, a.seed)
    print(f"train accuracy {evaluate(model, batch.images, batch.labels):.2%} on {len(batch.labels)} images")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"arch": a.arch, "labels": ds.classes, "size": a.size, "state_dict": model.state_dict()}, a.out)
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
