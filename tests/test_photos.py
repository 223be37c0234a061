"""calibration.photos: natural photographs from installed packages, deterministic crops, split by photo."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from calibration.dataset import DatasetError, load_rgb
from calibration.photos import find_photos, photo_crops, split_by_photo, write_images

PHOTOS = find_photos()
needs_photos = pytest.mark.skipif(len(PHOTOS) < 4, reason="pip install scikit-image (the dev extra) for photos")


@needs_photos
def test_find_photos_lists_real_colour_photographs():
    assert PHOTOS == sorted(PHOTOS)
    names = {p.name for p in PHOTOS}
    assert {"coffee.png", "chelsea.png"} <= names
    assert not names & {"camera.png", "cell.png", "hubble_deep_field.jpg", "Elephants_3840x2160.jpg"}
    for p in PHOTOS[:3]:
        rgb = load_rgb(p)
        assert rgb.shape[2] == 3 and rgb.std() > 20  # a real picture, not a flat test card


@needs_photos
def test_split_by_photo_is_disjoint_deterministic_and_complete():
    calib, held = split_by_photo(PHOTOS, 0.4, seed=3)
    assert calib and held and not set(calib) & set(held)
    assert sorted(calib + held) == PHOTOS
    assert split_by_photo(list(reversed(PHOTOS)), 0.4, seed=3) == (calib, held)
    assert split_by_photo(PHOTOS, 0.4, seed=4) != (calib, held)
    with pytest.raises(DatasetError, match="at least 2 photographs"):
        split_by_photo(PHOTOS[:1], 0.5)


@needs_photos
def test_photo_crops_are_deterministic_per_photo(tmp_path):
    a, b = PHOTOS[0], PHOTOS[1]
    images, index = photo_crops([a, b], 48, per_photo=3, seed=7)
    assert images.shape == (6, 48, 48, 3) and images.dtype == np.uint8
    assert index.tolist() == [0, 0, 0, 1, 1, 1]
    again, _ = photo_crops([b], 48, per_photo=3, seed=7)
    np.testing.assert_array_equal(again, images[3:])  # a photo's crops do not depend on the others
    other, _ = photo_crops([a], 48, per_photo=3, seed=8)
    assert not np.array_equal(other, images[:3])
    assert len({im.tobytes() for im in images}) == 6
    paths = write_images(images, tmp_path / "flat")
    np.testing.assert_array_equal(load_rgb(paths[4]), images[4])


def test_the_photo_sources_share_no_photograph():
    """A recipe chosen on one source and checked on another is only checked if no photograph is in both: compared by
    content (a 16x16 thumbnail of each photograph decoded at 1/8 size), not by name, over whichever sources are
    installed here (lomiri, plasma and opencv are benchmark-only packages)."""
    from calibration.photos import SOURCES

    with pytest.raises(ValueError, match="expected one of packages, lomiri, plasma, opencv"):
        find_photos("wallpapers")
    seen: dict[bytes, str] = {}
    for source in SOURCES:
        for path in find_photos(source):
            small = cv2.imread(str(path), cv2.IMREAD_REDUCED_COLOR_8)  # JPEGs decode at 1/8 size: fast
            thumb = cv2.resize(small, (16, 16), interpolation=cv2.INTER_AREA) // 32
            assert seen.setdefault(thumb.tobytes(), source) == source, f"{path} is also in {seen[thumb.tobytes()]}"
    assert len(seen) >= len(PHOTOS)
