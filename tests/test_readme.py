"""README.md's commands run as written: every `skinedge` line of every bash block parses with the real CLI,
and the blocks marked `<!-- tested -->` (the workstation walk-through: synth, train, convert, verify, run,
bench) are executed in order in a scratch folder, at tiny sizes so the test stays fast. A README edit that
breaks a command, or drops a step of the walk-through, fails here instead of on a new user's machine."""

from __future__ import annotations

import csv
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from edge.cli import build_parser, main

REPO = Path(__file__).resolve().parent.parent
MARK = "<!-- tested -->"
# Commands that are not skinedge's: allowed only with these prefixes (set-up, installs, root-only service set-up).
NOT_RUN = ("pip install", "sudo ", "python3 -m venv", ". .venv/bin/activate", "bash scripts/test.sh")
# Tiny sizes for the executed walk-through: only these options change value.
TINY = {"--per-class": "6", "--size": "32", "--input-size": "32", "--epochs": "1", "--threads": "1"}
STEPS = ["synth", "train", "convert", "verify", "run", "bench"]  # what the tested blocks must cover


def _blocks() -> list[tuple[bool, list[list[str]]]]:
    """(tested, commands) per ```bash block; backslash continuations joined, comments dropped."""
    text = (REPO / "README.md").read_text()
    out = []
    for m in re.finditer(rf"({re.escape(MARK)}\n)?```bash\n(.*?)```", text, re.DOTALL):
        joined = m.group(2).replace("\\\n", " ")
        cmds = []
        for line in joined.splitlines():
            words = shlex.split(line, comments=True)
            while words:  # a && b: two commands
                end = words.index("&&") if "&&" in words else len(words)
                cmds.append(words[:end])
                words = words[end + 1:]
        out.append((m.group(1) is not None, cmds))
    return out


def _skinedge(cmd: list[str]) -> list[str] | None:
    """argv of a skinedge command (None for an allowed non-skinedge line); fails on anything else."""
    line = " ".join(cmd)
    if cmd[0] == "skinedge":
        return cmd[1:]
    assert line.startswith(NOT_RUN), f"README command neither skinedge nor an install: {line}"
    return None


def _tiny(argv: list[str]) -> list[str]:
    argv = [TINY.get(prev, arg) if i else arg for i, (prev, arg) in enumerate(zip(["", *argv], argv))]
    return argv + (["--frames", "4", "--warmup", "1"] if argv[0] == "bench" else [])


def test_every_readme_command_parses(tmp_path):
    """skinedge lines parse; `python -c` data-preparation snippets run for real (in a scratch folder)."""
    parsed = 0
    for _, cmds in _blocks():
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
    assert parsed >= 10


@pytest.mark.slow
def test_the_tested_walkthrough_runs_as_written(tmp_path, monkeypatch, capsys):
    tested = [argv for is_tested, cmds in _blocks() if is_tested for argv in map(_skinedge, cmds) if argv]
    assert [a[0] for a in tested] == [s for s in STEPS for _ in range(sum(a[0] == s for a in tested))]
    assert {a[0] for a in tested} == set(STEPS), "the README walk-through lost a step"
    os.symlink(REPO / "device_configs", tmp_path / "device_configs")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for argv in map(_tiny, tested):
        code = main(argv)
        out, err = capsys.readouterr()
        if argv[0] == "convert" and "--strict" in argv:
            # one epoch on 24 tiny images learns nothing: --strict must refuse it (and say why)
            assert code == 3 and "at or near chance" in out and "--strict: refused" in err, (out, err)
            assert "Collecting tensor data" not in out + err  # onnxruntime's calibrator chatter stays silent
            continue
        assert code == 0, f"skinedge {' '.join(argv)} exited {code}: {err[-2000:]}"
        if argv[0] == "run":
            rows = list(csv.DictReader(Path("results.csv").read_text().splitlines()))
            assert len(rows) == 4 * 6 and all(r["true_label"] for r in rows)  # data/val: 4 classes x 6
            assert len(list(Path("out/frames").glob("frame_*.png"))) == len(rows)
            # accuracy over the answered images; one epoch on tiny images leaves the OOD gate refusing most or all
            answered = sum(r["gate"] == "pass" for r in rows)
            assert ("accuracy " in out) == bool(answered) and (f"{24 - answered} of 24 frame(s) not answered" in out
                                                                  or not 24 - answered), out[-500:]
        if argv[0] == "bench":
            assert "| agreement | accuracy |" in Path("workstation.md").read_text()
    assert not (tmp_path / "home" / ".local").exists()  # run kept no capture, so it made no store
