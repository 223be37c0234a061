"""Point-of-care capture store: PNG files plus one SQLite row per kept capture, crash-safe.

A clinic board loses power without warning, so a capture is acknowledged only once it is durable:
both images are written to temporary names, fsynced, renamed into place and the directory fsynced;
then a single SQLite transaction (WAL, synchronous=FULL) inserts the row that references them. A
crash before the commit leaves only unreferenced files, which the next start sweeps away; a crash
after it leaves a complete capture. The directory is private to the service user (0700) and no
patient-identifying field exists in the schema.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import os
import socket
import sqlite3
import stat
import threading
import uuid as uuidlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:
    from typing import Self

log = logging.getLogger(__name__)
SCHEMA_VERSION = 2  # 2: gate_json (the gate outcome and scores of the frame)
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
    note           TEXT NOT NULL DEFAULT '',
    gate_json      TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX captures_created ON captures (created_utc);
"""
_FIELDS = ("uuid", "created_utc", "label", "confidence", "probs_json", "bundle_hash", "device_id", "frame_file",
           "overlay_file", "frame_sha256", "overlay_sha256", "note", "gate_json")
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
    gate: dict  # edge.gates.Verdict.record(): outcome ('pass', 'blurred', ...) and scores; {} if not recorded


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


def fsync_dir(path: Path) -> None:
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

    def __init__(self, root: Path | str, device_id: str | None = None, create: bool = True):
        self.root = Path(root)
        self.images = self.root / IMAGES
        self.device_id = device_id or default_device_id()
        self._lock = threading.Lock()
        self._lock_fd: int | None = None
        self._db: sqlite3.Connection | None = None
        self.swept: list[str] = []  # orphans removed at open (relative paths), for logs and tests
        try:
            self._make_dirs() if create else self._require_existing()
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
            raise StoreError(f"capture store {self.root}: {describe_error(e)}") from e

    # ---- opening ----

    def _make_dirs(self) -> None:
        """Create what is missing, 0700; a directory that already exists is used as it is, never chmodded
        (it may be someone else's, e.g. /tmp), with a warning if others can read it."""
        if self.root.exists() and not self.root.is_dir():
            raise StoreError(f"capture store {self.root}: exists and is not a directory")
        for d in (self.root, self.images):
            try:
                d.mkdir(mode=0o700, parents=d is self.root)
            except FileExistsError:
                if os.stat(d).st_mode & 0o077:
                    log.warning("capture store %s: %s is accessible to other users (mode %o); captures may be "
                                "readable by them", self.root, d, stat.S_IMODE(os.stat(d).st_mode))
        self._check_images()
        self._check_access(self.images)

    def _require_existing(self) -> None:
        """For commands that read a store (list, export, verify): a mistyped path is an error, not a new store."""
        if not self.root.is_dir():
            raise StoreError(f"capture store {self.root}: " + ("is not a directory" if self.root.exists() else
                             "does not exist (check --store or store.path)"))
        if not (self.root / DB_NAME).is_file():
            raise StoreError(f"capture store {self.root}: not a capture store (no {DB_NAME} in it)")
        self._check_images()
        self._check_access()

    def _check_images(self) -> None:
        """images/ is swept (unreferenced files deleted) and read: a symlink to elsewhere is refused."""
        if self.images.is_symlink() or (self.images.exists() and not self.images.is_dir()):
            raise StoreError(f"capture store {self.root}: {self.images} is not a directory of the store "
                             "(a symlink or a file)")

    def _check_access(self, *dirs: Path) -> None:
        for d in (self.root, *dirs):
            if not os.access(d, os.R_OK | os.W_OK | os.X_OK):
                raise StoreError(f"capture store {self.root}: {d} is not readable and writable by this user "
                                 f"(uid {os.getuid()})")

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
            elif version == 1:  # a store kept before the gates existed: its captures have no gate outcome
                db.execute("ALTER TABLE captures ADD COLUMN gate_json TEXT NOT NULL DEFAULT '{}'")
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
        if not self.images.is_dir():  # a damaged store being listed or verified
            return []
        referenced = {f for row in self._db.execute("SELECT frame_file, overlay_file FROM captures") for f in row}
        removed = []
        for entry in os.scandir(self.images):
            rel = f"{IMAGES}/{entry.name}"
            if entry.is_file(follow_symlinks=False) and rel not in referenced:
                os.unlink(entry.path)
                removed.append(rel)
        if removed:
            fsync_dir(self.images)
        return sorted(removed)

    # ---- writing ----

    def add(self, frame_rgb: np.ndarray, overlay_rgb: np.ndarray, probs: Sequence[float], labels: Sequence[str],
            bundle_hash: str, note: str = "", gate: dict | None = None) -> Capture:
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
                      _sha256(frame_png), _sha256(overlay_png), note, dict(gate or {}))
        with self._lock:
            db = self._require_open()
            written: list[Path] = []
            try:
                for rel, data in ((cap.frame_file, frame_png), (cap.overlay_file, overlay_png)):
                    written.append(self.root / rel)
                    _write_durable(self.root / rel, data)
                fsync_dir(self.images)
                db.execute("BEGIN IMMEDIATE")  # one transaction; its COMMIT is fsynced (synchronous=FULL)
                row_id = db.execute(_INSERT, (
                    cap.uuid, cap.created_utc, cap.label, cap.confidence, json.dumps(cap.probs), cap.bundle_hash,
                    cap.device_id, cap.frame_file, cap.overlay_file, cap.frame_sha256, cap.overlay_sha256,
                    cap.note, json.dumps(cap.gate))).lastrowid
                db.execute("COMMIT")
            except (OSError, sqlite3.Error) as e:
                self._abandon(db, uid, written)
                raise StoreError(f"capture store {self.root}: capture not saved: {describe_error(e)}") from e
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
            fsync_dir(self.images)
        except OSError:
            pass

    # ---- reading ----

    def list(self, since: str | None = None) -> list[Capture]:
        """Captures in time order, optionally those at or after `since` (ISO date/time, naive = UTC)."""
        where, args = ("", ()) if since is None else ("WHERE created_utc >= ?", (parse_since(since),))
        with self._lock:
            db = self._require_open()
            try:
                rows = db.execute(f"SELECT {_COLUMNS} FROM captures {where} ORDER BY created_utc, id", args).fetchall()
            except sqlite3.Error as e:  # e.g. "database disk image is malformed"
                raise StoreError(f"capture store {self.root / DB_NAME}: {e}") from e
        return [Capture(*row[:5], _probs(row[5]), *row[6:-1], _gate(row[-1])) for row in rows]

    def read_checked(self, cap: Capture) -> dict[str, bytes]:
        """Both files of a capture, each confined to the store and checked against the hash in the database."""
        if not cap.probs:  # add() never stores an empty one
            raise StoreError(f"capture {cap.uuid} (#{cap.id}): probabilities unreadable (probs_json edited or "
                             "corrupted)")
        out = {}
        for rel, want in ((cap.frame_file, cap.frame_sha256), (cap.overlay_file, cap.overlay_sha256)):
            data = self._read_confined(cap, rel)
            if _sha256(data) != want:
                raise StoreError(f"capture {cap.uuid} (#{cap.id}): {rel}: sha256 does not match the database "
                                 f"(file changed or corrupted)")
            out[rel] = data
        return out

    def _read_confined(self, cap: Capture, rel: str) -> bytes:
        """A file a database row names, only if it is a regular file directly in images/ (the database can be
        edited: '../../etc/hostname', an absolute path, a symlink or a FIFO there must not be read)."""
        where = f"capture {cap.uuid} (#{cap.id}): {shorten(rel)}"
        parts = PurePosixPath(rel).parts
        if str(PurePosixPath(rel)) != rel or len(parts) != 2 or parts[0] != IMAGES or parts[1] in ("..", "."):
            raise StoreError(f"{where}: not a file in the store's {IMAGES}/ folder (database edited?)")
        if self.images.is_symlink():  # replaced since the store was opened
            raise StoreError(f"{where}: {self.images} is a symlink leaving the store")
        try:
            fd = os.open(self.root / rel, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as e:
            why = "a symlink (not followed)" if e.errno == errno.ELOOP else describe_error(e)
            raise StoreError(f"{where}: {why}") from e
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise StoreError(f"{where}: not a regular file")
            try:
                return f.read()
            except OSError as e:
                raise StoreError(f"{where}: {describe_error(e)}") from e

    def verify(self) -> list[str]:
        """Problems found: SQLite integrity_check, missing files, hash mismatches (empty list = healthy)."""
        with self._lock:
            try:
                result = [r[0] for r in self._require_open().execute("PRAGMA integrity_check")]
            except sqlite3.Error as e:
                result = [str(e)]
        problems = [] if result == ["ok"] else [f"{self.root / DB_NAME}: integrity_check: {r}" for r in result]
        for cap in self.list():
            try:
                self.read_checked(cap)
            except StoreError as e:
                problems.append(str(e))
        return problems

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


def _gate(text: str) -> dict:
    """gate_json of a row; {} when unreadable (the gate outcome is a record, not what the capture is checked by)."""
    try:
        gate = json.loads(text)
    except ValueError:
        return {}
    return gate if isinstance(gate, dict) else {}


def _probs(text: str) -> dict[str, float]:
    """probs_json of a row; {} when it was edited into something else (the capture then counts as damaged)."""
    try:
        probs = json.loads(text)
        return {str(k): float(v) for k, v in probs.items()}
    except (TypeError, ValueError, AttributeError):
        return {}


def shorten(text: str, limit: int = 200) -> str:
    """A value from the database or a file for an error message: quoted, at most `limit` characters."""
    return repr(text if len(text) <= limit else text[:limit] + "...")


def describe_error(e: BaseException) -> str:
    if isinstance(e, OSError) and e.errno == errno.ENOSPC:
        return "disk full (ENOSPC)"
    if isinstance(e, OSError) and e.strerror:
        return f"{e.strerror}" + (f": {e.filename}" if e.filename else "")
    return str(e) or type(e).__name__


class StoreOnFirstCapture:
    """A CaptureStore opened at the first kept capture, so a run that keeps nothing creates no store on disk.
    Opening errors then surface as StoreError from that add(), which the loop shows as CAPTURE NOT SAVED."""

    def __init__(self, root: Path | str):
        self.root = Path(root)
        self._store: CaptureStore | None = None

    def add(self, *args, **kwargs) -> Capture:
        if self._store is None:
            self._store = CaptureStore(self.root)
        return self._store.add(*args, **kwargs)

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
