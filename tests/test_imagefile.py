"""Image files are decoded whole or not at all (real files): a truncated JPEG or PNG is refused before a decoder
can return a partial frame; a folder source skips and counts such files; `skinedge run` on a folder with no
decodable image exits non-zero with one line. Transparency is composited on neutral grey by the one reader that
training, conversion and `run` share, and said once."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.config import load_config
from edge.imagefile import BACKGROUND, PNG_SIGNATURE, ImageFileError, ImageLimits, dimensions, incomplete, read_rgb
from edge.sources import FolderSource, SourceError, open_source
from tests.test_run import CONFIG, DEMO, REPO


@pytest.fixture(scope="module")
def frame() -> np.ndarray:
    """A real frame of the demo clip (BGR): camera-like content, so the JPEG has a real scan."""
    cap = cv2.VideoCapture(str(DEMO / "clip.mp4"))
    ok, bgr = cap.read()
    cap.release()
    assert ok
    return bgr


def _encode(bgr: np.ndarray, ext: str, *params: int) -> bytes:
    ok, buf = cv2.imencode(ext, bgr, list(params))
    assert ok
    return buf.tobytes()


FORMATS = [(".jpg",), (".jpg", cv2.IMWRITE_JPEG_PROGRESSIVE, 1), (".png",), (".bmp",), (".tif",), (".webp",)]


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f[0] + ("-progressive" if len(f) > 1 else ""))
def test_whole_files_decode_and_cut_ones_are_refused(tmp_path, frame, fmt):
    data = _encode(frame, *fmt)
    whole = tmp_path / f"whole{fmt[0]}"
    whole.write_bytes(data)
    assert incomplete(data) is None
    assert np.array_equal(read_rgb(whole), cv2.cvtColor(cv2.imread(str(whole)), cv2.COLOR_BGR2RGB))
    for frac in (0.2, 0.6, 0.95):
        cut = tmp_path / f"cut{frac}{fmt[0]}"
        cut.write_bytes(data[:int(len(data) * frac)])
        with pytest.raises(ImageFileError, match=f"{cut.name}: "):
            read_rgb(cut)
    if fmt[0] == ".jpg":  # the case OpenCV's imread lets through: cut 2 bytes short, only the EOI missing
        with pytest.raises(ImageFileError, match="truncated JPEG"):
            (tmp_path / "eoi.jpg").write_bytes(data[:-2])
            read_rgb(tmp_path / "eoi.jpg")


def test_a_thumbnails_end_marker_does_not_hide_the_cut(tmp_path, frame):
    """EXIF thumbnails are whole JPEGs (with their own FF D9) inside an APP1 segment: only the segment walk
    tells them from the image's own end."""
    main = _encode(frame, ".jpg")
    thumb = _encode(cv2.resize(frame, (32, 24)), ".jpg")
    payload = b"Exif\0\0" + thumb
    with_thumb = main[:2] + b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload + main[2:]
    assert incomplete(with_thumb) is None
    (tmp_path / "t.jpg").write_bytes(with_thumb)
    assert read_rgb(tmp_path / "t.jpg").shape == frame.shape
    cut = with_thumb[:len(with_thumb) * 3 // 4]
    assert cut.find(b"\xff\xd9") > 0  # the thumbnail's end is still there
    assert incomplete(cut) == "truncated JPEG (no end-of-image marker)"


def test_corrupt_empty_and_fake_files(tmp_path, frame):
    png = bytearray(_encode(frame, ".png"))
    png[len(png) // 2] ^= 0xFF  # inside IDAT: libpng's CRC check refuses it
    cases = {"flipped.png": bytes(png), "empty.jpg": b"", "text.jpg": b"not an image at all",
             "header_only.png": bytes(png[:40])}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ImageFileError, match=name):
            read_rgb(tmp_path / name)
    with pytest.raises(ImageFileError, match="missing.png"):
        read_rgb(tmp_path / "missing.png")


@pytest.fixture(scope="module")
def folders(tmp_path_factory, frame):
    """mixed/: 2 good images and 4 bad ones; bad/: only bad ones."""
    root = tmp_path_factory.mktemp("folders")
    jpg, png = _encode(frame, ".jpg"), _encode(frame, ".png")
    bad = {"b_cut.jpg": jpg[:len(jpg) // 2], "c_cut.png": png[:len(png) // 2], "d_empty.png": b"",
           "e_noise.jpg": bytes(range(256))}
    for name, files in (("mixed", {"a_good.jpg": jpg, "f_good.png": png, **bad}), ("bad", bad)):
        (root / name).mkdir()
        for f, data in files.items():
            (root / name / f).write_bytes(data)
    return root


def test_folder_source_skips_and_counts(folders):
    src = FolderSource(folders / "mixed")
    got = [src.read() for _ in range(3)]
    assert [g.shape for g in got[:2]] == [(240, 320, 3)] * 2 and got[2] is None
    assert src.skipped == 4
    for loop in (False, True):  # looping or not, a folder without one good image is refused at open
        with pytest.raises(SourceError, match="none of its 4 image file"):
            FolderSource(folders / "bad", loop=loop)


def _run(folder) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edge.cli", "run", "--config", str(CONFIG), "--source", str(folder),
                           "--display", "null", "--backend", "tflite"], cwd=REPO, capture_output=True, text=True,
                          timeout=300, check=False)


