"""Architecture names -> models: the zoo, any torchvision classifier, or a user's 'package.module:function'.
Weights are never downloaded: every backbone starts from random init (a checkpoint is loaded afterwards)."""

from __future__ import annotations

import contextlib
import difflib
import importlib
import os
import sys
from collections.abc import Callable, Iterator, Sequence

from torch import nn
from torchvision import models as tvm

from convert.zoo.ensemble import DEFAULT_MEMBERS, DEFAULT_WEIGHTS, WeightedEnsemble, normalised_weights
from convert.zoo.heads import efficientnet_b1_head, mobilenetv2_tl, resnet50_head
from convert.zoo.micro_mpoxnet import micro_mpoxnet
from convert.zoo.msca_pfr import mobilenetv2_msca_pfr
from convert.zoo.resnet_asff import resnet50_asff
from convert.zoo.split import split_model


class UnknownArchError(ValueError):
    """An arch naming no zoo model, no torchvision classifier and no loadable 'package.module:function'."""


def ensemble(num_classes: int, members: Sequence[str] = DEFAULT_MEMBERS,
             weights: Sequence[float] = DEFAULT_WEIGHTS) -> WeightedEnsemble:
    """0.30·MobileNetV2 + 0.30·EfficientNet-B1 + 0.40·ResNet-50 with custom heads, by default. Each member
    must split (the board runs and explains members one by one); checked before anything is exported."""
    normalised_weights(weights, len(members))  # fail before building large members
    if "ensemble" in members:
        raise ValueError("ensemble: an ensemble cannot be a member of an ensemble")
    models = [build_model(name, num_classes) for name in members]
    for name, model in zip(members, models, strict=True):
        try:
            split_model(model)
        except ValueError as e:
            raise ValueError(f"ensemble member {name!r}: {e}") from e
    return WeightedEnsemble(models, members, weights)


ARCHS: dict[str, Callable[[int], nn.Module]] = {
    "mobilenetv2_msca_pfr": mobilenetv2_msca_pfr,
    "micro_mpoxnet": micro_mpoxnet,
    "resnet50_asff": resnet50_asff,
    "mobilenetv2_tl": mobilenetv2_tl,
    "efficientnet_b1_head": efficientnet_b1_head,
    "resnet50_head": resnet50_head,
    "ensemble": ensemble,
}


def check_arch(arch: str) -> None:
    """UnknownArchError unless `arch` names a zoo model, a torchvision classifier or an importable
    'package.module:function'; nothing is built, so a typo is reported before any data is loaded."""
    if arch in ARCHS:
        return
    if ":" in arch:
        _user_function(arch)
        return
    torchvision_names = tvm.list_models(module=tvm)
    if arch in torchvision_names:
        return
    close = difflib.get_close_matches(arch, [*ARCHS, *torchvision_names], n=3)
    hint = f" Did you mean {' or '.join(close)}?" if close else ""
    raise UnknownArchError(
        f"unknown architecture {arch!r}.{hint} Zoo architectures: {', '.join(ARCHS)}. Also accepted: any "
        "torchvision.models classifier name (e.g. resnet18, mobilenet_v2, efficientnet_b0) and "
        "'package.module:function' (your own factory, called as function(num_classes=K)).")


def build_model(arch: str, num_classes: int | None) -> nn.Module:
    """A zoo name, a torchvision classifier name (weights=None), or 'package.module:function' called as
    function(num_classes=num_classes). num_classes None: the architecture's own (a factory's default,
    torchvision's 1000); ValueError for a zoo architecture, which has none."""
    check_arch(arch)
    if arch in ARCHS:
        if num_classes is None:
            raise ValueError(f"architecture {arch!r} has no number of classes of its own: give --labels "
                             "(one name per class, in training order) or a --calib tree with one folder per class")
        return ARCHS[arch](num_classes)
    if ":" in arch:
        return _user_factory(arch, num_classes)
    return tvm.get_model(arch, weights=None, **({} if num_classes is None else {"num_classes": num_classes}))


def _user_function(arch: str) -> Callable[..., nn.Module]:
    mod_name, _, fn_name = arch.partition(":")
    if not mod_name or not fn_name or ":" in fn_name:
        raise UnknownArchError(f"architecture {arch!r}: expected 'package.module:function'")
    try:
        # A module in the working directory, as `python -m` would find it (the `skinedge` script would not).
        with _also_on_path(os.getcwd()):
            module = importlib.import_module(mod_name)
    except ImportError as e:
        raise UnknownArchError(f"architecture {arch!r}: cannot import module {mod_name!r} ({e})") from e
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        what = "has no attribute" if fn is None else "has a non-callable"
        where = f" ({module.__file__})" if getattr(module, "__file__", None) else ""
        raise UnknownArchError(f"architecture {arch!r}: module {mod_name!r}{where} {what} {fn_name!r}")
    return fn


def _user_factory(arch: str, num_classes: int | None) -> nn.Module:
    fn = _user_function(arch)
    fn_name = arch.partition(":")[2]
    call = f"{fn_name}()" if num_classes is None else f"{fn_name}(num_classes={num_classes})"
    try:
        model = fn() if num_classes is None else fn(num_classes=num_classes)
    except TypeError as e:
        if num_classes is None and "num_classes" in str(e):
            raise ValueError(f"architecture {arch!r}: {call} needs num_classes: give --labels (one name per "
                             "class, in training order) or a --calib tree with one folder per class") from e
        raise
    if not isinstance(model, nn.Module):
        raise UnknownArchError(f"architecture {arch!r}: {call} returned "
                               f"{type(model).__name__}, expected a torch.nn.Module")
    return model


@contextlib.contextmanager
def _also_on_path(folder: str) -> Iterator[None]:
    """`folder` at the end of sys.path for the duration (installed modules keep precedence)."""
    added = folder not in sys.path
    if added:
        sys.path.append(folder)
    try:
        yield
    finally:
        if added and folder in sys.path:
            sys.path.remove(folder)
