"""`skinedge captures verify --zip FILE`: check an exported ZIP on any machine, offline, without the store.

The chain in chain.jsonl is checked as the store's is (edge/record/chain.py: every entry signed by the accepted
key, linked to the one before, up to the signed head); then index.csv against the signed records (a changed
cell names its capture), README.txt and index.html against what the records make of them (edge/record/exportdoc.py,
in the language index.html names), every image against its record's sha256, and anything else in the ZIP is named
as inserted. chain.jsonl is read line by line and images are hashed in chunks, so a ZIP of any size is checked in
little memory (index.csv is held, a few hundred bytes per capture).
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from edge.i18n import Messages
from edge.record import chain
from edge.record.capture import RecordError, from_record
from edge.record.export import CHAIN, HEAD, INDEX, PUBKEY, README, cell, index_header, index_row
from edge.record.exportdoc import INDEX_HTML, README_TXT, Documents, language_of
from edge.trust.signing import key_bytes

CHUNK = 1 << 20
Images = tuple[tuple[str, str], tuple[str, str]]  # (frame_file, sha256), (overlay_file, sha256)


class ZipCheckError(ValueError):
    """The file is not a readable skinedge export (one line)."""


@dataclass
class ZipAudit:
    count: int = 0  # rows of index.csv
    images: int = 0  # images checked
    problems: list[chain.Problem] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)


@dataclass
class _Records:
    """What the chain pass keeps of each signed record: its uuid and images, and whether index.csv has its row."""

    images: dict[int, tuple[str, Images]] = field(default_factory=dict)  # id -> (uuid, images)
    unlisted: list[tuple[int, str, Images]] = field(default_factory=list)  # signed, but no row in index.csv
    docs: Documents = field(default_factory=Documents)  # README.txt and index.html as the records make them


def verify_zip(path: Path, trusted: list[str] | None = None) -> ZipAudit:
    """Check the export at `path`; `trusted`: the board's public key(s) (default: the ZIP's device-key.pub)."""
    try:
        zf = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as e:
        raise ZipCheckError(f"{path}: not a readable ZIP ({getattr(e, 'strerror', None) or e})") from None
    with zf:
        if INDEX not in zf.NameToInfo:
            raise ZipCheckError(f"{path}: not a skinedge capture export (no {INDEX} in it)")
        found = ZipAudit()
        header, by_id = _index(zf, path, found)
        if CHAIN not in zf.NameToInfo:
            found.notices.append(f"no {CHAIN}: exported from a store that predates the chain; images are checked "
                                 f"against {INDEX} only, which anyone could have changed")
            _check_images(zf, by_id, None, found)
            return found
        records = _Records(docs=Documents(Messages(_language(zf))))
        labels = [h[2:] for h in header if h.startswith("p_")]
        links = _links(zf, path)
        first = next(links, None)
        checked = chain.check(itertools.chain([first] if first else [], links), _head(zf, path),
                              list(trusted or []) or _zip_keys(zf), start=first.row if first else 1,
                              on_entry=lambda entry: _check_row(entry, header, labels, by_id, records, found))
        found.problems += checked.problems
        found.keys = checked.keys
        for k, row in by_id.items():
            if k not in records.images and k not in checked.bad_ids:
                found.problems.append(chain.Problem(k, row.get("uuid", ""), f"{INDEX}: a row for a record that is not "
                                                                           "in the chain (inserted)"))
        _check_documents(zf, by_id, records, checked, found)
        _check_images(zf, by_id, records, found)
    found.problems.sort(key=lambda p: (p.id is not None, p.id or 0))
    return found


def _index(zf: zipfile.ZipFile, path: Path, found: ZipAudit) -> tuple[list[str], dict[int, dict[str, str]]]:
    """index.csv's header and its rows by id; a row whose id is not a number, or repeats one, is a problem."""
    try:
        reader = csv.DictReader(io.StringIO(zf.read(INDEX).decode("utf-8"), newline=""))
        rows = list(reader)
    except (UnicodeDecodeError, csv.Error, zipfile.BadZipFile, OSError) as e:
        raise ZipCheckError(f"{path}: {INDEX} is unreadable ({e})") from None
    found.count = len(rows)
    by_id: dict[int, dict[str, str]] = {}
    for r in rows:
        if not r.get("id", "").isdigit() or int(r["id"]) in by_id:
            found.problems.append(chain.Problem(None, "", f"{INDEX}: a row with id {cell(r.get('id'))!r} that is not "
                                                          "a record of the chain (inserted or edited)"))
            continue
        by_id[int(r["id"])] = r
    return list(reader.fieldnames or []), by_id


def _zip_keys(zf: zipfile.ZipFile) -> list[str]:
    try:
        lines = zf.read(PUBKEY).decode("ascii").split()
        for line in lines:
            key_bytes(line)
        return lines
    except (KeyError, UnicodeDecodeError, ValueError):
        return []  # none (or unreadable): the first signed entry's key is used, and printed


def _links(zf: zipfile.ZipFile, path: Path) -> Iterator[chain.Link]:
    with zf.open(CHAIN) as f:
        for n, raw in enumerate(io.TextIOWrapper(f, encoding="utf-8", errors="replace"), 1):
            try:
                obj = json.loads(raw)
                yield chain.Link(int(obj["id"]), str(obj["entry"]), str(obj["hash"]), str(obj["sig"]),
                                 str(obj["key"]))
            except (ValueError, KeyError, TypeError):
                raise ZipCheckError(f"{path}: {CHAIN} line {n} is not a chain entry (edited or corrupted)") from None


