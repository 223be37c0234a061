"""What has been sent where: the send state beside the capture store (outbox.db in the store's folder).

The store is the queue: a capture waits for a destination until a row here says the destination confirmed it.
Nothing is ever dropped from the queue, whatever its length; a capture the server refused stays waiting, with
its attempts counted, the server's last reason and the time of the next try (back-off per capture, so one
capture the server will not take does not hold up the others).

Its own SQLite file, not a table in captures.db, so the sender, at idle priority, never holds the write lock
that the classification loop's next capture needs (a SCHED_IDLE process preempted inside a write transaction
would stall `CaptureStore.add` behind it), and the capture records stay exactly what the store vouches for.
Written like the store: WAL, synchronous=FULL, one transaction per batch, after the server's confirmation: a
power cut between the confirmation and the commit means the capture is sent again, and since its UIDs come from
its hash the PACS keeps one instance. Rows are keyed by the capture's uuid and the destination URL.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from edge.record.store import DB_NAME, Capture, StoreError, utc_timestamp

if TYPE_CHECKING:
    from typing import Self

OUTBOX_NAME = "outbox.db"
SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE sent (
    uuid        TEXT NOT NULL,
    destination TEXT NOT NULL,
    sent_utc    TEXT NOT NULL,
    PRIMARY KEY (uuid, destination)
) WITHOUT ROWID;
CREATE TABLE refused (
    uuid        TEXT NOT NULL,
    destination TEXT NOT NULL,
    attempts    INTEGER NOT NULL,
    last_error  TEXT NOT NULL,
    last_utc    TEXT NOT NULL,
    next_utc    TEXT NOT NULL,
    PRIMARY KEY (uuid, destination)
) WITHOUT ROWID;
"""
REASON_CHARS = 300  # of a server's reason kept per capture


@dataclass(frozen=True)
class Refusal:
    attempts: int
    last_error: str
    last_utc: str
    next_utc: str


@dataclass(frozen=True)
class Queue:
    """Captures waiting for one destination: all of them (the store's order), and those the server refused."""

    destination: str
    waiting: list[Capture]
    refused: dict[str, Refusal]  # by uuid, a subset of waiting

    def due(self, now: str) -> list[Capture]:
        """Waiting captures to try now: never tried, or refused and past their back-off."""
        return [c for c in self.waiting if c.uuid not in self.refused or self.refused[c.uuid].next_utc <= now]


