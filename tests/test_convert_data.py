"""`skinedge convert` on data as users have it: unlabelled folders, class names from a file or from the model,
a many-class model with folders for a few classes; and a clear line for each way of getting it wrong."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from convert.pipeline import Options
from edge.cli import main
from tests.conftest import SIZE
from tests.test_convert import _cli_error

N_GOLDEN = next(f.default for f in dataclasses.fields(Options) if f.name == "n_golden")
FACTORY = '''
from torch import nn
from convert.zoo import Split, SplitModel

def net(num_classes=5):
    return SplitModel(Split(nn.Sequential(nn.Conv2d(3, 8, 3, 2), nn.ReLU()), nn.Sequential(nn.Linear(8, num_classes))))

def fixed(num_classes=3):
    return net(3)
'''


def _flat(tree: Path, out: Path, n: int) -> Path:
    """`n` images of a class tree copied into one flat folder (what a clinic camera gives)."""
    out.mkdir(parents=True)
    for p in sorted(tree.glob("*/*.png"))[::7][:n]:
        shutil.copy(p, out / f"{p.parent.name}_{p.name}")
    return out


def _convert(calib: Path, val: Path, out: Path, *extra: str, arch: str = "micro_mpoxnet") -> int:
    return main(["convert", "--arch", arch, "--random-init", "--calib", str(calib), "--val", str(val), "--out",
                 str(out), "--input-size", str(SIZE), "--formats", "fp32_onnx", *extra])


def _report(out: Path) -> dict:
    return {r["artefact"]: r for r in json.loads((out / "report.json").read_text())["validation"]}


@pytest.fixture(scope="module")
def flat(synth_tree, tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("flat")
    return {"calib": _flat(synth_tree["calib"], tmp / "calib", 8), "val": _flat(synth_tree["val"], tmp / "val", 10)}


def test_unlabelled_calibration_and_validation(flat, tmp_path):
    out = tmp_path / "b"
    assert _convert(flat["calib"], flat["val"], out, "--labels", "w,x,y,z", "--calib-per-class", "6") == 0
    man = yaml.safe_load((out / "manifest.yaml").read_text())
    assert man["labels"] == ["w", "x", "y", "z"] and man["calibration"]["n"] == 6  # 6 of the 8, in all
    assert "6 images (unlabelled; 6 of 8: --calib-per-class)" in (out / "MODEL_CARD.md").read_text()
    rows = _report(out)
    assert rows["fp32_onnx"]["n"] == 10 and rows["fp32_onnx"]["top1_agreement"] == 1.0
    assert rows["fp32_onnx"]["accuracy"] is None and rows["fp32_onnx"]["macro_f1"] is None
    assert man["validation"]["fp32_onnx"]["accuracy"] is None
    assert re.search(r"\| fp32_onnx \| 10 \| 100.00% \| [^|]+ \| [^|]+ \| - \| - \|", (out / "MODEL_CARD.md").read_text())
    assert len(np.load(out / "golden.npz")["input"]) == min(10, N_GOLDEN)
    # the OOD gate's class means come from the float model's own top-1 on all 8 calibration images
    gate = json.loads((out / "report.json").read_text())["gates"]
    assert gate["fit_images"] == 8 and gate["pseudo_labelled"] == 8
    assert man["gates"]["ood"]["file"] == "gate.npz" and "8 of them by the model's top-1" in (out / "MODEL_CARD.md").read_text()


def test_class_names_from_the_model(flat, tmp_path, monkeypatch):
    """A factory in the working directory (found as `python -m` would), unlabelled data, no --labels: its
    K outputs are class_0 .. class_{K-1}."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tinynet_i11d.py").write_text(FACTORY)
    assert _convert(flat["calib"], flat["val"], tmp_path / "b", arch="tinynet_i11d:net") == 0
    man = yaml.safe_load((tmp_path / "b" / "manifest.yaml").read_text())
    assert man["labels"] == [f"class_{i}" for i in range(5)]
    # no --calib-per-class: a flat folder gives all its images (up to 512), and the card says so (issue 21)
    assert man["calibration"]["n"] == 8 and "all 8 of the flat folder" in (tmp_path / "b" / "MODEL_CARD.md").read_text()


def test_many_class_model_with_folders_for_a_few_classes(synth_tree, flat, tmp_path):
    names = [f"n{i:04d}" for i in range(1000)]
    (tmp_path / "labels.txt").write_text("\n".join(names) + "\n")
    val = tmp_path / "val"
    for i, cls in ((3, "normal"), (998, "pigmented")):  # two of the thousand classes have a folder
        shutil.copytree(synth_tree["val"] / cls, val / names[i])
    out = tmp_path / "b"
    assert _convert(flat["calib"], val, out, "--labels", str(tmp_path / "labels.txt"), "--val-per-class", "4") == 0
    man = yaml.safe_load((out / "manifest.yaml").read_text())
    assert man["labels"] == names and man["models"][0]["outputs"]["logits"] == [1, 1000]
    rows = _report(out)
    assert rows["fp32_onnx"]["n"] == 8 and rows["float (torch)"]["accuracy"] is not None
    assert set(rows["float (torch)"]["recall"]) <= {"n0003", "n0998"}
    assert len(np.load(out / "golden.npz")["input"]) == min(8, N_GOLDEN)  # not one per class of 1000


def test_bad_data_and_labels_are_one_line_each(synth_tree, flat, tmp_path, capsys, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    line = _cli_error(capsys, ["convert", "--arch", "micro_mpoxnet", "--random-init", "--calib", str(empty), "--val",
                               str(flat["val"]), "--out", str(tmp_path / "b")])
    assert "empty: no images" in line and not (tmp_path / "b").exists()

    args = ["convert", "--arch", "micro_mpoxnet", "--random-init", "--calib", str(flat["calib"]), "--val",
            str(flat["val"]), "--out", str(tmp_path / "b")]
    assert "has no number of classes of its own: give --labels" in _cli_error(capsys, args)
    assert "nope.txt: labels file not found" in _cli_error(capsys, [*args, "--labels", str(tmp_path / "nope.txt")])
    assert "--mean: expected 1 or 3 values (one per channel), got 2" in _cli_error(capsys, [*args, "--mean", "0.4",
                                                                                          "0.5"])
    # a tree with a folder that names no class of the model
    line = _cli_error(capsys, [*args[:-4], "--val", str(synth_tree["val"]), "--out", str(tmp_path / "b"), "--labels", "a,b"])
    assert "folder(s) naming no class of the model: inflammatory, normal" in line

    monkeypatch.chdir(tmp_path)
    (tmp_path / "tinynet_i11d.py").write_text(FACTORY)
    line = _cli_error(capsys, [*args, "--labels", "a,b", "--arch", "tinynet_i11d:fixed"])
    assert line.endswith("labels do not match the head: 2 class names from --labels, but tinynet_i11d:fixed has 3 "
                         "outputs")
    # a one-class head (it used to crash in validation with an IndexError)
    line = _cli_error(capsys, [*args, "--labels", "nevus", "--arch", "tinynet_i11d:net"])
    assert line.endswith("one class only ('nevus', from --labels): a classifier needs at least 2 classes")
    assert not (tmp_path / "b").exists() and not (tmp_path / "b.partial").exists()
