"""int8 fidelity of every zoo model trained on the synthetic set: the table of issue 3.

    python -m benchmarks.zoo_fidelity [--size 96] [--arch micro_mpoxnet,mobilenetv2_tl,...]

Each architecture is trained on 1,200 synthetic images (cached; see benchmarks/_trained.py), converted with
the default calibration (min-max on bias-corrected weights), and every artefact is
run through the board's own code on 400 held-out images. The
bars: top-1 agreement with the float model >= 99 % and accuracy drop <= 1 point, for int8 ONNX and int8
TFLite. Each bundle's MODEL_CARD.md holds the full table; this prints one line per model.
"""

from __future__ import annotations

import argparse
import time

from benchmarks import _trained
from convert.pipeline import TENSORRT_FORM
from convert.validate import MAX_ACCURACY_DROP, MIN_AGREEMENT
from convert.zoo import ARCHS

ARTEFACTS = ("int8_onnx", "int8_tflite", TENSORRT_FORM, "fp32_tflite")


def _cell(rows: dict, artefact: str) -> str:
    r = rows.get(artefact)
    if r is None:
        return "-"
    return f"{r['top1_agreement']:.2%} / {r['accuracy_drop'] * 100:+.2f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=96, help="training and model input size")
    p.add_argument("--arch", default=",".join(ARCHS), help="comma-separated zoo architectures")
    a = p.parse_args()
    head = ["arch", "float acc", *(f"{x}: agreement / acc. drop (pts)" for x in ARTEFACTS),
            "int8 ONNX / TFLite where float ≥ 50 %", "calibration", "bars met", "warnings"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for arch in a.arch.split(","):
        t = time.perf_counter()
        ckpt, acc = _trained.checkpoint(arch, a.size)
        _, rep = _trained.bundle(arch, a.size, ckpt)
        rows = {r["artefact"]: r for r in rep["validation"]}
        cal = rep["calibration"]
        ok = all(rows[x]["top1_agreement"] >= MIN_AGREEMENT and rows[x]["accuracy_drop"] <= MAX_ACCURACY_DROP
                 for x in ("int8_onnx", "int8_tflite"))  # issue 3's bars
        sure = " / ".join(f"{rows[x]['agreement_sure']:.2%}" for x in ("int8_onnx", "int8_tflite"))
        lines.append(f"| {arch} | {rows['float (torch)']['accuracy']:.2%} | "
                     + " | ".join(_cell(rows, x) for x in ARTEFACTS)
                     + f" | {sure} | {cal['method']} | {'yes' if ok else 'NO'} | {len(rep['warnings'])} |")
        print(f"{arch}: {time.perf_counter() - t:.0f} s (val accuracy of the checkpoint {acc:.2%})", flush=True)
    print(f"\n{a.size}x{a.size}, {rep['validation_images']} held-out images per model; bundles and MODEL_CARD.md "
          f"under {_trained.ROOT / 'bundles'}\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
