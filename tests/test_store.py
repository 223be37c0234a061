"""The capture store with real SQLite, real files, a real full filesystem and real SIGKILLs."""

from __future__ import annotations

import csv
import errno
import hashlib
import io
import json
import math
import os
import random
import signal
import sqlite3
import stat
import subprocess
import time
import zipfile
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.record import schema
from edge.record.capture import from_record, to_record
from edge.record.devicekey import KEY_NAME
from edge.record.export import export_zip
from edge.record.schema import SCHEMA_VERSION
from edge.record.store import (
    IMAGES,
    QUARANTINE,
    TMP_PREFIX,
    CaptureStore,
    StoreError,
    StoreOnFirstCapture,
    default_device_id,
)
from tests._wait import until

REPO = Path(__file__).resolve().parents[1]
LABELS = ["monkeypox", "chickenpox", "measles", "normal"]


def _img(rng: np.random.Generator, h: int = 48, w: int = 64) -> np.ndarray:
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def _png_size(rgb: np.ndarray) -> int:
    return len(cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))[1])


def _image_files(root: Path) -> set[str]:
    return {f"{IMAGES}/{name}" for name in os.listdir(root / IMAGES)}


def _referenced(store: CaptureStore) -> set[str]:
    return {f for c in store.list() for f in (c.frame_file, c.overlay_file)}


def test_add_list_export_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    store = CaptureStore(tmp_path / "store", device_id="board-1")
    kept = []
    for i in range(3):
        frame, overlay = _img(rng, 48, 80)[:, 8:72], _img(rng, 60, 80)  # a crop view, as the pipeline passes
        probs = np.roll([0.7, 0.1, 0.15, 0.05], i)
        kept.append((store.add(frame, overlay, probs, LABELS, "bundle-abc", note=f"n{i}"), frame, overlay))

    caps = store.list()
    assert [c.uuid for c in caps] == [c.uuid for c, _, _ in kept]
    assert [c.label for c in caps] == ["monkeypox", "chickenpox", "measles"]
    assert caps[0].probs == pytest.approx(dict(zip(LABELS, [0.7, 0.1, 0.15, 0.05])))
    assert caps[0].confidence == pytest.approx(0.7) and caps[0].device_id == "board-1"
    assert store.list(since=caps[1].created_utc) == caps[1:]
    assert store.list(since="2999-01-01") == []
    assert store.verify() == []

    out = tmp_path / "usb" / "export.zip"
    out.parent.mkdir()
    assert export_zip(store, out).exported == [c.id for c in caps]
    assert os.listdir(out.parent) == ["export.zip"]  # no temp file left beside it
    with zipfile.ZipFile(out) as zf:
        rows = list(csv.DictReader(io.StringIO(zf.read("index.csv").decode())))
        assert [r["uuid"] for r in rows] == [c.uuid for c in caps]
        for row, (cap, frame, overlay) in zip(rows, kept):
            assert row["label"] == cap.label and row["bundle_hash"] == "bundle-abc" and row["device_id"] == "board-1"
            assert float(row["confidence"]) == pytest.approx(cap.confidence, abs=1e-6)
            assert [float(row[f"p_{lab}"]) for lab in LABELS] == pytest.approx(list(cap.probs.values()), abs=1e-6)
            assert row["note"] == cap.note and row["status"] == "ok"
            for name, sha, original in ((row["frame_file"], row["frame_sha256"], frame),
                                        (row["overlay_file"], row["overlay_sha256"], overlay)):
                data = zf.read(name)
                assert hashlib.sha256(data).hexdigest() == sha
                assert data == (store.root / name).read_bytes()
                decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
                assert np.array_equal(cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB), original)  # PNG is lossless
    assert export_zip(store, tmp_path / "later.zip", since=caps[2].created_utc).exported == [caps[2].id]
    store.close()


