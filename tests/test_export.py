"""Exports and store commands under damage and attack: real SQLite, real files, real signals to a real child.

A damaged capture is skipped and listed, not fatal; a database row cannot make the export read outside the
store; index.csv cannot carry a spreadsheet formula; an existing ZIP is not overwritten without --force; the
temp ZIP is private and gone after an error or a signal; the read-only commands never create or chmod a store.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from edge.record.chain import canonical
from edge.record.export import PARTIAL, cell, export_zip
from edge.record.schema import MIRRORED
from edge.record.store import DB_NAME, IMAGES, TMP_PREFIX, CaptureStore, StoreError
from tests._wait import until
from tests.test_store import REPO, small_fs  # noqa: F401 - small_fs is a fixture

LABELS = ["a", "b"]


def _img(seed: int, h: int = 24, w: int = 32) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _store(root: Path, n: int, notes: list[str] | None = None) -> CaptureStore:
    store = CaptureStore(root, device_id="board-1")
    for i in range(n):
        store.add(_img(2 * i), _img(2 * i + 1), [0.8, 0.2], LABELS, "h", note=(notes or [""] * n)[i])
    return store


def _cli(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edge.cli", *args], check=False, capture_output=True, text=True,
                          timeout=120, cwd=REPO, **kw)


def _index(path: Path) -> list[dict[str, str]]:
    with zipfile.ZipFile(path) as zf:
        return list(csv.DictReader(io.StringIO(zf.read("index.csv").decode(), newline="")))


def _set(root: Path, capture_id: int, **fields) -> None:
    """Edit a record the way an attacker with the SD card would: plain SQLite, the record in the entry text and
    the column that mirrors it (the signature cannot be redone without the device key)."""
    db = sqlite3.connect(root / DB_NAME)
    with db:
        entry = json.loads(db.execute("SELECT entry FROM captures WHERE id = ?", (capture_id,)).fetchone()[0])
        entry["record"].update(fields)
        db.execute("UPDATE captures SET entry = ? WHERE id = ?", (canonical(entry), capture_id))
        for k, v in fields.items():
            if k in MIRRORED:
                db.execute(f"UPDATE captures SET {k} = ? WHERE id = ?", (v, capture_id))
    db.close()


def test_damaged_captures_are_skipped_listed_and_counted(tmp_path):
    store = _store(tmp_path / "store", 5)
    caps = store.list()
    flipped, deleted = caps[1], caps[3]
    path = store.root / flipped.overlay_file
    data = bytearray(path.read_bytes())
    data[-20] ^= 0xFF
    path.write_bytes(bytes(data))
    (store.root / deleted.frame_file).unlink()

    done = export_zip(store, tmp_path / "out.zip")
    assert done.exported == [caps[0].id, caps[2].id, caps[4].id]
    exported = [caps[0], caps[2], caps[4]]
    assert [c for c, _ in done.skipped] == [flipped, deleted]
    rows = _index(tmp_path / "out.zip")
    assert [r["uuid"] for r in rows] == [c.uuid for c in caps]  # every capture listed, damaged ones too
    status = {r["uuid"]: r["status"] for r in rows}
    assert "sha256 does not match" in status[flipped.uuid] and status[flipped.uuid].startswith("skipped: ")
    assert "No such file" in status[deleted.uuid]
    assert [status[c.uuid] for c in exported] == ["ok"] * 3
    with zipfile.ZipFile(tmp_path / "out.zip") as zf:
        names = set(zf.namelist())
        for c in exported:
            assert zf.read(c.frame_file) == (store.root / c.frame_file).read_bytes()
    assert names == {"index.csv", "chain.jsonl", "head.json", "device-key.pub", "VERIFY.txt", "README.txt",
                     "index.html"} | {f for c in exported for f in (c.frame_file, c.overlay_file)}
    problems = store.verify()
    assert len(problems) == 2 and flipped.uuid in problems[0] and deleted.uuid in problems[1]
    store.close()

    r = _cli("captures", "export", "--store", str(tmp_path / "store"), "--out", str(tmp_path / "cli.zip"))
    assert r.returncode == PARTIAL, r.stderr
    assert "exported 3 capture(s)" in r.stdout and "PARTIAL: 2 damaged capture(s) skipped" in r.stdout
    assert flipped.uuid in r.stderr and deleted.uuid in r.stderr and "Traceback" not in r.stderr
    r = _cli("captures", "verify", "--store", str(tmp_path / "store"))
    assert r.returncode == 1 and flipped.uuid in r.stdout and deleted.uuid in r.stdout


def test_records_cannot_point_outside_the_store(tmp_path):
    """'../../etc/hostname', an absolute path, a symlink and a FIFO in images/: none is read, even with the right
    sha256 in the record (confinement, not hashing, refuses them); the export neither follows nor hangs. An edited
    record already fails its signature, so the export skips it unread; confinement is the second wall, for a
    record that was signed (read_checked on the record as it stands)."""
    store = _store(tmp_path / "store", 5)
    caps = store.list()
    secret = tmp_path / "secret.txt"
    secret.write_text("patient list")
    secret_sha = hashlib.sha256(secret.read_bytes()).hexdigest()
    escape = os.path.relpath(secret, store.root)  # '../secret.txt'
    (store.root / IMAGES / "link.png").symlink_to(secret)
    os.mkfifo(store.root / IMAGES / "fifo.png")
    bad = [replace(caps[0], frame_file=escape, frame_sha256=secret_sha),
           replace(caps[1], frame_file=str(secret), frame_sha256=secret_sha),
           replace(caps[2], frame_file=f"{IMAGES}/link.png", frame_sha256=secret_sha),
           replace(caps[3], frame_file=f"{IMAGES}/fifo.png")]
    why = []
    for cap in bad:
        with pytest.raises(StoreError) as e:
            store.read_checked(cap)
        why.append(str(e.value))
    assert "not a file in the store's images/ folder" in why[0] and "'../secret.txt'" in why[0]
    assert "not a file in the store's images/ folder" in why[1]
    assert "symlink" in why[2] and "not a regular file" in why[3]

    for cap in bad:  # the same edits in the database
        _set(store.root, cap.id, frame_file=cap.frame_file, frame_sha256=cap.frame_sha256)
    done = export_zip(store, tmp_path / "out.zip")
    assert done.exported == [caps[4].id]
    assert all("does not match its signature" in w for _, w in done.skipped) and len(done.skipped) == 4
    with zipfile.ZipFile(tmp_path / "out.zip") as zf:
        assert not any(zf.read(n) == secret.read_bytes() for n in zf.namelist())
        assert all(".." not in n and not n.startswith("/") for n in zf.namelist())
    problems = store.verify()
    assert all(any(f"capture #{c.id} ({c.uuid})" in p for p in problems) for c in bad)
    store.close()
    r = _cli("captures", "verify", "--store", str(store.root))
    assert r.returncode == 1 and "store OK" not in r.stdout and all(c.uuid in r.stdout for c in bad)


def test_edited_or_malformed_database(tmp_path):
    """Probabilities edited into garbage: that capture is damaged, the others export. A database file that is
    not SQLite at all: one line, no traceback."""
    store = _store(tmp_path / "store", 3)
    caps = store.list()
    _set(store.root, caps[0].id, probs="not a list")
    _set(store.root, caps[1].id, probs=[["a", "lots"]])
    done = export_zip(store, tmp_path / "out.zip")
    assert done.exported == [caps[2].id] and all("does not match its signature" in why for _, why in done.skipped)
    assert len(store.verify()) == 2
    store.close()
    (store.root / DB_NAME).write_bytes(b"\0" * 8192)  # zeroed by a failing SD card
    for f in store.root.glob(f"{DB_NAME}-*"):
        f.unlink()
    for action in ("list", "export", "verify"):
        r = _cli("captures", action, "--store", str(store.root), "--out", str(tmp_path / "x.zip"))
        assert r.returncode == 2 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_csv_cells_that_a_spreadsheet_would_run_are_escaped(tmp_path):
    notes = ['=HYPERLINK("http://x","y")', "+1+1", "-2+3", "@SUM(A1)", "\tx", "a = b", ""]
    store = _store(tmp_path / "store", len(notes), notes)
    store.add(_img(99), _img(98), [0.1, 0.9], ["ok", "=cmd|' /C calc'!A0"], "h")  # a label from a bundle
    export_zip(store, tmp_path / "out.zip")
    rows = _index(tmp_path / "out.zip")
    assert [r["note"] for r in rows[:len(notes)]] == [
        '\'=HYPERLINK("http://x","y")', "'+1+1", "'-2+3", "'@SUM(A1)", "'\tx", "a = b", ""]
    assert rows[-1]["label"] == "'=cmd|' /C calc'!A0"
    assert all(not v.startswith(("=", "+", "-", "@")) for r in rows for v in r.values() if v)
    assert cell(0.5) == "0.5" and cell("-") == "'-"
    store.close()


def test_csv_cells_with_line_breaks_are_quoted(tmp_path):
    """A bare CR (or LF) inside a note must not end the row for a spreadsheet or a CSV reader: quoted, and read back
    whole; verify --zip agrees with the row."""
    notes = ["before\rafter", "line 1\nline 2", "crlf\r\ninside", "plain"]
    store = _store(tmp_path / "store", len(notes), notes)
    export_zip(store, tmp_path / "out.zip")
    store.close()
    with zipfile.ZipFile(tmp_path / "out.zip") as zf:
        raw = zf.read("index.csv").decode()
    assert all(f'"{n}"' in raw for n in notes[:3]) and ',plain,' in raw
    assert raw.count("\r\n") == len(notes) + 1 + 1  # one per row and header, one inside the crlf note
    assert [r["note"] for r in _index(tmp_path / "out.zip")] == notes
    r = _cli("captures", "verify", "--zip", str(tmp_path / "out.zip"))
    assert r.returncode == 0, r.stdout + r.stderr


def test_existing_out_needs_force(tmp_path):
    store = _store(tmp_path / "store", 1)
    out = tmp_path / "out.zip"
    out.write_bytes(b"yesterday's export")
    with pytest.raises(StoreError, match="out.zip: exists; pass --force to replace it"):
        export_zip(store, out)
    assert out.read_bytes() == b"yesterday's export"
    store.close()
    r = _cli("captures", "export", "--store", str(store.root), "--out", str(out))
    assert r.returncode == 2 and "--force" in r.stderr and out.read_bytes() == b"yesterday's export"
    r = _cli("captures", "export", "--store", str(store.root), "--out", str(out), "--force")
    assert r.returncode == 0, r.stderr
    assert len(_index(out)) == 1


def test_export_never_replaces_a_device_node_nor_writes_into_dev(tmp_path):
    """--force replaces a file, never a character device, FIFO or socket; /dev, /proc and /sys are refused even for
    a new name. One line each, exit 2, nothing written, the node still what it was."""
    store = _store(tmp_path / "store", 1)
    store.close()
    nodes = tmp_path / "nodes"
    nodes.mkdir()
    os.mkfifo(nodes / "fifo")
    targets = {"/dev/null": "/dev is a system folder", "/dev/shm/captures.zip": "is a system folder",
               "/proc/captures.zip": "/proc is a system folder", str(nodes / "fifo"): "is a FIFO, not a file"}
    try:  # a character device of our own (the same device as /dev/null), outside /dev
        os.mknod(nodes / "null", 0o600 | stat.S_IFCHR, os.makedev(1, 3))
        targets[str(nodes / "null")] = "is a character device, not a file; it is never replaced, even with --force"
    except PermissionError:  # no CAP_MKNOD here: /dev/null above still covers a device node
        pass
    before = {t: os.stat(t).st_mode for t in targets if os.path.exists(t)}
    for target, message in targets.items():
        r = _cli("captures", "export", "--store", str(store.root), "--out", target, "--force")
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and message in lines[0], (target, r.stderr)
    assert {t: os.stat(t).st_mode for t in before} == before  # still the same kind of node
    assert sorted(os.listdir(nodes)) == sorted(Path(t).name for t in targets if t.startswith(str(nodes)))
    assert not os.path.exists("/dev/shm/captures.zip") and not any(
        n.startswith(TMP_PREFIX) for n in os.listdir("/dev/shm"))


@pytest.mark.parametrize("action", ["list", "export", "verify"])
def test_read_commands_refuse_a_store_that_does_not_exist(tmp_path, action):
    typo = tmp_path / "captrues"
    r = _cli("captures", action, "--store", str(typo), "--out", str(tmp_path / "x.zip"))
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and "captrues: does not exist" in lines[0]
    assert not typo.exists() and not (tmp_path / "x.zip").exists()


def test_existing_directories_are_never_chmodded(tmp_path):
    """A world-writable sticky directory (like /tmp): `captures list` refuses it and leaves it alone; even the
    service, which may create a store there, leaves the directory's mode as it found it."""
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    r = _cli("captures", "list", "--store", str(shared))
    assert r.returncode == 2 and f"{shared}: not a capture store (no {DB_NAME} in it)" in r.stderr
    assert stat.S_IMODE(os.stat(shared).st_mode) == 0o1777 and os.listdir(shared) == []
    CaptureStore(shared).close()  # the run/capture path: creates its files, not the directory's mode
    assert stat.S_IMODE(os.stat(shared).st_mode) == 0o1777
    assert stat.S_IMODE(os.stat(shared / IMAGES).st_mode) == 0o700


