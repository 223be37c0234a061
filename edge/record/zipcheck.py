"""`skinedge captures verify --zip FILE`: check an exported ZIP on any machine, offline, without the store.

The chain in chain.jsonl is checked as the store's is (edge/record/chain.py: every entry signed by the accepted
key, linked to the one before, up to the signed head); then index.csv against the signed records (a changed
cell names its capture), README.txt and index.html against what the records make of them (edge/record/exportdoc.py,
in the language index.html names), every image against its record's sha256, and anything else in the ZIP is
named as inserted. Images are hashed in chunks, so a ZIP of any size is checked in little memory.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from edge.i18n import Messages
from edge.record import chain
from edge.record.capture import RecordError, from_record
from edge.record.export import CHAIN, HEAD, INDEX, PUBKEY, README, cell, index_header, index_row
from edge.record.exportdoc import INDEX_HTML, README_TXT, documents, language_of
from edge.trust.signing import key_bytes

CHUNK = 1 << 20


class ZipCheckError(ValueError):
    """The file is not a readable skinedge export (one line)."""


@dataclass
class ZipAudit:
    count: int = 0  # rows of index.csv
    images: int = 0  # images checked
    problems: list[chain.Problem] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)


def verify_zip(path: Path, trusted: list[str] | None = None) -> ZipAudit:
    """Check the export at `path`; `trusted`: the board's public key(s) (default: the ZIP's device-key.pub)."""
    try:
        zf = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as e:
        raise ZipCheckError(f"{path}: not a readable ZIP ({getattr(e, 'strerror', None) or e})") from None
    with zf:
        names = set(zf.namelist())
        if INDEX not in names:
            raise ZipCheckError(f"{path}: not a skinedge capture export (no {INDEX} in it)")
        found = ZipAudit()
        rows = _index(zf, path)
        found.count = len(rows)
        if CHAIN not in names:
            found.notices.append(f"no {CHAIN}: exported from a store that predates the chain; images are checked "
                                 f"against {INDEX} only, which anyone could have changed")
            _check_images(zf, {int(r["id"]): r for r in rows if r.get("id", "").isdigit()}, None, found)
            return found
        keys = list(trusted or []) or _zip_keys(zf, path)
        links = _links(zf, path)
        checked = chain.check(links, _head(zf, path), keys, start=min((x.row for x in links), default=1))
        found.problems += checked.problems
        found.keys = checked.keys
        by_id = {}
        for r in rows:
            if not r.get("id", "").isdigit() or int(r["id"]) in by_id:
                found.problems.append(chain.Problem(None, "", f"{INDEX}: a row with id {r.get('id')!r} that is not "
                                                              "a record of the chain (inserted or edited)"))
                continue
            by_id[int(r["id"])] = r
        _check_rows(by_id, checked, found)
        _check_documents(zf, by_id, checked, found)
        _check_images(zf, by_id, checked, found)
    found.problems.sort(key=lambda p: (p.id is not None, p.id or 0))
    return found


def _index(zf: zipfile.ZipFile, path: Path) -> list[dict[str, str]]:
    try:
        text = zf.read(INDEX).decode("utf-8")
        return list(csv.DictReader(io.StringIO(text, newline="")))
    except (UnicodeDecodeError, csv.Error, zipfile.BadZipFile, OSError) as e:
        raise ZipCheckError(f"{path}: {INDEX} is unreadable ({e})") from None


def _zip_keys(zf: zipfile.ZipFile, path: Path) -> list[str]:
    try:
        lines = zf.read(PUBKEY).decode("ascii").split()
        for line in lines:
            key_bytes(line)
        return lines
    except (KeyError, UnicodeDecodeError, ValueError):
        return []  # none (or unreadable): the first signed entry's key is used, and printed


def _links(zf: zipfile.ZipFile, path: Path) -> list[chain.Link]:
    links = []
    with zf.open(CHAIN) as f:
        for n, raw in enumerate(io.TextIOWrapper(f, encoding="utf-8", errors="replace"), 1):
            try:
                obj = json.loads(raw)
                links.append(chain.Link(int(obj["id"]), str(obj["entry"]), str(obj["hash"]), str(obj["sig"]),
                                        str(obj["key"])))
            except (ValueError, KeyError, TypeError):
                raise ZipCheckError(f"{path}: {CHAIN} line {n} is not a chain entry (edited or corrupted)") from None
    return links


def _head(zf: zipfile.ZipFile, path: Path) -> chain.Head | None:
    try:
        obj = json.loads(zf.read(HEAD))
        return chain.Head(str(obj["entry"]), str(obj["sig"]), str(obj["key"]))
    except KeyError:
        return None  # no head.json: chain.check reports it
    except (ValueError, TypeError):
        raise ZipCheckError(f"{path}: {HEAD} is not a chain head (edited or corrupted)") from None


def _check_rows(by_id: dict[int, dict[str, str]], checked: chain.Checked, found: ZipAudit) -> None:
    """Every row of index.csv is what the exporter writes for its signed record."""
    header = list(next(iter(by_id.values())).keys()) if by_id else []
    labels = [h[2:] for h in header if h.startswith("p_")]
    for k, row in by_id.items():
        entry = checked.entries.get(k)
        if entry is None:
            if k not in checked.bad_ids:
                found.problems.append(chain.Problem(k, row.get("uuid", ""), f"{INDEX}: a row for a record that is not "
                                                                          "in the chain (inserted)"))
            continue
        try:
            cap = from_record(k, entry.record)
        except RecordError as e:
            found.problems.append(chain.Problem(k, row.get("uuid", ""), f"record unreadable: {e}"))
            continue
        expected = dict(zip(index_header(labels), index_row(cap, labels, row.get("status", ""))))
        changed = [c for c in header if expected.get(c) != row.get(c)]
        if changed or list(expected) != header:
            found.problems.append(chain.Problem(k, cap.uuid, f"{INDEX}: row changed ({', '.join(changed[:5]) or 'columns'}"
                                                             " differ from the signed record)"))


def _check_documents(zf: zipfile.ZipFile, by_id: dict[int, dict[str, str]], checked: chain.Checked,
                     found: ZipAudit) -> None:
    """README.txt and index.html say what the signed records say: made again from them, byte for byte."""
    names = set(zf.namelist()) & {README_TXT, INDEX_HTML}
    if not names:
        return
    caps, skipped = [], {}
    for k, row in by_id.items():
        entry = checked.entries.get(k)
        try:
            cap = from_record(k, entry.record) if entry else None
        except RecordError:
            cap = None
        if cap is None:  # a record that is not intact: reported above; the documents cannot be made again
            found.notices.append(f"{', '.join(sorted(names))}: not checked, since a record is not intact")
            return
        caps.append(cap)
        if row.get("status", "ok") != "ok":
            skipped[cap.uuid] = row["status"].removeprefix("skipped: ")
    page = zf.read(INDEX_HTML).decode("utf-8", "replace") if INDEX_HTML in names else ""
    language = language_of(page) or "en"
    for name, text in documents(caps, skipped, Messages(language)).items():
        if name in names and zf.read(name) != text.encode():
            found.problems.append(chain.Problem(None, "", f"{name}: changed (differs from what the signed records "
                                                          "say)"))


def _check_images(zf: zipfile.ZipFile, by_id: dict[int, dict[str, str]], checked: chain.Checked | None,
                  found: ZipAudit) -> None:
    """Each exported capture's two images match its record; a skipped one is reported; nothing else is in the ZIP."""
    expected_files = {INDEX, CHAIN, HEAD, PUBKEY, README, README_TXT, INDEX_HTML}
    for k, row in sorted(by_id.items()):
        entry = checked.entries.get(k) if checked else None
        record = entry.record if entry else row  # no chain: the row's own hashes
        if row.get("status") != "ok":
            found.problems.append(chain.Problem(k, row.get("uuid", ""), "not in this ZIP: " + row.get("status", "")))
            continue
        for kind in ("frame", "overlay"):
            name, want = record.get(f"{kind}_file"), record.get(f"{kind}_sha256")
            if not isinstance(name, str) or not isinstance(want, str):
                continue  # an unreadable record: reported by the chain check
            expected_files.add(name)
            why = _image_problem(zf, name, want)
            if why:
                found.problems.append(chain.Problem(k, row.get("uuid", ""), f"{name}: {why}"))
            else:
                found.images += 1
    missing = [e for k, e in sorted(checked.entries.items()) if k not in by_id] if checked else []
    for entry in missing:
        name = entry.record.get("frame_file")
        if isinstance(name, str) and name in zf.NameToInfo:
            expected_files.update({name, str(entry.record.get("overlay_file"))})
            found.problems.append(chain.Problem(entry.id, str(entry.record.get("uuid", "")),
                                                f"its row of {INDEX} was deleted (its images are in the ZIP)"))
    if missing:
        found.notices.append(f"{len(missing)} record(s) of the chain have no row in {INDEX} (older than --since at "
                             "export, or rows deleted): " + ", ".join(f"#{e.id}" for e in missing[:10])
                             + (" ..." if len(missing) > 10 else ""))
    for name in sorted(set(zf.namelist()) - expected_files):
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
