"""calibration.dataset on real files: ImageFolder scanning and its errors, stratified sampling and splits,
decoding of awkward images (grayscale, RGBA, palette, 16-bit, EXIF-rotated, truncated, garbage), batches."""

from __future__ import annotations

import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from calibration.dataset import (
    UNLABELLED,
    BadImageError,
    DatasetError,
    Sample,
    load_batch,
    load_rgb,
    read_labels,
    sample_per_class,
    scan,
    split,
)
from edge.preprocess import to_model_input


def _png(path: Path, value: int = 128, shape: tuple[int, int] = (12, 16)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((*shape, 3), value, np.uint8)).save(path)
    return path


def _tree(root: Path, counts: dict[str, int]) -> Path:
    for cls, n in counts.items():
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            _png(root / cls / f"{i:03d}.png", value=10 * i % 250)
    return root


# --- scan ---------------------------------------------------------------------------------------------

def test_scan_classes_extensions_and_hidden_entries(tmp_path):
    root = _tree(tmp_path / "d", {"b": 2, "a": 1})
    _png(root / "a" / "UPPER.JPG")  # extension case does not matter (content is PNG; scan looks at names)
    _png(root / "a" / "nested" / "deep.tiff")
    _png(root / "a" / ".hidden.png")
    _png(root / "a" / ".cache" / "x.png")
    (root / "a" / "notes.txt").write_text("not an image")
    _png(root / ".masks" / "c" / "m.png")  # hidden folder: not a class
    (root / "README.md").write_text("top-level files are ignored")
    ds = scan(str(root))
    assert ds.root == root and ds.classes == ["a", "b"]
    got = [(s.path.relative_to(root).as_posix(), s.label) for s in ds.samples]
    assert got == [("a/000.png", 0), ("a/UPPER.JPG", 0), ("a/nested/deep.tiff", 0), ("b/000.png", 1), ("b/001.png", 1)]


def test_scan_in_training_order(tmp_path):
    root = _tree(tmp_path / "d", {"normal": 1, "mpox": 2})
    ds = scan(root, ["normal", "mpox"])
    assert ds.classes == ["normal", "mpox"]
    assert [s.label for s in ds.samples] == [0, 1, 1]
    assert ds.samples[0].path.parent.name == "normal"


def test_scan_missing_root(tmp_path):
    with pytest.raises(DatasetError, match=r"nope: no such directory"):
        scan(tmp_path / "nope")


def test_scan_root_is_a_file(tmp_path):
    f = _png(tmp_path / "one.png")
    with pytest.raises(DatasetError, match=r"one.png: not a directory"):
        scan(f)


def test_scan_flat_folder_is_unlabelled(tmp_path):
    root = tmp_path / "flat"
    for i in range(5):
        _png(root / f"frame_{i}.jpg" if i == 3 else root / f"frame_{i}.png", value=20 * i)
    _png(root / ".hidden" / "x.png")  # hidden folders are neither classes nor images
    (root / "notes.txt").write_text("not an image")
    ds = scan(root, ["a", "b"])  # class names do not make a flat folder labelled
    assert ds.classes is None and [s.label for s in ds.samples] == [UNLABELLED] * 5
    assert [s.path.name for s in ds.samples] == ["frame_0.png", "frame_1.png", "frame_2.png", "frame_3.jpg",
                                                 "frame_4.png"]
    picked = sample_per_class(ds, 3, seed=2)
    assert len(picked) == 3 and picked == sample_per_class(ds, 3, seed=2) and picked != sample_per_class(ds, 3, seed=5)
    batch = load_batch(picked, 8)
    assert batch.images.shape == (3, 8, 8, 3) and batch.labels.tolist() == [UNLABELLED] * 3


def test_scan_empty_or_mixed_folder_is_one_line(tmp_path):
    empty = tmp_path / "empty"
    (empty / ".cache").mkdir(parents=True)
    (empty / "readme.txt").write_text("no images")
    with pytest.raises(DatasetError, match=r"empty: no images \(expected a flat folder of images or one sub-folder"):
        scan(empty)
    mixed = _tree(tmp_path / "mixed", {"a": 1})
    _png(mixed / "loose.png")
    with pytest.raises(DatasetError, match=r"mixed: holds both images \(loose.png, ...\) and sub-folders \(a\)"):
        scan(mixed)


