"""No verb prints a traceback when an extra is missing: on a board (edge extra only) torch, TensorFlow, onnx and
matplotlib are absent, and each verb either works without them or says in one line which extra it needs.

The child interpreter gets a sitecustomize (first on PYTHONPATH) whose meta-path finder refuses those modules,
as a board's Python would; every verb then runs in that one process, so the test costs one start-up."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import REPO
from tests.test_run import DEMO

BLOCKED = ("torch", "torchvision", "tensorflow", "tf_keras", "onnx", "onnx2tf", "matplotlib", "triton")
BLOCKER = f"""
import sys
class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {BLOCKED!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
sys.meta_path.insert(0, Blocker())
"""
DRIVER = """
import contextlib, io, json, sys, traceback
from edge.cli import main
out = {}
for argv in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as e:
            code = e.code
        except BaseException:
            traceback.print_exc()
            code = "raised"
    out[" ".join(argv)] = [code, err.getvalue()]
print(json.dumps(out))
"""


def test_no_verb_prints_a_traceback_without_the_workstation_extras(tmp_path, synth_tree):
    from edge.cli import build_parser

    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(BLOCKER)
    verbs = sorted(build_parser()._subparsers._group_actions[0].choices)
    ckpt = tmp_path / "model.pth"
    ckpt.write_bytes(b"not used: the converter is refused first")
    real = [
        ["train", "--arch", "micro_mpoxnet", "--data", str(synth_tree["train"]), "--out", str(tmp_path / "m.pth")],
        ["convert", "--arch", "micro_mpoxnet", "--checkpoint", str(ckpt), "--calib", str(synth_tree["calib"]),
         "--val", str(synth_tree["val"]), "--out", str(tmp_path / "b")],
        ["synth", "--out", str(tmp_path / "s"), "--per-class", "1", "--size", "32"],
        ["verify", str(DEMO / "bundle"), "--backend", "tflite"],
        ["bench", str(DEMO / "bundle"), "--backend", "tflite", "--frames", "2", "--warmup", "0",
         "--plot", str(tmp_path / "p.png")],
        ["--version", "-v"],
        # a board evaluates a bundle: the fp32 ONNX is its float reference, no PNGs without matplotlib
        ["val", str(DEMO / "bundle"), "--data", str(synth_tree["val"]), "--out", str(tmp_path / "v")],
    ]
    argvs = [[v, "--help"] for v in verbs] + real
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path / "site"), str(REPO)]))
    r = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(argvs)], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=600, check=False)
    assert r.returncode == 0, r.stderr[-3000:]
    results = json.loads(r.stdout.strip().splitlines()[-1])
    for argv, (code, err) in results.items():
        assert "Traceback" not in err and code != "raised", f"skinedge {argv}:\n{err[-2000:]}"
    needs_torch = ["train --help", " ".join(real[0]), " ".join(real[1])]  # one line naming the extra
    for argv in needs_torch:
        code, err = results[argv]
        assert code == 2 and len(err.strip().splitlines()) == 1 and "needs the convert extra" in err, (argv, err)
    for argv, (code, _) in results.items():
        if argv not in needs_torch:
            assert code == 0, (argv, results[argv])  # --help, synth, verify, bench (the plot skipped with a word), val
    assert (tmp_path / "v" / "metrics.json").is_file() and not list((tmp_path / "v").glob("*.png"))
