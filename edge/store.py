"""Point-of-care capture store: PNG files plus one SQLite row per kept capture, crash-safe.

A clinic board loses power without warning, so a capture is acknowledged only once it is durable:
both images are written to temporary names, fsynced, renamed into place and the directory fsynced;
then a single SQLite transaction (WAL, synchronous=FULL) inserts the row that references them. A
crash before the commit leaves only unreferenced files, which the next start sweeps away; a crash
after it leaves a complete capture. The directory is private to the service user (0700) and no
patient-identifying field exists in the schema.
"""

from __future__ import annotations

import csv
import errno
import fcntl
import hashlib
import io
import json
import os
import socket
import sqlite3
import threading
import uuid as uuidlib
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:
    from typing import Self

SCHEMA_VERSION = 1
DB_NAME = "captures.db"
IMAGES = "images"
TMP_PREFIX = ".tmp-"
LOCK_NAME = ".lock"
_UTC = timezone.utc  # not datetime.UTC: that needs Python 3.11, setup.py allows 3.9
_SCHEMA = """
CREATE TABLE captures (
    id             INTEGER PRIMARY KEY,
    uuid           TEXT NOT NULL UNIQUE,
    created_utc    TEXT NOT NULL,
    label          TEXT NOT NULL,
    confidence     REAL NOT NULL,
    probs_json     TEXT NOT NULL,
    bundle_hash    TEXT NOT NULL,
    device_id      TEXT NOT NULL,
    frame_file     TEXT NOT NULL UNIQUE,
    overlay_file   TEXT NOT NULL UNIQUE,
    frame_sha256   TEXT NOT NULL,
    overlay_sha256 TEXT NOT NULL,
    note           TEXT NOT NULL DEFAULT ''
);
CREATE INDEX captures_created ON captures (created_utc);
"""
_FIELDS = ("uuid", "created_utc", "label", "confidence", "probs_json", "bundle_hash", "device_id", "frame_file",
           "overlay_file", "frame_sha256", "overlay_sha256", "note")
_COLUMNS = "id, " + ", ".join(_FIELDS)
_INSERT = f"INSERT INTO captures ({', '.join(_FIELDS)}) VALUES ({', '.join('?' * len(_FIELDS))})"


class StoreError(RuntimeError):
    """One line naming the store path (or capture) and what went wrong."""


@dataclass(frozen=True)
class Capture:
    id: int
    uuid: str
    created_utc: str  # ISO 8601, UTC, microseconds, 'Z' suffix: sorts as text
    label: str
    confidence: float
    probs: dict[str, float]
    bundle_hash: str
    device_id: str
    frame_file: str  # relative to the store root
    overlay_file: str
    frame_sha256: str
    overlay_sha256: str
    note: str


def default_device_id() -> str:
    """A stable pseudonymous board id: sha256 of /etc/machine-id (else the hostname), 12 hex digits.

    The raw machine id is never stored: systemd documents it as confidential, and exported captures
    travel on USB sticks.
    """
    try:
        source = Path("/etc/machine-id").read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        source = ""
    source = source or socket.gethostname()
    return hashlib.sha256(f"skinedge:{source}".encode()).hexdigest()[:12]


