"""Meaning under the self-test and the signature: golden.npz records the labels and a digest of every manifest field
that changes what a number means; a board runs only bundles signed by a key it pins unless its config says
allow_unsigned, and then every screen, the ready line and every capture say UNSIGNED MODEL."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import yaml

from convert.golden import stamp
from edge.answer import Startup, open_answerer
from edge.cli import main
from edge.config import ConfigError, load_config
from edge.record.store import CaptureStore
from edge.trust import safeyaml
from edge.trust.bundle import MANIFEST, BundleError, hash_tree, load_bundle
from edge.trust.selftest import check_meaning, load_golden
from edge.trust.signing import key_id
from tests.test_run import DEMO


def edit_manifest(root, edit) -> None:
    """Change manifest.yaml and recompute every hash, as someone with the SD card could."""
    man = safeyaml.load(safeyaml.read(root / MANIFEST))
    edit(man)
    man["artefacts"] = hash_tree(root)
    (root / MANIFEST).write_text(safeyaml.dump(man))


def _swap_labels(man):
    man["labels"][1], man["labels"][2] = man["labels"][2], man["labels"][1]


def _check(root) -> None:
    b = load_bundle(root)
    check_meaning(b, load_golden(b))


@pytest.mark.parametrize("edit, message", [
    (_swap_labels, r"class 1 is 'pigmented' in the manifest, 'normal' in golden\.npz"),
    (lambda m: m["input"]["normalisation"]["mean"].__setitem__(0, 0.5), "meaning digest"),
    (lambda m: m["gates"]["ood"].__setitem__("threshold", 1e6), "meaning digest"),  # OOD gate switched off
    (lambda m: m["tolerances"]["int8_onnx"].__setitem__("dprob", 1.0), "meaning digest"),  # self-test widened
    (lambda m: m.__setitem__("version", "9.9.9"), "meaning digest"),
], ids=["labels swapped", "preprocessing", "gate threshold", "tolerance", "version"])
def test_an_edited_meaning_is_refused_by_the_self_test(bundle, edit, message):
    edit_manifest(bundle, edit)
    with pytest.raises(BundleError, match=message):
        _check(bundle)


def test_a_deliberate_change_is_stamped_and_signed_again(bundle):
    """convert.golden.stamp records a new meaning (e.g. a gate added by convert/gate_bundle.py)."""
    edit_manifest(bundle, lambda m: m["gates"]["ood"].__setitem__("max_flag_rate", 0.04))
    with pytest.raises(BundleError, match="meaning digest"):
        _check(bundle)
    stamp(bundle)
    _check(bundle)


def test_golden_without_meaning_is_refused_with_a_hint(bundle):
    g = dict(np.load(bundle / "golden.npz"))
    np.savez(bundle / "golden.npz", **{k: v for k, v in g.items() if k not in ("labels", "meaning")})
    edit_manifest(bundle, lambda m: None)
    with pytest.raises(BundleError, match="records no label list or meaning digest.*python -m convert.golden"):
        _check(bundle)


def _board(tmp_path, bundle, **keys):
    cfg = yaml.safe_load((DEMO / "demo.yaml").read_text())
    cfg.pop("allow_unsigned")
    cfg.update(bundle=str(bundle), backend="onnx", **keys)
    cfg["source"]["path"] = str(DEMO / "clip.mp4")
    path = tmp_path / "board.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_a_board_config_runs_nothing_until_a_key_is_pinned(tmp_path):
    with pytest.raises(Startup, match="pins no trusted_keys, so no bundle can be trusted: pin the clinic's public key"):
        open_answerer(load_config(_board(tmp_path, DEMO / "bundle")))
    with pytest.raises(ConfigError, match="allow_unsigned: true contradicts require_signature: true"):
        load_config(_board(tmp_path, DEMO / "bundle", allow_unsigned=True, require_signature=True,
                           trusted_keys=["ed25519:" + "A" * 43 + "="]))


def test_unsigned_is_announced_everywhere(tmp_path, capsys):
    """allow_unsigned: the ready line, the red band on every screen, each capture's line and record."""
    cfg = _board(tmp_path, DEMO / "bundle", allow_unsigned=True)
    answerer, ready = open_answerer(load_config(cfg))
    answerer.close()
    assert "(UNSIGNED MODEL) on onnx" in ready
    out = tmp_path / "screens"
    assert main(["run", "--config", str(cfg), "--frames", "2", "--display", str(out)]) == 0
    assert "ready: demo-micro_mpoxnet-synthetic 0.1.0 (UNSIGNED MODEL)" in capsys.readouterr().err
    for png in sorted(out.glob("*.png")):
        rgb = cv2.cvtColor(cv2.imread(str(png)), cv2.COLOR_BGR2RGB).astype(int)
        band = rgb[-60:-20]  # the warning band sits above the disclaimer at the bottom of a 480x320 screen
        assert ((band[..., 0] > 150) & (band[..., 1] < 60)).mean() > 0.3, png.name
    store = tmp_path / "store"
    assert main(["capture", "--config", str(cfg), "--store", str(store)]) == 0
    assert "(UNSIGNED MODEL)" in capsys.readouterr().out
    with CaptureStore(store, create=False) as s:
        (cap,) = s.list()
    assert (cap.model, cap.model_version, cap.signature, cap.downgrade_from) == (
        "demo-micro_mpoxnet-synthetic", "0.1.0", "UNSIGNED", "")
    assert cap.bundle_hash == load_bundle(DEMO / "bundle").digest


def test_signed_pinned_and_not_pinned(bundle, tmp_path, capsys):
    keydir = tmp_path / "keys"
    keydir.mkdir()
    assert main(["keygen", "--out", str(keydir / "clinic")]) == 0
    assert main(["sign", str(bundle), "--key", str(keydir / "clinic")]) == 0
    pub = (keydir / "clinic.pub").read_text().strip()
    answerer, ready = open_answerer(load_config(_board(tmp_path, bundle, trusted_keys=[pub], require_signature=True)))
    answerer.close()
    assert f"(signed by {key_id(pub)}, a pinned key)" in ready and "UNSIGNED" not in ready
    # a board that allows unsigned bundles checks another key's signature for integrity only, and says so
    answerer, ready = open_answerer(load_config(_board(tmp_path, bundle, allow_unsigned=True)))
    assert "SIGNER NOT PINNED" in ready and answerer.model.warning == "SIGNER NOT PINNED"
    assert answerer.model.record()["signature"] == f"{key_id(pub)} not pinned"
    answerer.close()
