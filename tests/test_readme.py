"""README.md's commands run as written. Every ```bash block carries a mark: `<!-- tested -->` blocks (the
workstation walk-through: synth, train, convert, verify, run, val, bench, keygen, sign) are executed in order in
one scratch folder at tiny sizes; the first block (venv, `pip install -e ".[edge]"`, `skinedge demo`) is run as
written by bash in a fresh copy of the checkout, in a background job; every other block says why it cannot run
here (`<!-- not run here: ... -->`, naming what tests it instead). And every `skinedge` line of every block parses
with the real CLI. A README edit that breaks a command, drops a step or adds an unmarked block fails here instead of
on a new user's machine."""

from __future__ import annotations

import csv
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edge.cli import build_parser, main
from tests import background
from tests.conftest import REPO

TESTED, FRESH, NOT_RUN = "<!-- tested -->", "<!-- tested in a fresh copy of the checkout -->", "<!-- not run here: "
# Lines of tested blocks that are not run, and why.
SKIPPED = {
    "pip install": "installs into the test's own environment (scripts/test.sh installs the extras; the first block's "
                   "test installs [edge] into a fresh venv)",
    "sudo ": "changes the machine as root (tests/test_service.py runs install.sh --dry-run)",
}
ALLOWED = (*SKIPPED, "python3 -m venv", ". .venv/bin/activate", "bash scripts/test.sh")  # non-skinedge lines
# Tiny sizes for the executed walk-through: only these options change value.
TINY = {"--per-class": "6", "--size": "32", "--input-size": "32", "--epochs": "1", "--threads": "1"}
STEPS = {"synth", "train", "convert", "verify", "run", "val", "bench", "keygen", "sign"}  # the walk-through's verbs


def _blocks() -> list[tuple[str | None, str, list[list[str]]]]:
    """(mark, text, commands) per ```bash block; backslash continuations joined, comments dropped."""
    text = (REPO / "README.md").read_text()
    out = []
    for m in re.finditer(r"(<!-- [^\n]*?(?:\n[^\n]*?)*?-->\n)?```bash\n(.*?)```", text, re.DOTALL):
        joined = m.group(2).replace("\\\n", " ")
        cmds = []
        for line in joined.splitlines():
            words = shlex.split(line, comments=True)
            while words:  # a && b: two commands
                end = words.index("&&") if "&&" in words else len(words)
                cmds.append(words[:end])
                words = words[end + 1:]
        out.append(((m.group(1) or "").strip() or None, m.group(2), cmds))
    return out


def _skinedge(cmd: list[str]) -> list[str] | None:
    """argv of a skinedge command (None for an allowed non-skinedge line); fails on anything else."""
    line = " ".join(cmd)
    if cmd[0] == "skinedge":
        return cmd[1:]
    assert line.startswith(ALLOWED), f"README command neither skinedge nor an install: {line}"
    return None


def _tiny(argv: list[str]) -> list[str]:
    argv = [TINY.get(prev, arg) if i else arg for i, (prev, arg) in enumerate(zip(["", *argv], argv))]
    return argv + (["--frames", "4", "--warmup", "1"] if argv[0] == "bench" else [])


def test_every_block_is_run_or_says_why_not():
    blocks = _blocks()
    assert len(blocks) >= 9
    for mark, text, _ in blocks:
        assert mark in (TESTED, FRESH) or (mark and mark.startswith(NOT_RUN) and len(mark) > len(NOT_RUN) + 20), \
            f"a README block without a mark (tested, or why not):\n{text}"
    assert sum(mark == FRESH for mark, _, _ in blocks) == 1 and blocks[0][0] == FRESH  # the first command


def test_every_readme_command_parses(tmp_path):
    """skinedge lines parse; `python -c` data-preparation snippets run for real (in a scratch folder)."""
    parsed = 0
    for _, _, cmds in _blocks():
        for cmd in cmds:
            if cmd[:2] == ["python", "-c"]:
                r = subprocess.run([sys.executable, *cmd[1:]], cwd=tmp_path, capture_output=True, text=True,
                                   timeout=300, check=False)
                assert r.returncode == 0, f"README snippet failed: {' '.join(cmd)[:200]}: {r.stderr[-1000:]}"
                continue
            argv = _skinedge(cmd)
            if argv is None or argv[0] in ("synth", "train"):  # these two parse their own options (run below)
                continue
            build_parser().parse_args(argv)  # SystemExit on an unknown verb or option
            parsed += 1
    assert parsed >= 15