def test_temp_of_a_killed_export_is_removed_by_the_next(tmp_path):
    store = _store(tmp_path / "store", 1)
    out = tmp_path / "out.zip"
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    alive = subprocess.Popen(["sleep", "60"])
    try:
        stale, busy = (tmp_path / f"{TMP_PREFIX}out.zip.{p.pid}" for p in (gone, alive))
        stale.write_bytes(b"half a zip from a SIGKILLed export")
        busy.write_bytes(b"another export still writing")
        export_zip(store, out)
        assert not stale.exists() and busy.exists() and out.exists()
    finally:
        alive.kill()
        alive.wait()
    store.close()


def test_export_error_leaves_no_temp(tmp_path, small_fs):  # noqa: F811 - the fixture
    mnt, how = small_fs
    if how == "simulated":
        pytest.skip("no small filesystem can be mounted here")
    store = _store(tmp_path / "store", 0)
    for i in range(4):  # ~300 KB of noise PNGs: more than the 512 KB filesystem holds once written twice
        store.add(_img(i, 200, 200), _img(i + 10, 200, 200), [0.5, 0.5], LABELS, "h")
    (mnt / "filler").write_bytes(b"\0" * 300_000)
    with pytest.raises(StoreError, match="disk full"):
        export_zip(store, mnt / "out.zip")
    assert sorted(os.listdir(mnt)) == ["filler"]
    store.close()


