"""Ed25519 bundle signatures: keygen and sign on the workstation; a board that pins trusted keys refuses an
unsigned, wrongly signed or modified bundle before it opens any model file."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest
import yaml

from edge.cli import main
from edge.config import ConfigError, load_config
from edge.trust.bundle import MANIFEST, BundleError, load_bundle
from edge.trust.signing import Trust
from tests.test_run import DEMO


def _cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edge.cli", *map(str, args)], check=False, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    assert main(["keygen", "--out", str(d / "clinic")]) == 0
    assert main(["keygen", "--out", str(d / "other")]) == 0
    return {name: (d / name, (d / f"{name}.pub").read_text().strip()) for name in ("clinic", "other")}


def _config(tmp_path, bundle, keys: list[str], required: bool = True):
    cfg = yaml.safe_load((DEMO / "demo.yaml").read_text())
    cfg.update(bundle=str(bundle), trusted_keys=keys, require_signature=required, allow_unsigned=not required,
               backend="onnx")
    cfg["source"]["path"] = str(DEMO / "clip.mp4")
    path = tmp_path / "board.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_keygen_writes_private_0600_and_never_overwrites(keys, capsys):
    priv, pub = keys["clinic"]
    assert stat.S_IMODE(os.stat(priv).st_mode) == 0o600
    assert pub.startswith("ed25519:") and len(pub) == len("ed25519:") + 44
    assert main(["keygen", "--out", str(priv)]) == 2
    assert "already exists" in capsys.readouterr().err


def test_signed_bundle_passes_with_pinned_key(bundle, keys, tmp_path):
    priv, pub = keys["clinic"]
    assert main(["sign", str(bundle), "--key", str(priv)]) == 0
    assert load_bundle(bundle, trust=Trust((pub,), True)).signer == pub
    r = _cli("verify", bundle, "--backend", "onnx", "--config", _config(tmp_path, bundle, [pub]))
    assert r.returncode == 0 and "signature OK: ed25519:" in r.stdout and "verdict: PASS" in r.stdout, r.stdout + r.stderr


@pytest.mark.parametrize("case", ["unsigned", "other key", "modified after signing", "garbage signature"])
def test_board_refuses_before_opening_any_model_file(bundle, keys, tmp_path, case):
    """`skinedge run` and `verify` refuse with one line; an audit hook proves that no file of the bundle
    other than the manifest and the signature was opened (no hashing, no model) before the refusal."""
    priv, pub = keys["clinic"]
    if case != "unsigned":
        main(["sign", str(bundle), "--key", str(keys["other"][0] if case == "other key" else priv)])
    if case == "modified after signing":
        man = (bundle / MANIFEST).read_text().replace("demo-micro_mpoxnet-synthetic", "demo-renamed")
        (bundle / MANIFEST).write_text(man)
    if case == "garbage signature":
        (bundle / "signature").write_text("skinedge-signature/1\nkey " + pub + "\nsig " + "A" * 88 + "\n")
    cfg = _config(tmp_path, bundle, [pub])
    expected = {"unsigned": "unsigned bundle", "other key": "not among this board's trusted_keys",
                "modified after signing": "does not match manifest.yaml",
                "garbage signature": "does not match manifest.yaml"}[case]
    for args in (["verify", bundle, "--config", cfg], ["run", "--config", cfg, "--frames", "1", "--display", "null"]):
        r = _cli(*args)
        assert r.returncode == 2 and expected in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    probe = (
        "import sys\n"
        "opened = []\n"
        f"sys.addaudithook(lambda ev, a: opened.append(str(a[0])) if ev == 'open' and str(a[0]).startswith({str(bundle)!r}) else None)\n"
        "from edge.config import load_config\nfrom edge.answer import Startup, open_answerer\n"
        f"try:\n    open_answerer(load_config({str(cfg)!r}))\nexcept Startup as e:\n    print('REFUSED', e)\n"
        "print('OPENED', sorted({p.rsplit('/', 1)[-1] for p in opened}))\n")
    r = subprocess.run([sys.executable, "-c", probe], check=False, capture_output=True, text=True, timeout=120)
    assert "REFUSED" in r.stdout and expected in r.stdout, r.stdout + r.stderr
    opened = eval(r.stdout.split("OPENED ", 1)[1])
    assert set(opened) <= {"manifest.yaml", "signature"}, opened


def test_integrity_only_without_pinned_keys(bundle, keys):
    """A signed bundle on a board that pins nothing: the signature is still checked against its own key
    (catches a modified manifest), and an unsigned bundle is accepted as before."""
    main(["sign", str(bundle), "--key", str(keys["clinic"][0])])
    assert load_bundle(bundle).signer == keys["clinic"][1]
    (bundle / MANIFEST).write_text((bundle / MANIFEST).read_text() + "\n")
    with pytest.raises(BundleError, match="signature: does not match manifest.yaml"):
        load_bundle(bundle)
    (bundle / "signature").unlink()
    assert load_bundle(bundle).signer is None


def test_sign_refuses_a_bundle_that_fails_its_checks(bundle, keys, capsys):
    (bundle / "model.int8.onnx").write_bytes(b"tampered")
    assert main(["sign", str(bundle), "--key", str(keys["clinic"][0])]) == 2
    assert "model.int8.onnx does not match its sha256" in capsys.readouterr().err
    assert not (bundle / "signature").exists()


def test_config_keys_checked(tmp_path, bundle, keys):
    with pytest.raises(ConfigError, match="require_signature: true needs trusted_keys"):
        load_config(_config(tmp_path, bundle, []))
    with pytest.raises(ConfigError, match=r"trusted_keys: item 0: expected a public key"):
        load_config(_config(tmp_path, bundle, ["ed25519:short"]))
    with pytest.raises(ConfigError, match=r"trusted_keys: expected a list"):
        load_config(_config(tmp_path, bundle, "ed25519:x"))  # type: ignore[arg-type]
    cfg = load_config(_config(tmp_path, bundle, [keys["clinic"][1]]))
    assert cfg.trust == Trust((keys["clinic"][1],), True)


def _install(*args) -> subprocess.CompletedProcess:
    install = DEMO.parent.parent / "systemd" / "install.sh"
    return subprocess.run(["bash", str(install), "--dry-run", *map(str, args), "--source", str(install.parent.parent)],
                          check=False, capture_output=True, text=True)


def test_install_script_pins_keys(keys, tmp_path):
    """install.sh --trusted-key appends require_signature and the key to the board's config (dry run here),
    and refuses a file that is not a public key."""
    pub_file = keys["clinic"][0].with_name("clinic.pub")
    r = _install("--device", "rpi5", "--trusted-key", pub_file)
    assert r.returncode == 0, r.stderr
    assert f"append to /etc/skinedge/device.yaml: require_signature: true, trusted_keys: {keys['clinic'][1]}" in r.stdout
    r = _install("--device", "rpi5", "--trusted-key", keys["clinic"][0])
    assert r.returncode == 2 and "not a public key from skinedge keygen" in r.stderr


def test_clinic_install_is_signed_by_default(keys):
    """Without --trusted-key a board config is refused in one line saying how to make and pin a key; running
    unsigned bundles takes an explicit --allow-unsigned (written into the config, announced), or a config that
    already allows them (desktop)."""
    r = _install("--device", "rpi4")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "signed bundles only: give --trusted-key KEY.pub (on the workstation: skinedge keygen" in r.stderr
    r = _install("--device", "rpi4", "--allow-unsigned")
    assert r.returncode == 0, r.stderr
    assert "WARNING: this board will run unsigned bundles" in r.stdout
    assert "+ append to /etc/skinedge/device.yaml: allow_unsigned: true" in r.stdout
    assert _install("--device", "desktop").returncode == 0  # desktop.yaml says allow_unsigned: true itself
    r = _install("--device", "rpi4", "--allow-unsigned", "--trusted-key", keys["clinic"][0].with_name("clinic.pub"))
    assert r.returncode == 2 and "not both" in r.stderr


def test_resigning_after_a_change_replaces_the_signature(bundle, keys):
    main(["sign", str(bundle), "--key", str(keys["other"][0])])
    man = yaml.safe_load((bundle / MANIFEST).read_text())
    man["name"] = "renamed"
    (bundle / MANIFEST).write_text(yaml.safe_dump(man, sort_keys=False))
    assert main(["sign", str(bundle), "--key", str(keys["clinic"][0])]) == 0
    assert load_bundle(bundle, trust=Trust((keys["clinic"][1],), True)).name == "renamed"
