"""Point-of-care capture store: PNG files plus one signed, hash-chained SQLite row per kept capture, crash-safe.

A clinic board loses power without warning, so a capture is acknowledged only once it is durable: both images
are written to temporary names, fsynced, renamed into place and the directory fsynced; then a single SQLite
transaction (WAL, synchronous=FULL) appends the row that references them, as the next entry of the store's hash
chain, signed by the board's device key (edge/record/chain.py, edge/record/devicekey.py), and moves the signed
head. A crash before the commit leaves only unreferenced files, which the next start moves into quarantine/
(never deletes: they may also be the images of a deleted record); a crash after it leaves a complete capture.
The directory is private to the service user (0700) and no patient-identifying field exists in the record.

A store that cannot be written (a write-protected SD card, another user's store) is opened read-only by the
commands that only read it: listed, verified and exported, nothing moved or migrated.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import os
import shutil
import socket
import sqlite3
import stat
import tempfile
import threading
import uuid as uuidlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING
from urllib.parse import quote

from edge.record import chain, schema
from edge.record.capture import ADDED, Capture, RecordError, from_record, to_record
from edge.record.devicekey import DeviceKey, DeviceKeyError, key_path, load_or_create, public_key
from edge.record.durable import TMP_PREFIX, fsync_dir, write_durable
from edge.record.schema import DB_NAME, MIRRORED, SCHEMA_VERSION

if TYPE_CHECKING:
    from typing import Self

    import numpy as np

__all__ = ["DB_NAME", "IMAGES", "QUARANTINE", "SCHEMA_VERSION", "TMP_PREFIX", "Audit", "Capture", "CaptureStore",
           "StoreError", "StoreOnFirstCapture", "default_device_id", "fsync_dir"]
log = logging.getLogger(__name__)
IMAGES = "images"
QUARANTINE = "quarantine"
LOCK_NAME = ".lock"
_UTC = timezone.utc  # not datetime.UTC: that needs Python 3.11, setup.py allows 3.9
_ROW = "id, uuid, created_utc, frame_file, overlay_file, entry, hash, sig, key"


class StoreError(RuntimeError):
    """One line naming the store path (or capture) and what went wrong."""


class DamagedCapture(StoreError):
    """A capture whose files cannot be read or do not match its record; `why` without the capture's name."""

    def __init__(self, cap: Capture, why: str):
        self.cap, self.why = cap, why
        super().__init__(f"capture #{cap.id} ({cap.uuid}): {why}")


@dataclass
class Audit:
    """What `CaptureStore.audit` found. `problems` name records by id (edited, deleted, inserted, reordered,
    files missing or changed); `notices` are facts a reader should know (records chained at migration,
    quarantined files, a store that predates the chain). A capture is intact unless a problem names its id."""

    count: int
    problems: list[chain.Problem] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)  # the device key(s) the chain is signed with
    chained: bool = True  # False: a store from before the chain, read as it is (read-only or not yet migrated)
    bad_ids: set[int] = field(default_factory=set)  # ids some problem names (filled when the audit is complete)

    def intact(self, cap: Capture) -> bool:
        return cap.id not in self.bad_ids

    def lines(self) -> list[str]:
        return [p.line() for p in self.problems]


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


def utc_offset(when: datetime) -> str:
    """'+03:00': the board's local offset from UTC at `when` (aware)."""
    text = when.astimezone().strftime("%z")
    return f"{text[:3]}:{text[3:]}"


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


