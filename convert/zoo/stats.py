"""Parameters and multiply-accumulates per zoo architecture: `python -m convert.zoo.stats` prints the
Markdown table kept in MODELS.md.

MACs are counted by torch's own FlopCounterMode (convolutions and matrix products; element-wise ops,
pooling and activations are not counted), one image, eval mode; MACs = FLOPs / 2.
"""

from __future__ import annotations

import argparse

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from convert.zoo.registry import ARCHS, build_model


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, size: int) -> int:
    """MACs of one forward pass of a 1×3×size×size input."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, 3, size, size))
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2


def _features_shape(model: nn.Module, size: int) -> str:
    features = getattr(model, "features", None)
    if features is None:
        return "per member"
    with torch.no_grad():
        a = features.eval()(torch.zeros(1, 3, size, size))
    return "×".join(str(d) for d in a.shape[1:])


def table(archs: list[str], size: int, num_classes: int) -> str:
    rows = [f"| arch | params (M) | MACs (G) at {size} | features A at {size} (C×h×w) |",
            "|---|---:|---:|---|"]
    for arch in archs:
        torch.manual_seed(0)
        model = build_model(arch, num_classes).eval()
        rows.append(f"| {arch} | {count_params(model) / 1e6:.2f} | {count_macs(model, size) / 1e9:.3f} | "
                    f"{_features_shape(model, size)} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m convert.zoo.stats", description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=224, help="square input size (default 224)")
    p.add_argument("--num-classes", type=int, default=4, help="K, the head's outputs (default 4)")
    p.add_argument("--archs", nargs="+", default=list(ARCHS), help="architectures (default: the whole zoo)")
    a = p.parse_args(argv)
    print(table(a.archs, a.size, a.num_classes))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
