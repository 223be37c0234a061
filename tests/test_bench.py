"""`skinedge bench` for real: child processes running LiteRT and ONNX Runtime on the demo bundle and the
pipeline on the demo clip. Checks the report's structure and that its figures are positive and mutually
consistent — never how fast anything is (the machine is shared)."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from convert.golden import stamp
from edge import bench
from edge.trust.bundle import ARTEFACT_FILES, hash_tree

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "edge" / "demo_assets" / "bundle"
FRAMES = 20


def _skinedge(*args: str, prelude: str = "pass") -> subprocess.CompletedProcess:
    """The CLI in a fresh interpreter; `prelude` runs first (e.g. to make an import fail)."""
    code = f"import sys; {prelude}; from edge.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *args], check=False, capture_output=True, text=True,
                          timeout=600, cwd=REPO)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    """One bench run: LiteRT + ONNX Runtime, int8 + fp32, Grad-CAM on, JSON + Markdown + plot written."""
    out = tmp_path_factory.mktemp("bench")
    proc = _skinedge("bench", str(DEMO), "--backend", "tflite,onnx", "--precision", "int8,fp32",
                     "--threads", "1", "--frames", str(FRAMES), "--warmup", "2", "--gradcam", "--fidelity",
                     "--json", str(out / "r.json"), "--md", str(out / "r.md"), "--plot", str(out / "r.png"))
    assert proc.returncode == 0, proc.stderr
    return {"dir": out, "proc": proc, "report": json.loads((out / "r.json").read_text())}


def _results(report: dict) -> dict[tuple[str, str], dict]:
    return {(r["backend"], r["precision"]): r for r in report["results"]}


def test_report_structure(run):
    rep = run["report"]
    assert rep["schema"] == bench.SCHEMA
    assert rep["board"] and rep["cpus"] >= 1 and rep["machine"]
    assert {"python", "numpy", "onnxruntime", "ai-edge-litert"} <= set(rep["versions"])
    assert set(rep["thermal_start"]) == {"cpu_temp_c", "thermal_zone", "cpu_freq_mhz", "throttled"}
    assert set(_results(rep)) == {(k, p) for k in ("tflite", "onnx") for p in ("int8", "fp32")}
    assert rep["skipped"] == []
    for (kind, precision), r in _results(rep).items():
        assert r["artefact"] == f"{precision}_{kind}"
        assert r["runtime"].startswith("ai_edge_litert" if kind == "tflite" else "onnxruntime")
        assert r["model_bytes"] == (DEMO / ARTEFACT_FILES[r["artefact"]]).stat().st_size
        assert r["frames"] == FRAMES and r["threads"] == 1 and r["input_size"] == [128, 128]
        assert [m["name"] for m in r["members"]] == ["micro_mpoxnet"]


def _ordered(lat: dict) -> None:
    assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    assert lat["min"] <= lat["mean"] <= lat["max"]


def test_figures_positive_and_consistent(run):
    for (_, precision), r in _results(run["report"]).items():
        _ordered(r["latency_ms"])
        _ordered(r["members"][0]["latency_ms"])
        assert r["load_s"] > 0 and r["first_inference_ms"] > 0
        # the wall clock of the bare loop covers every timed call, so FPS cannot beat 1 / mean latency
        assert 0 < r["bare_fps"] <= 1e3 / r["latency_ms"]["mean"] * 1.0001
        assert r["peak_rss_mb"] >= r["peak_rss_bare_mb"] > 0
        pipe = r["pipeline"]
        if precision == "fp32":  # device configs open the int8 artefact: no pipeline run at fp32
            assert pipe is None
            continue
        assert pipe["gradcam"] and pipe["frames"] == FRAMES - 1 and pipe["fps"] > 0
        _ordered(pipe["frame_ms"])
        assert pipe["fps"] == pytest.approx(1e3 / pipe["frame_ms"]["mean"])
        assert set(pipe["stage_ms"]) == {"preprocess", "infer", "gradcam", "gates", "render", "display",
                                         "wait_camera", "wait_display"}
        assert all(v >= 0 for v in pipe["stage_ms"].values())
        assert all(pipe["stage_ms"][s] > 0 for s in ("preprocess", "infer", "gradcam", "gates", "render"))
        assert pipe["stage_ms"]["gates"] < pipe["stage_ms"]["infer"]  # the gates cost far less than the model
        assert pipe["decode_ms"] > 0 and pipe["dropped"] == 0  # a file source waits for the loop: no drops


def test_int8_speedup_is_fp32_over_int8(run):
    rep = run["report"]
    r = _results(rep)
    assert sorted((s["backend"], s["threads"]) for s in rep["int8_speedup"]) == [("onnx", 1), ("tflite", 1)]
    for s in rep["int8_speedup"]:
        p50 = {precision: r[s["backend"], precision]["latency_ms"]["p50"] for precision in ("int8", "fp32")}
        assert s["speedup"] == pytest.approx(p50["fp32"] / p50["int8"])
    assert "### int8 vs fp32" in (run["dir"] / "r.md").read_text()


def test_json_round_trip_and_outputs_written(run):
    path = run["dir"] / "r.json"
    rep = bench.load_report(path)
    assert json.loads(json.dumps(rep)) == rep == run["report"]
    md = (run["dir"] / "r.md").read_text()
    assert md == bench.markdown([rep])  # the file is the table of the JSON, nothing lost
    assert md.strip() in run["proc"].stdout
    # rows: 4 configurations, 2 int8 pipelines, 2 int8-vs-fp32 pairs (LiteRT, ONNX Runtime)
    assert md.count(f"| {rep['board']} | demo-micro_mpoxnet-synthetic |") == 4 + 2 + 2
    img = cv2.imread(str(run["dir"] / "r.png"))
    assert img is not None and img.shape[0] > 100 and img.std() > 0
    assert f"plot written to {run['dir'] / 'r.png'}" in run["proc"].stdout


def test_fidelity_columns_come_from_the_bundle_validation(run):
    validation = yaml.safe_load((DEMO / "manifest.yaml").read_text())["validation"]
    header, _, *rows = (run["dir"] / "r.md").read_text().split("### Pipeline stages")[0].strip().splitlines()[2:]
    cols = [c.strip() for c in header.strip("|").split("|")]
    assert cols[5:8] == ["size MB", "agreement", "accuracy"]  # format, size, fidelity, then speed: one table
    for r in run["report"]["results"]:
        want = validation[r["artefact"]]
        assert r["fidelity"] == {"top1_agreement": want["top1_agreement"], "accuracy": want["accuracy"]}
        row = next(c for c in ([x.strip() for x in line.strip("|").split("|")] for line in rows)
                   if c[2:4] == [r["backend"], r["precision"]])
        assert row[6:8] == [f"{want['top1_agreement']:.2%}", f"{want['accuracy']:.2%}"]


def test_a_busy_machine_is_called_busy_with_its_load_average(run):
    """The report keeps the load averages; a configuration whose p50 is more than BUSY_RATIO times its own minimum
    (issue 23: p50 39.7 ms against a minimum of 1.6 ms) is flagged on stderr and in the Markdown."""
    import copy

    rep = run["report"]
    assert all(len(rep[k]) == 3 and min(rep[k]) >= 0 for k in ("load_start", "load_end"))
    flagged = [r for r in rep["results"] if r["latency_ms"]["p50"] > bench.BUSY_RATIO * r["latency_ms"]["min"]]
    assert len(bench.busy_warnings(rep)) == len(flagged)  # whatever this machine's load was during the run
    assert run["proc"].stderr.count("the machine was busy") == len(flagged)
    busy = copy.deepcopy(rep)
    busy["results"][0]["latency_ms"].update(min=1.6, p50=39.7)
    (line,) = [w for w in bench.busy_warnings(busy) if "p50 39.70 ms" in w]
    load = " ".join(f"{x:.2f}" for x in rep["load_start"])
    assert "is 24.8x its minimum 1.60 ms: the machine was busy (load average start " + load in line
    assert f"- {line}" in bench.markdown([busy])


def test_merge_two_boards(run, tmp_path):
    other = dict(run["report"], board="Raspberry Pi 5 Model B Rev 1.0")
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    shutil.copy(run["dir"] / "r.json", a)
    b.write_text(json.dumps(other))
    proc = _skinedge("bench", "--merge", str(a), str(b), "--md", str(tmp_path / "m.md"))
    assert proc.returncode == 0, proc.stderr
    md = (tmp_path / "m.md").read_text()
    latency = md.split("### Pipeline stages")[0]
    for board in (run["report"]["board"], "Raspberry Pi 5 Model B Rev 1.0"):
        assert latency.count(f"| {board} | demo-micro_mpoxnet-synthetic |") == 4
        assert f"| {board} | {run['report']['machine']} |" in md.split("### Boards")[1]
    speedups = md.split("### int8 vs fp32")[1]
    assert speedups.count(" | onnx | 1 | ") == speedups.count(" | tflite | 1 | ") == 2


def test_merge_with_emulated_instruction_counts(run, tmp_path):
    """A real board's report beside the committed emulated Cortex-A72 counts (benchmarks/arm_cost): one table row
    per emulated configuration, marked as instructions, carrying the real p50 of the same configuration."""
    emulated = REPO / "benchmarks" / "arm_cost" / "results" / "bench-cortex-a72.json"
    proc = _skinedge("bench", "--merge", str(run["dir"] / "r.json"), str(emulated), "--plot", str(tmp_path / "p.png"))
    assert proc.returncode == 0, proc.stderr
    table = proc.stdout.split("### Emulated ARM cores: instructions counted under qemu")[1].split("### Boards")[0]
    counts = {(r["backend"], r["precision"]): r for r in json.loads(emulated.read_text())["results"]
              if r["bundle"] == run["report"]["results"][0]["bundle"]}
    for (kind, precision), r in _results(run["report"]).items():
        row = next(line for line in table.splitlines()
                   if f"| demo-micro_mpoxnet-synthetic | {kind} | {precision} | 1 |" in line)
        assert f"| {counts[kind, precision]['inference']['total'] / 1e6:.2f} |" in row
        assert f"{run['report']['board']} t1: {r['latency_ms']['p50']:.1f}" in row
    assert (tmp_path / "p.png").exists() or "no plot" in proc.stdout  # the emulated report adds no bars


def test_no_matplotlib_no_plot(run, tmp_path):
    proc = _skinedge("bench", "--merge", str(run["dir"] / "r.json"), "--plot", str(tmp_path / "p.png"),
                     prelude="sys.modules['matplotlib'] = None")  # makes `import matplotlib` fail
    assert proc.returncode == 0, proc.stderr
    assert "no plot: matplotlib is not installed" in proc.stdout
    assert not (tmp_path / "p.png").exists()


def _ensemble_of_demo(root: Path) -> Path:
    """A two-member ensemble bundle whose members are both the demo model, weights 0.5 / 0.5: its
    probabilities and maps are the demo model's, so the demo golden file is its golden file too."""
    man = yaml.safe_load((DEMO / "manifest.yaml").read_text())
    man.pop("gates")  # the demo's OOD gate is fitted to one member: the pair runs with the OOD gate off
    (single,) = man["models"]
    root.mkdir()
    models = []
    for i, name in enumerate(("left", "right")):
        mdir = root / "members" / f"{i}_{name}"
        mdir.mkdir(parents=True)
        for f in single["artefacts"].values():
            shutil.copy(DEMO / f, mdir / f)
        models.append({**copy.deepcopy(single), "name": name, "dir": f"members/{i}_{name}", "weight": 0.5})
    golden = dict(np.load(DEMO / "golden.npz"))  # the same reference, with each member's logits
    np.savez(root / "golden.npz", **{k: np.repeat(v, 2, axis=1) if k.startswith("logits_") else v
                                     for k, v in golden.items()})
    man.update(name="demo-pair", models=models, ensemble={"weights": [0.5, 0.5]}, artefacts=hash_tree(root))
    (root / "manifest.yaml").write_text(yaml.safe_dump(man, sort_keys=False))
    stamp(root)  # a new meaning (name, members, weights, no gate): recorded in golden.npz as the converter would
    return root


