"""Every CLI verb, every option, odd values: never a traceback, always one line and a documented exit status.

The verbs and their options come from `edge.cli.build_parser()` (so a new option is covered the day it is added);
each option in turn gets odd values of its kind (empty, huge, negative, /proc paths, a missing folder, a FIFO, a
directory where a file belongs, non-UTF-8 bytes) on top of a base command line that is otherwise valid. The CLI runs
in this process (main(argv)), so the whole sweep takes seconds, not minutes; the few cases that really start the
loop use the shipped demo bundle on LiteRT for one frame. `synth` and `train` parse their own options: they get a
few odd command lines of their own.
"""

from __future__ import annotations

import argparse
import os
import shutil
import traceback
from pathlib import Path

import pytest

from edge.cli import build_parser, main
from edge.cli.common import given
from tests.test_run import DEMO

CODES = {0, 1, 2, 3}  # success, a documented failure (verify FAIL, gates refused, live source ended), error, partial
NON_UTF8 = os.fsdecode(b"\xff\xfe-not-utf8")  # what Python makes of a non-UTF-8 argv byte string (in the cwd)


def _verbs() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]  # argparse has no public list
    return dict(sub.choices)


@pytest.fixture(scope="module")
def place(tmp_path_factory) -> dict[str, str]:
    """Odd things on disk, and valid inputs for the base command lines."""
    t = tmp_path_factory.mktemp("odd")
    os.mkfifo(t / "fifo")
    (t / "dir").mkdir()
    bundle = t / "bundle"
    shutil.copytree(DEMO / "bundle", bundle)
    main(["keygen", "--out", str(t / "key")])
    return {"tmp": str(t), "fifo": str(t / "fifo"), "dir": str(t / "dir"), "bundle": str(bundle),
            "missing": str(t / "nonexistent" / "dir" / "f"),
            "key": str(t / "key"), "config": str(DEMO / "demo.yaml"), "store": str(t / "store")}


def _base(verb: str, p: dict[str, str], case: str) -> list[str]:
    """A valid command line for `verb`, with its own fresh outputs (and missing folder) for `case`."""
    out = Path(p["tmp"]) / "out" / case
    out.mkdir(parents=True, exist_ok=True)
    p = {**p, "missing": str(out / "nonexistent" / "dir" / "f")}  # an odd value of another case may have made one
    loop = ["--config", p["config"], "--bundle", p["bundle"], "--backend", "tflite"]
    return {
        "run": ["run", *loop, "--frames", "1", "--display", "null"],
        "capture": ["capture", "--config", p["config"], "--bundle", p["bundle"], "--store", str(out / "store")],
        "demo": ["demo", "--out", str(out / "demo"), "--frames", "1", "--backend", "tflite"],
        "verify": ["verify", p["bundle"], "--backend", "tflite"],
        "keygen": ["keygen", "--out", str(out / "key")],
        "sign": ["sign", p["bundle"], "--key", p["key"]],
        "bench": ["bench", p["bundle"], "--backend", "tflite", "--frames", "2", "--warmup", "0",
                  "--source", p["missing"] + ".mp4"],  # fails in planning: no child process for valid values
        "captures": ["captures", "list", "--store", p["store"]],
        # the data folders do not exist: the conversion stops before any work, after checking every option
        "convert": ["convert", "--arch", "micro_mpoxnet", "--random-init", "--calib", p["missing"],
                    "--val", p["missing"], "--out", str(out / "bundle")],
        # the folder does not exist: refused after the bundle is admitted, before any model runs
        "val": ["val", p["bundle"], "--data", p["missing"], "--out", str(out / "val")],
        "web-cert": ["web-cert", "--address", "127.0.0.1", "--out", str(out)],
        # not a checkout: refused after the target is checked, before anything is built or downloaded
        "wheelhouse": ["wheelhouse", "--out", str(out / "wheelhouse"), "--source", p["missing"]],
        "synth": ["synth"], "train": ["train"],
    }[verb]


def _odd(action: argparse.Action, p: dict[str, str], missing: str) -> list[str]:
    """Odd values for one option, by what it takes."""
    if action.choices:
        return ["", "bogus"]
    paths = ["", "/proc/x", missing, p["fifo"], p["dir"], NON_UTF8]
    if action.type is Path:
        return paths
    if action.type in (int, float) or (getattr(action.type, "__module__", "") == "edge.cli.common"
                                       and action.type is not given):
        return ["", "-1", "0", "99999999999999999999", "nan", "abc"]
    return [*paths, "x" * 5000]


def _cases(p: dict[str, str]) -> list[tuple[str, list[str]]]:
    cases = []
    for verb, parser in _verbs().items():
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction) or action.nargs == 0:
                continue  # flags take no value
            for i, value in enumerate(_odd(action, p, f"{p['tmp']}/odd-{verb}-{action.dest}/nonexistent/f")):
                case = f"{verb}{action.dest}{i}"
                base = _base(verb, p, case)
                if action.option_strings:
                    argv = _replace(base, action.option_strings, value)
                else:  # a positional: the first one after the verb (bundle, captures' action)
                    argv = [base[0], value, *base[2:]] if len(base) > 1 else [base[0], value]
                cases.append((case, argv))
    odd_own = [["synth", "--out", "/proc/x"], ["synth", "--out", p["fifo"], "--per-class", "0"],
               ["train", "--data", p["missing"], "--arch", "micro_mpoxnet", "--out", "/proc/x.pth"],
               ["train", "--data", p["dir"], "--arch", "micro_mpoxnet", "--out", "/proc/x.pth"],
               ["train", "--data", p["dir"], "--arch", "micro_mpoxnet", "--out", p["dir"]]]
    return cases + [(f"own{i}", argv) for i, argv in enumerate(odd_own)]


def _replace(argv: list[str], names: list[str], value: str) -> list[str]:
    """argv with the option's value replaced (or the option added)."""
    for i, arg in enumerate(argv):
        if arg in names:
            return argv[: i + 1] + [value] + argv[i + 2:]
    return [*argv, names[-1], value]


def _checkout_files() -> set[Path]:
    """Every file under the shipped demo assets, whose config's relative paths resolve there."""
    return set(DEMO.rglob("*"))


def test_no_verb_prints_a_traceback_for_odd_values(place, capsys, monkeypatch):
    monkeypatch.chdir(place["tmp"])  # a display or output given as "" lands here, not in the checkout
    monkeypatch.setenv("HOME", place["tmp"])
    before = _checkout_files()
    failures = []
    cases = _cases(place)
    for case, argv in cases:
        try:
            code = main(argv)
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        except Exception:  # noqa: BLE001 - the point of the test: report every one, not the first
            failures.append(f"{' '.join(argv)[:200]}: uncaught {traceback.format_exc().splitlines()[-1]}")
            continue
        out, err = capsys.readouterr()
        lines = [ln for ln in err.splitlines() if ln.strip()]
        if "Traceback" in out + err or code not in CODES or (code == 2 and not lines):
            failures.append(f"{' '.join(argv)[:200]}: exit {code}, stderr {err[-300:]!r}")
        elif code == 2 and not lines[-1].startswith("skinedge"):
            failures.append(f"{' '.join(argv)[:200]}: the error is not one 'skinedge ...' line: {lines[-1][:200]!r}")
    assert not failures, f"{len(failures)} of {len(cases)} odd command lines:\n" + "\n".join(failures)
    assert len(cases) > 200  # every verb's options were enumerated
    # `run --display ''` once fell back to demo.yaml's own display and wrote frames into the package
    assert _checkout_files() == before
