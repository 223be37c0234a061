"""The capture store's SQLite schema and its explicit, numbered migrations (PRAGMA user_version).

Version 3 keeps each capture as its signed chain entry (edge/record/chain.py) plus the few columns the store
queries by (MIRRORED: copies of record fields, which `captures verify` checks against the signed record). A
record field needs no column; add one only to query by it, in a new migration that also fills it from the
entries (json_extract), and name it in MIRRORED.

Older stores are migrated when a process that keeps captures (run, capture) opens them, in one transaction:
1 -> 2 adds the gate outcome ({} for older rows); 2 -> 3 chains the existing rows in id order, signed by this
board's key at that moment, each record marked `migrated` (what was edited before then cannot show). The read
commands (list, export, verify) never migrate; they read an older store as it is (`legacy_captures`).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import replace

from edge.record.capture import Capture

SCHEMA_VERSION = 3
DB_NAME = "captures.db"
MIRRORED = ("uuid", "created_utc", "frame_file", "overlay_file")
_V3 = """
CREATE TABLE captures (
    id           INTEGER PRIMARY KEY,  -- the position in the chain: 1, 2, 3, ...
    uuid         TEXT NOT NULL UNIQUE,
    created_utc  TEXT NOT NULL,
    frame_file   TEXT NOT NULL UNIQUE,
    overlay_file TEXT NOT NULL UNIQUE,
    entry        TEXT NOT NULL,  -- the chain entry as signed: canonical JSON holding the record
    hash         TEXT NOT NULL,  -- sha256 of entry, the next entry's "prev"
    sig          TEXT NOT NULL,  -- Ed25519 over entry, base64
    key          TEXT NOT NULL   -- the signing public key, ed25519:<base64>
);
CREATE INDEX captures_created ON captures (created_utc);
CREATE TABLE chain_head (
    one   INTEGER PRIMARY KEY CHECK (one = 1),
    entry TEXT NOT NULL,
    sig   TEXT NOT NULL,
    key   TEXT NOT NULL
);
"""
_V1 = """
CREATE TABLE captures (
    id INTEGER PRIMARY KEY, uuid TEXT NOT NULL UNIQUE, created_utc TEXT NOT NULL, label TEXT NOT NULL,
    confidence REAL NOT NULL, probs_json TEXT NOT NULL, bundle_hash TEXT NOT NULL, device_id TEXT NOT NULL,
    frame_file TEXT NOT NULL UNIQUE, overlay_file TEXT NOT NULL UNIQUE, frame_sha256 TEXT NOT NULL,
    overlay_sha256 TEXT NOT NULL, note TEXT NOT NULL DEFAULT ''
);
CREATE INDEX captures_created ON captures (created_utc);
"""
_LEGACY = ("id, uuid, created_utc, label, confidence, probs_json, bundle_hash, device_id, frame_file, overlay_file, "
           "frame_sha256, overlay_sha256, note")

Append = Callable[[sqlite3.Connection, Capture], None]  # chains one capture (store.py: _append)


def execute_script(db: sqlite3.Connection, script: str) -> None:
    for stmt in filter(str.strip, script.split(";")):
        db.execute(stmt)


def create(db: sqlite3.Connection) -> None:
    execute_script(db, _V3)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def create_version_1(db: sqlite3.Connection) -> None:
    """The first schema, as skinedge 0.1 made it (for the migration tests)."""
    execute_script(db, _V1)
    db.execute("PRAGMA user_version = 1")


def _v1_to_v2(db: sqlite3.Connection, append: Append, now: str) -> None:
    db.execute("ALTER TABLE captures ADD COLUMN gate_json TEXT NOT NULL DEFAULT '{}'")


def _v2_to_v3(db: sqlite3.Connection, append: Append, now: str) -> None:
    old = list(legacy_captures(db, 2))
    db.execute("DROP INDEX captures_created")
    db.execute("ALTER TABLE captures RENAME TO captures_v2")
    execute_script(db, _V3)
    for position, cap in enumerate(sorted(old, key=lambda c: c.id), 1):
        marker = {"from_schema": 2, "chained_utc": now}
        if cap.id != position:  # rows deleted before the chain existed: closed up, the old number kept
            marker["old_id"] = cap.id
        append(db, replace(cap, id=position, migrated=marker))
    db.execute("DROP TABLE captures_v2")


MIGRATIONS: dict[int, Callable[[sqlite3.Connection, Append, str], None]] = {1: _v1_to_v2, 2: _v2_to_v3}


def migrate(db: sqlite3.Connection, version: int, append: Append, now: str) -> None:
    """From `version` to SCHEMA_VERSION, one step at a time, inside the caller's transaction."""
    while version < SCHEMA_VERSION:
        MIGRATIONS[version](db, append, now)
        version += 1
        db.execute(f"PRAGMA user_version = {version}")


def legacy_captures(db: sqlite3.Connection, version: int, where: str = "", args: tuple = ()) -> Iterator[Capture]:
    """The captures of a version 1 or 2 store, from its columns (unchained: nothing vouches for them)."""
    gate = "gate_json" if version >= 2 else "'{}'"
    for row in db.execute(f"SELECT {_LEGACY}, {gate} FROM captures {where} ORDER BY created_utc, id", args):
        yield Capture(*row[:5], _probs(row[5]), *row[6:-1], _gate(row[-1]))


def _gate(text: str) -> dict:
    """gate_json of a row; {} when unreadable (the gate outcome is a record, not what the capture is checked by)."""
    try:
        gate = json.loads(text)
    except (TypeError, ValueError):
        return {}
    return gate if isinstance(gate, dict) else {}


def _probs(text: str) -> dict[str, float]:
    """probs_json of a row; {} when it was edited into something else (the capture then counts as damaged)."""
    try:
        probs = json.loads(text)
        return {str(k): float(v) for k, v in probs.items()}
    except (TypeError, ValueError, AttributeError):
        return {}