def test_scan_names_every_empty_class(tmp_path):
    root = _tree(tmp_path / "d", {"a": 1, "b": 0, "c": 0})
    (root / "b" / "readme.txt").write_text("no images here")
    _png(root / "c" / ".only_hidden.png")
    with pytest.raises(DatasetError, match=r"d: class folder\(s\) with no images: b, c \(looked for .png"):
        scan(root)


def test_scan_expected_classes_extra_folder(tmp_path):
    root = _tree(tmp_path / "d", {"a": 1, "b": 1, "zzz": 1})
    with pytest.raises(DatasetError) as e:
        scan(root, ["a", "b", "c"])
    msg = str(e.value)
    assert "naming no class of the model: zzz" in msg and str(root) in msg and "\n" not in msg
    with pytest.raises(DatasetError, match="listed twice: a"):
        scan(root, ["a", "a", "b", "zzz"])


def test_many_class_model_needs_no_folder_per_class(tmp_path):
    names = [f"n{i:04d}" for i in range(1000)]
    root = _tree(tmp_path / "d", {"n0007": 2, "n0999": 1, "n0500": 3})
    ds = scan(root, names)
    assert ds.classes == names
    assert [(s.path.parent.name, s.label) for s in ds.samples] == [("n0007", 7)] * 2 + [("n0500", 500)] * 3 + [
        ("n0999", 999)]
    picked = sample_per_class(ds, 2, seed=0)  # stratified over the classes that have images
    assert sorted(s.label for s in picked) == [7, 7, 500, 500, 999]
    _png(root / "tench" / "x.png")
    with pytest.raises(DatasetError) as e:
        scan(root, names)
    assert "naming no class of the model: tench" in str(e.value) and "(1000 in all)" in str(e.value)
    assert len(str(e.value)) < 300  # a thousand names are not echoed


def test_read_labels_from_a_list_or_a_file(tmp_path):
    assert read_labels("a, b,c") == ["a", "b", "c"]
    (tmp_path / "l.txt").write_text("tench\n\ngoldfish\n")
    assert read_labels(str(tmp_path / "l.txt")) == ["tench", "goldfish"]
    (tmp_path / "l.json").write_text('{"1": "goldfish", "0": "tench", "10": "x"}')
    assert read_labels(str(tmp_path / "l.json")) == ["tench", "goldfish", "x"]
    (tmp_path / "list.json").write_text('["a", "b"]')
    assert read_labels(str(tmp_path / "list.json")) == ["a", "b"]
    for spec, match in ((str(tmp_path / "nope.txt"), "nope.txt: labels file not found"),
                        ("a,,b", "empty class name"), ("a,b,a", "listed twice: a")):
        with pytest.raises(DatasetError, match=match):
            read_labels(spec)
    (tmp_path / "bad.json").write_text('{"a": "x"}')
    with pytest.raises(DatasetError, match="integer keys"):
        read_labels(str(tmp_path / "bad.json"))


# --- sampling and splits -----------------------------------------------------------------------------

@pytest.fixture
def uneven(tmp_path):
    return scan(_tree(tmp_path / "u", {"a": 10, "b": 3, "c": 7}))


def _counts(samples: list[Sample]) -> list[int]:
    return np.bincount([s.label for s in samples], minlength=3).tolist()


def test_sample_per_class_is_stratified_and_deterministic(uneven):
    picked = sample_per_class(uneven, 5, seed=0)
    assert _counts(picked) == [5, 3, 5]
    assert picked == sample_per_class(uneven, 5, seed=0)
    assert picked != sample_per_class(uneven, 5, seed=1)
    assert picked == sorted(picked, key=lambda s: (s.label, s.path))  # class order, then file order
    assert len(set(picked)) == len(picked)
    assert sample_per_class(uneven, None) == uneven.samples
    assert sample_per_class(uneven, 100) == uneven.samples
    with pytest.raises(ValueError, match="at least 1"):
        sample_per_class(uneven, 0)


