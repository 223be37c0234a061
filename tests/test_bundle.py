"""A bundle that must not run is refused with a message naming the file: tampered manifest, truncated
model, wrong-shaped golden file — including when an attacker or a bad copy also rewrote the hashes."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import yaml

from convert.golden import stamp
from edge.classify import Classifier
from edge.trust.bundle import MANIFEST, BundleError, hash_tree, load_bundle
from edge.trust.selftest import selftest


def _rehash(root):
    man = yaml.safe_load((root / MANIFEST).read_text())
    man["artefacts"] = hash_tree(root)
    (root / MANIFEST).write_text(yaml.safe_dump(man, sort_keys=False))


def _verify(root) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edge.cli", "verify", str(root), "--backend", "tflite"],
                          check=False, capture_output=True, text=True, timeout=120)


def test_tampered_manifest_labels(bundle):
    man = yaml.safe_load((bundle / MANIFEST).read_text())
    man["labels"] = man["labels"][:-1]
    (bundle / MANIFEST).write_text(yaml.safe_dump(man))
    with pytest.raises(BundleError, match="manifest.yaml.*classes but there are 3 labels"):
        load_bundle(bundle)


def test_tampered_hash_entry(bundle):
    man = yaml.safe_load((bundle / MANIFEST).read_text())
    man["artefacts"]["model.int8.tflite"] = "0" * 64
    (bundle / MANIFEST).write_text(yaml.safe_dump(man))
    r = _verify(bundle)
    assert r.returncode == 2 and "model.int8.tflite does not match its sha256" in r.stderr


def test_truncated_model_even_with_matching_hashes(bundle):
    data = (bundle / "model.int8.tflite").read_bytes()
    (bundle / "model.int8.tflite").write_bytes(data[: len(data) // 3])
    assert _verify(bundle).returncode == 2  # hash mismatch first
    _rehash(bundle)
    r = _verify(bundle)
    lines = [line for line in r.stderr.splitlines() if line.startswith("skinedge")]
    assert r.returncode == 2 and len(lines) == 1 and "model.int8.tflite" in lines[0], r.stderr


def test_wrong_shaped_golden(bundle):
    golden = dict(np.load(bundle / "golden.npz"))
    golden["input"] = golden["input"][:, :, :-1]
    np.savez(bundle / "golden.npz", **golden)
    _rehash(bundle)
    b = load_bundle(bundle)
    clf = Classifier(b, "tflite")
    with pytest.raises(BundleError, match="golden.npz: input should be"):
        selftest(b, clf)
    r = _verify(bundle)
    assert r.returncode == 2 and "golden.npz" in r.stderr


def test_missing_manifest_and_garbage_yaml(tmp_path):
    with pytest.raises(BundleError, match="not a bundle"):
        load_bundle(tmp_path)
    (tmp_path / MANIFEST).write_text("format: [unclosed")
    with pytest.raises(BundleError, match="malformed YAML"):
        load_bundle(tmp_path)


def test_tflite_output_mappings_old_and_new_form(bundle):
    """Bundles written before the fp32 TFLite artefact hold one flat mapping (the int8 model's); newer ones
    one per TFLite artefact. A mapping of any other shape is refused, naming the key."""
    man = yaml.safe_load((bundle / MANIFEST).read_text())
    flat = man["models"][0]["tflite_outputs"]
    flat = flat.get("int8_tflite", flat)
    for form in (flat, {"int8_tflite": flat}):
        man["models"][0]["tflite_outputs"] = form
        man["artefacts"] = hash_tree(bundle)
        (bundle / MANIFEST).write_text(yaml.safe_dump(man, sort_keys=False))
        stamp(bundle)  # both forms mean the same; dropping the fp32 mapping changes the meaning golden.npz records
        b = load_bundle(bundle, verify=False)
        assert b.members[0].tflite_outputs["int8_tflite"] == flat
        clf = Classifier(b, "tflite")
        assert selftest(b, clf).ok
    for bad in ({"logits": 0}, {"int8_tflite": {"logits": "0", "features": 1}}, {"int8_onnx": flat}, [0, 1]):
        man["models"][0]["tflite_outputs"] = bad
        (bundle / MANIFEST).write_text(yaml.safe_dump(man, sort_keys=False))
        with pytest.raises(BundleError, match=r"manifest.yaml: models\[0\]\.tflite_outputs"):
            load_bundle(bundle, verify=False)