def _head(zf: zipfile.ZipFile, path: Path) -> chain.Head | None:
    try:
        obj = json.loads(zf.read(HEAD))
        return chain.Head(str(obj["entry"]), str(obj["sig"]), str(obj["key"]))
    except KeyError:
        return None  # no head.json: chain.check reports it
    except (ValueError, TypeError):
        raise ZipCheckError(f"{path}: {HEAD} is not a chain head (edited or corrupted)") from None


def _check_row(entry: chain.Entry, header: list[str], labels: list[str], by_id: dict[int, dict[str, str]],
               records: _Records, found: ZipAudit) -> None:
    """A signed record: its row of index.csv is what the exporter writes for it; keep its images for later."""
    try:
        cap = from_record(entry.id, entry.record)
    except RecordError as e:
        found.problems.append(chain.Problem(entry.id, str(entry.record.get("uuid", "")), f"record unreadable: {e}"))
        return
    images = ((cap.frame_file, cap.frame_sha256), (cap.overlay_file, cap.overlay_sha256))
    row = by_id.get(entry.id)
    if row is None:
        records.unlisted.append((entry.id, cap.uuid, images))
        return
    records.images[entry.id] = (cap.uuid, images)
    status = row.get("status", "ok")
    records.docs.add(cap, None if status == "ok" else status.removeprefix("skipped: "))
    expected = dict(zip(index_header(labels), index_row(cap, labels, row.get("status", ""))))
    changed = [c for c in header if expected.get(c) != row.get(c)]
    if changed or list(expected) != header:
        what = ", ".join(changed[:5]) or "columns"
        found.problems.append(chain.Problem(entry.id, cap.uuid, f"{INDEX}: row changed ({what} differ from the signed "
                                                                "record)"))


def _language(zf: zipfile.ZipFile) -> str:
    """The language the export's index.html was written in (English when there is none)."""
    try:
        with zf.open(INDEX_HTML) as f:
            return language_of(f.read(300).decode("utf-8", "replace")) or "en"
    except KeyError:
        return "en"


def _check_documents(zf: zipfile.ZipFile, by_id: dict[int, dict[str, str]], records: _Records,
                     checked: chain.Checked, found: ZipAudit) -> None:
    """README.txt and index.html say what the signed records say: made again from them, byte for byte."""
    names = sorted({README_TXT, INDEX_HTML} & set(zf.NameToInfo))
    if not names:
        return
    if any(k not in records.images for k in by_id) or checked.bad_ids & set(by_id):
        found.notices.append(f"{', '.join(names)}: not checked, since a record is not intact")
        return
    for name, text in records.docs.files(list(by_id)).items():
        if name in names and zf.read(name) != text.encode():
            found.problems.append(chain.Problem(None, "", f"{name}: changed (differs from what the signed records "
                                                          "say)"))


def _check_images(zf: zipfile.ZipFile, by_id: dict[int, dict[str, str]], records: _Records | None,
                  found: ZipAudit) -> None:
    """Each exported capture's two images match its record; a skipped one is reported; nothing else is in the ZIP."""
    expected_files = {INDEX, CHAIN, HEAD, PUBKEY, README, README_TXT, INDEX_HTML}
    for k, row in sorted(by_id.items()):
        uuid, images = records.images[k] if records and k in records.images else (row.get("uuid", ""), (
            (row.get("frame_file", ""), row.get("frame_sha256", "")),
            (row.get("overlay_file", ""), row.get("overlay_sha256", ""))))  # no signed record: the row's own hashes
        if row.get("status") != "ok":
            found.problems.append(chain.Problem(k, uuid, "not in this ZIP: " + row.get("status", "")))
            continue
        for name, want in images:
            expected_files.add(name)
            why = _image_problem(zf, name, want)
            if why:
                found.problems.append(chain.Problem(k, uuid, f"{name}: {why}"))
            else:
                found.images += 1
    unlisted = records.unlisted if records else []
    for k, uuid, images in unlisted:
        if images[0][0] in zf.NameToInfo:
            expected_files.update(name for name, _ in images)
            found.problems.append(chain.Problem(k, uuid, f"its row of {INDEX} was deleted (its images are in the ZIP)"))
    if unlisted:
        found.notices.append(f"{len(unlisted)} record(s) of the chain have no row in {INDEX} (older than --since at "
                             "export, or rows deleted): " + ", ".join(f"#{k}" for k, _, _ in unlisted[:10])
                             + (" ..." if len(unlisted) > 10 else ""))
    for name in sorted(set(zf.NameToInfo) - expected_files):
        found.problems.append(chain.Problem(None, "", f"{cell(name)}: a file in the ZIP that no record names "
                                                      "(inserted)"))


def _image_problem(zf: zipfile.ZipFile, name: str, want: str) -> str | None:
    try:
        digest = hashlib.sha256()
        with zf.open(name) as f:
            while chunk := f.read(CHUNK):
                digest.update(chunk)
    except KeyError:
        return "missing from the ZIP"
    except (zipfile.BadZipFile, OSError) as e:
        return f"unreadable in the ZIP ({e})"
    return None if digest.hexdigest() == want else "sha256 does not match its record (changed)"
