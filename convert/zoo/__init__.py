"""The research architectures, each split as features -> global average pool -> head, plus any
torchvision classifier and a user's own `package.module:function`. See MODELS.md for the table."""

from __future__ import annotations

from convert.zoo.ensemble import WeightedEnsemble
from convert.zoo.registry import ARCHS, UnknownArchError, build_model, check_arch, ensemble
from convert.zoo.split import HEAD_KINDS, Split, SplitModel, split_model

__all__ = ["ARCHS", "HEAD_KINDS", "Split", "SplitModel", "UnknownArchError", "WeightedEnsemble",
           "build_model", "check_arch", "ensemble", "split_model"]