def _encode_png(rgb: np.ndarray, what: str) -> bytes:
    import cv2  # here, not at the top: the read commands (list, export, verify) never load OpenCV
    import numpy as np

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
    """The capture directory: `captures.db` (SQLite, WAL), `images/` (PNG) and `quarantine/`, mode 0700.

    Several processes may open one store (the service keeps captures while `skinedge captures export` reads
    them): each holds a shared lock on `.lock`, and only a process that gets the lock exclusively moves orphans
    aside, so no one touches another process's capture between its rename and its commit.

    `create=True` (run, capture): the store is made if missing, migrated to the current schema, and captures are
    signed with the device key beside it (made on first use). `create=False` (list, export, verify): an existing
    store only, never migrated, opened read-only when it cannot be written. `trusted`: the public keys the chain
    must be signed with (default: the device key's own .pub beside the store, if there is one).
    """

    def __init__(self, root: Path | str, device_id: str | None = None, create: bool = True,
                 trusted: Sequence[str] = ()):
        self.root = Path(root)
        self.images = self.root / IMAGES
        self.device_id = device_id or default_device_id()
        self.read_only = False
        self.schema = SCHEMA_VERSION
        self.key: DeviceKey | None = None
        self._trusted = tuple(trusted)
        self._lock = threading.RLock()  # reentrant: snapshot() holds it around list(), links(), head()
        self._lock_fd: int | None = None
        self._db: sqlite3.Connection | None = None
        self._snapshot: tempfile.TemporaryDirectory | None = None
        self.quarantined: list[str] = []  # orphans moved aside at open (relative paths), for logs and tests
        try:
            if create:
                self._make_dirs()
                self.key = load_or_create(key_path(self.root))
            else:
                self._require_existing()
            exclusive = self._take_lock()
            self._db = self._open_db()
            if exclusive:
                self.quarantined = self._quarantine_orphans()
                fcntl.flock(self._lock_fd, fcntl.LOCK_SH)
        except StoreError:
            self.close()
            raise
        except DeviceKeyError as e:
            self.close()
            raise StoreError(f"capture store {self.root}: {e}") from e
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
        self._check_access(os.R_OK | os.W_OK | os.X_OK, self.images)

    def _require_existing(self) -> None:
        """For commands that read a store (list, export, verify): a mistyped path is an error, not a new store;
        a store that cannot be written is read as it is."""
        if not self.root.is_dir():
            raise StoreError(f"capture store {self.root}: " + ("is not a directory" if self.root.exists() else
                             "does not exist (check --store or store.path)"))
        if not (self.root / DB_NAME).is_file():
            raise StoreError(f"capture store {self.root}: not a capture store (no {DB_NAME} in it)")
        self._check_images()
        self._check_access(os.R_OK | os.X_OK)
        self.read_only = not all(os.access(p, os.W_OK) for p in (self.root, self.root / DB_NAME))

    def _check_images(self) -> None:
        """images/ is swept (unreferenced files moved aside) and read: a symlink to elsewhere is refused."""
        if self.images.is_symlink() or (self.images.exists() and not self.images.is_dir()):
            raise StoreError(f"capture store {self.root}: {self.images} is not a directory of the store "
                             "(a symlink or a file)")

    def _check_access(self, mode: int, *dirs: Path) -> None:
        need = "readable and writable" if mode & os.W_OK else "readable"
        for d in (self.root, *dirs):
            if not os.access(d, mode):
                raise StoreError(f"capture store {self.root}: {d} is not {need} by this user (uid {os.getuid()})")

    def _take_lock(self) -> bool:
        """A shared lock on .lock; True if it was free to take exclusively first (no other process has the store
        open). Read-only: no lock file can be made, and no one can write the store through this mount anyway."""
        if self.read_only:
            try:
                self._lock_fd = os.open(self.root / LOCK_NAME, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                return False
            fcntl.flock(self._lock_fd, fcntl.LOCK_SH)
            return False
        self._lock_fd = os.open(self.root / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            fcntl.flock(self._lock_fd, fcntl.LOCK_SH)
            return False

    def _open_db(self) -> sqlite3.Connection:
        if self.read_only:
            return self._open_read_only()
        db = sqlite3.connect(self.root / DB_NAME, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA busy_timeout = 10000")
            mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise StoreError(f"capture store {self.root}: SQLite refused WAL mode (got {mode!r})")
            db.execute("PRAGMA synchronous = FULL")
            db.execute("BEGIN IMMEDIATE")
            self.schema = self._prepare_schema(db)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            db.close()
            raise
        return db

    def _prepare_schema(self, db: sqlite3.Connection) -> int:
        """Create or migrate (a store that keeps captures); the version the store is now at."""
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(f"capture store {self.root / DB_NAME}: schema version {version} is newer than this "
                             f"skinedge understands ({SCHEMA_VERSION}); upgrade skinedge")
        if version == 0:
            schema.create(db)
        elif version < SCHEMA_VERSION and self.key is not None:
            count = db.execute("SELECT count(*) FROM captures").fetchone()[0]
            schema.migrate(db, version, self._append, utc_timestamp())
            log.warning("capture store %s: migrated from schema %d to %d; its %d existing capture(s) are chained and "
                        "signed now, marked 'migrated' (edits made before today cannot show)", self.root, version,
                        SCHEMA_VERSION, count)
        else:
            return version
        return SCHEMA_VERSION

    def _open_read_only(self) -> sqlite3.Connection:
        """SQLite cannot open a WAL database read-only without its -shm file: with no -wal (closed cleanly) the
        file is read as immutable; with one, read-only through the existing -shm, else from a private copy."""
        path = self.root / DB_NAME
        wal = path.with_name(DB_NAME + "-wal")
        has_wal = wal.exists() and wal.stat().st_size > 0
        uri = f"file:{quote(str(path.absolute()))}?" + ("mode=ro" if has_wal else "immutable=1")
        try:
            db = sqlite3.connect(uri, uri=True, check_same_thread=False)
            self.schema = db.execute("PRAGMA user_version").fetchone()[0]
            return db
        except sqlite3.OperationalError:
            if not has_wal:
                raise
        self._snapshot = tempfile.TemporaryDirectory(prefix="skinedge-store-")
        for name in (DB_NAME, DB_NAME + "-wal"):
            shutil.copyfile(self.root / name, Path(self._snapshot.name) / name)
        db = sqlite3.connect(Path(self._snapshot.name) / DB_NAME, check_same_thread=False)
        self.schema = db.execute("PRAGMA user_version").fetchone()[0]
        return db

    def _referenced(self) -> set[str]:
        db = self._require_open()
        return {f for row in db.execute("SELECT frame_file, overlay_file FROM captures") for f in row}

    def _orphans(self) -> list[os.DirEntry]:
        if not self.images.is_dir():  # a damaged store being listed or verified
            return []
        referenced = self._referenced()
        return [e for e in os.scandir(self.images)
                if e.is_file(follow_symlinks=False) and f"{IMAGES}/{e.name}" not in referenced]

    def _quarantine_orphans(self) -> list[str]:
        """Move files no row references into quarantine/: written before a crash and never committed (temp files
        too), or the images of a record someone deleted. Never deleted."""
        moved = []
        for entry in self._orphans():
            (self.root / QUARANTINE).mkdir(mode=0o700, exist_ok=True)
            target = self.root / QUARANTINE / entry.name
            while target.exists():
                target = target.with_name("_" + target.name)
            os.rename(entry.path, target)
            moved.append(f"{IMAGES}/{entry.name}")
        if moved:
            fsync_dir(self.images)
            fsync_dir(self.root / QUARANTINE)
            log.warning("capture store %s: moved %d file(s) that no record references into %s/ (a capture cut off "
                        "by a crash, or the images of a deleted record)", self.root, len(moved), QUARANTINE)
        return sorted(moved)

    # ---- writing ----

    def add(self, frame_rgb: np.ndarray, overlay_rgb: np.ndarray, probs: Sequence[float], labels: Sequence[str],
            bundle_hash: str, note: str = "", gate: dict | None = None, when: datetime | None = None,
            **fields) -> Capture:
        """Keep one capture; it is durable (and acknowledged) only when this returns. `fields`: values of the
        fields added to Capture since (see edge/record/capture.py), by name. `when` (aware, default now) is the
        capture's time, as its overlay shows it; the board's UTC offset then is recorded with it."""
        import numpy as np

        probs = [float(p) for p in probs]
        labels = [str(lab) for lab in labels]
        if not probs or len(probs) != len(labels):
            raise StoreError(f"capture store {self.root}: {len(probs)} probabilities for {len(labels)} labels")
        if not all(np.isfinite(probs)):
            raise StoreError(f"capture store {self.root}: probabilities must be finite, found {probs}")
        unknown = sorted(set(fields) - set(ADDED))
        if unknown:
            raise TypeError(f"CaptureStore.add: unknown capture field(s) {unknown}; add them to Capture first")
        if self.key is None:
            raise StoreError(f"capture store {self.root}: opened to read (create=False); it cannot keep captures")
        frame_png = _encode_png(frame_rgb, "frame")
        overlay_png = _encode_png(overlay_rgb, "overlay")
        best = int(np.argmax(probs))
        uid = str(uuidlib.uuid4())
        when = when or datetime.now(_UTC)
        created = utc_timestamp(when)
        fields.setdefault("utc_offset", utc_offset(when))
        stem = f"{created[:19].replace('-', '').replace(':', '')}Z_{uid}"
        cap = Capture(0, uid, created, labels[best], probs[best], dict(zip(labels, probs)), bundle_hash,
                      self.device_id, f"{IMAGES}/{stem}_frame.png", f"{IMAGES}/{stem}_overlay.png",
                      _sha256(frame_png), _sha256(overlay_png), note, dict(gate or {}), **fields)
        with self._lock:
            db = self._require_open()
            written: list[Path] = []
            try:
                for rel, data in ((cap.frame_file, frame_png), (cap.overlay_file, overlay_png)):
                    written.append(self.root / rel)
                    write_durable(self.root / rel, data)
                fsync_dir(self.images)
                db.execute("BEGIN IMMEDIATE")  # one transaction; its COMMIT is fsynced (synchronous=FULL)
                cap = replace(cap, id=self._next_id(db))
                self._append(db, cap)
                db.execute("COMMIT")
            except (OSError, sqlite3.Error, chain.ChainError) as e:
                self._abandon(db, uid, written)
                raise StoreError(f"capture store {self.root}: capture not saved: {describe_error(e)}") from e
        return cap

    def _next_id(self, db: sqlite3.Connection) -> int:
        """One past the head (or past the last row, if rows were inserted beyond it)."""
        head = db.execute("SELECT entry FROM chain_head").fetchone()
        head_id = json.loads(head[0]).get("id", 0) if head else 0
        last = db.execute("SELECT max(id) FROM captures").fetchone()[0] or 0
        return max(head_id, last) + 1

    def _append(self, db: sqlite3.Connection, cap: Capture) -> None:
        """Insert `cap` as chain entry cap.id, linked to the head (or entry cap.id - 1), and move the head to it."""
        assert self.key is not None
        head = db.execute("SELECT entry FROM chain_head").fetchone()
        prev = json.loads(head[0]).get("hash", chain.GENESIS) if head else chain.GENESIS
        entry = chain.entry_text(cap.id, prev, to_record(cap))
        digest = chain.sha256_text(entry)
        db.execute(f"INSERT INTO captures ({_ROW}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                   (cap.id, cap.uuid, cap.created_utc, cap.frame_file, cap.overlay_file, entry, digest,
                    self.key.sign(entry), self.key.public))
        head_entry = chain.head_text(cap.id, digest)
        db.execute("INSERT OR REPLACE INTO chain_head (one, entry, sig, key) VALUES (1, ?, ?, ?)",
                   (head_entry, self.key.sign(head_entry), self.key.public))

    def _abandon(self, db: sqlite3.Connection, uid: str, paths: list[Path]) -> None:
        """Undo a failed add(): roll back, and remove its files unless the row did get committed.

        Best effort: whatever cannot be removed now is an orphan that the next start moves aside.
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

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """One read transaction around several reads, so they see one state of the store even while another
        process keeps captures (WAL: the writer is not blocked). Used by audit() and the export."""
        with self._lock:
            db = self._require_open()
            if db.in_transaction:  # nested: the outer snapshot already holds one
                yield
                return
            db.execute("BEGIN")
            try:
                yield
            finally:
                db.execute("COMMIT")

    def list(self, since: str | None = None, visit: str | None = None, until: str | None = None,
             uid: str | None = None) -> list[Capture]:
        """Captures in time order: those at or after `since` and before `until` (ISO date/time, naive = UTC), of
        one `visit`, or the one with uuid `uid`. A record that no longer parses is listed from its columns,
        without probabilities (it then counts as damaged)."""
        return list(self.captures(since, visit, until, uid))

    def captures(self, since: str | None = None, visit: str | None = None, until: str | None = None,
                 uid: str | None = None) -> Iterator[Capture]:
        """list(), one capture at a time (a store of 5,000 captures is walked in a few MB). Time and uuid are
        selected in SQL (mirrored columns), the visit from the records."""
        conds = [(c, v) for c, v in (("created_utc >= ?", parse_since(since) if since else None),
                                     ("created_utc < ?", parse_since(until) if until else None), ("uuid = ?", uid))
                 if v is not None]
        where = ("WHERE " + " AND ".join(c for c, _ in conds)) if conds else ""
        args = tuple(v for _, v in conds)
        if self.schema < 3:
            rows = self._rows(lambda db: schema.legacy_captures(db, self.schema, where, args))
        else:
            rows = (_capture_of(row) for row in self._rows(
                lambda db: db.execute(f"SELECT {_ROW} FROM captures {where} ORDER BY created_utc, id", args)))
        for cap in rows:
            if visit is None or cap.visit_id == visit:
                yield cap

    def count(self) -> int:
        with self._lock:
            try:
                return self._require_open().execute("SELECT count(*) FROM captures").fetchone()[0]
            except sqlite3.Error as e:
                raise StoreError(f"capture store {self.root / DB_NAME}: {e}") from e

    def links(self, first: int = 1) -> Iterator[chain.Link]:
        """The stored chain entries from id `first` on, in id order, as they are (for verifying and exporting)."""
        for row in self._rows(lambda db: db.execute(f"SELECT {_ROW} FROM captures WHERE id >= ? ORDER BY id",
                                                    (first,))):
            yield _link(row)

    def _rows(self, query: Callable[[sqlite3.Connection], Iterable]) -> Iterator:
        """The rows of `query` (run on the connection), streamed inside one read transaction."""
        with self.snapshot():
            try:
                yield from query(self._require_open())
            except sqlite3.Error as e:  # e.g. "database disk image is malformed"
                raise StoreError(f"capture store {self.root / DB_NAME}: {e}") from e

    def head(self) -> chain.Head | None:
        with self._lock:
            try:
                row = self._require_open().execute("SELECT entry, sig, key FROM chain_head").fetchone()
            except sqlite3.Error as e:
                raise StoreError(f"capture store {self.root / DB_NAME}: {e}") from e
        return chain.Head(*map(str, row)) if row else None

    def trusted_keys(self) -> list[str]:
        """The keys the chain must be signed with: those given, else the device key beside the store (if any)."""
        if self._trusted:
            return list(self._trusted)
        if self.key is not None:
            return [self.key.public]
        found = public_key(key_path(self.root))
        return [found] if found else []

    def read_checked(self, cap: Capture) -> dict[str, bytes]:
        """Both files of a capture, each confined to the store and checked against the hash in its record."""
        if not cap.probs:  # add() never stores an empty one
            raise DamagedCapture(cap, "record unreadable (edited or corrupted)")
        out = {}
        for rel, want in ((cap.frame_file, cap.frame_sha256), (cap.overlay_file, cap.overlay_sha256)):
            data = self._read_confined(cap, rel)
            if _sha256(data) != want:
                raise DamagedCapture(cap, f"{rel}: sha256 does not match its record (file changed or corrupted)")
            out[rel] = data
        return out

    def _read_confined(self, cap: Capture, rel: str) -> bytes:
        """A file a record names, only if it is a regular file directly in images/ (the database can be
        edited: '../../etc/hostname', an absolute path, a symlink or a FIFO there must not be read)."""
        name = shorten(rel)
        parts = PurePosixPath(rel).parts
        if str(PurePosixPath(rel)) != rel or len(parts) != 2 or parts[0] != IMAGES or parts[1] in ("..", "."):
            raise DamagedCapture(cap, f"{name}: not a file in the store's {IMAGES}/ folder (database edited?)")
        if self.images.is_symlink():  # replaced since the store was opened
            raise DamagedCapture(cap, f"{name}: {self.images} is a symlink leaving the store")
        try:
            fd = os.open(self.root / rel, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as e:
            why = "a symlink (not followed)" if e.errno == errno.ELOOP else describe_error(e)
            raise DamagedCapture(cap, f"{name}: {why}") from e
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise DamagedCapture(cap, f"{name}: not a regular file")
            try:
                return f.read()
            except OSError as e:
                raise DamagedCapture(cap, f"{name}: {describe_error(e)}") from e

    def audit(self, files: bool = True, progress: Callable[[int, int], None] | None = None) -> Audit:
        """Check everything: SQLite's integrity, the chain (every record by id), the columns against the signed
        records, and (with `files`) every image against its record's sha256, calling `progress(done, total)`
        before the first capture's files and after each. Streams: memory does not grow with the store."""
        with self.snapshot():
            found = Audit(self.count(), chained=self.schema >= 3)
            self._check_integrity(found)
            if found.chained:
                self._check_chain(found)
            else:
                found.notices.append(f"this store predates the chain (schema {self.schema}"
                                     f"{', read-only' if self.read_only else ''}): its records are checked against "
                                     "their image hashes only; run or capture chains them when it next keeps one")
            if files:
                self._check_files(found, progress)
        found.problems.sort(key=lambda p: (p.id is not None, p.id or 0))
        found.bad_ids = {p.id for p in found.problems if p.id is not None}
        found.notices += self._file_notices()
        return found

    def verify(self) -> list[str]:
        """Every problem `audit` finds, one line each (empty: intact)."""
        return self.audit().lines()

    def _check_integrity(self, found: Audit) -> None:
        with self._lock:
            try:
                result = [r[0] for r in self._require_open().execute("PRAGMA integrity_check")]
            except sqlite3.Error as e:
                result = [str(e)]
        if result != ["ok"]:
            found.problems += [chain.Problem(None, "", f"{self.root / DB_NAME}: integrity_check: {r}") for r in result]

    def _check_chain(self, found: Audit) -> None:
        migrated: list[tuple[int, str]] = []

        def beside_the_chain(entry: chain.Entry) -> None:
            for column, value in zip(MIRRORED, entry.link.columns):
                if entry.record.get(column) != value:
                    found.problems.append(chain.Problem(entry.id, _text(entry.record.get("uuid")),
                                                        f"edited: its {column} column ({shorten(str(value))}) is not "
                                                        "the signed record's"))
            marker = entry.record.get("migrated")
            if marker:
                migrated.append((entry.id, str(marker.get("chained_utc", "?"))[:10] if isinstance(marker, dict)
                                 else "?"))

        checked = chain.check(self.links(), self.head(), self.trusted_keys(), on_entry=beside_the_chain)
        found.problems += checked.problems
        found.keys = checked.keys
        if migrated:
            ids = [i for i, _ in migrated]
            found.notices.append(f"{len(migrated)} record(s) (#{min(ids)}-#{max(ids)}) were chained when the store "
                                 f"was migrated ({', '.join(sorted({d for _, d in migrated}))}): edits made before "
                                 "then cannot show")

    def _check_files(self, found: Audit, progress: Callable[[int, int], None] | None) -> None:
        """Every image of every capture no problem names yet (an edited record's hashes vouch for nothing)."""
        named = {p.id for p in found.problems}
        for done, cap in enumerate(self.captures()):
            if progress:
                progress(done, found.count)
            if cap.id in named:
                continue
            try:
                self.read_checked(cap)
            except DamagedCapture as e:
                found.problems.append(chain.Problem(cap.id, cap.uuid, e.why))
        if progress:
            progress(found.count, found.count)

    def _file_notices(self) -> list[str]:
        notes = []
        if self.read_only:
            orphans = self._orphans()
            if orphans:
                notes.append(f"{len(orphans)} file(s) in {IMAGES}/ that no record references (not moved: the store "
                             f"is read-only): {', '.join(sorted(e.name for e in orphans)[:5])}"
                             + (" ..." if len(orphans) > 5 else ""))
        quarantine = self.root / QUARANTINE
        if quarantine.is_dir():
            names = sorted(os.listdir(quarantine))
            if names:
                notes.append(f"{len(names)} file(s) in {quarantine} (moved aside: images no record referenced; a "
                             "capture cut off by a crash, or the images of a deleted record)")
        return notes

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
        if self._snapshot is not None:
            self._snapshot.cleanup()
            self._snapshot = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _capture_of(row: tuple) -> Capture:
    """A row's capture, from its signed record; from its columns when the record no longer parses."""
    row_id, uid, created, frame, overlay, entry = row[:6]
    try:
        obj = json.loads(entry)
        return from_record(obj["id"] if isinstance(obj.get("id"), int) else row_id, obj["record"])
    except (ValueError, TypeError, KeyError, AttributeError, RecordError):
        return Capture(row_id, str(uid), str(created), "", 0.0, {}, "", "", str(frame), str(overlay), "", "", "", {})


def _link(row: tuple) -> chain.Link:
    return chain.Link(row[0], str(row[5]), str(row[6]), str(row[7]), str(row[8]), str(row[1]),
                      tuple(row[1:1 + len(MIRRORED)]))


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


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