def test_run_counts_skipped_images_and_refuses_a_folder_without_one_good_image(folders):
    r = _run(folders / "mixed")
    assert r.returncode == 0, r.stderr
    summary = r.stdout.strip().splitlines()[-1]
    assert summary.startswith("2 frames") and "4 unreadable image(s) skipped" in summary
    assert not any(bad in r.stdout for bad in ("b_cut", "c_cut", "d_empty", "e_noise"))  # none classified
    r = _run(folders / "bad")
    assert r.returncode == 2
    line = r.stderr.strip().splitlines()[-1]
    assert f"image folder {folders / 'bad'}: none of its 4 image file(s) can be decoded" in line
    assert "Traceback" not in r.stderr


def test_run_on_a_video_without_a_decodable_frame_exits_2(tmp_path):
    """An AVI whose header OpenCV opens but whose frames are zeroed: not an empty, successful run."""
    path = tmp_path / "zeroed.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 10, (64, 48))
    for _ in range(3):
        writer.write(np.zeros((48, 64, 3), np.uint8))
    writer.release()
    data = bytearray(path.read_bytes())
    start = data.find(b"\xff\xd8")  # the first frame's JPEG
    data[start:-200] = bytes(len(data) - 200 - start)  # keep the header and the index
    path.write_bytes(bytes(data))
    assert cv2.VideoCapture(str(path)).isOpened()
    r = _run(path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].endswith(f"the source (video {path}) gave no frame")


# ---- what an image may cost: file size and decoded pixels, checked before reading and decoding ----