class Outbox:
    """outbox.db: opened for writing by the sender, read-only (or absent: nothing sent yet) by everyone else."""

    def __init__(self, root: Path | str, write: bool = False):
        self.path = Path(root) / OUTBOX_NAME
        self._db: sqlite3.Connection | None = None
        try:
            if write:
                self._db = self._open_write()
            elif self.path.exists():
                self._db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
                self._db.execute("PRAGMA busy_timeout = 10000")
                if self._db.execute("PRAGMA user_version").fetchone()[0] == 0:  # the sender is creating it
                    self.close()
        except (sqlite3.Error, OSError) as e:
            self.close()
            raise StoreError(f"send state {self.path}: {getattr(e, 'strerror', None) or e}") from e

    def _open_write(self) -> sqlite3.Connection:
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))  # private from the first byte
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA busy_timeout = 10000")
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = FULL")
        db.execute("BEGIN IMMEDIATE")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version == 0:
            for stmt in filter(str.strip, _SCHEMA.split(";")):
                db.execute(stmt)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        db.execute("COMMIT")
        if version > SCHEMA_VERSION:
            db.close()
            raise StoreError(f"send state {self.path}: schema version {version} is newer than this skinedge "
                             f"understands ({SCHEMA_VERSION}); upgrade skinedge")
        return db

    # ---- reading ----

    def _rows(self, sql: str, args: tuple) -> list[tuple]:
        if self._db is None:
            return []
        try:
            return self._db.execute(sql, args).fetchall()
        except sqlite3.Error as e:
            raise StoreError(f"send state {self.path}: {e}") from e

    def sent(self, destination: str) -> set[str]:
        return {r[0] for r in self._rows("SELECT uuid FROM sent WHERE destination = ?", (destination,))}

    def sent_count(self, destination: str) -> int:
        return self._rows("SELECT COUNT(*) FROM sent WHERE destination = ?", (destination,))[0][0] \
            if self._db is not None else 0

    def refusals(self, destination: str) -> dict[str, Refusal]:
        rows = self._rows("SELECT uuid, attempts, last_error, last_utc, next_utc FROM refused WHERE destination = ?",
                          (destination,))
        return {r[0]: Refusal(*r[1:]) for r in rows}

    def destinations(self) -> list[str]:
        return sorted({r[0] for r in self._rows("SELECT destination FROM sent UNION SELECT destination FROM refused",
                                                ())})

    def queue(self, captures: Iterable[Capture], destination: str) -> Queue:
        sent = self.sent(destination)
        waiting = [c for c in captures if c.uuid not in sent]
        refused = self.refusals(destination)
        return Queue(destination, waiting, {u: r for u, r in refused.items() if u not in sent})

    # ---- writing (the sender) ----

    def _write(self, statements: list[tuple[str, tuple]]) -> None:
        if self._db is None:
            raise StoreError(f"send state {self.path}: opened read-only")
        try:
            self._db.execute("BEGIN IMMEDIATE")
            for sql, args in statements:
                self._db.execute(sql, args)
            self._db.execute("COMMIT")
        except sqlite3.Error as e:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise StoreError(f"send state {self.path}: {e}") from e

    def mark_sent(self, destination: str, uuids: Iterable[str], when: str | None = None) -> None:
        when = when or utc_timestamp()
        statements = []
        for u in uuids:
            statements += [("INSERT OR IGNORE INTO sent VALUES (?, ?, ?)", (u, destination, when)),
                           ("DELETE FROM refused WHERE uuid = ? AND destination = ?", (u, destination))]
        self._write(statements)

    def mark_refused(self, destination: str, reasons: dict[str, str], retry: tuple[float, float],
                     now: datetime | None = None) -> None:
        """Count one more refusal for each capture; its next try after retry[0] * 2^(attempts-1) s, at most retry[1]."""
        now = now or datetime.now(timezone.utc)
        known = self.refusals(destination)
        statements = []
        for u, reason in reasons.items():
            attempts = known[u].attempts + 1 if u in known else 1
            wait = min(retry[1], retry[0] * 2 ** min(attempts - 1, 30))
            statements.append(("INSERT OR REPLACE INTO refused VALUES (?, ?, ?, ?, ?, ?)",
                               (u, destination, attempts, reason[:REASON_CHARS], utc_timestamp(now),
                                utc_timestamp(now + timedelta(seconds=wait)))))
        self._write(statements)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Waiting:
    """How many captures wait for `destination`, for the HUD: captures in the store minus those sent there, read
    (two COUNT queries, read-only) at most once every `every` seconds, so the presenter thread that asks on every
    frame spends well under a millisecond a second on it. None when it cannot be read."""

    def __init__(self, root: Path | str, destination: str, every: float = 5.0):
        self.root, self.destination, self.every = Path(root), destination, every
        self._at: float | None = None
        self._count: int | None = None

    def __call__(self) -> int | None:
        now = time.monotonic()
        if self._at is None or now - self._at >= self.every:
            self._at, self._count = now, self._read()
        return self._count

    def _read(self) -> int | None:
        db_path = self.root / DB_NAME
        if not db_path.is_file():  # nothing kept yet
            return 0
        try:
            db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
            try:
                kept = db.execute("SELECT COUNT(*) FROM captures").fetchone()[0]
            finally:
                db.close()
            with Outbox(self.root) as outbox:
                return max(0, kept - outbox.sent_count(self.destination))
        except (sqlite3.Error, StoreError):
            return None
