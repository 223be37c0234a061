"""How far this CPU's kernels drift from the runtimes' reference kernels, per artefact, on many images.

The self-test tolerances (convert/golden.py) are measured on the 24 golden images only; this runs the same
comparison on a whole synthetic validation set to show what those 24 miss: max |dprob| (and p99), the
largest centred-logit error, the per-class median shift over the worst of 200 random 24-image sets (12
borderline + 12 others, as golden.npz is built), Grad-CAM correlation and top-1 flips. Run it on x86 and
under ../shared/tools/aarch64-python.sh to compare CPUs.

    python -m benchmarks.golden_drift edge/demo_assets/bundle [--per-class 50] [--size 128]
"""

from __future__ import annotations

import argparse
import platform
import tempfile
from pathlib import Path

import numpy as np

from calibration.dataset import load_batch, sample_per_class, scan
from calibration.synthetic import write_imagefolder
from convert.golden import RUNNERS, cpu, run
from edge.classify import Classifier
from edge.trust.bundle import load_bundle
from edge.trust.selftest import Outputs, compare


def worst_subset_shift(board: Outputs, ref: Outputs, trials: int = 200) -> float:
    srt = np.sort(ref.probs, 1)
    border = np.argsort(srt[:, -1] - srt[:, -2])[:12]
    rng = np.random.default_rng(0)
    worst = 0.0
    for _ in range(trials):
        s = np.concatenate([border, rng.choice(len(ref.probs), 12, replace=False)])
        worst = max(worst, compare(Outputs(board.probs[s], board.logits[s], board.cams[s]),
                                   Outputs(ref.probs[s], ref.logits[s], ref.cams[s])).logit_shift)
    return worst


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("bundle", type=Path)
    p.add_argument("--per-class", type=int, default=50)
    p.add_argument("--size", type=int, default=None, help="default: the bundle's input size")
    p.add_argument("--artefacts", default=",".join(RUNNERS))
    a = p.parse_args(argv)
    bundle = load_bundle(a.bundle)
    size = a.size or bundle.input_size[0]
    with tempfile.TemporaryDirectory() as tmp:
        images = load_batch(sample_per_class(scan(write_imagefolder(Path(tmp) / "val", per_class=a.per_class,
                                                                    size=size, seed=13)), None, seed=1),
                            bundle.input_size).images
    print(f"{platform.machine()} {cpu()}; {len(images)} synthetic validation images")
    for artefact in a.artefacts.split(","):
        kind, precision = RUNNERS[artefact]
        ref = run(Classifier(bundle, kind, precision=precision, reference=True), images)
        board = run(Classifier(bundle, kind, precision=precision, fused=True), images, ref.probs.argmax(1))
        d = compare(board, ref)
        dp = np.abs(board.probs - ref.probs).max(1)
        dl = np.abs((board.logits - board.logits.mean(-1, keepdims=True))
                    - (ref.logits - ref.logits.mean(-1, keepdims=True))).max()
        flips = int((board.probs.argmax(1) != ref.probs.argmax(1)).sum())
        print(f"{artefact}: max |dprob| {d.max_dprob:.4f} (p99 {np.quantile(dp, 0.99):.4f}), max centred-logit "
              f"error {dl:.3f}, median class shift {d.logit_shift:.4f} (worst 24-image set "
              f"{worst_subset_shift(board, ref):.4f}), CAM corr min {d.cam_min:.4f} median {d.cam_median:.4f}, "
              f"top-1 flips {flips}")


if __name__ == "__main__":
    main()
