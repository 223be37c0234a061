"""One path from frame to answer (edge.answer): every entry point that shows, keeps or reports a class refuses a
black, a grey, a blurred and an out-of-distribution frame, and none reaches the classifier another way.

Real frames through the real CLI (in-process where it can be, so the suite stays fast): a black and a flat grey
frame, a synthetic lesion blurred (Gaussian, sigma 4), and scikit-image's photograph of a coffee cup, which the
demo bundle's OOD gate does not recognise."""

from __future__ import annotations

import ast
import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage import data as skdata

from calibration.synthetic import render as synth
from edge.answer import Answerer, NotKept, keep
from edge.classify import Classifier
from edge.cli import build_parser, main
from edge.gates import GatesConfig, for_bundle
from edge.record.store import CaptureStore
from edge.trust.admit import admit
from edge.trust.signing import Trust
from tests.test_run import DEMO, REPO

# What each frame must be refused as: the gate outcome (edge.gates) and the screen's words.
REFUSED = {"black.png": "too dark", "grey.png": "blurred", "blurred.png": "blurred", "coffee.png": "not recognised"}
# Every CLI verb, by whether it shows, keeps or reports a class. A new verb must be put in one of the two sets
# (and, if it answers, go through edge.answer and into test_every_answering_verb_refuses_bad_frames).
ANSWERING = {"run", "capture", "demo", "bench", "val"}
NOT_ANSWERING = {"convert", "synth", "train", "verify", "keygen", "sign", "captures", "web-cert", "wheelhouse"}
# Modules of edge/ allowed to call the classifier directly: none of them shows, keeps or reports a class.
# bench: bare-inference timing only; cli/trust: the self-test (verify); val: wraps each artefact's in an Answerer.
CLASSIFIER_USERS = {"edge/answer.py", "edge/bench.py", "edge/cli/trust.py", "edge/val.py"}


