"""The hash chain over capture records: how an entry is written, signed and checked, wherever it is stored.

An entry is the canonical JSON text of {"kind": "capture", "chain": FORMAT, "id": n, "prev": <hash of entry
n-1>, "record": {...}}: keys sorted, no spaces, ASCII only, no NaN. Its hash is the sha256 of those UTF-8 bytes,
and the device key signs the same bytes (Ed25519). The text is stored as it was signed and never rebuilt, so a
verifier needs no serialiser of its own, and a record may gain fields without any change here. The head (the
last id and its hash, signed as {"kind": "head", ...}) is what shows records deleted from the end.

`check` is the one verifier, for a store (rows from SQLite) and for an exported ZIP (lines of chain.jsonl): it
names every edited, deleted, inserted or reordered record by id. Only entries validly signed by an accepted key
count as the device's; with no key pinned, the key of the first signed entry is the one accepted.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from edge.trust.signing import key_bytes, short

FORMAT = "skinedge-capture-chain/1"
GENESIS = "0" * 64  # the "prev" of entry 1


class ChainError(ValueError):
    """An entry cannot be built (a record value JSON cannot hold, e.g. NaN)."""


def canonical(obj: object) -> str:
    """The one serialisation that is hashed and signed."""
    try:
        return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ChainError(f"record cannot be serialised: {e}") from None


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def entry_text(entry_id: int, prev: str, record: dict) -> str:
    return canonical({"kind": "capture", "chain": FORMAT, "id": entry_id, "prev": prev, "record": record})


def head_text(entry_id: int, entry_hash: str) -> str:
    return canonical({"kind": "head", "chain": FORMAT, "id": entry_id, "hash": entry_hash})


@dataclass(frozen=True)
class Link:
    """One stored entry as read back. `row` is where it is stored (the store's id column, the id field of a
    chain.jsonl line): it equals the entry's own id unless someone moved it."""

    row: int
    entry: str
    hash: str
    sig: str
    key: str
    uuid: str = ""  # the stored uuid column, for naming a record whose entry no longer parses
    columns: tuple = ()  # the store's columns that mirror record fields (schema.MIRRORED), for on_entry


@dataclass(frozen=True)
class Seen:
    """What `check` keeps of each of the device's entries: a few strings, so 100,000 records cost a few MB."""

    id: int
    row: int
    prev: str
    hash: str
    uuid: str


@dataclass(frozen=True)
class Entry:
    """One of the device's entries, as `check` hands it to `on_entry` (and then forgets it)."""

    id: int
    prev: str
    hash: str
    record: dict
    link: Link


@dataclass(frozen=True)
class Head:
    entry: str
    sig: str
    key: str


@dataclass(frozen=True)
class Problem:
    id: int | None  # the record's id (None: the chain as a whole)
    uuid: str
    text: str

    def line(self) -> str:
        if self.id is None:
            return f"chain: {self.text}"
        return f"capture #{self.id}" + (f" ({self.uuid})" if self.uuid else "") + f": {self.text}"


@dataclass
class Checked:
    """What `check` found: the device's entries by id, the problems, and the key(s) they are signed with."""

    entries: dict[int, Seen] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    head_id: int = 0

    @property
    def bad_ids(self) -> set[int]:
        return {p.id for p in self.problems if p.id is not None}


def valid_signature(text: str, sig: str, key: str) -> bool:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        Ed25519PublicKey.from_public_bytes(key_bytes(key)).verify(base64.b64decode(sig, validate=True),
                                                                    text.encode())
    except (InvalidSignature, ValueError, binascii.Error):
        return False
    return True


def _parse(text: str, kind: str) -> dict | None:
    try:
        obj = json.loads(text)
    except ValueError:
        return None
    if not isinstance(obj, dict) or obj.get("kind") != kind or obj.get("chain") != FORMAT:
        return None
    if not (isinstance(obj.get("id"), int) and obj["id"] >= 1):
        return None
    return obj


def _open(link: Link, keys: list[str]) -> tuple[Entry | None, str]:
    """The entry if it is the device's (parses, validly signed by an accepted key), else why not."""
    obj = _parse(link.entry, "capture")
    if obj is None or not isinstance(obj.get("record"), dict) or not isinstance(obj.get("prev"), str):
        return None, "not a chain entry any more (edited or corrupted)"
    if not valid_signature(link.entry, link.sig, link.key):
        return None, "does not match its signature"
    if link.key not in keys:
        if keys:
            return None, f"signed by {short(link.key)}, not by " + (
                f"the device key {short(keys[0])}" if len(keys) == 1 else "an accepted key")
        keys.append(link.key)  # trust on first use: the first signed entry names the device key
    return Entry(obj["id"], obj["prev"], sha256_text(link.entry), obj["record"], link), ""


