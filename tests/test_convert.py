"""`skinedge convert` end to end on synthetic data: every zoo architecture, fidelity of a trained model,
and one clear error line for each kind of bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import yaml
from onnx import numpy_helper

from convert.pipeline import TENSORRT_FORM, Options, convert
from convert.zoo import ARCHS
from convert.zoo.ensemble import DEFAULT_MEMBERS
from edge.backends.cpu import u8s8_saturates
from edge.classify import Classifier
from edge.cli import main
from edge.gates import GatesConfig, for_bundle
from edge.trust.bundle import BundleError, load_bundle
from edge.trust.selftest import selftest
from tests import background
from tests.conftest import REPO, SIZE, convert_in_child, zoo_options


def _cli_error(capsys, argv) -> str:
    """Run the CLI expecting failure; return its single stderr line."""
    assert main(argv) != 0
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1, err
    return err[0]


# The ensemble's members (MobileNetV2-TL, EfficientNet-B1 head, ResNet-50 head) are converted one by one inside
# the ensemble's conversion, through the same per-member export, quantisation, validation, golden and gate
# steps; converting each again on its own would only repeat that (~1 min). The single-model path: the others.
STANDALONE = sorted(a for a in ARCHS if a == "ensemble" or a not in DEFAULT_MEMBERS)


def test_every_zoo_arch_is_converted_on_its_own_or_as_an_ensemble_member():
    assert set(STANDALONE) | set(DEFAULT_MEMBERS) == set(ARCHS)


IN_BACKGROUND = ("ensemble", "resnet50_asff")  # the longest conversions: background jobs (tests/conftest.py)


@pytest.mark.parametrize("arch", [pytest.param(a, marks=pytest.mark.background(a)) if a in IN_BACKGROUND else a
                                  for a in STANDALONE])
def test_every_zoo_arch_converts(arch, synth_tree, tmp_path):
    mp = 1.0 if arch == "micro_mpoxnet" else None  # one arch also goes through the mixed-precision search
    if arch in IN_BACKGROUND:  # the ensemble's is shared with tests/test_ensemble.py
        out = background.result(arch)
    else:
        out = tmp_path / arch
        convert(replace(zoo_options(arch, synth_tree, out), mixed_precision=mp))
    report = json.loads((out / "report.json").read_text())
    bundle = load_bundle(out)
    assert [m.arch for m in bundle.members] == (list(DEFAULT_MEMBERS) if arch == "ensemble" else [arch])
    assert all({"fp32_onnx", "int8_onnx", "head"} <= set(m.files) for m in bundle.members)
    rows = {r["artefact"]: r for r in report["validation"]}
    # fp32 ONNX is the torch model: it must agree on every image
    assert rows["fp32_onnx"]["top1_agreement"] == 1.0
    assert rows["fp32_onnx"]["max_dprob"] < 1e-4
    assert rows["int8_onnx"]["n"] == 16
    for kind in ("onnx",):
        clf = Classifier(bundle, kind)
        assert selftest(bundle, clf).ok
    # no int8 TFLite here: `auto` runs the int8 ONNX, through the exact session where the fused kernels saturate
    auto = Classifier(bundle, "auto")
    assert (auto.kind, auto.artefact) == ("onnx", "int8_onnx") and bool(auto.note) == u8s8_saturates()
    card = (out / "MODEL_CARD.md").read_text()
    assert "not a diagnosis" in card and "int8_onnx" in card
    # int8 rows are exact QDQ arithmetic; this CPU's fused kernels are a note beside them
    fused = report["calibration"]["this_cpu_fused"]
    assert 0 <= fused["top1_agreement"] <= 1 and f"top-1 agreement {fused['top1_agreement']:.2%}" in card
    if mp is not None:  # searched on the calibration images and recorded; the card says what stayed float
        entry = report["calibration"]["mixed_precision"][arch]
        assert entry["quantised_mac_share"] >= 0.9 and entry["agreement"] >= entry["agreement_plain"]
        assert "## Mixed precision" in card and all(f"| `{n}` |" in card for n in entry["float_convs"])
        assert (entry["agreement_plain"] < 1) == ("keep float weights" in card)
    gate = for_bundle(bundle, GatesConfig()).ood  # one OOD model per member, combined with the ensemble weights
    assert len(gate.members) == len(bundle.members) and gate.weights.sum() == pytest.approx(1.0)
    fig = report["gates"]
    assert fig["fit_images"] == 64 and fig["pseudo_labelled"] == 0 and fig["in_distribution_flag_rate"] <= 0.05
    assert f"OOD gate: {fig['method']} " in card and "OOD AUROC vs synthetic non-lesion" in card


def test_trained_checkpoint_learnt_the_classes(trained_checkpoint, synth_tree):
    """The float model the fidelity tests below convert. Also splits the session's two long fixtures (training
    here, conversion in the next test), so the run prints progress between them."""
    from calibration.dataset import load_batch, scan
    from convert.train import evaluate
    from convert.zoo import build_model

    ckpt = torch.load(trained_checkpoint, weights_only=True)
    model = build_model("micro_mpoxnet", len(ckpt["labels"]))
    model.load_state_dict(ckpt["state_dict"])
    val = load_batch(scan(synth_tree["val"], ckpt["labels"]).samples, SIZE)
    assert evaluate(model.eval(), val.images, val.labels) >= 0.85


def test_trained_model_int8_fidelity(trained_bundle):
    report = json.loads((trained_bundle / "report.json").read_text())
    rows = {r["artefact"]: r for r in report["validation"]}
    print({k: (v["top1_agreement"], v["accuracy"], v["max_dprob"]) for k, v in rows.items()})
    assert rows["float (torch)"]["accuracy"] >= 0.85, "the model did not learn the synthetic classes"
    # Measured here: 99.0 % for both int8 artefacts (200 images, 95 % float accuracy at 64 px). The bars of
    # issue 3 (99 %) are shown at 400 images by benchmarks/zoo_fidelity.py; this guards against regressions
    # with one image of slack for run-to-run training noise.
    assert rows["int8_onnx"]["top1_agreement"] >= 0.985 and rows["int8_tflite"]["top1_agreement"] >= 0.985
    # Grad-CAM on the known lesion masks of the synthetic images: reported for every artefact
    assert all(0.0 <= rows[k]["cam_in_mask"] <= 1.0 for k in ("float (torch)", "int8_onnx", "int8_tflite"))
    assert rows["int8_onnx"]["n"] == 200
    man = yaml.safe_load((trained_bundle / "manifest.yaml").read_text())
    assert set(man["validation"]) >= {"float (torch)", "fp32_onnx", "int8_onnx"}
    assert man["calibration"]["requested"] == "auto" and man["calibration"]["n"] == 64
    assert man["calibration"]["minmax_late_share"] == 0.5


def test_int8_onnx_is_u8s8_with_activations_kept(trained_bundle):
    """uint8 asymmetric activations, int8 symmetric per-channel weights (Clip/Relu: tests/test_tensorrt_logic.py)."""
    model = onnx.load(str(trained_bundle / "model.int8.onnx"))
    init = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    dq = {n.output[0]: n for n in model.graph.node if n.op_type == "DequantizeLinear"}
    act_zps = [init[n.input[2]] for n in dq.values() if n.input[0] not in init]
    assert act_zps and all(z.dtype == np.uint8 for z in act_zps)
    assert any(int(z) != 0 for z in act_zps), "no asymmetric activation range at all"
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    for conv in convs:  # weights: int8, zero point 0, one scale per output channel
        w = dq[conv.input[1]]
        assert init[w.input[0]].dtype == np.int8 and not init[w.input[2]].any()
        assert init[w.input[1]].shape == (init[w.input[0]].shape[0],)
    assert len(convs) > 10


def test_fp32_tflite_and_tensorrt_form_are_validated(trained_bundle):
    report = json.loads((trained_bundle / "report.json").read_text())
    rows = {r["artefact"]: r for r in report["validation"]}
    assert rows["fp32_tflite"]["top1_agreement"] == 1.0 and rows["fp32_tflite"]["max_dprob"] < 1e-3
    trt = rows[TENSORRT_FORM]
    assert trt["n"] == rows["int8_onnx"]["n"] and trt["top1_agreement"] >= 0.98
    man = yaml.safe_load((trained_bundle / "manifest.yaml").read_text())
    assert man["models"][0]["artefacts"]["fp32_tflite"] == "model.fp32.tflite"
    maps = man["models"][0]["tflite_outputs"]
    assert set(maps) == {"int8_tflite", "fp32_tflite"}
    assert all(sorted(m.values()) == [0, 1] for m in maps.values())
    assert not list(trained_bundle.glob("*tensorrt*")), "the TensorRT form is a validation row, not a file"
    bundle = load_bundle(trained_bundle)
    clf = Classifier(bundle, "tflite", precision="fp32")
    assert clf.artefact == "fp32_tflite" and selftest(bundle, clf).ok


def test_verify_cli_passes_and_tampering_is_refused(trained_bundle, tmp_path, capsys):
    assert main(["verify", str(trained_bundle), "--backend", "onnx"]) == 0
    assert "verdict: PASS" in capsys.readouterr().out
    bad = tmp_path / "tampered"
    shutil.copytree(trained_bundle, bad)
    data = bytearray((bad / "model.int8.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (bad / "model.int8.onnx").write_bytes(bytes(data))
    line = _cli_error(capsys, ["verify", str(bad), "--backend", "onnx"])
    assert "model.int8.onnx does not match its sha256" in line
    with pytest.raises(BundleError, match="does not match"):
        load_bundle(bad)


def test_minmax_is_the_default_calibration_method():
    """One default for the library and the command line: min-max, on biases corrected for the weights' rounding
    (issue 21: with the correction, on the two selection photo sources it changed 1 confident answer where the
    percentile changed 2, and its TensorRT form stayed within a point everywhere; benchmarks/README.md)."""
    from convert.pipeline import Options
    from edge.cli import build_parser

    argv = ["convert", "--arch", "a", "--random-init", "--calib", "c", "--val", "v", "--out", "o"]
    args = build_parser().parse_args(argv)
    assert args.calib_method == Options.calib_method == "minmax" and Options.bias_correction
    assert build_parser().parse_args([*argv, "--no-bias-correction"]).no_bias_correction and not args.no_bias_correction


def test_auto_calibration_reports_every_candidate(trained_bundle):
    """`auto`: both candidates from one pass, chosen on a held-out quarter of the calibration images."""
    report = json.loads((trained_bundle / "report.json").read_text())
    auto = report["calibration"]["auto"]
    cands = auto["candidates"]
    assert set(cands) == {"minmax", "percentile"}
    card = (trained_bundle / "MODEL_CARD.md").read_text()
    assert auto["seconds"] > 0 and "both from one calibration pass" in card
    # the card says what was clipped only where the chosen method clips
    assert ("clipped the first 50% of the activations only" in card) == (auto["chosen"] == "percentile")
    # chosen on a split of the 64 calibration images, confident answers first; the validation images play no part
    assert auto["held_out"] and auto["fit_images"] + auto["select_images"] == 64 and auto["select_images"] == 16
    best = max(cands.values(), key=lambda c: (c["agreement_sure"], c["agreement"], -c["top1_drop"]))
    assert cands[report["calibration"]["method"]] == best == cands[auto["chosen"]]


# --- bad input: one clear line each -------------------------------------------------------------------

def _convert_argv(synth_tree, out, **kw):
    args = {"--arch": "micro_mpoxnet", "--calib": str(synth_tree["calib"]), "--val": str(synth_tree["val"]),
            "--out": str(out), "--input-size": str(SIZE), "--formats": "fp32_onnx"}
    args.update(kw)
    argv = ["convert"]
    for k, v in args.items():
        argv += [k] if v is None else [k, v]
    if "--checkpoint" not in args:
        argv.append("--random-init")
    return argv


def test_missing_calibration_dir(synth_tree, tmp_path, capsys):
    line = _cli_error(capsys, _convert_argv(synth_tree, tmp_path / "b", **{"--calib": str(tmp_path / "nope")}))
    assert "nope" in line and "error" in line
    assert not (tmp_path / "b").exists()


def test_a_wrong_folder_is_refused_before_torch_is_imported(synth_tree, tmp_path):
    """In a Python where torch cannot be imported, a missing --val still gets its own line, not 'needs the convert
    extra': the folders are read before the converter (seconds of imports) is."""
    code = ("import sys; sys.modules['torch'] = None; from edge.cli import main; "
            f"sys.exit(main({_convert_argv(synth_tree, tmp_path / 'b', **{'--val': str(tmp_path / 'nope')})!r}))")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    want = (f"skinedge convert: error: {tmp_path / 'nope'}: no such directory (expected a flat folder of images or "
            "one sub-folder of images per class)")
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [want], r.stderr