def test_schema_wal_private_directory_and_device_key(tmp_path):
    root = tmp_path / "new" / "store"
    with CaptureStore(root) as store:
        cap = store.add(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4, 3), np.uint8), [1.0], ["a"], "h")
        public = store.key.public
    assert stat.S_IMODE(os.stat(root).st_mode) == 0o700  # created by the store: private
    assert stat.S_IMODE(os.stat(root / IMAGES).st_mode) == 0o700
    key = tmp_path / "new" / KEY_NAME  # in the state directory, beside the store
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600 and b"PRIVATE KEY" in key.read_bytes()
    assert (tmp_path / "new" / f"{KEY_NAME}.pub").read_text() == public + "\n"
    db = sqlite3.connect(root / "captures.db")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3
    entry = json.loads(db.execute("SELECT entry FROM captures").fetchone()[0])
    assert entry["id"] == cap.id == 1 and entry["prev"] == "0" * 64 and entry["record"]["uuid"] == cap.uuid
    assert not set(entry["record"]) & {"patient", "name", "dob", "patient_id", "address"}
    db.close()


def test_device_id_is_a_hash_not_the_machine_id():
    dev = default_device_id()
    assert len(dev) == 12 and all(ch in "0123456789abcdef" for ch in dev)
    machine_id = Path("/etc/machine-id").read_text().strip() if Path("/etc/machine-id").exists() else ""
    assert not machine_id or dev not in machine_id


def test_orphans_are_quarantined_at_start_never_deleted(tmp_path):
    rng = np.random.default_rng(1)
    root = tmp_path / "store"
    with CaptureStore(root) as store:
        caps = [store.add(_img(rng), _img(rng), [0.3, 0.7], ["a", "b"], "h") for _ in range(2)]
    temp = root / IMAGES / f"{TMP_PREFIX}20260101T000000Z_x_frame.png"
    unreferenced = root / IMAGES / "20260101T000000Z_never-committed_overlay.png"
    temp.write_bytes(b"half a png")
    unreferenced.write_bytes(b"a whole png, but no row")
    with CaptureStore(root) as store:
        assert store.quarantined == sorted([f"{IMAGES}/{temp.name}", f"{IMAGES}/{unreferenced.name}"])
        assert not temp.exists() and not unreferenced.exists()
        assert (root / QUARANTINE / temp.name).read_bytes() == b"half a png"  # moved aside, not deleted
        assert (root / QUARANTINE / unreferenced.name).read_bytes() == b"a whole png, but no row"
        assert store.list() == caps and store.verify() == []
        assert _image_files(root) == _referenced(store)
        assert any(f"2 file(s) in {root / QUARANTINE}" in n for n in store.audit().notices)


def test_no_sweep_while_another_process_holds_the_store(tmp_path):
    """`skinedge captures export` opening the store must not delete the service's not-yet-committed file."""
    root = tmp_path / "store"
    service = CaptureStore(root)
    in_flight = root / IMAGES / "20260101T000000Z_in-flight_frame.png"  # renamed, row not committed yet
    in_flight.write_bytes(b"png")
    with CaptureStore(root) as cli:
        assert cli.quarantined == [] and in_flight.exists()
    service.close()
    with CaptureStore(root) as later:  # alone now: the orphan really is one
        assert later.quarantined == [f"{IMAGES}/{in_flight.name}"]


def test_store_path_that_cannot_be_a_directory(tmp_path):
    # Tests run as root, which ignores permission bits (chmod 000 proves nothing), so the unusable
    # store is a path whose parent is a regular file, and a path that is itself a file.
    afile = tmp_path / "not-a-dir"
    afile.write_text("x")
    with pytest.raises(StoreError, match=f"capture store {afile}/captures: .*[Nn]ot a directory"):
        CaptureStore(afile / "captures")
    with pytest.raises(StoreError, match=f"capture store {afile}: exists and is not a directory"):
        CaptureStore(afile)
    assert afile.read_text() == "x" and os.listdir(tmp_path) == ["not-a-dir"]