def check(links: Iterable[Link], head: Head | None, trusted: Sequence[str] = (), start: int = 1,
          on_entry: Callable[[Entry], None] | None = None) -> Checked:
    """Check stored entries from id `start` to the head, reading `links` once, in any order (an iterator is fine:
    only a few strings per entry are kept). `trusted`: the accepted public keys (empty: the first validly signed
    entry's key). A ZIP exported --since starts at its first id. `on_entry` sees each of the device's entries
    with its record, for checks of what is stored beside the chain (columns, index.csv)."""
    out = Checked(keys=list(trusted))
    forged: dict[int, tuple[str, str]] = {}  # row -> (stored uuid, why)
    by_row: dict[int, int] = {}  # row -> the id of the device's entry stored there
    for link in links:
        entry, why = _open(link, out.keys)
        if entry is None:
            forged[link.row] = (link.uuid, why)
        elif entry.id in out.entries and entry.hash == out.entries[entry.id].hash:
            out.problems.append(Problem(link.row, link.uuid, f"inserted: a copy of record #{entry.id}"))
        elif entry.id in out.entries:
            out.problems.append(Problem(entry.id, _uuid(entry), "two entries signed with this id (the chain forked: "
                                                                 "a store restored from an older copy?)"))
        else:
            out.entries[entry.id] = Seen(entry.id, link.row, entry.prev, entry.hash, _uuid(entry))
            by_row[link.row] = entry.id
            if entry.hash != link.hash:
                out.problems.append(Problem(entry.id, _uuid(entry), "its stored hash was edited"))
            if on_entry:
                on_entry(entry)
    out.head_id = _check_head(head, out)
    last = max([out.head_id, *out.entries], default=0)
    for k in range(start, last + 1):
        _check_position(k, out, forged, by_row, start)
    for row, (uuid, why) in sorted(forged.items()):
        if row > last or row < start or row in out.entries:
            out.problems.append(Problem(row, uuid, f"inserted: not a record of this chain ({why})"))
    out.problems.sort(key=lambda p: (p.id is not None, p.id or 0))
    return out


def _check_head(head: Head | None, out: Checked) -> int:
    """The head's id, or the last entry's when the head is missing or forged (reported)."""
    last = max(out.entries, default=0)
    if head is None:
        if out.entries:
            out.problems.append(Problem(None, "", "its signed head is missing (records at the end may have been "
                                                  "deleted)"))
        return last
    obj = _parse(head.entry, "head")
    if not out.keys:
        out.keys.append(head.key)  # no entry signed: the head's key is the only candidate
    if obj is None or not valid_signature(head.entry, head.sig, head.key) or head.key not in out.keys:
        out.problems.append(Problem(None, "", "its head does not match its signature (edited)"))
        return last
    if obj["id"] < last:
        out.problems.append(Problem(None, "", f"its head names #{obj['id']} but records go on to #{last} (the head "
                                              "was replaced by an older one)"))
    elif obj["id"] in out.entries and out.entries[obj["id"]].hash != obj.get("hash"):
        out.problems.append(Problem(obj["id"], out.entries[obj["id"]].uuid, "is not the record its head names "
                                                                            "(replaced)"))
    return obj["id"]


def _check_position(k: int, out: Checked, forged: dict[int, tuple[str, str]], by_row: dict[int, int],
                    start: int) -> None:
    seen = out.entries.get(k)
    if seen is None:
        if k in forged:
            uuid, why = forged[k]
            out.problems.append(Problem(k, uuid, f"edited: {why}"))
        elif k in by_row:
            out.problems.append(Problem(k, "", f"deleted: its place holds record #{by_row[k]}"))
        else:
            out.problems.append(Problem(k, "", "deleted"))
        return
    if seen.row != k:
        out.problems.append(Problem(k, seen.uuid, f"reordered: stored at #{seen.row}"))
    before = out.entries.get(k - 1)
    expected = before.hash if before else (GENESIS if k == 1 else None)
    if k == start and start > 1:
        expected = None  # an export from #start: its predecessor is not in it
    if expected is not None and seen.prev != expected:
        out.problems.append(Problem(k, seen.uuid, f"does not follow #{k - 1} in the chain (a record of another "
                                                  "chain, or the chain forked)"))


def _uuid(entry: Entry) -> str:
    uuid = entry.record.get("uuid")
    return uuid if isinstance(uuid, str) else entry.link.uuid
