"""The research architectures, each split as features -> global average pool -> head, plus any
torchvision classifier and a user's own `package.module:factory`."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence

from torch import nn

from convert.zoo.ensemble import DEFAULT_MEMBERS, DEFAULT_WEIGHTS, WeightedEnsemble, make_ensemble
from convert.zoo.heads import efficientnet_b1_head, mobilenetv2_tl, resnet50_head
from convert.zoo.micro_mpoxnet import micro_mpoxnet
from convert.zoo.msca_pfr import mobilenetv2_msca_pfr
from convert.zoo.resnet_asff import resnet50_asff
from convert.zoo.split import HEAD_KINDS, Split, SplitModel, split_model

__all__ = ["ARCHS", "HEAD_KINDS", "Split", "SplitModel", "UnknownArchError", "WeightedEnsemble", "build_model",
           "ensemble", "split_model"]


class UnknownArchError(ValueError):
    pass


def ensemble(num_classes: int, members: Sequence[str] = DEFAULT_MEMBERS,
             weights: Sequence[float] = DEFAULT_WEIGHTS) -> WeightedEnsemble:
    """0.30·MobileNetV2 + 0.30·EfficientNet-B1 + 0.40·ResNet-50 with custom heads, by default."""
    return make_ensemble(build_model, num_classes, members, weights)


ARCHS: dict[str, Callable[[int], nn.Module]] = {
    "mobilenetv2_msca_pfr": mobilenetv2_msca_pfr,
    "micro_mpoxnet": micro_mpoxnet,
    "resnet50_asff": resnet50_asff,
    "mobilenetv2_tl": mobilenetv2_tl,
    "efficientnet_b1_head": efficientnet_b1_head,
    "resnet50_head": resnet50_head,
    "ensemble": ensemble,
}


def build_model(arch: str, num_classes: int) -> nn.Module:
    """A zoo name, a torchvision classifier name (weights=None), or 'package.module:function'."""
    if arch in ARCHS:
        return ARCHS[arch](num_classes)
    if ":" in arch:
        mod_name, _, fn_name = arch.partition(":")
        try:
            fn = getattr(importlib.import_module(mod_name), fn_name)
        except (ImportError, AttributeError) as e:
            raise UnknownArchError(f"cannot load factory {arch!r}: {e}") from e
        return fn(num_classes=num_classes)
    import torchvision.models as tvm

    if arch in tvm.list_models(module=tvm):
        return tvm.get_model(arch, weights=None, num_classes=num_classes)
    raise UnknownArchError(f"unknown architecture {arch!r}: choose one of {', '.join(ARCHS)}, a torchvision "
                           "classifier name (e.g. resnet18, mobilenet_v2, efficientnet_b0) or 'package.module:function'")
