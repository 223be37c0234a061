"""A conversion that fails says so in one line naming the stage and its log; a failed or interrupted (real
SIGINT) conversion leaves no `.partial` bundle and no temporary folder; a transient TFLite error is retried once.
(Framework noise kept off the terminal and the 'BELOW THE BAR' line: tests/test_readme.py's walk-through.)"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys

import pytest

from tests._wait import until
from tests.conftest import REPO, SIZE

# A model of the form every skinedge model has (.features -> GAP -> .head) whose features use an operator ONNX
# has no export for (torch.linalg.svdvals): the export stage fails for real.
SVD_NET = """
import torch
from torch import nn

class Features(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)

    def forward(self, x):
        x = self.conv(x)
        return x * torch.linalg.svdvals(x).mean()

class SvdNet(nn.Module):
    def __init__(self, num_classes=4):
        super().__init__()
        self.features, self.head = Features(), nn.Sequential(nn.Linear(8, num_classes))

    def forward(self, x):
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(self.features(x), 1), 1))

def build(num_classes=4):
    return SvdNet(num_classes)
"""


def _convert(tmp_path, synth_tree, arch: str, *extra: str) -> subprocess.Popen:
    (tmp_path / "tmp").mkdir(exist_ok=True)
    env = dict(os.environ, TMPDIR=str(tmp_path / "tmp"), PYTHONPATH=os.pathsep.join([str(REPO), str(tmp_path)]))
    return subprocess.Popen(
        [sys.executable, "-m", "edge.cli", "convert", "--arch", arch, "--random-init", "--calib", str(synth_tree["calib"]),
         "--val", str(synth_tree["val"]), "--out", str(tmp_path / "out" / "b"), "--input-size", str(SIZE),
         "--calib-per-class", "4", "--val-per-class", "4", *extra],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _nothing_left(tmp_path) -> None:
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["b.convert.log"]  # no b, no b.partial
    # every temporary folder removed (torch keeps its compile cache, torchinductor_USER, across runs by design)
    assert [p.name for p in (tmp_path / "tmp").iterdir() if not p.name.startswith("torchinductor_")] == []


def test_a_failing_stage_is_one_line_naming_it_and_its_log(tmp_path, synth_tree):
    (tmp_path / "svdnet.py").write_text(SVD_NET)
    proc = _convert(tmp_path, synth_tree, "svdnet:build")
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 2, err
    log = tmp_path / "out" / "b.convert.log"
    want = ("skinedge convert: error: stage export failed: UnsupportedOperatorError: Exporting the operator "
            f"'aten::linalg_svdvals' to ONNX opset version 17 is not supported; details in {log}")
    assert err.strip().splitlines() == [want], err
    assert "Traceback" in log.read_text() and "linalg_svdvals" in log.read_text()  # the details are in the log
    assert "Traceback" not in out + err
    _nothing_left(tmp_path)


def test_ctrl_c_in_the_tflite_stage_removes_partial_and_temporary_folders(tmp_path, synth_tree):
    """A real SIGINT, sent once the TFLite stage's temporary folder exists (a state, not a time)."""
    proc = _convert(tmp_path, synth_tree, "micro_mpoxnet", "--formats", "fp32_onnx,int8_tflite")
    until("the TFLite stage's temporary folder", lambda: any(p.name.startswith("skinedge-tflite-")
                                                             for p in (tmp_path / "tmp").iterdir()),
          child=proc, seconds=600, step=0.05)
    assert (tmp_path / "out" / "b.partial").is_dir()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1].startswith("skinedge convert: interrupted; nothing written")
    assert "Traceback" not in out + err
    _nothing_left(tmp_path)


@pytest.mark.parametrize("error, retried", [
    (RuntimeError("Resource temporarily unavailable"), True),  # what TFLite's converter raised once after 226 s
    (OSError(errno.EAGAIN, "Resource temporarily unavailable"), True),
    (RuntimeError("Quantization not yet supported for op: 'FFT2D'"), False),  # about the model: not retried
])
def test_a_transient_quantisation_error_is_retried_once(error, retried):
    from convert.tflite import retry_transient

    calls = []

    def quantise() -> bytes:
        calls.append(1)
        if len(calls) == 1:
            raise error
        return b"model"

    if retried:
        assert retry_transient(quantise, "int8 quantisation") == b"model" and len(calls) == 2
    else:
        with pytest.raises(type(error)):
            retry_transient(quantise, "int8 quantisation")
        assert len(calls) == 1