def _zero_png(side: int, rows_per_block: int = 100) -> bytes:
    """A real, valid RGB PNG of side x side black pixels, built without compressing them all: one deflate block of
    `rows_per_block` rows, fully flushed (so every copy of it is byte-identical), repeated, then the zlib
    checksum of n zero bytes (adler32 = (n mod 65521) << 16 | 1). side=30000: 2.6 MB of file, 2.7 GB decoded."""
    block = (b"\0" * (1 + 3 * side)) * rows_per_block
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    once = deflate.compress(block) + deflate.flush(zlib.Z_FULL_FLUSH)
    end = deflate.flush(zlib.Z_FINISH)
    n = side * (1 + 3 * side)
    idat = b"\x78\xda" + once * (side // rows_per_block) + end + (((n % 65521) << 16) | 1).to_bytes(4, "big")

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (PNG_SIGNATURE + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def _read_in_child(path) -> tuple[str, float]:
    """read_rgb(path) in a fresh interpreter: (its one line of output, its own peak RSS in MB). The peak is the new
    process image's (edge.memory.peak_rss_kib, VmHWM), read by the child itself: rusage's ru_maxrss carries the
    parent's resident size across fork + exec, so a child of a 3 GB pytest would report 3 GB whatever it did."""
    code = ("import sys\nfrom edge.imagefile import ImageFileError, read_rgb\nfrom edge.memory import peak_rss_kib\n"
            "try:\n    print(read_rgb(sys.argv[1]).shape)\nexcept ImageFileError as e:\n    print(e)\n"
            "print(peak_rss_kib())\n")
    r = subprocess.run([sys.executable, "-c", code, str(path)], cwd=REPO, capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    line, hwm_kb = r.stdout.strip().rsplit("\n", 1)
    return line, int(hwm_kb) / 1024


def test_a_png_that_decodes_to_30000x30000_is_refused_from_its_header(tmp_path):
    small = _zero_png(600)
    assert cv2.imdecode(np.frombuffer(small, np.uint8), cv2.IMREAD_COLOR).shape == (600, 600, 3)  # a valid PNG
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_zero_png(30000))
    assert 2_500_000 < bomb.stat().st_size < 2_800_000 and dimensions(bomb.read_bytes()) == (30000, 30000)
    line, rss = _read_in_child(bomb)
    assert line == f"{bomb}: 30000x30000 pixels (900 MP), more than the 100 MP an image may have " \
                   "(source.max_image_megapixels)"
    assert rss < 400, f"peak RSS {rss:.0f} MB: the image was decoded"  # decoded, it would take 2.7 GB


def test_a_2_gb_sparse_jpeg_is_refused_before_it_is_read(tmp_path, frame):
    big = tmp_path / "big.jpg"
    big.write_bytes(_encode(frame, ".jpg"))
    os.truncate(big, 2 * 2**30)  # sparse: 2 GB long, a few KB on disk
    line, rss = _read_in_child(big)
    assert line == f"{big}: 2048 MB, more than the 256 MB an image may be (source.max_image_megabytes)"
    assert rss < 400, f"peak RSS {rss:.0f} MB: the file was read"


def test_header_sizes_of_every_format_and_configurable_limits(tmp_path, frame):
    for fmt in FORMATS:
        assert dimensions(_encode(frame, *fmt)) == (320, 240), fmt
    assert dimensions(b"P6\n320 240\n255\n") is None  # a format whose header is not read here: refused
    (tmp_path / "x.ppm").write_bytes(_encode(frame, ".ppm"))
    with pytest.raises(ImageFileError, match="not a PNG, JPEG, BMP, TIFF or WebP image"):
        read_rgb(tmp_path / "x.ppm")
    (tmp_path / "f.png").write_bytes(_encode(frame, ".png"))
    tight = ImageLimits(max_pixels=320 * 240 - 1)
    with pytest.raises(ImageFileError, match="320x240 pixels"):
        read_rgb(tmp_path / "f.png", tight)
    with pytest.raises(ImageFileError, match="more than the 9.5e-05 MB"):
        read_rgb(tmp_path / "f.png", ImageLimits(max_bytes=100))
    os.mkfifo(tmp_path / "fifo.png")  # never opened for reading in a way that blocks
    with pytest.raises(ImageFileError, match="not a regular file"):
        read_rgb(tmp_path / "fifo.png")
    cfg = load_config(CONFIG, {"source.kind": "folder", "source.path": str(tmp_path),
                               "source.max_image_megapixels": 0.05})
    with pytest.raises(SourceError, match="none of its 1 image file"):  # f.png has more pixels than allowed
        open_source(cfg.source)


# Real transparent PNGs from a package: matplotlib's sample data. Inkscape left white under the hidden pixels of
# the first, matplotlib black under those of the second: read as RGB alone, the same transparency would become
# white in one and black in the other.
MPL_TRANSPARENT = {"Minduka_Present_Blue_Pack.png": 255, "logo2.png": 0}


@pytest.fixture(scope="module")
def transparent_pngs() -> dict[str, Path]:
    import matplotlib

    root = Path(matplotlib.get_data_path()) / "sample_data"
    return {name: root / name for name in MPL_TRANSPARENT}


def test_real_transparent_pngs_are_composited_on_grey_by_every_reader(transparent_pngs):
    from PIL import Image

    from calibration.dataset import Sample, load_batch, load_rgb

    for name, path in transparent_pngs.items():
        raw = np.asarray(Image.open(path).convert("RGBA"))
        hidden, opaque = raw[..., 3] == 0, raw[..., 3] == 255
        assert hidden.mean() > 0.2 and (raw[hidden][:, :3] == MPL_TRANSPARENT[name]).all()
        rgb = read_rgb(path)
        assert (rgb[hidden] == BACKGROUND).all() and np.array_equal(rgb[opaque], raw[opaque][:, :3])
        assert np.array_equal(load_rgb(path), rgb)  # the workstation's reader (train, convert) is the same
    batch = load_batch([Sample(p, 0) for p in transparent_pngs.values()], 32)
    assert batch.converted == "2 image(s) converted on reading: 2 transparent (composited on grey 128,128,128)"


def test_run_on_a_folder_of_transparent_pngs_says_so_once(tmp_path, transparent_pngs):
    for name, path in transparent_pngs.items():
        (tmp_path / name).write_bytes(path.read_bytes())
    r = _run(tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("converted on reading") == 1  # in the run's summary line
    assert "frames in" in next(line for line in r.stdout.splitlines() if "converted on reading" in line)
    assert "; 2 image(s) converted on reading: 2 transparent (composited on grey 128,128,128)" in r.stdout
