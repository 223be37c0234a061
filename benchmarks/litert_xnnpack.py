"""Does LiteRT run the int8 artefact on XNNPACK, and would another interpreter setting make it faster?

Side by side in one process, interleaved rounds (this machine is shared), median ms per invoke():
- int8, default op resolver (LiteRT applies its XNNPACK delegate): what edge/backends/tflite.py does;
- int8, `experimental_default_delegate_latest_features=True` (XNNPACK with its newest optional features);
- int8, BUILTIN_WITHOUT_DEFAULT_DELEGATES: LiteRT's own kernels, no XNNPACK;
- fp32 TFLite, default resolver, when the bundle has that artefact.
The CPU's int8 dot-product extensions are printed too: without VNNI (x86) or dotprod (ARMv8.2+), XNNPACK's
int8 kernels widen to 16 bit and run at about the speed of its fp32 kernels.

    python -m benchmarks.litert_xnnpack [BUNDLE] [--threads 1,2] [--runs 20] [--rounds 7]
"""

from __future__ import annotations

import argparse
import re
import statistics
import time
from pathlib import Path

import numpy as np
from ai_edge_litert.interpreter import Interpreter, OpResolverType

from benchmarks._assets import mobilenet_bundle
from edge import bench

VARIANTS = {
    "int8, default (XNNPACK)": ("model.int8.tflite", {}),
    "int8, XNNPACK latest features": ("model.int8.tflite", {"experimental_default_delegate_latest_features": True}),
    "int8, no XNNPACK (LiteRT kernels)": (
        "model.int8.tflite", {"experimental_op_resolver_type": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES}),
    "fp32, default (XNNPACK)": ("model.fp32.tflite", {}),
}


def _dot_product_flags() -> str:
    """The CPU's int8 dot-product extensions, from /proc/cpuinfo."""
    flags = set(re.findall(r"\b(avx512_vnni|avx_vnni|avx512bw|avx2|asimddp|i8mm)\b", Path("/proc/cpuinfo").read_text()))
    return ", ".join(sorted(flags)) or "none of avx2/avx512_vnni/avx_vnni/asimddp/i8mm"


def _interpreter(path: Path, threads: int, options: dict) -> Interpreter:
    interp = Interpreter(model_path=str(path), num_threads=threads, **options)
    interp.allocate_tensors()
    detail = interp.get_input_details()[0]
    x = np.random.default_rng(0).integers(0, 256, detail["shape"]).astype(detail["dtype"])
    interp.set_tensor(detail["index"], x)
    for _ in range(3):  # warm-up
        interp.invoke()
    return interp


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bundle", nargs="?", type=Path, help="default: the benchmarks' MobileNetV2 224 bundle")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--runs", type=int, default=20, help="invokes per configuration per round")
    ap.add_argument("--rounds", type=int, default=7)
    a = ap.parse_args(argv)
    root = a.bundle or mobilenet_bundle()
    configs = {(name, t): _interpreter(root / file, t, options)
               for t in (int(x) for x in a.threads.split(",")) for name, (file, options) in VARIANTS.items()
               if (root / file).is_file()}
    ms = {key: [] for key in configs}
    for _ in range(a.rounds):
        for key, interp in configs.items():
            for _ in range(a.runs):
                t = time.perf_counter()
                interp.invoke()
                ms[key].append((time.perf_counter() - t) * 1e3)
    print(f"\n{root.name}; {bench.board_model()}; CPU int8 extensions: {_dot_product_flags()}; "
          f"median of {a.rounds} x {a.runs} interleaved invokes\n")
    print("\n".join(bench.md_table(["interpreter", "threads", "median ms"],
                                   [[name, str(t), f"{statistics.median(v):.2f}"] for (name, t), v in ms.items()])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