@pytest.fixture(scope="module")
def frames(tmp_path_factory) -> Path:
    """The four frames as PNG files in one folder (an image-folder source for every entry point)."""
    folder = tmp_path_factory.mktemp("bad_frames")
    lesion = synth("pigmented", np.random.default_rng([5, 1]), 256)[0]
    images = {"black.png": np.zeros((240, 320, 3), np.uint8), "grey.png": np.full((240, 320, 3), 128, np.uint8),
              "blurred.png": cv2.GaussianBlur(lesion, (0, 0), 4), "coffee.png": skdata.coffee()}
    for name, rgb in images.items():
        cv2.imwrite(str(folder / name), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return folder


@pytest.fixture(scope="module")
def answerer():
    bundle, model = admit(DEMO / "bundle", Trust())
    a = Answerer(Classifier(bundle, "onnx", threads=2), for_bundle(bundle, GatesConfig(), use_motion=False), model)
    yield a
    a.close()


def test_a_refused_answer_has_no_class_and_cannot_be_kept(frames, answerer, tmp_path):
    for name, reason in REFUSED.items():
        rgb = cv2.cvtColor(cv2.imread(str(frames / name)), cv2.COLOR_BGR2RGB)
        prep = answerer.prepare(rgb)
        ans = answerer.answer(prep)
        assert ans.verdict.reason == reason, (name, ans.verdict)
        assert ans.label is None and ans.confidence is None and ans.top() == [] and ans.cam is None, name
        assert ans.record()["gate"] == reason and ans.record()["signature"] == "UNSIGNED"
        assert ans.probs.shape == (len(ans.labels),)  # the model's output stays on record beside the verdict
        with CaptureStore(tmp_path / "store") as store:
            with pytest.raises(NotKept, match=f"not kept: {'NOT RECOGNISED' if 'recognised' in reason else 'RETAKE'}"):
                keep(store, ans, prep.view, prep.view)
            assert store.list() == []
    lesion = answerer(synth("pigmented", np.random.default_rng([5, 1]), 256)[0])
    assert lesion.passed and lesion.label == lesion.labels[lesion.target] and lesion.cam is not None
    assert lesion.top(2)[0] == (lesion.label, pytest.approx(lesion.confidence))


def test_every_verb_is_classified():
    verbs = set(build_parser()._subparsers._group_actions[0].choices)  # argparse has no public list
    assert verbs == ANSWERING | NOT_ANSWERING, verbs ^ (ANSWERING | NOT_ANSWERING)


def test_nothing_else_reaches_the_classifier():
    """Outside CLASSIFIER_USERS (and the self-test), no module of edge/ constructs or calls a Classifier."""
    found = set()
    for path in sorted((REPO / "edge").rglob("*.py")):
        rel = path.relative_to(REPO).as_posix()
        tree = ast.parse(path.read_text())
        if any(isinstance(n, ast.Name) and n.id == "Classifier" for n in ast.walk(tree)):
            found.add(rel)
    assert found - {"edge/classify.py", "edge/trust/selftest.py"} <= CLASSIFIER_USERS, found


def _lines(text: str) -> dict[str, str]:
    """'black.png: RETAKE - too dark' console lines by file name."""
    return {ln.split(":", 1)[0]: ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.split(":")[0] in REFUSED}


def _say(reason: str) -> str:
    return "NOT RECOGNISED" if reason == "not recognised" else f"RETAKE - {reason}"


def test_every_answering_verb_refuses_bad_frames(frames, tmp_path, capsys):
    # run --results (and the HUD: the console line is what the screen says) -------------------------------------
    assert main(["run", "--config", str(DEMO / "demo.yaml"), "--source", str(frames), "--display", "null",
                 "--backend", "onnx", "--results", str(tmp_path / "r.csv")]) == 0
    out = capsys.readouterr().out
    rows = {r["source"]: r for r in csv.DictReader((tmp_path / "r.csv").open())}
    assert set(rows) == set(REFUSED)
    for name, reason in REFUSED.items():
        assert rows[name]["gate"] == reason and rows[name]["label_1"] == "" and rows[name]["prob_1"] == ""
        assert rows[name]["cam_x"] == "" and rows[name]["signature"] == "UNSIGNED"
        assert _lines(out)[name].startswith(_say(reason)), out
    assert "4 of 4 frame(s) not answered: the gates refused them" in out

    # run --record: the probabilities stay on record, each with its gate outcome beside it --------------------
    assert main(["run", "--config", str(DEMO / "demo.yaml"), "--source", str(frames), "--display", "null",
                 "--backend", "onnx", "--record", str(tmp_path / "r.npz")]) == 0
    rec = np.load(tmp_path / "r.npz")
    assert sorted(rec["gate"]) == sorted(REFUSED.values()) and not rec["cams"].any()

    # demo on the same frames ----------------------------------------------------------------------------------
    assert main(["demo", "--source", str(frames), "--out", str(tmp_path / "demo"), "--backend", "tflite"]) == 0
    out = capsys.readouterr().out
    assert all(_lines(out)[name].startswith(_say(reason)) for name, reason in REFUSED.items()), out
    assert len(list((tmp_path / "demo").glob("*.png"))) == len(REFUSED)

    # capture: nothing kept, each frame named, exit 1 --------------------------------------------------------------
    store = tmp_path / "store"
    assert main(["capture", "--config", str(DEMO / "demo.yaml"), "--source", str(frames), "--count", "4",
                 "--store", str(store)]) == 1
    out = capsys.readouterr()
    assert out.out.count("not kept: ") == 4 and "kept capture" not in out.out
    assert "4 of 4 frame(s) not kept" in out.err
    with CaptureStore(store, create=False) as s:
        assert s.list() == []

    # val: every artefact's column holds each bad frame back as not answered (the gate beside it), never as right
    labelled = tmp_path / "labelled"
    for i, name in enumerate(REFUSED):
        (labelled / ("normal", "pigmented")[i % 2]).mkdir(parents=True, exist_ok=True)
        shutil.copy(frames / name, labelled / ("normal", "pigmented")[i % 2] / name)
    assert main(["val", str(DEMO / "bundle"), "--data", str(labelled), "--out", str(tmp_path / "val"),
                 "--results", str(tmp_path / "val.csv")]) == 0
    capsys.readouterr()
    rows = {Path(r["source"]).name: r for r in csv.DictReader((tmp_path / "val.csv").open())}
    assert set(rows) == set(REFUSED)
    for name, reason in REFUSED.items():
        gates = {k: v for k, v in rows[name].items() if k.endswith("_gate")}
        assert gates and set(gates.values()) == {reason}, (name, gates)
        assert all(rows[name][k.removesuffix("_gate") + "_correct"] == "" for k in gates)


def test_bench_pipeline_goes_through_the_gates(frames, tmp_path):
    """bench measures the pipeline on the board's gated path: the report counts each gate outcome."""
    r = subprocess.run([sys.executable, "-m", "edge.cli", "bench", str(DEMO / "bundle"), "--backend", "onnx",
                        "--source", str(frames), "--frames", "4", "--warmup", "0", "--json", str(tmp_path / "b.json")],
                       check=False, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert r.returncode == 0, r.stderr
    (res,) = json.loads((tmp_path / "b.json").read_text())["results"]
    gates = res["pipeline"]["gates"]
    assert "pass" not in gates and set(gates) == set(REFUSED.values()) and sum(gates.values()) == 4, gates
