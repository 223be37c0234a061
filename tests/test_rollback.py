"""No rollback: versions are semantic versions, and a board refuses a signed bundle older than the highest it has
accepted from the same signer unless --allow-downgrade (logged, recorded in captures). The state file is
replaced atomically and a damaged one is refused in one line."""

from __future__ import annotations

import json
import os
import stat

import pytest
import yaml

from convert.golden import stamp
from edge.cli import main
from edge.record.durable import TMP_PREFIX
from edge.record.store import CaptureStore
from edge.trust import semver
from edge.trust.bundle import BundleError, load_bundle
from edge.trust.rollback import STATE_FILE, RollbackError, VersionBook
from edge.trust.signing import key_id
from tests.test_meaning import edit_manifest
from tests.test_run import DEMO


def test_semantic_version_precedence():
    order = ["0.1.0", "0.2.0-alpha", "0.2.0-alpha.1", "0.2.0-alpha.beta", "0.2.0-beta.2", "0.2.0-beta.11",
             "0.2.0-rc.1", "0.2.0", "0.10.0", "1.0.0"]
    assert sorted(order, key=semver.parse) == order
    assert semver.parse("1.2.3+build.7") == semver.parse("1.2.3")  # build metadata does not order
    for bad in ("zzz older than anything", "1.2", "01.2.3", "1.2.3-", "v1.2.3", "1.2.3-01", "", "1" * 60 + ".0.0"):
        with pytest.raises(ValueError, match="expected a semantic version"):
            semver.parse(bad)