def utc_timestamp(when: datetime | None = None) -> str:
    when = (when or datetime.now(_UTC)).astimezone(_UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_since(since: str) -> str:
    """'2026-11-22', '2026-11-22T10:00', '...Z' or '...+02:00' -> the stored timestamp form (naive = UTC)."""
    try:
        when = datetime.fromisoformat(since.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise StoreError(f"since: expected an ISO date or time such as 2026-11-22 or 2026-11-22T10:00Z, "
                         f"found {since!r}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=_UTC)
    return utc_timestamp(when)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_durable(path: Path, data: bytes) -> None:
    """Write `data` to a new temp file beside `path`, fsync it, rename it to `path` (caller fsyncs the dir)."""
    tmp = path.with_name(f"{TMP_PREFIX}{path.name}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.replace(tmp, path)


def _encode_png(rgb: np.ndarray, what: str) -> bytes:
    if not (isinstance(rgb, np.ndarray) and rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3
            and rgb.shape[0] > 0 and rgb.shape[1] > 0):
        shape = getattr(rgb, "shape", None)
        raise StoreError(f"{what}: expected an RGB image of shape (h, w, 3) uint8, found "
                         f"{type(rgb).__name__} {shape} {getattr(rgb, 'dtype', '')}".rstrip())
    ok, buf = cv2.imencode(".png", cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR))
    if not ok:
        raise StoreError(f"{what}: OpenCV could not encode the image as PNG")
    return buf.tobytes()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class CaptureStore:
    """The capture directory: `captures.db` (SQLite, WAL) and `images/` (PNG), mode 0700.

    Several processes may open one store (the service keeps captures while `skinedge captures export`
    reads them): each holds a shared lock on `.lock`, and only a process that gets the lock exclusively
    sweeps orphans, so no one deletes another process's capture between its rename and its commit.
    """

    def __init__(self, root: Path | str, device_id: str | None = None):
        self.root = Path(root)
        self.images = self.root / IMAGES
        self.device_id = device_id or default_device_id()
        self._lock = threading.Lock()
        self._lock_fd: int | None = None
        self._db: sqlite3.Connection | None = None
        self.swept: list[str] = []  # orphans removed at open (relative paths), for logs and tests
        try:
            self._make_dirs()
            self._lock_fd = os.open(self.root / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            exclusive = self._try_lock(fcntl.LOCK_EX | fcntl.LOCK_NB)
            if not exclusive:
                fcntl.flock(self._lock_fd, fcntl.LOCK_SH)
            self._db = self._open_db()
            if exclusive:
                self.swept = self._sweep()
                fcntl.flock(self._lock_fd, fcntl.LOCK_SH)
        except StoreError:
            self.close()
            raise
        except (OSError, sqlite3.Error) as e:
            self.close()
            raise StoreError(f"capture store {self.root}: {_why(e)}") from e

    # ---- opening ----

    def _make_dirs(self) -> None:
        if self.root.exists() and not self.root.is_dir():
            raise StoreError(f"capture store {self.root}: exists and is not a directory")
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)  # an existing directory may have been created wider
        self.images.mkdir(mode=0o700, exist_ok=True)
        if not os.access(self.root, os.R_OK | os.W_OK | os.X_OK) or not os.access(self.images, os.W_OK | os.X_OK):
            raise StoreError(f"capture store {self.root}: not readable and writable by this user (uid {os.getuid()})")

    def _try_lock(self, flags: int) -> bool:
        try:
            fcntl.flock(self._lock_fd, flags)
            return True
        except BlockingIOError:
            return False

    def _open_db(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.root / DB_NAME, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA busy_timeout = 10000")
            mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise StoreError(f"capture store {self.root}: SQLite refused WAL mode (got {mode!r})")
            db.execute("PRAGMA synchronous = FULL")
            db.execute("BEGIN IMMEDIATE")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                for stmt in filter(str.strip, _SCHEMA.split(";")):
                    db.execute(stmt)
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            elif version > SCHEMA_VERSION:
                raise StoreError(f"capture store {self.root / DB_NAME}: schema version {version} is newer than "
                                 f"this skinedge understands ({SCHEMA_VERSION}); upgrade skinedge")
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            db.close()
            raise
        return db

    def _sweep(self) -> list[str]:
        """Remove temp files and images no row references: written before a crash, never committed."""
        referenced = {f for row in self._db.execute("SELECT frame_file, overlay_file FROM captures") for f in row}
        removed = []
        for entry in os.scandir(self.images):
            rel = f"{IMAGES}/{entry.name}"
            if entry.is_file(follow_symlinks=False) and rel not in referenced:
                os.unlink(entry.path)
                removed.append(rel)
        if removed:
            _fsync_dir(self.images)
        return sorted(removed)

    # ---- writing ----

    def add(self, frame_rgb: np.ndarray, overlay_rgb: np.ndarray, probs: Sequence[float], labels: Sequence[str],
            bundle_hash: str, note: str = "") -> Capture:
        """Keep one capture; it is durable (and acknowledged) only when this returns."""
        probs = [float(p) for p in probs]
        labels = [str(lab) for lab in labels]
        if not probs or len(probs) != len(labels):
            raise StoreError(f"capture store {self.root}: {len(probs)} probabilities for {len(labels)} labels")
        if not all(np.isfinite(probs)):
            raise StoreError(f"capture store {self.root}: probabilities must be finite, found {probs}")
        frame_png = _encode_png(frame_rgb, "frame")
        overlay_png = _encode_png(overlay_rgb, "overlay")
        best = int(np.argmax(probs))
        uid = str(uuidlib.uuid4())
        created = utc_timestamp()
        stem = f"{created[:19].replace('-', '').replace(':', '')}Z_{uid}"
        cap = Capture(0, uid, created, labels[best], probs[best], dict(zip(labels, probs)), bundle_hash,
                      self.device_id, f"{IMAGES}/{stem}_frame.png", f"{IMAGES}/{stem}_overlay.png",
                      _sha256(frame_png), _sha256(overlay_png), note)
        with self._lock:
            db = self._require_open()
            written: list[Path] = []
            try:
                for rel, data in ((cap.frame_file, frame_png), (cap.overlay_file, overlay_png)):
                    written.append(self.root / rel)
                    _write_durable(self.root / rel, data)
                _fsync_dir(self.images)
                db.execute("BEGIN IMMEDIATE")  # one transaction; its COMMIT is fsynced (synchronous=FULL)
                row_id = db.execute(_INSERT, (
                    cap.uuid, cap.created_utc, cap.label, cap.confidence, json.dumps(cap.probs), cap.bundle_hash,
                    cap.device_id, cap.frame_file, cap.overlay_file, cap.frame_sha256, cap.overlay_sha256,
                    cap.note)).lastrowid
                db.execute("COMMIT")
            except (OSError, sqlite3.Error) as e:
                self._abandon(db, uid, written)
                raise StoreError(f"capture store {self.root}: capture not saved: {_why(e)}") from e
        return replace(cap, id=row_id)

    def _abandon(self, db: sqlite3.Connection, uid: str, paths: list[Path]) -> None:
        """Undo a failed add(): roll back, and remove its files unless the row did get committed.

        Best effort: whatever cannot be removed now is an orphan that the next start sweeps.
        """
        try:
            if db.in_transaction:
                db.execute("ROLLBACK")
            if db.execute("SELECT 1 FROM captures WHERE uuid = ?", (uid,)).fetchone():
                return
        except sqlite3.Error:
            return
        for path in paths:
            for p in (path, path.with_name(f"{TMP_PREFIX}{path.name}")):
                try:
                    p.unlink(missing_ok=True)
                except OSError:
                    pass
        try:
            _fsync_dir(self.images)
        except OSError:
            pass

    # ---- reading ----

    def list(self, since: str | None = None) -> list[Capture]:
        """Captures in time order, optionally those at or after `since` (ISO date/time, naive = UTC)."""
        with self._lock:
            db = self._require_open()
            if since is None:
                rows = db.execute(f"SELECT {_COLUMNS} FROM captures ORDER BY created_utc, id").fetchall()
            else:
                rows = db.execute(f"SELECT {_COLUMNS} FROM captures WHERE created_utc >= ? ORDER BY created_utc, id",
                                  (parse_since(since),)).fetchall()
        return [Capture(*row[:5], json.loads(row[5]), *row[6:]) for row in rows]

    def _read_checked(self, cap: Capture) -> dict[str, bytes]:
        """Both files of a capture, each checked against the hash in the database."""
        out = {}
        for rel, want in ((cap.frame_file, cap.frame_sha256), (cap.overlay_file, cap.overlay_sha256)):
            try:
                data = (self.root / rel).read_bytes()
            except OSError as e:
                raise StoreError(f"capture {cap.uuid} (#{cap.id}): {self.root / rel}: {_why(e)}") from e
            if _sha256(data) != want:
                raise StoreError(f"capture {cap.uuid} (#{cap.id}): {self.root / rel}: sha256 does not match the "
                                 f"database (file changed or corrupted)")
            out[rel] = data
        return out

    def verify(self) -> list[str]:
        """Problems found: SQLite integrity_check, missing files, hash mismatches (empty list = healthy)."""
        with self._lock:
            result = [r[0] for r in self._require_open().execute("PRAGMA integrity_check")]
        problems = [] if result == ["ok"] else [f"{self.root / DB_NAME}: integrity_check: {r}" for r in result]
        for cap in self.list():
            try:
                self._read_checked(cap)
            except StoreError as e:
                problems.append(str(e))
        return problems

    def export_zip(self, out: Path | str, since: str | None = None) -> int:
        """Write a ZIP with index.csv and every capture's images; returns the number of captures.

        Each file is hashed as it goes into the archive, so the ZIP holds exactly the bytes the
        database vouches for. The archive appears under `out` only when complete (temp file, rename).
        """
        out = Path(out)
        caps = self.list(since)
        if not out.parent.is_dir():
            raise StoreError(f"export {out}: folder {out.parent} does not exist")
        tmp = out.with_name(f"{TMP_PREFIX}{out.name}.{os.getpid()}")
        labels: list[str] = []
        for cap in caps:
            labels += [lab for lab in cap.probs if lab not in labels]
        try:
            with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:  # PNG is compressed already
                for cap in caps:
                    for rel, data in self._read_checked(cap).items():
                        zf.writestr(rel, data)
                zf.writestr("index.csv", _index_csv(caps, labels))
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            os.replace(tmp, out)
            _fsync_dir(out.parent)
        except BaseException as e:
            tmp.unlink(missing_ok=True)
            if isinstance(e, OSError):
                raise StoreError(f"export {out}: {_why(e)}") from e
            raise
        return len(caps)

    # ---- lifetime ----

    def _require_open(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreError(f"capture store {self.root}: used after close()")
        return self._db

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _index_csv(caps: list[Capture], labels: list[str]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["id", "uuid", "created_utc", "device_id", "bundle_hash", "label", "confidence",
                *(f"p_{lab}" for lab in labels), "frame_file", "overlay_file", "frame_sha256", "overlay_sha256",
                "note"])
    for c in caps:
        w.writerow([c.id, c.uuid, c.created_utc, c.device_id, c.bundle_hash, c.label, f"{c.confidence:.6f}",
                    *(f"{c.probs[lab]:.6f}" if lab in c.probs else "" for lab in labels),
                    c.frame_file, c.overlay_file, c.frame_sha256, c.overlay_sha256, c.note])
    return buf.getvalue()


def _why(e: BaseException) -> str:
    if isinstance(e, OSError) and e.errno == errno.ENOSPC:
        return "disk full (ENOSPC)"
    if isinstance(e, OSError) and e.strerror:
        return f"{e.strerror}" + (f": {e.filename}" if e.filename else "")
    return str(e) or type(e).__name__