def test_bad_arguments_write_nothing(tmp_path):
    rng = np.random.default_rng(3)
    store = CaptureStore(tmp_path / "store")
    with pytest.raises(StoreError, match="frame: expected an RGB image of shape"):
        store.add(np.zeros((4, 4), np.uint8), _img(rng), [1.0], ["a"], "h")
    with pytest.raises(StoreError, match="2 probabilities for 3 labels"):
        store.add(_img(rng), _img(rng), [0.5, 0.5], ["a", "b", "c"], "h")
    with pytest.raises(StoreError, match="since: expected an ISO date"):
        store.list(since="last tuesday")
    assert store.list() == [] and _image_files(store.root) == set()
    store.close()


# ---- disk full ----

def _try(cmd: list[str]) -> bool:
    return subprocess.run(cmd, check=False, capture_output=True).returncode == 0


@pytest.fixture
def small_fs(tmp_path):
    """(dir, how): a directory on a real 512 KB filesystem when this machine lets us mount one.

    Tried in order: a tmpfs, a loop-mounted ext4 image; if neither mounts (no CAP_SYS_ADMIN), `how` is
    "simulated" and the test makes os.write raise ENOSPC instead.
    """
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    image = tmp_path / "fs.img"
    if _try(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mnt)]):
        how = "tmpfs"
    elif (_try(["truncate", "-s", "2M", str(image)]) and _try(["mkfs.ext4", "-q", "-m", "0", str(image)])
          and _try(["mount", "-o", "loop", str(image), str(mnt)])):
        how = "loop ext4"
    else:
        how = "simulated"
    yield mnt, how
    if how != "simulated":
        subprocess.run(["umount", "-l", str(mnt)], check=True)


class _Filler:
    """Fill the filesystem to the last byte, then free an exact number of 4 KiB pages."""

    def __init__(self, path: Path):
        self.path = path

    def leave_free(self, pages: int) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            while True:
                os.write(fd, b"\0" * 4096)
        except OSError as e:
            assert e.errno == errno.ENOSPC
        finally:
            os.close(fd)
        size = self.path.stat().st_size
        os.truncate(self.path, max(0, size - pages * 4096))


def test_disk_full_leaves_no_trace(small_fs, monkeypatch):
    mnt, how = small_fs
    rng = np.random.default_rng(4)
    store = CaptureStore(mnt / "store")
    old = [store.add(_img(rng), _img(rng), [0.2, 0.8], ["a", "b"], "h") for _ in range(2)]
    frame, overlay = _img(rng), _img(rng, 120, 160)  # about 3 and 15 pages as PNG (noise does not compress)
    frame_pages, overlay_pages = (math.ceil(_png_size(x) / 4096) for x in (frame, overlay))
    # Room for: nothing; the frame but not the overlay; both images but not SQLite's WAL append.
    cases = {"nothing": 0, "frame only": frame_pages + 1, "images, not the commit": frame_pages + overlay_pages + 1}
    if how == "simulated":  # no mountable filesystem here: the one write call fails as a full disk would
        real_write = os.write

        def make_full(free_pages: int) -> None:
            budget = [free_pages * 4096]

            def write(fd, data):
                if len(data) > budget[0]:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                budget[0] -= len(data)
                return real_write(fd, data)
            monkeypatch.setattr(os, "write", write)
        cases.pop("images, not the commit")  # SQLite's own writes cannot be reached from Python
    else:
        make_full = _Filler(mnt / "filler").leave_free

    failed_in = {}
    for case, pages in cases.items():
        make_full(pages)
        with pytest.raises(StoreError, match=f"capture store {store.root}: capture not saved: .*(disk|full)") as e:
            store.add(frame, overlay, [0.5, 0.5], ["a", "b"], "h")
        failed_in[case] = type(e.value.__cause__).__name__
        assert store.list() == old, case  # no new row, old rows intact
        assert _image_files(store.root) == _referenced(store), case  # no stray or temp file
        assert store.verify() == [], case  # integrity_check ok, every old file matches its hash

    monkeypatch.undo()
    (mnt / "filler").unlink(missing_ok=True)
    assert store.add(frame, overlay, [0.5, 0.5], ["a", "b"], "h").id == 3  # usable again with space
    store.close()
    with CaptureStore(mnt / "store") as again:
        assert again.quarantined == []  # add() cleaned up after itself; nothing was left over
        assert len(again.list()) == 3 and again.verify() == []
    print(f"ENOSPC produced by: {how}; room for -> error: {failed_in}")