def test_empty_class_folder(synth_tree, tmp_path, capsys):
    calib = tmp_path / "calib"
    shutil.copytree(synth_tree["calib"], calib)
    for f in (calib / "pigmented").iterdir():
        f.unlink()
    line = _cli_error(capsys, _convert_argv(synth_tree, tmp_path / "b", **{"--calib": str(calib)}))
    assert "pigmented" in line


def test_unknown_arch(synth_tree, tmp_path, capsys):
    line = _cli_error(capsys, _convert_argv(synth_tree, tmp_path / "b", **{"--arch": "mobilenetv9"}))
    assert "mobilenetv9" in line and "micro_mpoxnet" in line


def test_checkpoint_that_does_not_fit(synth_tree, tmp_path, capsys):
    ckpt = tmp_path / "wrong.pth"
    torch.save({"state_dict": {"conv.weight": torch.zeros(3, 3)}}, ckpt)
    line = _cli_error(capsys, _convert_argv(synth_tree, tmp_path / "b", **{"--checkpoint": str(ckpt)}))
    assert "does not fit" in line and "missing" in line and "unexpected: conv.weight" in line


def test_not_a_checkpoint(synth_tree, tmp_path, capsys):
    ckpt = tmp_path / "garbage.pth"
    ckpt.write_bytes(b"this is not a checkpoint")
    line = _cli_error(capsys, _convert_argv(synth_tree, tmp_path / "b", **{"--checkpoint": str(ckpt)}))
    assert "garbage.pth" in line and "not a PyTorch checkpoint" in line


