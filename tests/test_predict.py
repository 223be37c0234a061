"""Predicted board latency (benchmarks/arm_cost: profile.c, mca.py, predict.py, `skinedge bench --predict`).

The llvm-mca tests need llvm-19 (scripts/test.sh installs it with the ARM tooling); the emulated ones the ARM root
with profile.so (SKINEDGE_ARM_ROOT), and run as background jobs: block counts of two independent runs of the demo
bundle (LiteRT and ONNX Runtime int8, no cache simulation), and the CI smoke form of `skinedge bench --predict`
(one board, one backend, the demo bundle, caches simulated).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.arm_cost import mca
from benchmarks.arm_cost.boards import BOARDS, parse_boards
from benchmarks.arm_cost.emulate import DEMO_BUNDLE, arm_root, missing_tooling
from benchmarks.arm_cost.predict import _tflite_ops, stall_cycles
from benchmarks.arm_cost.profile import PLUGIN, Block, instructions, parse, profile
from tests import background

REPO = Path(__file__).resolve().parent.parent
llvm = pytest.mark.skipif(bool(mca.missing_llvm()), reason=str(mca.missing_llvm()))
_why = missing_tooling(arm_root()) or mca.missing_llvm() or (
    None if (arm_root() / PLUGIN).exists() else f"{arm_root() / PLUGIN} missing (benchmarks/arm_cost/setup.sh)")
emulated = pytest.mark.skipif(bool(_why), reason=str(_why))


def _repeats(scratch: Path) -> list[dict]:
    """Two independent emulated runs of the demo bundle on the Cortex-A72, LiteRT and ONNX Runtime int8."""
    return [profile(arm_root(), "cortex-a72", [], DEMO_BUNDLE, [("tflite", "int8"), ("onnx", "int8")], k=1,
                    warmup=1, scratch=scratch / f"r{i}") for i in range(2)]


def _smoke(scratch: Path) -> tuple[subprocess.CompletedProcess, Path]:
    """CI's smoke form: `skinedge bench DEMO --predict rpi4 --backend tflite` with a fresh prediction cache."""
    out = scratch / "predicted.json"
    env = dict(os.environ, SKINEDGE_PREDICT_CACHE=str(scratch / "cache"), PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-m", "edge.cli", "bench", str(DEMO_BUNDLE), "--predict", "rpi4",
                           "--backend", "tflite", "--precision", "int8", "--json", str(out)], cwd=scratch, env=env,
                          capture_output=True, text=True, timeout=1800, check=False)
    return proc, out


if not _why:
    background.job("predict-repeats", _repeats)
    background.job("predict-smoke", _smoke)


def test_parse_adds_retranslated_blocks_and_divides_by_k():
    text = ("span 11 12\nblock 4000 2 6 d503201f,d65f03c0\nblock 4000 2 4 d503201f,d65f03c0\n"
            "block 4008 1 2 d503201f\ncache rpi4 100 10 4 4 1\nend\n")
    span = parse(text, k=2)[(11, 12)]
    assert sorted(b.execs for b in span["blocks"].values()) == [1.0, 5.0]  # same address and words: one block
    assert instructions(span["blocks"]) == 11.0
    assert span["caches"]["rpi4"] == {"accesses": 50.0, "l1_misses": 5.0, "l2_misses": 2.0, "l3_misses": 2.0,
                                      "l1_write_misses": 0.5}


def test_boards_name_their_model_and_unknown_ones_are_refused():
    assert {b.mca_cpu for b in parse_boards("rpi4,rpi5,jetson-nano")} == {"cortex-a72", "neoverse-n1", "cortex-a57"}
    with pytest.raises(ValueError, match="unknown board rpi9: expected some of rpi4"):
        parse_boards("rpi4,rpi9")
    assert BOARDS["rpi5"].geometry == "64:4:512:8:0:2048:16"
    assert BOARDS["rpi3b+"].geometry == BOARDS["rpi-zero2w"].geometry  # one simulation serves both