def test_split_is_stratified_disjoint_and_deterministic(uneven):
    rest, held = split(uneven, 0.3, seed=0)
    assert _counts(held) == [3, 1, 2] and _counts(rest) == [7, 2, 5]
    assert set(rest).isdisjoint(held) and set(rest) | set(held) == set(uneven.samples)
    assert (rest, held) == split(uneven, 0.3, seed=0)
    assert held != split(uneven, 0.3, seed=1)[1]
    rest, held = split(uneven, 0.01)  # every class keeps at least one image on each side
    assert _counts(held) == [1, 1, 1]
    for bad in (0, 1, 1.5):
        with pytest.raises(ValueError, match="fraction"):
            split(uneven, bad)


# --- load_rgb ----------------------------------------------------------------------------------------

def test_grayscale_becomes_rgb(tmp_path):
    g = np.arange(48, dtype=np.uint8).reshape(6, 8) * 5
    Image.fromarray(g, "L").save(tmp_path / "g.png")
    rgb = load_rgb(tmp_path / "g.png")
    assert rgb.shape == (6, 8, 3) and rgb.dtype == np.uint8
    assert all(np.array_equal(rgb[..., c], g) for c in range(3))


def test_rgba_and_la_composite_on_neutral_grey(tmp_path):
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[...] = (200, 100, 50, 128)
    rgba[0, 0] = (200, 100, 50, 255)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    rgb = load_rgb(tmp_path / "a.png")
    # (v * 128 + 128 * 127 + 127) // 255: half-way between the colour and grey 128
    assert rgb[1, 1].tolist() == [164, 114, 89] and rgb[0, 0].tolist() == [200, 100, 50]
    Image.fromarray(rgba[..., [0, 3]], "LA").save(tmp_path / "la.png")
    assert load_rgb(tmp_path / "la.png")[1, 1].tolist() == [164, 164, 164]


def test_palette_with_and_without_transparency(tmp_path):
    idx = np.array([[0, 1], [1, 0]], np.uint8)
    pal = [255, 0, 0, 0, 0, 255] + [0] * 762
    im = Image.fromarray(idx, "P")
    im.putpalette(pal)
    im.save(tmp_path / "p.png")
    assert load_rgb(tmp_path / "p.png").tolist() == [[[255, 0, 0], [0, 0, 255]], [[0, 0, 255], [255, 0, 0]]]
    im.save(tmp_path / "pt.png", transparency=1)  # index 1 (blue) fully transparent -> grey
    assert load_rgb(tmp_path / "pt.png").tolist() == [[[255, 0, 0], [128] * 3], [[128] * 3, [255, 0, 0]]]


@pytest.mark.parametrize("ext", [".png", ".tif"])
def test_16_bit_grayscale_is_scaled_not_clipped(tmp_path, ext):
    g = np.array([[0, 1000, 25700, 65535]], np.uint16)
    assert cv2.imwrite(str(tmp_path / f"g16{ext}"), g)
    rgb = load_rgb(tmp_path / f"g16{ext}")
    assert rgb[0, :, 0].tolist() == [0, 4, 100, 255]  # v * 255 / 65535; clipping would give 255 for 1000
    assert np.array_equal(rgb[..., 0], rgb[..., 2])


def test_16_bit_colour_png(tmp_path):
    bgr = np.zeros((3, 3, 3), np.uint16)
    bgr[...] = (0, 25700, 65535)  # OpenCV writes BGR: R = 65535, G = 25700, B = 0
    assert cv2.imwrite(str(tmp_path / "c16.png"), bgr)
    assert load_rgb(tmp_path / "c16.png")[1, 1].tolist() == [255, 100, 0]