class _Opaque:  # a pickled object weights_only refuses
    pass


def test_full_pickle_needs_trust(synth_tree, trained_checkpoint, tmp_path, capsys):
    obj = torch.load(trained_checkpoint, weights_only=True)
    obj["extra"] = _Opaque()
    ckpt = tmp_path / "pickled.pth"
    torch.save(obj, ckpt)
    line = _cli_error(capsys, _convert_argv(synth_tree, tmp_path / "b", **{"--checkpoint": str(ckpt)}))
    assert "--trust-checkpoint" in line
    assert main(_convert_argv(synth_tree, tmp_path / "b", **{"--checkpoint": str(ckpt), "--trust-checkpoint": None})) == 0
    assert load_bundle(tmp_path / "b").members[0].arch == "micro_mpoxnet"


def test_corrupt_image_is_skipped_and_counted(synth_tree, tmp_path):
    calib = tmp_path / "calib"
    shutil.copytree(synth_tree["calib"], calib)
    victim = min((calib / "normal").iterdir())
    victim.write_bytes(victim.read_bytes()[:100])  # truncated PNG
    opts = Options(arch="micro_mpoxnet", random_init=True, calib=calib, val=synth_tree["val"], out=tmp_path / "b",
                   input_size=SIZE, val_per_class=2, formats=("fp32_onnx",), progress=False)
    with pytest.warns(UserWarning, match="skipped 1 of"):
        convert(opts)
    assert any("; 1 skipped)" in line for line in opts.log)