def test_memory_stall_grows_with_misses_and_dram_costs_most():
    board, mlp = BOARDS["rpi4"], 4.0
    none = stall_cycles(board, {"l1_misses": 0, "l2_misses": 0, "l3_misses": 0}, mlp)
    l2 = stall_cycles(board, {"l1_misses": 1000, "l2_misses": 0, "l3_misses": 0}, mlp)
    dram = stall_cycles(board, {"l1_misses": 1000, "l2_misses": 1000, "l3_misses": 1000}, mlp)
    assert none == 0 and 0 < l2 < dram
    assert dram == pytest.approx(1000 * (board.dram_ns * board.ghz - board.l1d.latency) / mlp)


def test_tflite_operator_count_matches_litert():
    """The flatbuffer reader counts the operators LiteRT itself lists for the demo model."""
    from edge.backends.tflite import load_interpreter

    path = next(DEMO_BUNDLE.rglob("*int8*.tflite"))
    interp = load_interpreter(path, 1, reference=True)[0]
    assert _tflite_ops(path) == len(interp._get_ops_details()) > 10


@llvm
def test_llvm_mca_costs_a_128_bit_fma_loop_by_the_core():
    """Eight independent 128-bit FMLAs and a loop branch: LLVM's A57 model (our Cortex-A72 stand-in) issues one
    per cycle (a Q-form FMLA takes both 64-bit FP pipes), the Neoverse-N1 model (Cortex-A76) two, the A53 model
    one every two cycles or worse; disassembly goes through llvm-mc from the instruction words."""
    fmla = [0x4E3FCFC0 | k for k in range(8)]  # fmla v0..v7.4s, v30.4s, v31.4s
    loop = Block(0x1000, (*fmla, 0xF1000400, 0x54FFFEE1), 1.0)  # subs x0, x0, #1; b.ne back
    asm = mca.disassemble([loop])[0]
    assert asm[0].startswith("fmla\tv0.4s") and asm[-1].startswith("b.ne")
    a72, n1, a53 = (mca.block_cycles([loop], cpu)[0] for cpu in ("cortex-a72", "neoverse-n1", "cortex-a53"))
    assert a72 == pytest.approx(8, rel=0.1)
    assert n1 == pytest.approx(4, rel=0.1)
    assert a53 >= 16


@llvm
def test_cycles_weight_blocks_by_executions_and_cover_the_hottest():
    hot = Block(0x1000, (0x4E22CC20, 0xF1000400, 0x54FFFFC1), 1000.0)
    cold = Block(0x2000, (0xD503201F,), 1.0)
    c = mca.cycles({hot.key: hot, cold.key: cold}, "cortex-a72", coverage=0.99)
    assert c.costed_blocks == 1 and c.covered == pytest.approx(3000 / 3001)
    assert c.instructions == 3001
    one = mca.block_cycles([hot], "cortex-a72")[0]
    assert c.cycles == pytest.approx(1000 * one * 3001 / 3000)


@pytest.mark.arm
@emulated
@pytest.mark.background("predict-repeats")
def test_block_counts_repeat_bit_for_bit():
    """The bar: every block's executions between marks repeat exactly across processes, LiteRT and ONNX Runtime,
    around the runtime's call and around edge's run_members (OpenBLAS workers off, the guest reads fixed_clock.c's
    clock; with the host's clock ONNX Runtime moved by up to ~1,900 instructions per inference)."""
    first, second = background.result("predict-repeats")
    for a, b in zip(first["runs"], second["runs"]):
        for span in ("invoke", "inference"):
            x, y = a["spans"][span]["blocks"], b["spans"][span]["blocks"]
            print(f"\n{a['backend']} int8 {span}: {instructions(x):.0f} and {instructions(y):.0f} instructions, "
                  f"{len(x)} blocks")
            assert {k: v.execs for k, v in x.items()} == {k: v.execs for k, v in y.items()}
        assert 5e6 < instructions(a["spans"]["invoke"]["blocks"]) < instructions(a["spans"]["inference"]["blocks"])


