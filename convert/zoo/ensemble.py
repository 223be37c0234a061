"""Weighted ensemble: probabilities = Σ w_i softmax(member_i(x)). forward returns their log, so that
softmax(forward(x)) is the weighted average and cross-entropy training works unchanged."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

DEFAULT_MEMBERS = ("mobilenetv2_tl", "efficientnet_b1_head", "resnet50_head")
DEFAULT_WEIGHTS = (0.30, 0.30, 0.40)


def normalised_weights(weights: Sequence[float], n_members: int) -> list[float]:
    """Positive weights, one per member, scaled to sum to 1; ValueError otherwise."""
    if n_members == 0:
        raise ValueError("ensemble: no members given")
    if len(weights) != n_members:
        raise ValueError(f"ensemble: {n_members} members but {len(weights)} weights ({list(weights)})")
    if any(not w > 0 for w in weights):
        raise ValueError(f"ensemble: weights must be positive, got {list(weights)}")
    total = float(sum(weights))
    return [float(w) / total for w in weights]


class WeightedEnsemble(nn.Module):
    def __init__(self, members: Sequence[nn.Module], names: Sequence[str], weights: Sequence[float]):
        super().__init__()
        if len(names) != len(members):
            raise ValueError(f"ensemble: {len(members)} members but {len(names)} names ({list(names)})")
        self.weights = normalised_weights(weights, len(members))
        self.members = nn.ModuleList(members)
        self.member_names = list(names)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs = sum(w * torch.softmax(m(x), 1) for w, m in zip(self.weights, self.members, strict=True))
        return torch.log(probs.clamp_min(torch.finfo(probs.dtype).tiny))
