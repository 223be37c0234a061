"""`skinedge val`: a bundle (every artefact) or a checkpoint on a labelled folder; accuracy, per-class figures,
confusion matrix and calibration per model, side by side; images the gates hold back are "not answered" and
left out of the figures; the per-image results agree with the summary."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from tests.conftest import REPO
from tests.test_run import DEMO

CLASSES = ["inflammatory", "normal", "pigmented", "pox_like"]


def _skinedge(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edge.cli", *args], cwd=cwd or REPO, capture_output=True, text=True,
                          timeout=600, check=False)


def _in_process(*args: str) -> subprocess.CompletedProcess:
    """The CLI in this process (torch is imported here already: the checkpoint cases skip a second import of it)."""
    from edge.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 2
    return subprocess.CompletedProcess(["skinedge", *args], code, out.getvalue(), err.getvalue())


@pytest.fixture(scope="module")
def demo_val(tmp_path_factory):
    """The demo's validation images as convert/demo_bundle.py makes them (seed 13, 128 px), 8 per class."""
    from calibration.synthetic import write_imagefolder

    return write_imagefolder(tmp_path_factory.mktemp("demo") / "val", per_class=8, size=128, seed=13)


def _rows(path):
    return list(csv.DictReader(path.open()))


def test_val_on_the_demo_bundle_prints_the_confusion_matrix_and_writes_the_pngs(demo_val, tmp_path):
    out, per_image = tmp_path / "val", tmp_path / "images.csv"
    r = _skinedge("val", str(DEMO / "bundle"), "--data", str(demo_val), "--out", str(out), "--results", str(per_image))
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    text = r.stdout
    # the board's artefact's confusion matrix and per-class table on the terminal
    assert "int8_tflite: confusion matrix (rows: true class; columns: predicted)" in text
    assert "| true \\ predicted | " + " | ".join(CLASSES) in text and "| class | precision | recall | F1 |" in text
    # every artefact side by side, the float reference being the fp32 ONNX (no checkpoint given)
    names = ["fp32_onnx (float reference)", "int8_onnx", "int8_tflite", "fp32_tflite"]
    assert all(f"| {n} | " in text for n in names)
    m = json.loads((out / "metrics.json").read_text())
    assert [c["name"] for c in m["columns"]] == names
    rows = _rows(per_image)
    assert len(rows) == 32 and {r["true_label"] for r in rows} == set(CLASSES)
    for col in m["columns"]:
        key = col["name"].replace(" (float reference)", "_float_reference")
        answered = [r for r in rows if r[f"{key}_gate"] == "pass"]
        assert col["answered"] == len(answered) and col["images"] == 32
        right = sum(r[f"{key}_label"] == r["true_label"] for r in answered)
        assert col["accuracy"] == pytest.approx(right / len(answered))
        cm = np.array(col["confusion"])
        assert cm.sum() == 32 and cm[:, -1].sum() == 32 - len(answered) and np.trace(cm) == right
        csv_cm = np.array([[int(v) for v in line[1:]] for line in list(csv.reader((out / f"confusion_{key}.csv").open()))[1:]])
        assert np.array_equal(csv_cm, cm)
        for png in (f"confusion_{key}.png", f"reliability_{key}.png"):
            img = cv2.imread(str(out / png))
            assert img is not None and img.shape[0] > 200 and img.std() > 10, png
        assert 0 <= col["ece"] <= 1
    assert "## int8_tflite" in (out / "summary.md").read_text()


def test_gated_images_are_not_answered_and_a_torch_float_column_from_the_checkpoint(trained_bundle, trained_checkpoint,
                                                                                 synth_tree, tmp_path):
    """A blurred copy of a validation image trips the quality gate in every column: reported as not answered (by
    gate), in no accuracy; the checkpoint gives the float (torch) column, which the fp32 ONNX artefact matches."""
    import shutil

    data = tmp_path / "val"
    for c in CLASSES:
        (data / c).mkdir(parents=True)
        for p in sorted((synth_tree["val"] / c).glob("*.png"))[:4]:
            shutil.copy(p, data / c / p.name)
    sharp = cv2.imread(str(min((data / "normal").glob("*.png"))))
    cv2.imwrite(str(data / "normal" / "zz_blurred.png"), cv2.GaussianBlur(sharp, (0, 0), 6))
    out, per_image = tmp_path / "out", tmp_path / "r.jsonl"
    r = _in_process("val", str(trained_bundle), "--data", str(data), "--checkpoint", str(trained_checkpoint),
                  "--out", str(out), "--results", str(per_image))
    assert r.returncode == 0, r.stderr
    m = {c["name"]: c for c in json.loads((out / "metrics.json").read_text())["columns"]}
    assert list(m) == ["float (torch)", "fp32_onnx", "int8_onnx", "int8_tflite", "fp32_tflite"]
    assert m["fp32_onnx"]["top1_agreement_with_float"] == 1.0
    rows = [json.loads(line) for line in per_image.read_text().splitlines()]
    blurred = next(row for row in rows if row["source"] == "normal/zz_blurred.png")
    for name, col in m.items():
        key = name.replace(" ", "_").replace("(", "").replace(")", "")
        assert blurred[f"{key}_gate"] == "blurred" and blurred[f"{key}_correct"] == ""
        assert col["not_answered"].get("blurred", 0) >= 1 and col["per_class"]["normal"]["not_answered"] >= 1
        answered = [row for row in rows if row[f"{key}_gate"] == "pass"]
        assert col["answered"] == len(answered) < len(rows) == 17
        assert col["accuracy"] == pytest.approx(np.mean([row[f"{key}_correct"] for row in answered]))
    assert "not answered" in r.stdout and "blurred" in r.stdout


def test_val_of_a_checkpoint_alone(trained_checkpoint, synth_tree, tmp_path):
    r = _in_process("val", str(trained_checkpoint), "--data", str(synth_tree["val"]), "--out", str(tmp_path / "o"),
                  "--no-gates")
    assert r.returncode == 0, r.stderr
    m = json.loads((tmp_path / "o" / "metrics.json").read_text())["columns"]
    assert [c["name"] for c in m] == ["float (torch)"] and m[0]["answered"] == m[0]["images"] == 200
    assert m[0]["accuracy"] > 0.5  # the fixture's model learnt the synthetic classes


@pytest.mark.parametrize("setup, expect", [
    (lambda d: (d / "birds").mkdir(), "class folder(s) naming no class of the model: birds"),
    (lambda d: None, "no class sub-folders"),
])
def test_bad_folders_are_one_line(tmp_path, setup, expect):
    data = tmp_path / "data"
    data.mkdir()
    cv2.imwrite(str(data / "loose.png"), np.full((64, 64, 3), 128, np.uint8))
    setup(data)
    if (data / "birds").exists():
        cv2.imwrite(str(data / "birds" / "b.png"), np.full((64, 64, 3), 100, np.uint8))
    r = _skinedge("val", str(DEMO / "bundle"), "--data", str(data), "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and expect in r.stderr, r.stderr
    assert not (tmp_path / "o").exists()