def test_ensemble_reports_each_member(tmp_path):
    bundle = _ensemble_of_demo(tmp_path / "pair")
    proc = _skinedge("bench", str(bundle), "--backend", "onnx", "--frames", "10", "--warmup", "1",
                     "--json", str(tmp_path / "e.json"))
    assert proc.returncode == 0, proc.stderr
    (r,) = json.loads((tmp_path / "e.json").read_text())["results"]
    assert [(m["name"], m["weight"]) for m in r["members"]] == [("left", 0.5), ("right", 0.5)]
    assert r["model_bytes"] == 2 * (DEMO / "model.int8.onnx").stat().st_size
    for m in r["members"]:
        _ordered(m["latency_ms"])
        # each frame's total covers both members, so every order statistic of the total is larger
        assert all(m["latency_ms"][k] <= r["latency_ms"][k] for k in ("min", "p50", "max"))
    assert "### Ensemble members" in proc.stdout and "| **total** |" in proc.stdout


def _tampered(tmp_path: Path) -> Path:
    copy = shutil.copytree(DEMO, tmp_path / "tampered")
    data = bytearray((copy / "model.int8.tflite").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / "model.int8.tflite").write_bytes(bytes(data))
    return copy


def _without_fp32_tflite(tmp_path: Path) -> Path:
    """The demo bundle as written before the converter kept a float32 TFLite model."""
    copy = shutil.copytree(DEMO, tmp_path / "int8-tflite-only")
    (copy / "model.fp32.tflite").unlink()
    man = yaml.safe_load((copy / "manifest.yaml").read_text())
    del man["models"][0]["artefacts"]["fp32_tflite"]
    man["models"][0]["tflite_outputs"] = man["models"][0]["tflite_outputs"]["int8_tflite"]
    man["artefacts"] = hash_tree(copy)
    (copy / "manifest.yaml").write_text(yaml.safe_dump(man, sort_keys=False))
    return copy


