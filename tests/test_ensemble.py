"""The weighted MobileNetV2 / EfficientNet-B1 / ResNet-50 ensemble on the board: conversion, weighted
probability averaging, weighted Grad-CAM, parallel members, `skinedge run` and per-member bench figures."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from edge import gradcam
from edge.classify import Classifier, softmax
from edge.trust.bundle import load_bundle
from tests.conftest import SIZE


def test_manifest_lists_members_and_weights(ensemble_bundle):
    b = load_bundle(ensemble_bundle)
    assert [m.arch for m in b.members] == ["mobilenetv2_tl", "efficientnet_b1_head", "resnet50_head"]
    assert b.weights == pytest.approx([0.30, 0.30, 0.40])
    assert b.manifest["ensemble"]["weights"] == pytest.approx([0.30, 0.30, 0.40])


def test_weighted_probabilities_and_cam(ensemble_bundle):
    b = load_bundle(ensemble_bundle)
    clf = Classifier(b, "onnx")
    img = np.random.default_rng(0).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    res = clf(img)
    outs = clf.run_members(img)
    want = sum(w * softmax(logits) for w, (logits, _, _) in zip([0.3, 0.3, 0.4], outs))
    np.testing.assert_allclose(res.probs, want, atol=1e-6)
    cams = [gradcam.gradcam(f, h, res.target)[0] for (_, f, _), h in zip(outs, clf.heads)]
    np.testing.assert_allclose(res.cam, gradcam.combine(cams, [0.3, 0.3, 0.4]), atol=1e-6)
    assert len(res.member_ms) == 3 and all(ms > 0 for ms in res.member_ms)


def test_parallel_members_give_the_same_answer(ensemble_bundle):
    b = load_bundle(ensemble_bundle)
    serial, parallel = Classifier(b, "onnx"), Classifier(b, "onnx", parallel_members=True)
    for seed in range(3):
        img = np.random.default_rng(seed).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
        np.testing.assert_allclose(serial(img).probs, parallel(img).probs, atol=1e-6)
    parallel.close()


def test_run_and_verify_cli(ensemble_bundle, tmp_path):
    from tests.test_run import DEMO

    r = subprocess.run([sys.executable, "-m", "edge.cli", "verify", str(ensemble_bundle), "--backend", "onnx"],
                       check=False, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "verdict: PASS" in r.stdout, r.stdout + r.stderr
    out = tmp_path / "frames"
    r = subprocess.run([sys.executable, "-m", "edge.cli", "run", "--config", str(DEMO / "demo.yaml"), "--bundle",
                        str(ensemble_bundle), "--backend", "onnx", "--display", str(out), "--frames", "4"],
                       check=False, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert len(list(out.glob("*.png"))) == 4


def test_pipeline_runs_members_in_parallel_when_configured(ensemble_bundle, tmp_path):
    from edge.config import load_config
    from edge.pipeline import run
    from tests.test_run import DEMO

    seen = []
    cfg = load_config(DEMO / "demo.yaml", {"bundle": str(ensemble_bundle), "backend": "onnx",
                                           "parallel_members": True, "display.kind": "null"})
    stats = run(cfg, frames=3, on_frame=lambda frame, res, overlay: seen.append(len(res.member_ms)))
    assert stats.frames == 3 and seen == [3, 3, 3]

