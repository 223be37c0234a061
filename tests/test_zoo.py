"""The model zoo: every architecture builds, works at 64/96/224, splits exactly into features -> GAP -> head
with a head the board can run; torchvision classifiers and user factories resolve; bad names fail clearly."""

from __future__ import annotations

import functools
import math

import pytest
import torch
from torch import nn
from torchvision import models as tvm

from convert.zoo import (
    ARCHS,
    HEAD_KINDS,
    Split,
    SplitModel,
    UnknownArchError,
    WeightedEnsemble,
    build_model,
    ensemble,
    split_model,
)
from convert.zoo.stats import count_macs, count_params
from convert.zoo.stats import main as stats_main

K = 3
SINGLE_ARCHS = sorted(a for a in ARCHS if a != "ensemble")
NOT_CALLABLE = 42


def tiny_factory(num_classes: int) -> SplitModel:
    """A user's own model, named as 'tests.test_zoo:tiny_factory'."""
    features = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU())
    return SplitModel(Split(features, nn.Sequential(nn.Linear(8, num_classes))))


def returns_int(num_classes: int) -> int:
    return num_classes


@functools.cache
def _built(arch: str) -> nn.Module:
    """One eval-mode instance per architecture for the whole module (ResNet-50s are slow to build)."""
    torch.manual_seed(0)
    return build_model(arch, K).eval()


def _x(size: int, n: int = 2) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(size))


def _run_tapped(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """model(x) and the output of model.features seen during that same forward pass."""
    seen: list[torch.Tensor] = []
    hook = model.features.register_forward_hook(lambda _m, _i, out: seen.append(out))
    try:
        out = model(x)
    finally:
        hook.remove()
    assert len(seen) == 1
    return out, seen[0]


def _assert_splits_exactly(model: nn.Module, x: torch.Tensor) -> None:
    split = split_model(model)
    assert isinstance(split.head, nn.Sequential)
    for name, m in split.head.named_modules():
        assert isinstance(m, (nn.Sequential, *HEAD_KINDS)), f"head.{name} is {type(m).__name__}"
    with torch.no_grad():
        ref = model(x)
        got, a = _run_tapped(SplitModel(split), x)
    assert a.ndim == 4 and a.shape[0] == x.shape[0]
    assert torch.allclose(got, ref, atol=1e-5), (got - ref).abs().max()


@pytest.mark.parametrize("arch", SINGLE_ARCHS)
def test_zoo_arch_forward_and_exact_split(arch):
    model = _built(arch)
    x = _x(64)
    with torch.no_grad():
        out = model(x)
    assert out.shape == (2, K) and torch.isfinite(out).all()
    _assert_splits_exactly(model, x)
    # the split shares the model's own modules: a checkpoint loaded into the model is what gets exported
    assert split_model(model).features is model.features


@pytest.mark.parametrize("arch", SINGLE_ARCHS)
def test_zoo_arch_works_at_96_and_224(arch):
    model = _built(arch)
    for size in (96, 224):
        with torch.no_grad():
            out, a = _run_tapped(model, _x(size, 1))
        assert a.shape[2:] == (math.ceil(size / 32),) * 2, (size, a.shape)
        assert out.shape == (1, K)


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "efficientnet_b0", "mobilenet_v3_small",
                                  "regnet_x_400mf"])
def test_torchvision_classifier_builds_and_splits_exactly(name):
    torch.manual_seed(0)
    model = build_model(name, K).eval()
    assert type(model).__module__.startswith("torchvision.models")
    _assert_splits_exactly(model, _x(64))


def test_split_refuses_models_it_would_split_wrongly():
    # ConvNeXt normalises the spatial map in its classifier: the message names the layer
    with pytest.raises(ValueError, match=r"ConvNeXt.*classifier\.0 \(LayerNorm2d\)"):
        split_model(tvm.convnext_tiny(num_classes=K))
    # DenseNet has a Linear classifier but a ReLU between features and the pool: must not be split silently
    with pytest.raises(ValueError, match="DenseNet.*cannot split"):
        split_model(tvm.densenet121(num_classes=K))