# ---- crash safety ----

KILLS = 25  # per round; two rounds, so the suite prints progress between them


def _lines(path: Path) -> list[str]:
    """The complete lines of the child's acknowledgement file (a line is written in one write())."""
    text = path.read_text() if path.exists() else ""
    return text.split("\n")[:-1]


@pytest.mark.parametrize("round_", [0, 1])
def test_sigkill_at_random_moments_loses_no_acknowledged_capture(tmp_path, round_):
    """Children fork from a forkserver that has imported the store (tests/_capture_loop.loop): a kill costs no
    interpreter start, so the kills are many and land at random points of add()."""
    import multiprocessing

    from tests import _capture_loop

    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["tests._capture_loop"])
    root = tmp_path / "store"
    rng = random.Random(20261122 + round_)
    acked: set[str] = set()
    kills = orphans = 0
    t0 = time.monotonic()
    for i in range(round_ * KILLS, (round_ + 1) * KILLS):
        acks = tmp_path / f"acks-{i}"
        child = ctx.Process(target=_capture_loop.loop, args=(str(root), i, str(acks)))
        child.start()
        until("the store is open", lambda a=acks: _lines(a)[:1] == ["OPEN"], child=child, step=0.002)
        if i % 5 == 4:  # every fifth kill lands after a capture is acknowledged, whatever the machine's load
            until("a capture is acknowledged", lambda a=acks: len(_lines(a)) > 1, child=child, step=0.002)
        time.sleep(rng.uniform(0.0, 0.1))  # a few captures at most: each kill's checks read the whole store
        os.kill(child.pid, signal.SIGKILL)
        child.join()
        assert child.exitcode == -signal.SIGKILL
        kills += 1
        acked |= {line.split()[1] for line in _lines(acks) if line.startswith("ACK ")}

        with CaptureStore(root) as store:
            orphans += len(store.quarantined)
            db = sqlite3.connect(root / "captures.db")
            assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
            db.close()
            assert store.verify() == []  # the chain verifies; every row's files exist and match their hashes
            assert _image_files(root) == _referenced(store)  # nothing half-written or temporary is visible
            stored = {c.uuid for c in store.list()}
        assert not any(name.startswith(TMP_PREFIX) for name in os.listdir(root / IMAGES))
    lost = acked - stored
    print(f"\nSIGKILL crash test: {kills} kills survived, {len(acked)} captures acknowledged, {len(stored)} "
          f"stored, {len(lost)} acknowledged captures lost, {orphans} orphan files quarantined "
          f"(kills that landed mid-capture), {time.monotonic() - t0:.1f} s")
    assert kills == KILLS
    assert lost == set()
    assert acked  # the kills did land while captures were being acknowledged


def test_store_on_first_capture_creates_nothing_until_a_capture_is_kept(tmp_path):
    rng = np.random.default_rng(0)
    lazy = StoreOnFirstCapture(tmp_path / "store")
    assert not (tmp_path / "store").exists()
    cap = lazy.add(_img(rng), _img(rng), [0.7, 0.1, 0.1, 0.1], LABELS, "bundle-hash")
    lazy.close()
    with CaptureStore(tmp_path / "store") as store:
        assert [c.uuid for c in store.list()] == [cap.uuid]