def _not_report(tmp_path: Path) -> Path:
    (tmp_path / "other.json").write_text(json.dumps({"schema": "something-else", "results": []}))
    return tmp_path / "other.json"


def _not_json(tmp_path: Path) -> Path:
    (tmp_path / "notes.json").write_text("board: pi4\n")
    return tmp_path / "notes.json"


def _bad_result(tmp_path: Path) -> Path:
    cut = {"schema": bench.SCHEMA, "board": "x", "results": [{"bundle": "b"}]}
    (tmp_path / "cut.json").write_text(json.dumps(cut))
    return tmp_path / "cut.json"


def _bad_emulated(tmp_path: Path) -> Path:
    cut = {"schema": "skinedge-armcost/1", "board": "emulated x", "results": [{"bundle": "b", "backend": "onnx",
                                                                              "precision": "int8", "threads": 1}]}
    (tmp_path / "cut.json").write_text(json.dumps(cut))
    return tmp_path / "cut.json"


@pytest.mark.parametrize("args, expect", [
    (lambda t: [str(t / "nowhere")], "no such bundle directory"),
    (lambda t: [str(_tampered(t))], "model.int8.tflite does not match its sha256"),
    (lambda t: [str(DEMO), "--backend", "tflite,coreml"], "unknown backend coreml"),
    (lambda t: [str(DEMO), "--precision", "int4"], "unknown precision int4"),
    (lambda t: [str(DEMO), "--threads", "1,two"], "--threads takes comma-separated integers"),
    (lambda t: [str(DEMO), "--frames", "1"], "need --frames >= 2"),
    (lambda t: [str(DEMO), "--source", str(t / "missing.mp4")], "missing.mp4 not found"),
    (lambda t: [str(_without_fp32_tflite(t)), "--backend", "tflite", "--precision", "fp32"],
     "nothing to run: tflite fp32: the bundle has no fp32_tflite artefact"),
    (lambda t: ["--merge", str(_not_report(t))], "not a skinedge-bench/2 report (schema: 'something-else')"),
    (lambda t: ["--merge", str(_not_json(t))], "not JSON"),
    (lambda t: ["--merge", str(_bad_result(t))], "results[0] lacks backend"),
    (lambda t: ["--merge", str(_bad_emulated(t))], "results[0] lacks inference"),
    (lambda t: ["--merge", str(t / "absent.json")], "absent.json: cannot read it"),
    (lambda t: [], "give one or more bundles"),
])
def test_bad_input_is_one_clear_line(tmp_path, args, expect):
    proc = _skinedge("bench", *args(tmp_path))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("skinedge bench: error: ") and expect in lines[0], lines[0]


def test_backend_without_runtime_is_an_error_row(tmp_path):
    """TensorRT is a known backend but not installed here: the run reports it and exits 1."""
    proc = _skinedge("bench", str(DEMO), "--backend", "tensorrt", "--frames", "2", "--warmup", "0",
                     "--json", str(tmp_path / "t.json"))
    assert proc.returncode == 1
    (r,) = json.loads((tmp_path / "t.json").read_text())["results"]
    assert r["backend"] == "tensorrt" and "tensorrt" in r["error"].lower()
    assert "**error**" in proc.stdout


def test_percentiles_are_numpy_percentiles():
    ms = list(np.random.default_rng(0).exponential(5.0, 200))
    p = bench.percentiles(ms)
    assert p["p90"] == pytest.approx(np.percentile(ms, 90)) and p["min"] == min(ms) and p["max"] == max(ms)