def test_split_names_a_head_layer_the_board_cannot_run():
    class Custom(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Conv2d(3, 4, 3)
            self.head = nn.Sequential(nn.Linear(4, 4), nn.Sequential(nn.Tanh()), nn.Linear(4, 2))

    with pytest.raises(ValueError, match=r"Custom: head layer head\.1\.0 \(Tanh\)"):
        split_model(Custom())


def test_torchvision_backbone_state_dicts_load_under_their_own_names():
    """Backbone parameter names and shapes are torchvision's: a torchvision state dict loads into the
    MobileNetV2/EfficientNet models and into the ResNet models' `.features`."""
    with torch.device("meta"):
        tv = {"mobilenet_v2": tvm.mobilenet_v2(), "efficientnet_b1": tvm.efficientnet_b1(),
              "resnet50": tvm.resnet50()}
    cases = {"mobilenetv2_msca_pfr": ("mobilenet_v2", False), "mobilenetv2_tl": ("mobilenet_v2", False),
             "efficientnet_b1_head": ("efficientnet_b1", False), "resnet50_head": ("resnet50", True),
             "resnet50_asff": ("resnet50", True)}
    for arch, (tv_name, into_features) in cases.items():
        target = _built(arch).features if into_features else _built(arch)
        ours = {k: v.shape for k, v in target.state_dict().items()}
        backbone = {k: v.shape for k, v in tv[tv_name].state_dict().items()
                    if not k.startswith(("classifier.", "fc."))}
        missing = set(backbone) - set(ours)
        assert not missing, f"{arch}: torchvision keys not in the model: {sorted(missing)[:5]}"
        assert all(ours[k] == s for k, s in backbone.items()), arch


def test_micro_mpoxnet_is_under_one_million_parameters():
    n = count_params(_built("micro_mpoxnet"))
    assert n == sum(p.numel() for p in _built("micro_mpoxnet").parameters())
    assert 100_000 < n < 1_000_000


def test_ensemble_softmax_is_the_weighted_average_of_member_softmaxes():
    model = _built("ensemble")
    assert isinstance(model, WeightedEnsemble) and isinstance(model.members, nn.ModuleList)
    assert model.member_names == ["mobilenetv2_tl", "efficientnet_b1_head", "resnet50_head"]
    assert model.weights == pytest.approx([0.30, 0.30, 0.40])
    x = _x(64)
    with torch.no_grad():
        out = model(x)
        expected = sum(w * torch.softmax(m(x), 1) for w, m in zip([0.30, 0.30, 0.40], model.members, strict=True))
    assert out.shape == (2, K)
    assert torch.allclose(torch.softmax(out, 1), expected, atol=1e-6)
    with pytest.raises(ValueError, match="ensemble.*split each of its .members"):
        split_model(model)


def test_ensemble_weights_are_validated_and_normalised():
    model = ensemble(K, members=("micro_mpoxnet", "resnet18"), weights=(1, 3))
    assert model.member_names == ["micro_mpoxnet", "resnet18"] and model.weights == [0.25, 0.75]
    with pytest.raises(ValueError, match="2 members but 3 weights"):
        ensemble(K, members=("micro_mpoxnet", "resnet18"), weights=(1, 1, 1))
    with pytest.raises(ValueError, match="positive"):
        ensemble(K, members=("micro_mpoxnet", "resnet18"), weights=(1, 0))
    with pytest.raises(ValueError, match="positive"):
        ensemble(K, members=("micro_mpoxnet", "resnet18"), weights=(1, float("nan")))
    with pytest.raises(ValueError, match="member 'convnext_tiny'.*LayerNorm2d"):
        ensemble(K, members=("micro_mpoxnet", "convnext_tiny"), weights=(1, 1))


def test_unknown_arch_lists_the_choices():
    with pytest.raises(UnknownArchError) as e:
        build_model("mobilenetv2_mscapfr", K)
    msg = str(e.value)
    assert isinstance(e.value, ValueError)
    assert all(name in msg for name in ARCHS), msg
    assert "torchvision" in msg and "package.module:function" in msg
    assert "Did you mean mobilenetv2_msca_pfr" in msg


def test_user_factory_by_module_and_function_name():
    model = build_model("tests.test_zoo:tiny_factory", 5).eval()
    assert isinstance(model, SplitModel)
    with torch.no_grad():
        assert model(_x(32)).shape == (2, 5)
    _assert_splits_exactly(model, _x(32))


def test_user_factory_from_a_module_on_sys_path(tmp_path, monkeypatch):
    (tmp_path / "my_derm_models.py").write_text(
        "from torch import nn\n"
        "def net(num_classes):\n"
        "    return nn.Sequential(nn.Flatten(), nn.LazyLinear(num_classes))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    model = build_model("my_derm_models:net", 7)
    assert model(_x(16)).shape == (2, 7)


@pytest.mark.parametrize("arch, expected", [
    ("no_such_package_xyz:make", r"cannot import module 'no_such_package_xyz'"),
    ("tests.test_zoo:no_such_function", r"module 'tests.test_zoo' .* has no attribute 'no_such_function'"),
    ("tests.test_zoo:NOT_CALLABLE", r"non-callable 'NOT_CALLABLE'"),
    ("tests.test_zoo:returns_int", r"returned int, expected a torch.nn.Module"),
    ("tests.test_zoo:", r"expected 'package.module:function'"),
])
def test_bad_user_factory_gives_a_clear_error(arch, expected):
    with pytest.raises(UnknownArchError, match=expected):
        build_model(arch, K)


def test_stats_count_macs_exactly_and_print_a_table(capsys):
    conv = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Flatten(), nn.Linear(8 * 16 * 16, 5))
    assert count_macs(conv, 16) == 8 * 16 * 16 * 3 * 9 + 8 * 16 * 16 * 5
    assert count_params(conv) == 8 * 3 * 9 + 8 + 8 * 16 * 16 * 5 + 5
    assert conv.training  # mode restored
    assert stats_main(["--archs", "micro_mpoxnet", "--size", "64"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("| arch | params (M) | MACs (G) at 64")
    assert out[2].startswith("| micro_mpoxnet | 0.39 |") and out[2].endswith("| 512×2×2 |")
