"""The bundle: a directory the converter writes and the board runs, described by manifest.yaml.

Every file's sha256 is in the manifest and is checked before anything runs; the bundle's identity (stored
with every capture) is the sha256 of the manifest itself, which covers all artefact hashes. A single model
is a bundle with one member at the root; an ensemble lists several members, each in its own directory,
with weights. The golden self-test that proves a board reproduces the workstation's outputs is
edge/trust/selftest.py.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from edge.trust import bundletree, manifest, safeyaml
from edge.trust.bundletree import MANIFEST, hash_tree, sha256_file  # noqa: F401  (the converter and tests use them)
from edge.trust.manifest import FORMAT  # noqa: F401

if TYPE_CHECKING:
    from edge.trust.signing import Trust

# artefact kind -> file name inside a member directory
ARTEFACT_FILES = {
    "fp32_onnx": "model.fp32.onnx",
    "int8_onnx": "model.int8.onnx",
    "int8_tflite": "model.int8.tflite",
    "fp32_tflite": "model.fp32.tflite",
    "head": "head.npz",
}
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
    tflite_outputs: dict[str, dict[str, int]]  # TFLite artefact kind -> {"logits": i, "features": j} (onnx2tf's order)


@dataclass(frozen=True)
class Bundle:
    root: Path
    manifest: dict
    name: str
    labels: list[str]
    input_size: tuple[int, int]  # (H, W)
    members: list[Member]
    digest: str  # sha256 of manifest.yaml
    signer: str | None = None  # the public key whose signature was checked, if the bundle is signed

    def has(self, kind: str) -> bool:
        """True when every member has this artefact kind."""
        return all(kind in m.files for m in self.members)

    @property
    def weights(self) -> list[float]:
        return [m.weight for m in self.members]


def load_bundle(path: Path | str, verify: bool = True, trust: Trust | None = None,
                check_signature: bool = True) -> Bundle:
    """Check the signature against `trust` (edge.trust.signing) on the raw manifest bytes, then read and
    schema-check manifest.yaml and confine its paths to the bundle; with `verify`, refuse any file whose
    sha256 differs from the manifest and any file the manifest does not hash. A bundle any user could write is
    refused first. `check_signature=False` ignores an existing signature (`skinedge sign` replacing it)."""
    root = Path(path)
    mpath = root / MANIFEST
    if not mpath.is_file():
        raise BundleError(f"{root}: not a bundle (no {MANIFEST})")
    if open_to_all := bundletree.world_writable(root):
        raise BundleError(f"{root}: refused: writable by every user, so anyone on this machine could replace the "
                          f"model: {', '.join(open_to_all[:3])}{' ...' if len(open_to_all) > 3 else ''}; "
                          f"chmod -R o-w {root}")
    try:
        raw = safeyaml.read(mpath)
        signer = None
        if check_signature and (trust is not None or (root / bundletree.SIGNATURE).exists()):
            from edge.trust import signing  # imports `cryptography` only for signed bundles or boards that pin keys

            signer = signing.check(root, raw, trust or signing.Trust())
        man = manifest.check(safeyaml.load(raw))
        members = []
        for i, m in enumerate(man["models"]):
            mdir = bundletree.confine(root, m["dir"])
            files = {k: bundletree.confine(root, f"{m['dir']}/{v}".removeprefix("./")) for k, v in m["artefacts"].items()}
            members.append(Member(name=m["name"], arch=m["arch"], weight=m["weight"], files=files,
                                  features_shape=tuple(m["outputs"]["features"]), num_classes=len(man["labels"]),
                                  tflite_outputs=m.get("tflite_outputs") or {}))
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
        raise BundleError(str(e) if str(e).startswith(str(root)) else f"{mpath}: {e}") from None
    h, w = man["input"]["size"]
    return Bundle(root, man, man["name"], man["labels"], (h, w), members, hashlib.sha256(raw).hexdigest(), signer)