def _check(argv: list[str], code: int, out: str, err: str) -> None:
    """What each step of the walk-through must have done, beyond exiting 0."""
    verb = argv[0]
    if verb == "convert":
        # one epoch on 24 tiny images learns nothing: --strict refuses it, and says so plainly
        assert code == 3 and "at or near chance" in out and "--strict: refused: BELOW THE BAR: float (torch)" in err, \
            (out, err)
        for noise in ("Collecting tensor data", "TensorSpec(", "XNNPACK", "onnx2tf", "Traceback"):
            assert noise not in out + err, noise  # framework output goes to the log beside the bundle
        assert "TensorSpec(" in Path("bundles/micro.convert.log").read_text()
        card = Path("bundles/micro/MODEL_CARD.md").read_text()
        assert "## Training\nTrained by `skinedge train`" in card and "| epoch (* best) |" in card
        assert "## Errors by class" in card and "A trained health worker decides" in card  # a zoo model
        return
    assert code == 0, f"skinedge {' '.join(argv)} exited {code}: {err[-2000:]}"
    if verb == "train":
        assert Path("micro.curves.png").stat().st_size > 1000
    if verb == "run":
        rows = list(csv.DictReader(Path("results.csv").read_text().splitlines()))
        assert len(rows) == 4 * 6 and all(r["true_label"] for r in rows)  # data/val: 4 classes x 6
        assert len(list(Path("out/frames").glob("frame_*.png"))) == len(rows)
        # accuracy over the answered images; one epoch on tiny images leaves the OOD gate refusing most or all
        answered = sum(r["gate"] == "pass" for r in rows)
        assert ("accuracy " in out) == bool(answered) and (f"{24 - answered} of 24 frame(s) not answered" in out
                                                              or not 24 - answered), out[-500:]
    if verb == "val":
        assert "confusion matrix (rows: true class; columns: predicted)" in out and "| float (torch) |" in out
        columns = json.loads(Path("val-micro/metrics.json").read_text())["columns"]
        assert len(columns) == 5  # float (torch) + 4 artefacts
        assert len(list(Path("val-micro").glob("confusion_*.png"))) == 5  # a reliability diagram per column with answers
        assert len(list(Path("val-micro").glob("reliability_*.png"))) == sum(c["answered"] > 0 for c in columns)
        assert len(list(csv.DictReader(Path("val.csv").read_text().splitlines()))) == 4 * 6
    if verb == "bench":
        assert "| agreement | accuracy |" in Path("workstation.md").read_text()
    if verb == "verify" and "--trusted-key" in argv:
        assert "signature OK" in out and "(a trusted key)" in out and "verdict: PASS" in out


@pytest.mark.slow
def test_the_tested_walkthrough_runs_as_written(tmp_path, monkeypatch, capsys):
    tested = [cmd for mark, _, cmds in _blocks() if mark == TESTED for cmd in cmds]
    argvs = [a for a in map(_skinedge, tested) if a]
    skipped = [" ".join(c) for c in tested if c[0] != "skinedge"]
    assert all(line.startswith(tuple(SKIPPED)) for line in skipped), skipped  # only installs and sudo lines skipped
    assert {a[0] for a in argvs} == STEPS, "the README walk-through lost a step"
    os.symlink(REPO / "device_configs", tmp_path / "device_configs")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for argv in map(_tiny, argvs):
        code = main(argv)
        out, err = capsys.readouterr()
        _check(argv, code, out, err)
    assert not (tmp_path / "home" / ".local").exists()  # run kept no capture, so it made no store


def _fresh_copy_runs_the_first_block(scratch: Path) -> tuple[int, str, Path]:
    """The first block, by bash, in a copy of the checkout's files (no .venv, no build output), with a clean PATH
    and no PYTHONPATH or VIRTUAL_ENV: what a new user's first command does."""
    _, text, _ = _blocks()[0]
    copy = scratch / "skinedge"
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, text=True, check=False).stdout
    for name in filter(None, files.split("\0")):
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, copy / name)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if ".venv" not in p)
    r = subprocess.run(["bash", "-euo", "pipefail", "-c", text], cwd=copy, env=env, capture_output=True, text=True,
                       timeout=1800, check=False)
    return r.returncode, r.stdout + r.stderr, copy


if shutil.which("git") and (REPO / ".git").exists():
    background.job("readme-first-block", _fresh_copy_runs_the_first_block)


@pytest.mark.background("readme-first-block")
def test_the_first_command_runs_as_written_in_a_fresh_copy():
    """`python3 -m venv .venv && . .venv/bin/activate && pip install -e ".[edge]" && skinedge demo ...`: the edge
    extra alone (no torch) runs the demo."""
    if "readme-first-block" not in background._registered:
        pytest.skip("not a git checkout: no file list to copy")
    code, output, copy = background.result("readme-first-block")
    assert code == 0, output[-3000:]
    demo = copy / "skinedge-demo"
    assert "demo: " in output and len(list(demo.glob("frame_*.png"))) == 48
    site = next((copy / ".venv" / "lib").glob("python3*/site-packages"))
    assert not (site / "torch").exists() and not (site / "tensorflow").exists()
