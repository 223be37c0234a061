"""Regenerate the shipped demo: `python -m convert.demo_bundle` rewrites edge/demo_assets/{bundle,clip.mp4}.

The demo bundle is MicroMPoxNet trained for a few minutes on the synthetic lesion set (it knows nothing
about real skin), converted to every format; the clip is synthetic lesion footage. Deterministic seeds,
so a rerun gives the same data; weights differ only by floating-point non-determinism.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import torch

from calibration.synthetic import write_clip, write_imagefolder
from convert.golden import refresh
from convert.pipeline import Options, convert
from convert.train import main as train_main

ASSETS = Path(__file__).resolve().parent.parent / "edge" / "demo_assets"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m convert.demo_bundle", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=ASSETS)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--checkpoint", type=Path, help="convert these trained weights instead of training again "
                   "(re-converting the shipped model with a newer recipe keeps what the demo has learnt)")
    p.add_argument("--golden-only", action="store_true", help="keep the shipped bundle's artefacts; re-measure only its "
                   "golden.npz, self-test tolerances and meaning digest (convert.golden.refresh) on the same validation "
                   "set")
    a = p.parse_args(argv)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        val = write_imagefolder(tmp / "val", per_class=50, size=a.size, seed=13)
        if a.golden_only:
            refresh(a.out / "bundle", val)
            print(f"golden self-test data of {a.out / 'bundle'} re-measured")
            return 0
        calib = write_imagefolder(tmp / "calib", per_class=100, size=a.size, seed=12)  # 32 quantise, 100 fit the gate
        ckpt = a.checkpoint or tmp / "micro.pth"
        if a.checkpoint is None:
            train = write_imagefolder(tmp / "train", per_class=150, size=a.size, seed=11)
            train_main(["--arch", "micro_mpoxnet", "--data", str(train), "--val", str(val), "--size", str(a.size),
                        "--epochs", str(a.epochs), "--out", str(ckpt)])
        a.out.mkdir(parents=True, exist_ok=True)
        convert(Options(arch="micro_mpoxnet", checkpoint=ckpt, calib=calib, val=val, out=tmp / "bundle",
                        input_size=a.size, name="demo-micro_mpoxnet-synthetic"))
        shutil.rmtree(a.out / "bundle", ignore_errors=True)
        shutil.copytree(tmp / "bundle", a.out / "bundle")
    write_clip(a.out / "clip.mp4", n_frames=48, size=(320, 240), fps=12, seed=7)
    print(f"demo assets written to {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