def _full_pipe() -> tuple[int, int]:
    """A pipe whose buffer is already full: a child writing to it blocks until the test reads (a state the test
    controls, not a race against the clock)."""
    r, w = os.pipe()
    os.set_blocking(w, False)
    try:
        while True:
            os.write(w, b"x" * 4096)
    except BlockingIOError:
        pass
    os.set_blocking(w, True)
    return r, w


def _drain(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks).lstrip(b"x")


# The CLI with SIGHUP at its default, as a login shell starts it: under `nohup` (a CI runner, a long local run) the
# suite and its children ignore SIGHUP, and export keeps an ignored SIGHUP ignored, by design (edge/record/export.py).
CLI_WITH_SIGHUP = ("import runpy, signal; signal.signal(signal.SIGHUP, signal.SIG_DFL); "
                   "runpy.run_module('edge.cli', run_name='__main__', alter_sys=True)")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_signal_mid_export_removes_the_private_temp(tmp_path, signum):
    """The export is provably in progress when the signal arrives: its temp ZIP exists and it is blocked writing
    its 'exporting N capture(s)' line into a pipe the test has filled."""
    store = _store(tmp_path / "store", 2)
    store.close()
    usb = tmp_path / "usb"
    usb.mkdir()
    r, w = _full_pipe()
    child = subprocess.Popen([sys.executable, "-c", CLI_WITH_SIGHUP, "captures", "export", "--store", str(store.root),
                              "--out", str(usb / "out.zip")], cwd=REPO, stdout=subprocess.DEVNULL, stderr=w,
                             umask=0)  # 0600 must not come from the umask
    os.close(w)
    try:
        temps = until("the export's temp file", lambda: [n for n in os.listdir(usb)
                                                          if n.startswith(f"{TMP_PREFIX}out.zip.")],
                      child=child, step=0.005)
        mode = stat.S_IMODE(os.stat(usb / temps[0]).st_mode)  # it cannot be gone: the child is blocked
        child.send_signal(signum)
        err = _drain(r).decode()
        child.wait(timeout=60)
    finally:
        child.kill()
        child.wait()
    assert mode == 0o600
    assert child.returncode == 130, err
    assert f"interrupted by {signal.Signals(signum).name}" in err and "Traceback" not in err
    assert os.listdir(usb) == []  # neither the ZIP nor its temp


def test_images_folder_that_is_a_symlink_is_refused(tmp_path):
    """The orphan sweep deletes unreferenced files in images/: a symlink there to another folder must never be
    swept (or read)."""
    store = _store(tmp_path / "store", 1)
    store.close()
    elsewhere = tmp_path / "elsewhere"
    (store.root / IMAGES).rename(elsewhere)
    (store.root / IMAGES).symlink_to(elsewhere)
    (elsewhere / "precious.txt").write_text("not a capture")
    for create in (True, False):
        with pytest.raises(StoreError, match="is not a directory of the store"):
            CaptureStore(store.root, create=create)
    assert (elsewhere / "precious.txt").read_text() == "not a capture" and len(os.listdir(elsewhere)) == 3
    (store.root / IMAGES).unlink()  # images/ gone altogether: the store opens and verify names the capture
    with CaptureStore(store.root, create=False) as opened:
        assert len(opened.verify()) == 1 and "No such file" in opened.verify()[0]
