"""Image sets for calibration and validation (workstation side).

A tree of class sub-folders, as torchvision's ImageFolder reads it, or a flat folder of unlabelled images
(what a clinic camera gives: calibration needs no labels, validation then measures agreement only). Real collections are messy: phone
JPEGs stored sideways with an EXIF orientation tag, grayscale scans, RGBA or palette PNGs exported from
image editors, 16-bit TIFFs from dermatoscopes, files cut short by a failed copy. Every image is
turned into 8-bit RGB the way a viewer would show it by the board's own reader (edge.imagefile: transparency
on neutral grey), then passed through `edge.preprocess` — the board's own function — so calibration and
validation see exactly what the board will see. Unreadable files are skipped and counted, never silently
dropped; images that needed converting (transparency, 16-bit, grayscale) are counted in `Batch.converted`.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from edge.imagefile import Decoded, ImageFileError, conversions_text, count, decode
from edge.preprocess import to_model_input

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
PROGRESS_ABOVE = 200  # show a progress bar for batches larger than this


class DatasetError(ValueError):
    """An image set that cannot be used; the message names the path and what is wrong."""


class BadImageError(DatasetError):
    """One image file that cannot be decoded."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


@dataclass(frozen=True)
class Sample:
    path: Path
    label: int


UNLABELLED = -1  # the label of every image in a flat folder


@dataclass
class ImageSet:
    root: Path
    classes: list[str] | None  # None: a flat folder of unlabelled images
    samples: list[Sample]


def _hidden(name: str) -> bool:
    return name.startswith(".")


def _images_under(folder: Path) -> list[Path]:
    """Image files under `folder` (recursively, following links, hidden entries skipped), sorted."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = [d for d in dirnames if not _hidden(d)]
        found += [Path(dirpath) / f for f in filenames
                  if not _hidden(f) and f.lower().endswith(IMAGE_EXTENSIONS)]
    return sorted(found)


def _names(names: Sequence[str], limit: int = 8) -> str:
    """A bounded list for error messages (a many-class model has a thousand names)."""
    names = list(names)
    return ", ".join(names[:limit]) + (f" ... ({len(names)} in all)" if len(names) > limit else "")


def scan(root: Path | str, classes: Sequence[str] | None = None) -> ImageSet:
    """Read an image folder: either one non-hidden sub-folder per class (an ImageFolder tree) or a flat
    folder of unlabelled images (label UNLABELLED), e.g. frames from a clinic camera.

    A tree's classes are its folders, sorted by name, unless `classes` (the model's class names, in
    training order) is given: then every folder must name one of them, and classes without a folder are
    fine (a 1000-class model needs no folder per class)."""
    root = Path(root)
    expected = "a flat folder of images or one sub-folder of images per class"
    if not root.exists():
        raise DatasetError(f"{root}: no such directory (expected {expected})")
    if not root.is_dir():
        raise DatasetError(f"{root}: not a directory (expected {expected})")
    folders = sorted(p.name for p in root.iterdir() if p.is_dir() and not _hidden(p.name))
    loose = sorted(p for p in root.iterdir() if p.is_file() and not _hidden(p.name)
                   and p.name.lower().endswith(IMAGE_EXTENSIONS))
    if folders and loose:
        raise DatasetError(f"{root}: holds both images ({loose[0].name}, ...) and sub-folders ({_names(folders, 3)}); "
                           f"expected {expected}")
    if not folders:
        if not loose:
            raise DatasetError(f"{root}: no images (expected {expected}; looked for {' '.join(IMAGE_EXTENSIONS)})")
        return ImageSet(root, None, [Sample(p, UNLABELLED) for p in loose])
    if classes is not None:
        classes = list(classes)
        dupes = sorted({c for c in classes if classes.count(c) > 1})
        if dupes:
            raise DatasetError(f"{root}: class names listed twice: {_names(dupes)}")
        extra = [f for f in folders if f not in classes]
        if extra:
            raise DatasetError(f"{root}: folder(s) naming no class of the model: {_names(extra)} "
                               f"(classes: {_names(classes)})")
    names = classes if classes is not None else folders
    samples: list[Sample] = []
    empty = []
    for label, name in enumerate(names):
        if name not in folders:
            continue
        files = _images_under(root / name)
        if not files:
            empty.append(name)
        samples += [Sample(p, label) for p in files]
    if empty:
        raise DatasetError(f"{root}: class folder(s) with no images: {_names(empty)} "
                           f"(looked for {' '.join(IMAGE_EXTENSIONS)})")
    return ImageSet(root, list(names), samples)


def read_labels(spec: str) -> list[str]:
    """Class names in training order from a file (one per line, or a JSON list / {index: name} object) or
    from a comma-separated list."""
    path = Path(spec)
    if path.is_file():
        text = path.read_text(encoding="utf-8")
        try:
            obj = json.loads(text)
        except ValueError:
            obj = [line.strip() for line in text.splitlines() if line.strip()]
        if isinstance(obj, dict):
            try:
                obj = [obj[k] for k in sorted(obj, key=int)]
            except ValueError as e:
                raise DatasetError(f"{path}: a JSON object of labels needs integer keys ({e})") from e
        if not isinstance(obj, list) or not all(isinstance(n, str) for n in obj):
            raise DatasetError(f"{path}: expected one class name per line, a JSON list or an {{index: name}} object")
        names, where = [n.strip() for n in obj], str(path)
    elif "," not in spec and (os.sep in spec or path.suffix.lower() in (".txt", ".json", ".csv")):
        raise DatasetError(f"{path}: labels file not found")
    else:
        names, where = [n.strip() for n in spec.split(",")], "--labels"
    if not names or any(not n for n in names):
        raise DatasetError(f"{where}: empty class name in the labels")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise DatasetError(f"{where}: class names listed twice: {_names(dupes)}")
    return names


def files_digest(paths: Sequence[Path], root: Path) -> str:
    """sha256 over each file's path relative to `root` and its bytes, in sorted order: names the exact data a
    model saw (a renamed, added, removed or changed image changes it)."""
    h = hashlib.sha256()
    for path in sorted(Path(p) for p in paths):
        h.update(path.relative_to(root).as_posix().encode() + b"\0")
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def _rng(seed: int, label: int) -> np.random.Generator:
    return np.random.default_rng([seed, label] if label >= 0 else [seed])


def _by_class(samples: Sequence[Sample]) -> dict[int, list[Sample]]:
    groups: dict[int, list[Sample]] = {}
    for s in samples:
        groups.setdefault(s.label, []).append(s)
    return dict(sorted(groups.items()))


def sample_per_class(ds: ImageSet, n: int | None, seed: int = 0) -> list[Sample]:
    """Up to `n` samples of each class (all of them if None or fewer; of the whole set if unlabelled), chosen
    with a fixed seed; the result is in class order, then file order, so it is the same on every run."""
    if n is not None and n < 1:
        raise ValueError(f"samples per class must be at least 1 (or None for all), got {n}")
    out: list[Sample] = []
    for label, group in _by_class(ds.samples).items():
        if n is None or n >= len(group):
            out += group
        else:
            keep = _rng(seed, label).choice(len(group), n, replace=False)
            out += [group[i] for i in sorted(keep)]
    return out


def split(ds: ImageSet, fraction: float, seed: int = 0) -> tuple[list[Sample], list[Sample]]:
    """Stratified hold-out split: (rest, held_out), with about `fraction` of every class held out, at
    least one of each class on both sides when the class has two or more images."""
    if not 0 < fraction < 1:
        raise ValueError(f"hold-out fraction must be between 0 and 1 (exclusive), got {fraction}")
    rest: list[Sample] = []
    held: list[Sample] = []
    for label, group in _by_class(ds.samples).items():
        k = min(max(round(len(group) * fraction), 1), len(group) - 1)
        chosen = set(_rng(seed, label).permutation(len(group))[:k].tolist())
        for i, s in enumerate(group):
            (held if i in chosen else rest).append(s)
    return rest, held


def load_rgb(path: Path) -> np.ndarray:
    """Decode an image as a viewer shows it, with the board's own reader (edge.imagefile: EXIF orientation applied,
    transparency on neutral grey, 16-bit scaled); BadImageError for a missing, unreadable or truncated file."""
    return _decode(path).rgb


def _decode(path: Path) -> Decoded:
    try:
        return decode(path)
    except ImageFileError as e:
        raise BadImageError(Path(path), e.reason) from e


@dataclass
class Batch:
    images: np.ndarray  # (N, h, w, 3) uint8, through edge.preprocess.to_model_input
    labels: np.ndarray  # (N,) int64
    paths: list[Path]
    skipped: list[tuple[Path, str]]  # (path, reason) of files that could not be read
    converted: str | None = None  # edge.imagefile.conversions_text: images with transparency, 16-bit, grayscale


def load_batch(samples: Sequence[Sample], size: int | tuple[int, int]) -> Batch:
    """Load samples through the board's own preprocessing; unreadable files are skipped, counted and
    reported in one warning. Raises DatasetError if there is nothing usable."""
    if not samples:
        raise DatasetError("no images to load (empty sample list)")
    h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    images = np.empty((len(samples), h, w, 3), np.uint8)
    labels: list[int] = []
    paths: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    converted: Counter = Counter()
    for s in tqdm(samples, desc="load images", unit="img", disable=len(samples) <= PROGRESS_ABOVE, leave=False):
        try:
            got = _decode(s.path)
        except BadImageError as e:
            skipped.append((s.path, e.reason))
            continue
        count(converted, got)
        images[len(paths)] = to_model_input(got.rgb, (h, w))
        labels.append(s.label)
        paths.append(s.path)
    if skipped:
        first, reason = skipped[0]
        msg = f"skipped {len(skipped)} of {len(samples)} images (first: {first}: {reason})"
        if not paths:
            raise DatasetError(f"none of the images could be read: {msg}")
        warnings.warn(msg, stacklevel=2)
    return Batch(images[: len(paths)], np.asarray(labels, np.int64), paths, skipped, conversions_text(converted))
