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
import yaml

MANIFEST = "manifest.yaml"
GOLDEN = "golden.npz"
FORMAT = "skinedge-bundle/1"
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


def sha256_file(path: Path | str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _need(d: dict, key: str, kind: type | tuple, where: str, path: Path):
    if not isinstance(d, dict) or key not in d:
        raise BundleError(f"{path}: missing key {where}{key}")
    if not isinstance(d[key], kind):
        raise BundleError(f"{path}: {where}{key} should be {kind}, found {d[key]!r}")
    return d[key]


def _tflite_outputs(raw: object, where: str, path: Path) -> dict[str, dict[str, int]]:
    """Each TFLite artefact's output order (onnx2tf's differs between its models). Bundles written before
    the fp32 TFLite artefact existed hold one flat mapping: the int8 model's."""
    if raw is None:
        return {}
    if isinstance(raw, dict) and set(raw) == {"logits", "features"}:
        raw = {"int8_tflite": raw}
    ok = isinstance(raw, dict) and all(
        k.endswith("_tflite") and isinstance(v, dict) and set(v) == {"logits", "features"}
        and all(isinstance(i, int) for i in v.values()) for k, v in raw.items())
    if not ok:
        raise BundleError(f"{path}: {where}tflite_outputs should map each TFLite artefact to "
                          f"{{logits: i, features: j}}, found {raw!r}")
    return raw


def load_bundle(path: Path | str, verify: bool = True) -> Bundle:
    """Read and check manifest.yaml; with `verify`, refuse any file whose sha256 differs from the manifest."""
    root = Path(path)
    mpath = root / MANIFEST
    if not mpath.is_file():
        raise BundleError(f"{root}: not a bundle (no {MANIFEST})")
    raw = mpath.read_bytes()
    try:
        man = yaml.safe_load(raw)
    except yaml.YAMLError as e:
        raise BundleError(f"{mpath}: malformed YAML: {e}") from e
    if not isinstance(man, dict) or man.get("format") != FORMAT:
        raise BundleError(f"{mpath}: format should be {FORMAT!r}, found {man.get('format') if isinstance(man, dict) else man!r}")
    labels = _need(man, "labels", list, "", mpath)
    size = _need(_need(man, "input", dict, "", mpath), "size", list, "input.", mpath)
    hashes = _need(man, "artefacts", dict, "", mpath)
    members = []
    for i, m in enumerate(_need(man, "models", list, "", mpath)):
        where = f"models[{i}]."
        mdir = root / _need(m, "dir", str, where, mpath)
        files = {k: mdir / v for k, v in _need(m, "artefacts", dict, where, mpath).items()}
        for kind in files:
            if kind not in ARTEFACT_FILES:
                raise BundleError(f"{mpath}: {where}artefacts.{kind} is not a known artefact kind {sorted(ARTEFACT_FILES)}")
        if "head" not in files:
            raise BundleError(f"{mpath}: {where}artefacts has no head")
        outputs = _need(m, "outputs", dict, where, mpath)
        logits = _need(outputs, "logits", list, where + "outputs.", mpath)
        if logits[-1] != len(labels):
            raise BundleError(f"{mpath}: {where}outputs.logits has {logits[-1]} classes but there are {len(labels)} labels")
        members.append(
            Member(
                name=_need(m, "name", str, where, mpath),
                arch=_need(m, "arch", str, where, mpath),
                weight=float(_need(m, "weight", (int, float), where, mpath)),
                files=files,
                features_shape=tuple(_need(outputs, "features", list, where + "outputs.", mpath)),
                num_classes=len(labels),
                tflite_outputs=_tflite_outputs(m.get("tflite_outputs"), where, mpath),
            )
        )
    if not members:
        raise BundleError(f"{mpath}: models is empty")
    bundle = Bundle(root, man, str(man.get("name", root.name)), [str(x) for x in labels],
                    (int(size[0]), int(size[1])), members, hashlib.sha256(raw).hexdigest())
    if verify:
        verify_hashes(bundle, hashes)
    return bundle


def verify_hashes(bundle: Bundle, hashes: dict[str, str]) -> None:
    """Every listed file exists and matches; every member artefact is listed. Raises BundleError naming the files."""
    listed = {(bundle.root / rel).resolve() for rel in hashes}
    problems = []
    for m in bundle.members:
        for fpath in m.files.values():
            if fpath.resolve() not in listed:
                problems.append(f"{fpath.relative_to(bundle.root)} has no hash in the manifest")
    for rel, want in hashes.items():
        fpath = bundle.root / rel
        if not fpath.is_file():
            problems.append(f"{rel} is missing")
        elif sha256_file(fpath) != want:
            problems.append(f"{rel} does not match its sha256 (corrupt or tampered)")
    if problems:
        raise BundleError(f"{bundle.root}: refused: " + "; ".join(problems))


def load_golden(bundle: Bundle) -> dict[str, np.ndarray]:
    """golden.npz with shape checks: `input` (N,H,W,3) uint8 and `probs_<artefact>` (N,K) per artefact kind."""
    path = bundle.root / GOLDEN
    try:
        data = dict(np.load(path, allow_pickle=False))
    except (OSError, ValueError) as e:
        raise BundleError(f"{path}: unreadable golden file: {e}") from e
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


def hash_tree(root: Path) -> dict[str, str]:
    """sha256 of every file under `root` except the manifest, keyed by POSIX relative path."""
    return {
        p.relative_to(root).as_posix(): sha256_file(p)
        for p in sorted(Path(root).rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }
