"""Natural photographs that ship inside packages, cut into deterministic crops (workstation side).

Synthetic lesions say nothing about how int8 treats what a real pretrained network knows, and an
out-of-distribution gate needs real "not a lesion" pictures. Photographs that ship with installed packages
need no download. Four independent sources (SOURCES), so that a recipe chosen on some can be checked on another:
`packages` (scikit-image's and matplotlib's sample data, Debian's mate-backgrounds), `lomiri` (Debian's
lomiri-wallpapers-16.04: the photographs among Ubuntu Touch's wallpapers), `plasma` (Debian's
plasma-workspace-wallpapers: the photographs among KDE Plasma's wallpapers) and `opencv` (Debian's opencv-doc: the
photographs among OpenCV's sample data); other photographers, none shared.
Crops are split BY SOURCE PHOTO: calibration and evaluation crops from the same photograph would share content,
and agreement measured on them would flatter the quantiser.
"""

from __future__ import annotations

import importlib.util
import zlib
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from calibration.dataset import DatasetError, load_rgb

# Real photographs only: no microscopy, astronomy, retina scans, grayscale textures or test patterns.
SKIMAGE_PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "motorcycle_left.png", "rocket.jpg")
MATPLOTLIB_PHOTOS = ("grace_hopper.jpg",)
# Debian package mate-backgrounds (apt-get install mate-backgrounds): nature/*.jpg and one photo among the
# abstract wallpapers. Elephants_3840x2160/5640x3172 are the same photo larger, so they are left out.
MATE_DIR = Path("/usr/share/backgrounds/mate")
MATE_PHOTOS = ("abstract/Elephants.jpg",)
# Debian package lomiri-wallpapers-16.04 (apt-get install lomiri-wallpapers-16.04): its photographs; the pattern,
# clock rendering and abstract images beside them are left out.
LOMIRI_DIR = Path("/usr/share/backgrounds")
LOMIRI_PHOTOS = ("Bridge_by_Sander_Klootwijk.jpg", "Dragonfly_by_Bolly.jpg", "Picture_0B_by_freespace.jpg",
                 "Picture_1A_by_freespace.jpg", "Wine_by_Jakkub_Mede.jpg", "aitzgorri_by_Aitzol_Berasategi.jpg",
                 "free_by_Peter_Nerlich.jpg", "friends_by_Aitzol_Berasategi.jpg", "life_by_Aitzol_Berasategi.jpg",
                 "picosdeeuropa_by_Aitzol_Berasategi.jpg", "seeding_by_Clements_Engelhardt.jpg",
                 "sunset_by_Aitzol_Berasategi.jpg")
# Debian package plasma-workspace-wallpapers (apt-get install plasma-workspace-wallpapers): its photographs, each at
# the one size the package ships as a file (the other sizes are links to it); the painting (Autumn), the polygon
# graphic (PastelHills) and the rendered and abstract wallpapers are left out.
PLASMA_DIR = Path("/usr/share/wallpapers")
PLASMA_PHOTOS = tuple(f"{name}/contents/images/2560x1600.jpg" for name in (
    "BytheWater", "ColdRipple", "ColorfulCups", "DarkestHour", "EveningGlow", "FallenLeaf", "Grey", "Kite",
    "OneStandsOut", "Path", "summer_1am"))
# Debian package opencv-doc (apt-get install opencv-doc): the colour photographs among OpenCV's sample data, one of
# each stereo or before/after pair (aero1/3, aloeL/R, graf1/3, leuvenA/B, left/right, rubberwhale1/2, ela_*); the
# painting (starry_night), drawings, logos, text, charts and calibration boards are left out.
OPENCV_DIR = Path("/usr/share/doc/opencv-doc/examples/data")
OPENCV_PHOTOS = ("aero1.jpg", "aloeL.jpg", "apple.jpg", "baboon.jpg", "board.jpg", "building.jpg", "butterfly.jpg",
                 "chicky_512.png", "ela_original.jpg", "fruits.jpg", "graf1.png", "home.jpg", "left.jpg", "leuvenA.jpg",
                 "licenseplate_motion.jpg", "messi5.jpg", "orange.jpg", "rubberwhale1.png", "smarties.png",
                 "squirrel_cls.jpg", "stuff.jpg")
WALLPAPERS = {"lomiri": (LOMIRI_DIR, LOMIRI_PHOTOS), "plasma": (PLASMA_DIR, PLASMA_PHOTOS),
              "opencv": (OPENCV_DIR, OPENCV_PHOTOS)}  # one folder each
SOURCES = {"packages": "pip install scikit-image matplotlib; apt-get install mate-backgrounds",
           "lomiri": "apt-get install lomiri-wallpapers-16.04",
           "plasma": "apt-get install plasma-workspace-wallpapers",
           "opencv": "apt-get install opencv-doc"}
MIN_SCALE = 0.35  # smallest crop side, as a fraction of the photo's short side


def _package_dir(name: str) -> Path | None:
    """Directory of an installed package, found without importing it."""
    spec = importlib.util.find_spec(name)
    return Path(spec.origin).parent if spec is not None and spec.origin else None


def find_photos(source: str = "packages") -> list[Path]:
    """The known photographs of `source` (SOURCES) that are installed here, sorted by path (empty if none is)."""
    if source not in SOURCES:
        raise ValueError(f"unknown photo source {source!r}: expected one of {', '.join(SOURCES)}")
    if source in WALLPAPERS:
        folder, names = WALLPAPERS[source]
        return sorted(p for p in (folder / f for f in names) if p.is_file())
    found: list[Path] = []
    if (skimage := _package_dir("skimage")) is not None:
        found += [skimage / "data" / f for f in SKIMAGE_PHOTOS]
    if (mpl := _package_dir("matplotlib")) is not None:
        found += [mpl / "mpl-data" / "sample_data" / f for f in MATPLOTLIB_PHOTOS]
    found += sorted((MATE_DIR / "nature").glob("*.jpg")) + [MATE_DIR / f for f in MATE_PHOTOS]
    return sorted(p for p in found if p.is_file())


def split_by_photo(paths: Sequence[Path], eval_fraction: float, seed: int = 0) -> tuple[list[Path], list[Path]]:
    """(calibration photos, evaluation photos): disjoint, each non-empty, chosen with a fixed seed."""
    paths = sorted(Path(p) for p in paths)
    if len(paths) < 2:
        raise DatasetError(f"need at least 2 photographs to split by photo, found {len(paths)} "
                           "(pip install scikit-image; apt-get install mate-backgrounds)")
    if not 0 < eval_fraction < 1:
        raise ValueError(f"eval_fraction must be between 0 and 1 (exclusive), got {eval_fraction}")
    k = min(max(round(len(paths) * eval_fraction), 1), len(paths) - 1)
    held = set(np.random.default_rng(seed).permutation(len(paths))[:k].tolist())
    return ([p for i, p in enumerate(paths) if i not in held], [p for i, p in enumerate(paths) if i in held])


def photo_crops(paths: Sequence[Path], size: int, per_photo: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`per_photo` random square crops of each photo (side MIN_SCALE..1 of its short side, anywhere in it),
    resized to size×size with INTER_AREA: (images (N, size, size, 3) uint8 RGB, photo_index (N,) into `paths`).

    Each photo's crops depend only on (seed, file name), so adding a photo leaves the others' crops unchanged.
    """
    if per_photo < 1 or size < 1:
        raise ValueError(f"per_photo and size must be at least 1, got {per_photo} and {size}")
    images = np.empty((len(paths) * per_photo, size, size, 3), np.uint8)
    for i, path in enumerate(paths):
        rgb = load_rgb(Path(path))
        h, w = rgb.shape[:2]
        rng = np.random.default_rng([seed, zlib.crc32(Path(path).name.encode())])
        for j in range(per_photo):
            side = max(1, round(min(h, w) * rng.uniform(MIN_SCALE, 1.0)))
            y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
            images[i * per_photo + j] = cv2.resize(rgb[y:y + side, x:x + side], (size, size),
                                                   interpolation=cv2.INTER_AREA)
    return images, np.repeat(np.arange(len(paths)), per_photo)


def write_images(images: np.ndarray, folder: Path, prefix: str = "crop") -> list[Path]:
    """Save (N, h, w, 3) uint8 RGB images as PNGs in `folder` (a flat, unlabelled image folder)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, img in enumerate(images):
        p = folder / f"{prefix}_{i:05d}.png"
        if not cv2.imwrite(str(p), np.ascontiguousarray(img[..., ::-1])):
            raise OSError(f"{p}: could not write image")
        out.append(p)
    return out
