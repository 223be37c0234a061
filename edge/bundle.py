"""The bundle: a directory the converter writes and the board runs, described by manifest.yaml.

Every file's sha256 is in the manifest and is checked before anything runs; the bundle's identity (stored
with every capture) is the sha256 of the manifest itself, which covers all artefact hashes. A single model
is a bundle with one member at the root; an ensemble lists several members, each in its own directory,
with weights. golden.npz holds a few inputs and the outputs each artefact gave on the workstation, so the
board can prove its backend reproduces them before the first frame.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge import bundletree, manifest, safeyaml
from edge.bundletree import MANIFEST, hash_tree, sha256_file  # noqa: F401  (the converter and tests use them)
from edge.manifest import FORMAT  # noqa: F401
from edge.npzfile import NpzError, load_npz

GOLDEN = "golden.npz"
# artefact kind -> file name inside a member directory
ARTEFACT_FILES = {
    "fp32_onnx": "model.fp32.onnx",
    "int8_onnx": "model.int8.onnx",
    "int8_tflite": "model.int8.tflite",
    "fp32_tflite": "model.fp32.tflite",
    "head": "head.npz",
}
# The golden self-test: the board's output must give the same top-1 on every golden input and stay within
# this of the workstation's probabilities for the same artefact (int8 kernels round differently on ARM).
GOLDEN_MAX_DPROB = 0.05


class BundleError(RuntimeError):
    """A bundle that must not run: the message names the file and what is wrong."""


@dataclass(frozen=True)
class Member:
    name: str
    arch: str
    weight: float
    files: dict[str, Path]  # artefact kind -> absolute path
    features_shape: tuple[int, ...]  # (1, C, h, w)
    num_classes: int
    tflite_outputs: dict[str, dict[str, int]]  # TFLite artefact kind -> {"logits": i, "features": j}


@dataclass(frozen=True)
class Bundle:
    root: Path
    manifest: dict
    name: str
    labels: list[str]
    input_size: tuple[int, int]  # (H, W)
    members: list[Member]
    digest: str  # sha256 of manifest.yaml

    def has(self, kind: str) -> bool:
        """True when every member has this artefact kind."""
        return all(kind in m.files for m in self.members)

    @property
    def weights(self) -> list[float]:
        return [m.weight for m in self.members]


def _tflite_outputs(raw: dict | None) -> dict[str, dict[str, int]]:
    """Each TFLite artefact's output order (onnx2tf's differs between its models). Bundles written before
    the fp32 TFLite artefact existed hold one flat mapping: the int8 model's."""
    if raw is None:
        return {}
    return {"int8_tflite": raw} if set(raw) == {"logits", "features"} else raw


def load_bundle(path: Path | str, verify: bool = True) -> Bundle:
    """Read and schema-check manifest.yaml, confine its paths to the bundle; with `verify`, refuse any file
    whose sha256 differs from the manifest and any file the manifest does not hash."""
    root = Path(path)
    mpath = root / MANIFEST
    if not mpath.is_file():
        raise BundleError(f"{root}: not a bundle (no {MANIFEST})")
    try:
        raw = safeyaml.read(mpath)
        man = manifest.check(safeyaml.load(raw))
        members = []
        for i, m in enumerate(man["models"]):
            mdir = bundletree.confine(root, m["dir"])
            files = {k: bundletree.confine(root, f"{m['dir']}/{v}".removeprefix("./")) for k, v in m["artefacts"].items()}
            members.append(Member(name=m["name"], arch=m["arch"], weight=m["weight"], files=files,
                                  features_shape=tuple(m["outputs"]["features"]), num_classes=len(man["labels"]),
                                  tflite_outputs=_tflite_outputs(m.get("tflite_outputs"))))
            if not mdir.is_dir():
                raise BundleError(f"{mpath}: models[{i}].dir: {m['dir']} is not a directory of the bundle")
        if verify:
            problems = bundletree.check_hashes(root, man["artefacts"])
            listed = {bundletree.confine(root, rel).resolve() for rel in man["artefacts"]}
            problems += [f"{f.relative_to(root)} is named in the manifest but missing" for m in members
                         for f in m.files.values() if f.resolve() not in listed and not f.exists()]
            if problems:
                more = f"; and {len(problems) - 4} more" if len(problems) > 4 else ""
                raise BundleError(f"{root}: refused: " + "; ".join(problems[:4]) + more)
    except (OSError, ValueError) as e:
        if isinstance(e, BundleError):
            raise
        raise BundleError(f"{mpath}: {e}") from None
    h, w = man["input"]["size"]
    return Bundle(root, man, man["name"], man["labels"], (h, w), members, hashlib.sha256(raw).hexdigest())


def load_golden(bundle: Bundle) -> dict[str, np.ndarray]:
    """golden.npz with shape checks: `input` (N,H,W,3) uint8 and `probs_<artefact>` (N,K) per artefact kind."""
    path = bundle.root / GOLDEN
    try:
        data = load_npz(path)
    except NpzError as e:
        raise BundleError(str(e)) from None
    x = data.get("input")
    h, w = bundle.input_size
    if x is None or x.dtype != np.uint8 or x.ndim != 4 or x.shape[1:] != (h, w, 3):
        found = None if x is None else (x.shape, str(x.dtype))
        raise BundleError(f"{path}: input should be (N, {h}, {w}, 3) uint8, found {found}")
    for key, v in data.items():
        if key.startswith("probs_") and v.shape != (x.shape[0], len(bundle.labels)):
            raise BundleError(f"{path}: {key} should be ({x.shape[0]}, {len(bundle.labels)}), found {v.shape}")
    return data


@dataclass(frozen=True)
class SelfTest:
    artefact: str
    n: int
    top1_equal: int
    max_dprob: float
    max_dprob_vs_float: float

    @property
    def ok(self) -> bool:
        return self.top1_equal == self.n and self.max_dprob <= GOLDEN_MAX_DPROB

    def line(self) -> str:
        verdict = "PASS" if self.ok else "FAIL"
        return (f"{verdict} {self.artefact}: top-1 {self.top1_equal}/{self.n} as on the workstation, "
                f"max |dprob| {self.max_dprob:.4f} (limit {GOLDEN_MAX_DPROB}), vs float model {self.max_dprob_vs_float:.4f}")


def selftest(bundle: Bundle, artefact: str, probs_fn: Callable[[np.ndarray], np.ndarray]) -> SelfTest:
    """Run `probs_fn` (image (H,W,3) uint8 -> probs (K,)) on the golden inputs and compare with the workstation's."""
    golden = load_golden(bundle)
    key = f"probs_{artefact}"
    if key not in golden:
        raise BundleError(f"{bundle.root / GOLDEN}: no reference outputs for {artefact}")
    got = np.stack([probs_fn(img) for img in golden["input"]])
    ref = golden[key]
    return SelfTest(
        artefact=artefact,
        n=len(ref),
        top1_equal=int((got.argmax(1) == ref.argmax(1)).sum()),
        max_dprob=float(np.abs(got - ref).max()),
        max_dprob_vs_float=float(np.abs(got - golden["probs_float"]).max()) if "probs_float" in golden else float("nan"),
    )


