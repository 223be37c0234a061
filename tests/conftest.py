"""Shared fixtures: a small synthetic data set, a briefly trained model and its bundle, built once per run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests import background


def pytest_configure(config: pytest.Config) -> None:
    """Tests of Ctrl-C and of SIGINT to child processes need the default SIGINT behaviour, which a shell gives
    to background jobs as 'ignored' (inherited by every child): `bash scripts/test.sh &` would fail them."""
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


# session fixtures built by a background job (tests/background.py), and that job's name
FIXTURE_JOBS = {"ensemble_bundle": "ensemble", "lite_bundle": "lite0"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that read background jobs' results run last, so those jobs overlap the others (tests/background.py)."""
    for item in items:
        for name in set(FIXTURE_JOBS) & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.background(FIXTURE_JOBS[name]))
    items.sort(key=lambda item: item.get_closest_marker("background") is not None)


def pytest_collection_finish(session: pytest.Session) -> None:
    background.start({name for item in session.items for m in item.iter_markers("background") for name in m.args})


def pytest_sessionfinish(session: pytest.Session) -> None:
    background.stop()


def pytest_terminal_summary(terminalreporter) -> None:
    for name, took in background.took.items():
        terminalreporter.write_line(f"background job {name}: ran {took:.0f} s, tests waited "
                                    f"{background.waited.get(name, 0.0):.0f} s for it")


REPO = Path(__file__).resolve().parent.parent
SIZE = 64  # small input size keeps CPU-only conversions quick; the 224 conversion is a separate slow test


def synthetic_trees(root: Path, parts: tuple[str, ...] = ("train", "calib", "val")) -> dict[str, Path]:
    """Disjoint synthetic train / calibration / validation ImageFolder trees (4 classes), deterministic."""
    from calibration.synthetic import write_imagefolder

    spec = {"train": (120, 1), "calib": (16, 2), "val": (50, 3)}  # per class, seed
    return {p: write_imagefolder(root / p, per_class=spec[p][0], size=SIZE, seed=spec[p][1]) for p in parts}


@pytest.fixture(scope="session")
def synth_tree(tmp_path_factory) -> dict[str, Path]:
    return synthetic_trees(tmp_path_factory.mktemp("synth"))


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
    """The trained model converted to every format (fp32 ONNX, int8 ONNX, int8 TFLite), with `--calib-method auto`
    (a trained network has answers for it to weigh; every other option at its default)."""
    from convert.pipeline import Options, convert

    out = tmp_path_factory.mktemp("bundles") / "micro"
    convert(Options(arch="micro_mpoxnet", checkpoint=trained_checkpoint, calib=synth_tree["calib"],
                    val=synth_tree["val"], out=out, input_size=SIZE, calib_method="auto", progress=False))
    return out


def zoo_options(arch: str, synth_tree: dict[str, Path], out: Path):
    """The quick conversion every zoo architecture gets in the suite: random init, 16 calibration and 16
    validation images at SIZE, 8 of them golden, ONNX artefacts only, the default calibration method (a random
    network has no answers for `auto` to weigh; `auto` runs on the trained bundle)."""
    from convert.pipeline import Options

    return Options(arch=arch, random_init=True, calib=synth_tree["calib"], val=synth_tree["val"], out=out,
                   input_size=SIZE, calib_per_class=4, val_per_class=4, formats=("fp32_onnx", "int8_onnx"),
                   n_golden=8, progress=False)


def convert_in_child(code: str, scratch: Path, what: str) -> None:
    """Run `code` (a conversion; `sys.argv[1]` is `scratch`) in a child process on one torch thread: the way a
    background job (tests/background.py) converts beside the other tests (a SCHED_IDLE job with two OpenMP threads
    stalls at every barrier while the tests hold a core)."""
    r = subprocess.run([sys.executable, "-c", code, str(scratch)], cwd=REPO, capture_output=True, text=True,
                       env={**os.environ, "OMP_NUM_THREADS": "1"}, check=False)
    if r.returncode != 0:
        raise RuntimeError(f"{what} exited {r.returncode}: {r.stderr[-3000:]}")


def _zoo_in_child(arch: str) -> background.Job:
    """A background job: `arch`'s quick zoo conversion (convert_in_child). Used for the longest conversions: the
    ensemble (mostly onnxruntime's single-threaded quantiser) and ResNet-50-ASFF."""
    def convert_it(scratch: Path) -> Path:
        convert_in_child("import sys; from pathlib import Path; from convert.pipeline import convert; "
                         "from tests.conftest import synthetic_trees, zoo_options; root = Path(sys.argv[1]); "
                         f"convert(zoo_options({arch!r}, synthetic_trees(root, ('calib', 'val')), root / {arch!r}))",
                         scratch, f"{arch} conversion")
        return scratch / arch
    return convert_it


for _arch in ("ensemble", "resnet50_asff"):
    background.job(_arch, _zoo_in_child(_arch))


@pytest.fixture(scope="session")
def ensemble_bundle() -> Path:
    """The three-member ensemble converted once, shared by tests/test_convert.py and tests/test_ensemble.py."""
    return background.result("ensemble")


@pytest.fixture
def bundle(tmp_path) -> Path:
    """A writable copy of the shipped demo bundle, for tests that tamper with it."""
    import shutil

    from tests.test_run import DEMO

    dst = tmp_path / "bundle"
    shutil.copytree(DEMO / "bundle", dst)
    return dst