def test_a_version_that_is_not_semver_is_refused(bundle, capsys):
    edit_manifest(bundle, lambda m: m.__setitem__("version", "zzz older than anything"))
    with pytest.raises(BundleError, match="version: expected a semantic version MAJOR.MINOR.PATCH"):
        load_bundle(bundle)
    assert main(["verify", str(bundle)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "version: expected a semantic version" in err[0]


def test_version_book_keeps_the_highest_atomically(tmp_path):
    book = VersionBook(tmp_path / "state")
    assert book.check("m", "k1", "0.2.0").highest is None
    book.accept("m", "k1", "0.2.0")
    book.accept("m", "k1", "0.1.5")  # never lowered
    assert book.check("m", "k1", "0.2.0").highest == "0.2.0"
    with pytest.raises(RollbackError, match=r"m 0\.1\.0 is older than 0\.2\.0, which this board has accepted from "
                                            r"the same signer \(k1"):
        book.check("m", "k1", "0.1.0")
    assert book.check("m", "k1", "0.1.0", allow_downgrade=True).downgrade_from == "0.2.0"
    assert book.check("m", "k2", "0.1.0").highest is None  # another signer: another line of versions
    assert book.check("other", "k1", "0.0.1").highest is None
    state = tmp_path / "state" / STATE_FILE
    assert stat.S_IMODE(os.stat(state).st_mode) == 0o600
    assert [e["version"] for e in json.loads(state.read_text())["accepted"]] == ["0.2.0"]
    assert sorted(os.listdir(tmp_path / "state")) == [".accepted-versions.lock", STATE_FILE]  # no temp left


def test_damaged_or_unwritable_state_is_one_line_and_loses_nothing(tmp_path):
    book = VersionBook(tmp_path / "state")
    book.accept("m", "k", "1.0.0")
    state = tmp_path / "state" / STATE_FILE
    good = state.read_bytes()
    blocker = tmp_path / "state" / f"{TMP_PREFIX}{STATE_FILE}"
    blocker.mkdir()  # the temp file cannot be written (as with a full or read-only card, even for root)
    with pytest.raises(RollbackError, match="cannot record the accepted version"):
        book.accept("m", "k", "2.0.0")
    blocker.rmdir()
    assert state.read_bytes() == good
    state.write_text('{"format": "skinedge-accepted-versions/1", "accepted": [{"model": "m"}]}')
    with pytest.raises(RollbackError, match="damaged .*restore it from a backup, or remove it"):
        book.check("m", "k", "1.0.0")


def _release(src, dst, version: str, key) -> None:
    """The demo bundle as release `version`, signed with `key` (its golden file stamped for the new version)."""
    import shutil

    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst)
    edit_manifest(dst, lambda m: m.__setitem__("version", version))
    stamp(dst)
    assert main(["sign", str(dst), "--key", str(key)]) == 0


def _board(tmp_path, bundle, pub: str):
    cfg = yaml.safe_load((DEMO / "demo.yaml").read_text())
    cfg.pop("allow_unsigned")
    cfg.update(bundle=str(bundle), backend="onnx", trusted_keys=[pub], require_signature=True,
               state_dir=str(tmp_path / "state"))
    cfg["source"]["path"] = str(DEMO / "clip.mp4")
    path = tmp_path / "board.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_older_signed_release_refused_unless_allowed(tmp_path, capsys, caplog):
    keys = tmp_path / "keys"
    keys.mkdir()
    assert main(["keygen", "--out", str(keys / "clinic")]) == 0
    pub = (keys / "clinic.pub").read_text().strip()
    new, old = tmp_path / "v0.2.0", tmp_path / "v0.1.0"
    _release(DEMO / "bundle", new, "0.2.0", keys / "clinic")
    _release(DEMO / "bundle", old, "0.1.0", keys / "clinic")
    cfg = _board(tmp_path, new, pub)
    store = tmp_path / "store"
    assert main(["capture", "--config", str(cfg), "--store", str(store)]) == 0  # 0.2.0 accepted and remembered
    capsys.readouterr()
    cfg = _board(tmp_path, old, pub)
    for argv in (["run", "--config", str(cfg), "--frames", "1", "--display", "null"],
                 ["capture", "--config", str(cfg), "--store", str(store)], ["verify", str(old), "--config", str(cfg)]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "0.1.0 is older than 0.2.0" in err[0] and "--allow-downgrade" in err[0], err
    assert main(["capture", "--config", str(cfg), "--store", str(store), "--allow-downgrade"]) == 0
    assert "DOWNGRADE from 0.2.0, allowed by --allow-downgrade" in capsys.readouterr().err  # the ready line
    assert "running demo-micro_mpoxnet-synthetic 0.1.0 below 0.2.0" in caplog.text  # logged
    with CaptureStore(store, create=False) as s:
        first, second = s.list()
    assert (first.model_version, first.downgrade_from) == ("0.2.0", "")
    assert (second.model_version, second.downgrade_from, second.signature) == ("0.1.0", "0.2.0", key_id(pub))
    state = json.loads((tmp_path / "state" / STATE_FILE).read_text())
    assert [e["version"] for e in state["accepted"]] == ["0.2.0"]  # a downgrade does not lower the mark


def test_state_dir_defaults_beside_the_store_and_convert_checks_the_version(tmp_path):
    from convert.pipeline import ConvertError, Options, convert
    from edge.config import load_config

    cfg = load_config(DEMO / "demo.yaml")
    assert cfg.state_dir == "/var/lib/skinedge"  # beside the default store.path, /var/lib/skinedge/captures
    path = tmp_path / "board.yaml"
    path.write_text(yaml.safe_dump({"source": {"kind": "opencv", "device": 0}, "display": {"kind": "null"},
                                    "store": {"path": "data/captures"}}))
    assert load_config(path).state_dir == str(tmp_path / "data")
    assert load_config(path, {"state_dir": str(tmp_path / "st")}).state_dir == str(tmp_path / "st")
    with pytest.raises(ConvertError, match="--version: expected a semantic version"):
        convert(Options(arch="micro_mpoxnet", random_init=True, calib=tmp_path, val=tmp_path, out=tmp_path / "b",
                        version="1.2"))
