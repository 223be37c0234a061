"""Inputs the benchmark scripts share, built once and cached under /tmp (or $SKINEDGE_BENCH_CACHE).

- random-init bundles at 224×224 (speed does not depend on the weights, and nothing is downloaded) of
  torchvision's MobileNetV2 and of the research architectures in convert/zoo, converted by
  `skinedge convert` from synthetic calibration / validation images;
- a 640×480 synthetic clip, the frame size a Pi camera is typically configured for.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("SKINEDGE_BENCH_CACHE", "/tmp/skinedge-bench-cache"))
DEMO_BUNDLE = REPO / "edge" / "demo_assets" / "bundle"
ARCH, SIZE = "mobilenet_v2", 224


def _skinedge(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "edge.cli", *args], check=True, cwd=REPO)


def mobilenet_bundle() -> Path:
    """The cached MobileNetV2 224×224 bundle, built on first use."""
    return zoo_bundle(ARCH)


def zoo_bundle(arch: str) -> Path:
    """The cached random-init 224×224 bundle of `arch` (a zoo or torchvision name), built on first use."""
    out = CACHE / f"{arch}_{SIZE}"
    if (out / "manifest.yaml").is_file():
        return out
    data = CACHE / "synth"
    for split, seed, n in (("calib", 2, 16), ("val", 3, 10)):
        if not (data / split).is_dir():
            _skinedge("synth", "--out", str(data / split), "--per-class", str(n), "--size", str(SIZE),
                      "--seed", str(seed))
    _skinedge("convert", "--arch", arch, "--random-init", "--calib", str(data / "calib"),
              "--val", str(data / "val"), "--input-size", str(SIZE), "--calib-per-class", "16",
              "--out", str(out), "--force")
    return out


def camera_clip() -> Path:
    """A 640×480 synthetic clip (120 frames), written once."""
    from calibration.synthetic import write_clip

    CACHE.mkdir(parents=True, exist_ok=True)
    existing = sorted(CACHE.glob("clip640.*"))
    return existing[0] if existing else write_clip(CACHE / "clip640.mp4", n_frames=120, size=(640, 480))
