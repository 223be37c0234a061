"""Weighted ensemble: probabilities = Σ w_i softmax(member_i(x)); forward returns their log, so that
softmax(forward(x)) is the weighted average and cross-entropy training works unchanged."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

DEFAULT_MEMBERS = ("mobilenetv2_tl", "efficientnet_b1_head", "resnet50_head")
DEFAULT_WEIGHTS = (0.30, 0.30, 0.40)


class WeightedEnsemble(nn.Module):
    def __init__(self, members: Sequence[nn.Module], names: Sequence[str], weights: Sequence[float]):
        super().__init__()
        if len(members) != len(weights) or len(members) != len(names) or not members:
            raise ValueError(f"ensemble: {len(members)} members, {len(names)} names and {len(weights)} weights")
        if any(w <= 0 for w in weights):
            raise ValueError(f"ensemble weights must be positive, got {list(weights)}")
        total = float(sum(weights))
        self.members = nn.ModuleList(members)
        self.member_names = list(names)
        self.weights = [float(w) / total for w in weights]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs = sum(w * torch.softmax(m(x), 1) for w, m in zip(self.weights, self.members))
        return torch.log(probs.clamp_min(1e-12))


def make_ensemble(build: Callable[[str, int], nn.Module], num_classes: int, members: Sequence[str] = DEFAULT_MEMBERS,
                  weights: Sequence[float] = DEFAULT_WEIGHTS) -> WeightedEnsemble:
    return WeightedEnsemble([build(name, num_classes) for name in members], members, weights)
