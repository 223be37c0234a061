"""fp32 vs int8, side by side in one process: latency, file size and agreement with the float model.

    python -m benchmarks.fp32_vs_int8 [--arch mobilenetv2_msca_pfr,micro_mpoxnet] [--size 224] [--runs 50]
                                      [--repeats 5] [--threads 1,2]

MobileNetV2-MSCA-PFR and MicroMPoxNet, trained on the synthetic set (at 96 px, then fine-tuned at the
benchmark size; cached, see benchmarks/_trained.py) and converted with every artefact. All backends of
all models are loaded at once and timed in interleaved rounds (each round runs every configuration
`--runs` times), so a burst of load on this shared machine hits every configuration alike; the table
quotes the median over all runs. Agreement and accuracy drop come from each bundle's validation on 400
held-out images (report.json).
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
from tqdm import tqdm

from benchmarks import _trained
from edge.backends import artefact_for, open_backend
from edge.bench import board_model, versions
from edge.trust.bundle import load_bundle
from edge.trust.selftest import load_golden

BACKENDS = ("onnx", "tflite")


def _ms(fn, x: np.ndarray, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        fn(x)
        out.append((time.perf_counter() - t) * 1e3)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="mobilenetv2_msca_pfr,micro_mpoxnet")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--runs", type=int, default=50, help="timed inferences per configuration per round")
    p.add_argument("--repeats", type=int, default=5, help="interleaved rounds")
    p.add_argument("--threads", default="1,2")
    a = p.parse_args()
    threads = [int(t) for t in a.threads.split(",")]

    configs, info = {}, {}
    for arch in a.arch.split(","):
        base, _ = _trained.checkpoint(arch, 96)
        ckpt, _ = _trained.checkpoint(arch, a.size, epochs=2, init=base) if a.size != 96 else (base, None)
        root, rep = _trained.bundle(arch, a.size, ckpt)
        bundle = load_bundle(root)
        member = bundle.members[0]
        x = load_golden(bundle)["input"][0]
        info[arch] = {"rows": {r["artefact"]: r for r in rep["validation"]},
                      "mb": {k: f.stat().st_size / 1e6 for k, f in member.files.items()}}
        for kind in BACKENDS:
            for precision in ("fp32", "int8"):
                for t in threads:
                    backend = open_backend(kind, member, bundle.root, t, precision)
                    backend.run(x)  # first inference: allocation, kernel selection
                    configs[arch, kind, precision, t] = (backend, x, [])

    for _ in tqdm(range(a.repeats), desc="rounds"):
        for (backend, x, times) in configs.values():
            times += _ms(backend.run, x, a.runs)

    print(f"\n{board_model()}, {platform.machine()}, {len(threads)} thread setting(s); {a.size}x{a.size}; "
          f"{a.repeats} interleaved rounds x {a.runs} runs per configuration; "
          + ", ".join(f"{k} {v}" for k, v in versions().items()
                      if k in ("onnxruntime", "ai-edge-litert", "tflite-runtime")) + "\n")
    print("| model | backend | threads | fp32 p50 ms | int8 p50 ms | int8 speed-up | fp32 MB | int8 MB | "
          "int8 top-1 agreement | int8 accuracy drop (pts) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for arch in info:
        for kind in BACKENDS:
            art = {precision: artefact_for(kind, precision) for precision in ("fp32", "int8")}
            row = info[arch]["rows"][art["int8"]]
            for t in threads:
                p32 = float(np.median(configs[arch, kind, "fp32", t][2]))
                p8 = float(np.median(configs[arch, kind, "int8", t][2]))
                print(f"| {arch} | {kind} | {t} | {p32:.2f} | {p8:.2f} | {p32 / p8:.2f}x | "
                      f"{info[arch]['mb'][art['fp32']]:.2f} | {info[arch]['mb'][art['int8']]:.2f} | "
                      f"{row['top1_agreement']:.2%} | {row['accuracy_drop'] * 100:+.2f} |")
    print("\nfloat accuracy: " + ", ".join(f"{arch} {i['rows']['float (torch)']['accuracy']:.2%}"
                                          for arch, i in info.items()))


if __name__ == "__main__":
    main()