@pytest.mark.arm
@emulated
@pytest.mark.background("predict-smoke")
def test_bench_predict_smoke_prints_predicted_rows():
    proc, out = background.result("predict-smoke")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Raspberry Pi 4 (4x Cortex-A72, 1.5 GHz) (predicted" in proc.stdout
    assert "### Predicted on boards" in proc.stdout
    rep = json.loads(out.read_text())
    (row,) = rep["results"]
    assert (row["board"], row["backend"], row["precision"], row["threads"]) == ("rpi4", "tflite", "int8", 1)
    # the demo model (~11 M MACs, 16.9 M instructions): a few ms on a Pi 4; a wrong span would be seconds or ~0
    assert 2.0 < row["ms"] < 40.0 and row["low_ms"] <= row["ms"] <= row["high_ms"]
    assert 0.3 < row["instructions"] / row["cycles"] < 3.0
    from edge import bench

    assert bench.load_report(out) == rep  # merges beside real boards' reports


def test_bench_predict_refuses_unknown_boards_in_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "edge.cli", "bench", str(DEMO_BUNDLE), "--predict", "rpi9"],
                          cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        ("skinedge bench: error: --predict: unknown board rpi9: expected some of rpi4, rpi5, jetson-nano, orin-nano, "
        "rpi-zero2w, rpi3b+")]


def _predicted_report() -> dict:
    from benchmarks.arm_cost.predict import Predicted, report

    row = Predicted("rpi4", BOARDS["rpi4"].title, "demo", "tflite", "int8", 4, "invoke", 5.0, 4.0, 7.5, 200.0, 4.2,
                    0.8, 16.8e6, 10.1e6, 0.995, 9e4, 2e4, 2e4, "cortex-a72", BOARDS["rpi4"].mca_note)
    return report([row], 21.0)


def test_predicted_rows_merge_into_the_real_boards_table(tmp_path):
    from edge import bench

    path = tmp_path / "predicted.json"
    path.write_text(json.dumps(_predicted_report()))
    md = bench.markdown([bench.load_report(path)])
    latency = md.split("### Latency and FPS")[1].split("###")[0]
    row = next(line for line in latency.splitlines() if "predicted" in line)
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[0] == "Raspberry Pi 4 (4x Cortex-A72, 1.5 GHz) (predicted, median error 21 % on published boards)"
    assert cells[1:5] == ["demo", "tflite", "int8", "4"]
    assert cells[5 + 4] == "5.00" and cells[5 + 7] == "200.0"  # p50 ms, bare FPS
    assert "| rpi4 | demo | tflite | int8 | 4 | 5.00 | 4.00–7.50 | 200.0 | 4.20 | 0.80 | 1.66 | cortex-a72 |" in md


def test_malformed_predicted_report_is_refused_in_one_line(tmp_path):
    from edge import bench

    rep = _predicted_report()
    del rep["results"][0]["ms"]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(rep))
    with pytest.raises(bench.BenchError, match=r"bad.json: results\[0\] lacks ms$"):
        bench.load_report(path)


def test_published_comparison_holds_the_bar_and_its_median():
    """results/published.json (python -m benchmarks.arm_cost.published): >= 5 like-for-like real-board figures from
    >= 2 boards, each with its source, and the median error it states is the median of its rows."""
    import statistics

    from benchmarks.arm_cost.predict import RESULTS, published_error

    res = json.loads((RESULTS / "published.json").read_text())
    rows = [r for r in res["rows"] if r["like_for_like"]]
    assert len(rows) >= 5 and len({r["board"] for r in rows}) >= 2
    assert all(r["source"].count("https://") >= 1 and r["ms"] > 0 for r in res["rows"])
    for r in res["rows"]:
        assert r["error_pct"] == pytest.approx(100 * (r["predicted_ms"] - r["ms"]) / r["ms"])
    assert res["median_abs_error_pct"] == pytest.approx(statistics.median(abs(r["error_pct"]) for r in rows))
    assert published_error() == res["median_abs_error_pct"]


def test_bench_predict_refuses_a_missing_bundle_before_emulating(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "edge.cli", "bench", str(tmp_path / "nope"), "--predict", "rpi4"],
                          cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 2
    line = f"skinedge bench: error: --predict: {tmp_path / 'nope'}: no such bundle directory"
    assert proc.stderr.strip().splitlines() == [line]
