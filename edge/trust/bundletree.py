"""The bundle's files: confined to its directory, and every one of them hashed in the manifest.

A manifest path such as `../../outside/x.onnx`, or a symlink inside the bundle pointing elsewhere, would
let a bundle run a file its hashes and signature never covered. So every path must resolve inside the
bundle, no symlink may leave it, and the set of files on disk must equal the set the manifest hashes
(apart from the manifest itself and its signature): an unlisted file is refused as firmly as a missing one.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

MANIFEST = "manifest.yaml"
SIGNATURE = "signature"
UNHASHED = (MANIFEST, SIGNATURE)


class TreeError(ValueError):
    """One line naming the bundle-relative path at fault."""


def sha256_file(path: Path | str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def confine(root: Path, rel: str) -> Path:
    """root/rel, refusing a path that resolves (through symlinks too) outside the bundle."""
    path = root / rel
    real_root = root.resolve()
    if not path.resolve().is_relative_to(real_root):
        raise TreeError(f"{rel} leads outside the bundle (to {path.resolve()})")
    return path


def files(root: Path) -> list[str]:
    """Bundle-relative POSIX paths of every file, symlinks not followed; TreeError for a symlink leaving it."""
    root = Path(root)
    real_root = root.resolve()
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            if path.is_symlink() and not path.resolve().is_relative_to(real_root):
                raise TreeError(f"{rel} is a symlink leaving the bundle (to {path.resolve()})")
            if name in filenames and not (path.is_file() or path.is_symlink()):  # hashing a FIFO would block
                raise TreeError(f"{rel} is a FIFO, socket or device, not a file of a bundle")
            if name in filenames and rel not in UNHASHED:
                out.append(rel)
    return sorted(out)


def world_writable(root: Path) -> list[str]:
    """'rel (mode 0777)' for the bundle directory and every directory and file in it that any user may write (as
    sshd's StrictModes refuses such a home): whoever can write there can swap the model. Symlinks are skipped
    (their own mode means nothing; where they lead is confined elsewhere)."""
    root = Path(root)
    found = []
    for path in [root, *(Path(d) / n for d, dirs, fs in os.walk(root) for n in dirs + fs)]:
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if not stat.S_ISLNK(st.st_mode) and st.st_mode & stat.S_IWOTH:
            rel = "." if path == root else path.relative_to(root).as_posix()
            found.append(f"{rel} (mode {stat.S_IMODE(st.st_mode):04o})")
    return found


def hash_tree(root: Path) -> dict[str, str]:
    """sha256 of every file of the bundle except the manifest and its signature, keyed by relative path."""
    return {rel: sha256_file(Path(root) / rel) for rel in files(root)}


def check_hashes(root: Path, hashes: dict[str, str]) -> list[str]:
    """Problems (one phrase each): a listed file missing or changed, a file present but not listed."""
    present = set(files(root))
    problems = [f"{rel} is in the bundle but has no hash in the manifest" for rel in sorted(present - set(hashes))]
    for rel, want in hashes.items():
        if rel not in present:
            problems.append(f"{rel} is missing")
        elif sha256_file(confine(root, rel)) != want:
            problems.append(f"{rel} does not match its sha256 (corrupt or tampered)")
    return problems