def test_strict_refuses_a_model_that_knows_nothing(synth_tree, tmp_path, capsys):
    assert main(_convert_argv(synth_tree, tmp_path / "b", **{"--val-per-class": "10", "--strict": None})) == 3
    out, err = capsys.readouterr()
    assert "WARNING: float (torch): accuracy" in out and "at or near chance (25.0%" in out
    assert "--strict: refused" in err
    # --calib-per-class defaults to 32; the calibration folders hold 16 per class, and the card says so
    assert "64 images (16 per class; up to 32 per class (default) of 64 found)" in (tmp_path / "b" / "MODEL_CARD.md").read_text()


def test_existing_output_is_not_overwritten(synth_tree, tmp_path, capsys):
    out = tmp_path / "b"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    line = _cli_error(capsys, _convert_argv(synth_tree, out))
    assert "already exists" in line
    assert (out / "keep.txt").read_text() == "mine"


def _msca_pfr_at_224(root: Path) -> Path:
    """One full-size conversion of MobileNetV2-MSCA-PFR (fp32 + int8 ONNX): a background job (convert_in_child).
    The default calibration method, as for every random-init zoo conversion (conftest.zoo_options): `auto` made it
    31 s instead of 18 s on a free core."""
    convert_in_child("import sys; from pathlib import Path; from calibration.synthetic import write_imagefolder; "
                     "from convert.pipeline import Options, convert; root = Path(sys.argv[1]); "
                     "calib = write_imagefolder(root / 'calib', per_class=4, size=224, seed=5); "
                     "val = write_imagefolder(root / 'val', per_class=3, size=224, seed=6); "
                     "convert(Options(arch='mobilenetv2_msca_pfr', random_init=True, calib=calib, val=val, "
                     "out=root / 'b', input_size=224, formats=('fp32_onnx', 'int8_onnx'), "
                     "progress=False))",
                     root, "the 224 px conversion")
    return root / "b"


background.job("msca224", _msca_pfr_at_224)


@pytest.mark.slow
@pytest.mark.background("msca224")
def test_msca_pfr_at_224():
    out = background.result("msca224")
    report = json.loads((out / "report.json").read_text())
    bundle = load_bundle(out)
    assert bundle.input_size == (224, 224)
    assert bundle.members[0].features_shape[2:] == (7, 7)
    rows = {r["artefact"]: r for r in report["validation"]}
    assert rows["fp32_onnx"]["top1_agreement"] == 1.0
    assert np.isfinite(rows["int8_onnx"]["max_dprob"])