def _old_store(root: Path, version: int, ids: list[int]) -> list[str]:
    """A store as skinedge kept it before the chain (schema 1 or 2): real PNGs, rows as its add() wrote them."""
    (root / IMAGES).mkdir(parents=True)
    db = sqlite3.connect(root / "captures.db", isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    schema.create_version_1(db)
    if version == 2:
        schema.MIGRATIONS[1](db, None, "")
        db.execute("PRAGMA user_version = 2")
    uuids = []
    for i in ids:
        png = cv2.imencode(".png", np.full((8, 8, 3), i, np.uint8))[1].tobytes()
        files = [f"{IMAGES}/old{i}_{kind}.png" for kind in ("frame", "overlay")]
        for f in files:
            (root / f).write_bytes(png)
        uuids.append(f"old-{i}")
        db.execute("INSERT INTO captures (id, uuid, created_utc, label, confidence, probs_json, bundle_hash, "
                   "device_id, frame_file, overlay_file, frame_sha256, overlay_sha256, note) "
                   "VALUES (?, ?, ?, 'a', 0.6, '{\"a\": 0.6, \"b\": 0.4}', 'h', 'board', ?, ?, ?, ?, 'old')",
                   (i, uuids[-1], f"2026-01-0{i}T00:00:00.000000Z", *files, *[hashlib.sha256(png).hexdigest()] * 2))
    db.close()
    return uuids


@pytest.mark.parametrize("version", [1, 2])
def test_store_kept_before_the_chain_is_chained_at_migration(tmp_path, version):
    root, img = tmp_path / "store", np.full((8, 8, 3), 90, np.uint8)
    uuids = _old_store(root, version, [1, 2, 4])  # #3 was deleted before the chain existed: nothing can show it
    with CaptureStore(root, create=False) as reader:  # the read commands never migrate...
        assert reader.schema == version and [c.uuid for c in reader.list()] == uuids
        audit = reader.audit()
        assert audit.problems == [] and not audit.chained and "predates the chain" in audit.notices[0]
    with CaptureStore(root) as store:  # ...the first process that keeps captures does, in one transaction
        new = store.add(img, img, [0.3, 0.7], ["a", "b"], "h" * 64, gate={"gate": "blurred", "gate_sharpness": 3.5})
        caps = store.list()
        assert [c.uuid for c in caps] == [*uuids, new.uuid] and [c.id for c in caps] == [1, 2, 3, 4]
        assert [c.gate for c in caps] == [{}, {}, {}, {"gate": "blurred", "gate_sharpness": 3.5}]
        assert caps[0].probs == {"a": 0.6, "b": 0.4} and caps[0].note == "old"
        assert [c.migrated.get("from_schema") for c in caps] == [2, 2, 2, None]
        assert [c.migrated.get("old_id") for c in caps] == [None, None, 4, None]  # closed up, old number kept
        audit = store.audit()
        assert audit.problems == [] and "3 record(s) (#1-#3) were chained when the store was migrated" in \
            audit.notices[0]
    db = sqlite3.connect(root / "captures.db")
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")} == {
        "captures", "chain_head"}
    db.close()


def test_fields_added_later_travel_in_the_signed_record(tmp_path):
    """A record written by a newer skinedge, with a field this version does not know, is listed and verifies;
    add() refuses a field Capture does not have."""
    rng = np.random.default_rng(5)
    with CaptureStore(tmp_path / "store") as store:
        with pytest.raises(TypeError, match="unknown capture field"):
            store.add(_img(rng), _img(rng), [1.0], ["a"], "h", visit="V-1")
        cap = store.add(_img(rng), _img(rng), [1.0], ["a"], "h")
        record = {**to_record(cap), "future_field": "V-17"}  # as a newer version's add() would write it
        db = store._require_open()
        db.execute("BEGIN IMMEDIATE")
        newer = from_record(2, record)
        assert newer.extra == {"future_field": "V-17"}
        store._append(db, replace(newer, uuid="u2", frame_file=f"{IMAGES}/b.png", overlay_file=f"{IMAGES}/c.png"))
        db.execute("COMMIT")
        assert store.list()[1].extra == {"future_field": "V-17"}
        assert [p.text for p in store.audit(files=False).problems] == []
