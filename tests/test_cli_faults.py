"""The CLI faults of issue 20 item 5 that are not the store's, each refused or handled with one line and nothing lost:
sign replaces a signature only after success; thread counts bounded; world-writable bundles, key files and
key-pinning configs refused; unreadable keys, a bad WATCHDOG_USEC, outputs that cannot be written (checked before
the work), a huge camera index, a FIFO source; and the end of a live source is a failure exit for systemd."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
import yaml

from edge.backends.cpu import cores, max_threads
from edge.cli import main
from edge.config import ConfigError, load_config
from edge.trust.bundle import BundleError, load_bundle
from tests.test_run import DEMO, REPO

CFG = str(DEMO / "demo.yaml")
LOOP = ["--config", CFG, "--backend", "tflite", "--display", "null"]


def _one_line(capsys, code: int, expected_code: int, *words: str) -> str:
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("skinedge")]
    assert code == expected_code and len(lines) == 1 and all(w in lines[0] for w in words), err
    return lines[0]


def test_a_failed_sign_keeps_the_good_signature(bundle, tmp_path, capsys):
    assert main(["keygen", "--out", str(tmp_path / "key")]) == 0
    assert main(["sign", str(bundle), "--key", str(tmp_path / "key")]) == 0
    good = (bundle / "signature").read_bytes()
    (tmp_path / "notakey").write_text("-----BEGIN PRIVATE KEY-----\ngarbage\n-----END PRIVATE KEY-----\n")
    for wrong in (tmp_path / "key.pub", tmp_path / "notakey", tmp_path / "missing"):
        capsys.readouterr()
        _one_line(capsys, main(["sign", str(bundle), "--key", str(wrong)]), 2, "not a private key")
        assert (bundle / "signature").read_bytes() == good
    assert load_bundle(bundle).signer  # still verifies


def test_thread_counts_are_bounded(tmp_path, capsys):
    limit = max_threads()
    for argv in (["run", *LOOP, "--threads", "0"], ["run", *LOOP, "--threads", "-3"],
                 ["verify", str(DEMO / "bundle"), "--threads", "100000"], ["run", *LOOP, "--threads", str(limit + 1)]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        _one_line(capsys, e.value.code, 2, "--threads")
    path = tmp_path / "board.yaml"
    path.write_text(yaml.safe_dump({"source": {"kind": "opencv", "device": 0}, "display": {"kind": "null"},
                                    "threads": 64 if limit < 64 else limit + 1}))
    with pytest.raises(ConfigError, match=rf"threads: expected an integer in 1\.\.{limit} \(4 per core"):
        load_config(path)
    if limit > cores():  # above the cores: runs, with a warning line
        assert main(["verify", str(DEMO / "bundle"), "--backend", "tflite", "--threads", str(cores() + 1)]) == 0
        assert f"WARNING: --threads {cores() + 1} is more than the {cores()} core(s)" in capsys.readouterr().err


def test_world_writable_bundle_key_and_config_refused(bundle, tmp_path, capsys):
    os.chmod(bundle, 0o777)
    with pytest.raises(BundleError, match=r"writable by every user.*\. \(mode 0777\).*chmod -R o-w"):
        load_bundle(bundle)
    os.chmod(bundle, 0o755)
    os.chmod(bundle / "model.int8.onnx", 0o666)
    with pytest.raises(BundleError, match=r"model\.int8\.onnx \(mode 0666\)"):
        load_bundle(bundle)
    os.chmod(bundle / "model.int8.onnx", 0o644)
    assert main(["keygen", "--out", str(tmp_path / "key")]) == 0
    pub = tmp_path / "key.pub"
    os.chmod(pub, 0o666)
    _one_line(capsys, main(["verify", str(bundle), "--trusted-key", str(pub)]), 2, "writable by every user",
              "chmod o-w")
    r = subprocess.run(["bash", str(REPO / "systemd" / "install.sh"), "--dry-run", "--device", "rpi4", "--trusted-key",
                        str(pub), "--source", str(REPO)], check=False, capture_output=True, text=True)
    assert r.returncode == 2 and "writable by every user" in r.stderr, r.stderr
    cfg = tmp_path / "board.yaml"
    cfg.write_text(yaml.safe_dump({"source": {"kind": "opencv", "device": 0}, "display": {"kind": "null"},
                                   "trusted_keys": [pub.read_text().strip()], "require_signature": True}))
    os.chmod(cfg, 0o666)
    with pytest.raises(ConfigError, match="writable by every user, so anyone could pin their own key"):
        load_config(cfg)


def test_key_files_that_cannot_be_read_are_one_line(tmp_path, capsys):
    os.mkfifo(tmp_path / "fifo")  # reading it would wait forever
    for spec in (tmp_path / "missing.pub", tmp_path / "fifo", tmp_path):
        _one_line(capsys, main(["verify", str(DEMO / "bundle"), "--trusted-key", str(spec)]), 2,
                  "cannot read the public key")
    (tmp_path / "bad.pub").write_text("ssh-ed25519 AAAA\n")
    _one_line(capsys, main(["verify", str(DEMO / "bundle"), "--trusted-key", str(tmp_path / "bad.pub")]), 2,
              "expected a public key")


def test_bad_watchdog_usec_is_one_line_before_start_up(monkeypatch, capsys):
    monkeypatch.setenv("WATCHDOG_USEC", "abc")
    line = _one_line(capsys, main(["run", *LOOP, "--frames", "1"]), 2, "WATCHDOG_USEC", "'abc'")
    assert "ready:" not in capsys.readouterr().err + line  # refused before the bundle was loaded


@pytest.mark.parametrize("argv, words", [
    (["run", *LOOP, "--record", "{tmp}/missing/r.npz"], ["--record", "does not exist"]),
    (["run", *LOOP, "--record", "{tmp}/r.txt"], ["--record", ".npz"]),
    (["run", *LOOP, "--record", "/proc/r.npz"], ["--record", "cannot be written"]),
    (["run", *LOOP, "--results", "/proc/r.csv"], ["--results", "cannot be written"]),
    (["bench", str(DEMO / "bundle"), "--json", "{tmp}/missing/b.json"], ["--json", "does not exist"]),
    (["bench", str(DEMO / "bundle"), "--md", "{tmp}/missing/b.md"], ["--md", "does not exist"]),
    (["bench", str(DEMO / "bundle"), "--plot", "{tmp}"], ["--plot", "is a directory"]),
    (["demo", "--out", "/proc/demo"], ["--out /proc/demo", "cannot create"]),
])
def test_outputs_are_checked_before_the_work(tmp_path, capsys, argv, words):
    argv = [a.format(tmp=tmp_path) for a in argv]
    _one_line(capsys, main(argv), 2, *words)
    assert "frames in" not in capsys.readouterr().out  # nothing ran whose results would be lost


def test_display_camera_index_and_fifo_sources(tmp_path, capsys):
    _one_line(capsys, main(["run", "--config", CFG, "--backend", "tflite", "--frames", "1", "--display",
                            "/proc/nope.mp4"]), 2, "display /proc/nope.mp4", "cannot be written")
    with pytest.raises(SystemExit) as e:
        main(["run", *LOOP, "--source", "99999999999999999999"])
    _one_line(capsys, e.value.code, 2, "source.device", "camera index (0..9999)")
    os.mkfifo(tmp_path / "cam")
    _one_line(capsys, main(["run", *LOOP, "--source", str(tmp_path / "cam")]), 2, "is a FIFO (named pipe), not a "
              "video file")


def test_the_end_of_a_live_source_is_a_failure_exit(tmp_path, capsys):
    """A stream (here FFmpeg's file:// URL: OpenCV treats every URL as live) that ends exits 1, so that
    Restart=on-failure restarts the service; the same clip as a file ends with 0."""
    clip = shutil.copy(DEMO / "clip.mp4", tmp_path / "clip.mp4")
    assert main(["run", *LOOP, "--source", str(clip)]) == 0
    line = _one_line(capsys, main(["run", *LOOP, "--source", f"file://{clip}"]), 1, "the live source", "ended")
    assert "Restart=on-failure" in line
