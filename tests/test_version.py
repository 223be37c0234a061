"""`skinedge --version` says which source a board runs (the commit, from the checkout or recorded in the wheel:
tests/test_offline_install.py) and, with -v, every runtime's version; a verb's own --version (convert's: the
model's) is not taken for it."""

from __future__ import annotations

import subprocess

from edge import about
from edge.cli import main
from tests.conftest import REPO


def test_version_names_the_commit_and_the_runtimes(capsys):
    assert main(["--version"]) == 0
    line = capsys.readouterr().out.strip()
    head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=REPO, capture_output=True, text=True,
                          check=False).stdout.strip()
    assert line.startswith("skinedge 0.1.0 (commit ") and (not head or head in line)
    assert about.commit() is None or line.endswith(f"(commit {about.commit()})")
    assert main(["--version", "-v"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == line and any(x.startswith("  numpy: ") for x in lines)
    assert any(x.startswith("  onnxruntime: ") for x in lines) and any(x.startswith("  python: ") for x in lines)


def test_a_verbs_own_version_option_is_not_skinedges(tmp_path, capsys):
    code = main(["convert", "--version", "1.2.0", "--arch", "micro_mpoxnet", "--random-init", "--calib",
                 str(tmp_path / "none"), "--val", str(tmp_path / "none"), "--out", str(tmp_path / "b")])
    out, err = capsys.readouterr()
    assert code == 2 and "skinedge 0.1.0" not in out and "none: no such directory" in err
