"""Shared fixtures: a small synthetic data set, a briefly trained model and its bundle, built once per run."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests import background


def pytest_configure(config: pytest.Config) -> None:
    """Tests of Ctrl-C and of SIGINT to child processes need the default SIGINT behaviour, which a shell gives
    to background jobs as 'ignored' (inherited by every child): `bash scripts/test.sh &` would fail them."""
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)



def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that read background jobs' results run last, so those jobs overlap the others (tests/background.py)."""
    items.sort(key=lambda item: item.get_closest_marker("background") is not None)


def pytest_collection_finish(session: pytest.Session) -> None:
    background.start({item.module.__name__ for item in session.items if item.get_closest_marker("background")})


def pytest_sessionfinish(session: pytest.Session) -> None:
    background.stop()


def pytest_terminal_summary(terminalreporter) -> None:
    for name, took in background.took.items():
        terminalreporter.write_line(f"background job {name}: ran {took:.0f} s, tests waited "
                                    f"{background.waited.get(name, 0.0):.0f} s for it")


SIZE = 64  # small input size keeps CPU-only conversions quick; the 224 conversion is a separate slow test


@pytest.fixture(scope="session")
def synth_tree(tmp_path_factory) -> dict[str, Path]:
    """Disjoint synthetic train / calibration / validation ImageFolder trees (4 classes)."""
    from calibration.synthetic import write_imagefolder

    root = tmp_path_factory.mktemp("synth")
    return {
        "train": write_imagefolder(root / "train", per_class=120, size=SIZE, seed=1),
        "calib": write_imagefolder(root / "calib", per_class=16, size=SIZE, seed=2),
        "val": write_imagefolder(root / "val", per_class=50, size=SIZE, seed=3),
    }


@pytest.fixture(scope="session")
def trained_checkpoint(synth_tree, tmp_path_factory) -> Path:
    """micro_mpoxnet trained for 20 epochs on the synthetic train set with convert.train's fixed recipe (the one
    the int8 fidelity bounds below were measured on; `skinedge train` itself: tests/test_train.py)."""
    import torch

    from calibration.dataset import load_batch, scan
    from convert.train import train
    from convert.zoo import build_model

    ds = scan(synth_tree["train"])
    batch = load_batch(ds.samples, SIZE)
    torch.manual_seed(0)
    model = train(build_model("micro_mpoxnet", len(ds.classes)), batch.images, batch.labels, 20, lr=3e-3)
    out = tmp_path_factory.mktemp("ckpt") / "micro.pth"
    torch.save({"arch": "micro_mpoxnet", "labels": ds.classes, "size": SIZE, "state_dict": model.state_dict()}, out)
    return out


@pytest.fixture(scope="session")
def trained_bundle(synth_tree, trained_checkpoint, tmp_path_factory) -> Path:
    """The trained model converted to every format (fp32 ONNX, int8 ONNX, int8 TFLite)."""
    from convert.pipeline import Options, convert

    out = tmp_path_factory.mktemp("bundles") / "micro"
    convert(Options(arch="micro_mpoxnet", checkpoint=trained_checkpoint, calib=synth_tree["calib"],
                    val=synth_tree["val"], out=out, input_size=SIZE, progress=False))
    return out


def zoo_options(arch: str, synth_tree: dict[str, Path], out: Path):
    """The quick conversion every zoo architecture gets in the suite: random init, 16 calibration and 16
    validation images at SIZE, ONNX artefacts only."""
    from convert.pipeline import Options

    return Options(arch=arch, random_init=True, calib=synth_tree["calib"], val=synth_tree["val"], out=out,
                   input_size=SIZE, calib_per_class=4, val_per_class=4, formats=("fp32_onnx", "int8_onnx"),
                   progress=False)


@pytest.fixture(scope="session")
def ensemble_bundle(synth_tree, tmp_path_factory) -> Path:
    """The three-member ensemble converted once, shared by tests/test_convert.py and tests/test_ensemble.py
    (its conversion is the longest of the zoo's)."""
    from convert.pipeline import convert

    out = tmp_path_factory.mktemp("ens") / "ensemble"
    convert(zoo_options("ensemble", synth_tree, out))
    return out


@pytest.fixture
def bundle(tmp_path) -> Path:
    """A writable copy of the shipped demo bundle, for tests that tamper with it."""
    import shutil

    from tests.test_run import DEMO

    dst = tmp_path / "bundle"
    shutil.copytree(DEMO / "bundle", dst)
    return dst
