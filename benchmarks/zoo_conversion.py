"""Conversion time and artefact sizes for every zoo architecture (random init, synthetic calibration data).

    python benchmarks/zoo_conversion.py [--size 64] [--formats fp32_onnx,int8_onnx,int8_tflite]

Sizes do not depend on the input size; times do. Agreement of a random network says little, so it is
not printed here: see the fidelity benchmark for trained models.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from calibration.synthetic import write_imagefolder
from convert.pipeline import Options, convert
from convert.zoo import ARCHS


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--formats", default="fp32_onnx,int8_onnx")
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        calib = write_imagefolder(tmp / "calib", per_class=8, size=a.size, seed=2)
        val = write_imagefolder(tmp / "val", per_class=8, size=a.size, seed=3)
        print("| arch | input | fp32 ONNX MB | int8 ONNX MB | int8 TFLite MB | convert s |\n|---|---|---|---|---|---|")
        for arch in ARCHS:
            t = time.perf_counter()
            rep = convert(Options(arch=arch, random_init=True, calib=calib, val=val, out=tmp / arch, input_size=a.size,
                                  formats=tuple(a.formats.split(",")), progress=False))
            secs = time.perf_counter() - t
            sizes = {}
            for f, b in rep["sizes_bytes"].items():
                kind = Path(f).name
                sizes[kind] = sizes.get(kind, 0) + b
            mb = {k: f"{sizes[k] / 1e6:.2f}" if k in sizes else "-" for k in
                  ("model.fp32.onnx", "model.int8.onnx", "model.int8.tflite")}
            print(f"| {arch} | {a.size} | {mb['model.fp32.onnx']} | {mb['model.int8.onnx']} | {mb['model.int8.tflite']} "
                  f"| {secs:.1f} |", flush=True)


if __name__ == "__main__":
    main()