def test_exif_orientation_is_applied(tmp_path):
    stored = np.full((30, 60, 3), 128, np.uint8)  # 60 wide, 30 high, red block at the stored top-left
    stored[:15, :20] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    Image.fromarray(stored).save(tmp_path / "phone.jpg", quality=95, exif=exif)
    rgb = load_rgb(tmp_path / "phone.jpg")
    assert rgb.shape == (60, 30, 3)  # width and height swapped
    assert rgb[5, 25, 0] > 200 and rgb[5, 25, 1] < 60  # the block is now at the top-right
    assert abs(int(rgb[5, 4, 0]) - 128) < 20 and abs(int(rgb[50, 25, 0]) - 128) < 20


def test_truncated_jpeg(tmp_path):
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "full.jpg", quality=90)
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    assert load_rgb(tmp_path / "full.jpg").shape == (64, 64, 3)
    with pytest.raises(BadImageError, match=r"cut.jpg: truncated JPEG"):
        load_rgb(tmp_path / "cut.jpg")


def test_garbage_and_missing_files(tmp_path):
    (tmp_path / "junk.png").write_bytes(b"definitely not an image " * 20)
    with pytest.raises(BadImageError, match=r"junk.png: not a PNG, JPEG, BMP, TIFF or WebP image"):
        load_rgb(tmp_path / "junk.png")
    with pytest.raises(DatasetError, match="gone.png: No such file"):  # BadImageError is a DatasetError
        load_rgb(tmp_path / "gone.png")


# --- load_batch --------------------------------------------------------------------------------------

def test_load_batch_uses_the_board_preprocessing(tmp_path):
    rng = np.random.default_rng(0)
    a = tmp_path / "a.png"
    Image.fromarray(rng.integers(0, 256, (30, 50, 3), dtype=np.uint8)).save(a)
    b = tmp_path / "b.png"
    Image.fromarray(rng.integers(0, 256, (40, 20), dtype=np.uint8), "L").save(b)
    batch = load_batch([Sample(a, 1), Sample(b, 0)], (16, 24))
    assert batch.images.shape == (2, 16, 24, 3) and batch.images.dtype == np.uint8
    assert batch.labels.dtype == np.int64 and batch.labels.tolist() == [1, 0]
    assert batch.paths == [a, b] and batch.skipped == []
    assert np.array_equal(batch.images[0], to_model_input(load_rgb(a), (16, 24)))
    assert np.array_equal(batch.images[1], to_model_input(load_rgb(b), (16, 24)))


def test_load_batch_skips_counts_and_warns_once(tmp_path):
    good = [Sample(_png(tmp_path / f"ok{i}.png", 40 * i), i % 2) for i in range(4)]
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"\xff\xd8 not really a jpeg")
    noisy = tmp_path / "noisy.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(noisy)
    cut = tmp_path / "cut.png"
    cut.write_bytes(noisy.read_bytes()[:1500])  # stops inside the pixel data
    samples = [good[0], Sample(junk, 1), good[1], Sample(cut, 0), *good[2:]]
    with pytest.warns(UserWarning) as record:
        batch = load_batch(samples, 8)
    assert len(record) == 1
    assert str(record[0].message).startswith(f"skipped 2 of 6 images (first: {junk}: corrupt JPEG")
    assert batch.images.shape == (4, 8, 8, 3)
    assert batch.paths == [s.path for s in good] and batch.labels.tolist() == [0, 1, 0, 1]
    assert [p for p, _ in batch.skipped] == [junk, cut]
    assert batch.images[1].mean() == 40


def test_load_batch_all_bad_or_empty(tmp_path):
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"nothing")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning before the error
        with pytest.raises(DatasetError, match=r"none of the images could be read: skipped 1 of 1 images"):
            load_batch([Sample(junk, 0)], 8)
    with pytest.raises(DatasetError, match="empty sample list"):
        load_batch([], 8)


def test_load_batch_progress_bar_for_big_batches(tmp_path, capsys):
    one = Sample(_png(tmp_path / "x.png", shape=(4, 4)), 0)
    load_batch([one] * 10, 4)
    assert "load images" not in capsys.readouterr().err
    load_batch([one] * 201, 4)
    assert "load images" in capsys.readouterr().err
