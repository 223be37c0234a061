"""The tamper matrix of issue 20 for the trust half, through `skinedge run` as a board starts it: every case
refused with one line on a signed board; on an allow_unsigned board the label swap is still caught by the
self-test, while a model whose golden file was recomputed after tampering is not (only a signature proves intent:
the README says so, and this test pins that limit down so no one sells the self-test as more)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from convert.golden import run as golden_run
from convert.golden import stamp
from edge.classify import Classifier
from edge.cli import main
from edge.trust.bundle import load_bundle
from edge.trust.selftest import GOLDEN
from tests.test_meaning import edit_manifest
from tests.test_run import DEMO
from tests.test_selftest import add_logit_bias


@pytest.fixture(scope="module")
def key(tmp_path_factory) -> tuple[Path, str]:
    d = tmp_path_factory.mktemp("clinic")
    assert main(["keygen", "--out", str(d / "clinic")]) == 0
    return d / "clinic", (d / "clinic.pub").read_text().strip()


def _board(tmp_path: Path, bundle: Path, pub: str | None) -> Path:
    """A board config: signed (pins `pub`) or, with pub None, allow_unsigned."""
    cfg = yaml.safe_load((DEMO / "demo.yaml").read_text())
    cfg.update(bundle=str(bundle), backend="onnx", state_dir=str(tmp_path / "state"))
    if pub:
        cfg.update(allow_unsigned=False, trusted_keys=[pub], require_signature=True)
    cfg["source"]["path"] = str(DEMO / "clip.mp4")
    path = tmp_path / ("signed.yaml" if pub else "unsigned.yaml")
    path.write_text(yaml.safe_dump(cfg))
    return path


def _run(config: Path, capsys) -> tuple[int, list[str], str]:
    code = main(["run", "--config", str(config), "--frames", "1", "--display", "null"])
    err = capsys.readouterr().err
    return code, [ln for ln in err.splitlines() if ln.startswith("skinedge")], err


def _refused(config: Path, capsys, why: str) -> None:
    code, lines, err = _run(config, capsys)
    assert code == 2 and len(lines) == 1 and why in lines[0], err


def _copy(tmp_path: Path, name: str, key=None) -> Path:
    root = tmp_path / name
    shutil.copytree(DEMO / "bundle", root)
    if key:
        assert main(["sign", str(root), "--key", str(key)]) == 0
    return root


def _swap(man: dict) -> None:
    man["labels"][1], man["labels"][2] = man["labels"][2], man["labels"][1]


def test_labels_swapped(tmp_path, key, capsys):
    signed = _copy(tmp_path, "signed", key[0])
    edit_manifest(signed, _swap)  # hashes recomputed, signature not
    _refused(_board(tmp_path, signed, key[1]), capsys, "signature: does not match manifest.yaml")
    # the key holder signing a swapped manifest (by mistake) is still caught: golden.npz recorded the labels
    assert main(["sign", str(signed), "--key", str(key[0])]) == 0
    _refused(_board(tmp_path, signed, key[1]), capsys, "class 1 is 'pigmented' in the manifest, 'normal' in golden.npz")
    unsigned = _copy(tmp_path, "unsigned")
    edit_manifest(unsigned, _swap)
    _refused(_board(tmp_path, unsigned, None), capsys, "class 1 is 'pigmented' in the manifest, 'normal' in golden.npz")


def _bias_and_recompute_golden(root: Path) -> None:
    """+4.0 on one class's logit of the int8 ONNX, then golden.npz's int8 ONNX references recomputed from the tampered
    model and every record restamped and rehashed: what someone with the SD card and this repository can do."""
    add_logit_bias(root / "model.int8.onnx", 2, 4.0)
    edit_manifest(root, lambda m: None)
    bundle = load_bundle(root, check_signature=False)
    golden = dict(np.load(root / GOLDEN))
    ref = golden_run(Classifier(bundle, "onnx", precision="int8", reference=True), golden["input"])
    golden.update(probs_int8_onnx=ref.probs, logits_int8_onnx=ref.logits, cam_int8_onnx=ref.cams)
    np.savez(root / GOLDEN, **golden)
    edit_manifest(root, lambda m: None)
    stamp(root)


def test_golden_recomputed_after_a_logit_bias(tmp_path, key, capsys):
    signed = _copy(tmp_path, "signed", key[0])
    signature = (signed / "signature").read_bytes()
    _bias_and_recompute_golden(signed)
    _refused(_board(tmp_path, signed, key[1]), capsys, "unsigned bundle, but this board requires a signature")
    (signed / "signature").write_bytes(signature)  # the clinic's signature of the honest manifest, put back
    _refused(_board(tmp_path, signed, key[1]), capsys, "signature: does not match manifest.yaml")
    # an allow_unsigned board cannot tell: the tampered model passes its self-test. This is the limit the README
    # states: the self-test catches accidents, only the signature catches intent.
    unsigned = _copy(tmp_path, "unsigned")
    _bias_and_recompute_golden(unsigned)
    code, _, err = _run(_board(tmp_path, unsigned, None), capsys)
    assert code == 0 and "(UNSIGNED MODEL)" in err and "self-test PASS" in err, err


def test_rollback_and_a_version_that_cannot_be_ordered(tmp_path, key, capsys):
    new, old, odd = (_copy(tmp_path, name) for name in ("v0.2.0", "v0.1.0", "odd"))
    for root, version in ((new, "0.2.0"), (old, "0.1.0")):
        edit_manifest(root, lambda m, v=version: m.__setitem__("version", v))
        stamp(root)
        assert main(["sign", str(root), "--key", str(key[0])]) == 0
    assert _run(_board(tmp_path, new, key[1]), capsys)[0] == 0
    _refused(_board(tmp_path, old, key[1]), capsys, "0.1.0 is older than 0.2.0, which this board has accepted")
    edit_manifest(odd, lambda m: m.__setitem__("version", "zzz older than anything"))
    assert main(["sign", str(odd), "--key", str(key[0])]) == 2  # the converter's own key refuses to sign it
    assert "version: expected a semantic version" in capsys.readouterr().err
    _refused(_board(tmp_path, odd, key[1]), capsys, "unsigned bundle")
    _refused(_board(tmp_path, odd, None), capsys, "version: expected a semantic version")
