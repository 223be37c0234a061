"""One kept capture, and the record of it that the chain hashes and signs.

The record is the capture's fields as a plain dict (probabilities as [label, p] pairs, so their order survives
sorted keys); the chain signs its canonical JSON and stores that text, so a field added here needs no change
to the chain, the schema or the verifier. To add one: give `Capture` a field *with a default* below the marked
line (the value that a record written before the field existed stands for) and pass it to `CaptureStore.add`
by name; index.csv gains a column of that name. Records written by a newer skinedge keep fields this version
does not know in `extra`, and still verify.
"""

from __future__ import annotations

import typing
from dataclasses import MISSING, dataclass, field, fields
from datetime import datetime, timezone


class RecordError(ValueError):
    """A record that is not what `to_record` writes (a field missing or of the wrong type)."""


@dataclass(frozen=True)
class Capture:
    id: int  # the position in the chain: 1, 2, 3, ... (not in the record: the chain entry carries it)
    uuid: str
    created_utc: str  # ISO 8601, UTC, microseconds, 'Z' suffix: sorts as text
    label: str
    confidence: float
    probs: dict[str, float]  # in the bundle's label order
    bundle_hash: str
    device_id: str
    frame_file: str  # relative to the store root
    overlay_file: str
    frame_sha256: str
    overlay_sha256: str
    note: str
    gate: dict  # edge.gates.Verdict.record(): outcome ('pass', 'blurred', ...) and scores; {} if not recorded
    # ---- fields added later: each with a default, the value a record written before it existed stands for ----
    migrated: dict = field(default_factory=dict)  # {"from_schema": 2, "chained_utc": ..., "old_id": ...}: chained
    #                                                at migration, so edits made before then cannot show
    # which model answered and how far it was trusted (edge.trust.admit.Provenance); "" in records kept before
    model: str = ""  # the bundle's name
    model_version: str = ""
    signature: str = ""  # 'ed25519:<key id>' (a pinned key), '... not pinned', or 'UNSIGNED'
    downgrade_from: str = ""  # the higher version accepted before, when --allow-downgrade ran an older one
    visit_id: str = ""  # the pseudonymous visit (patient) ID (edge/record/visits.py); '' when none was set
    duplicate_of: str = ""  # uuid of the capture this one repeats (edge.record.visits.Duplicates); '' if none
    software: str = ""  # skinedge's version on the board that kept it
    utc_offset: str = "+00:00"  # the board's offset from UTC when the capture was kept
    extra: dict = field(default_factory=dict)  # record keys this version does not know (kept as they were)

    @property
    def created_local(self) -> str:
        """The capture time in the board's time zone then, with its offset: 2026-12-06T10:15:02+03:00."""
        when = datetime.fromisoformat(self.created_utc.replace("Z", "+00:00"))
        try:
            zone = datetime.strptime(self.utc_offset, "%z").tzinfo
        except ValueError:  # not what add() writes: show UTC rather than fail
            zone = timezone.utc
        return when.astimezone(zone).isoformat(timespec="seconds")


NOT_RECORDED = ("id", "extra")
_TYPES = typing.get_type_hints(Capture)
_NAMES = [f.name for f in fields(Capture)]
ADDED = tuple(n for n in _NAMES[_NAMES.index("gate") + 1:] if n not in NOT_RECORDED)  # index.csv's extra columns


def recorded_fields() -> list[str]:
    return [f.name for f in fields(Capture) if f.name not in NOT_RECORDED]


def to_record(cap: Capture) -> dict:
    """The dict the chain signs (JSON types only); to_record(from_record(r)) == r."""
    record = {**cap.extra, **{name: getattr(cap, name) for name in recorded_fields()}}
    record["probs"] = [[label, p] for label, p in cap.probs.items()]
    return record


def from_record(capture_id: int, record: dict) -> Capture:
    """The Capture a record stands for; RecordError if it is not one `to_record` could have written."""
    values = dict(record)
    probs = values.get("probs")
    if not (isinstance(probs, list) and all(isinstance(p, list) and len(p) == 2 and isinstance(p[0], str)
                                            and _is(p[1], float) for p in probs)):
        raise RecordError("probs: expected [label, probability] pairs")
    values["probs"] = {label: float(p) for label, p in probs}
    known = {}
    for f in fields(Capture):
        if f.name in NOT_RECORDED:
            continue
        if f.name not in values:
            if f.default is MISSING and f.default_factory is MISSING:
                raise RecordError(f"{f.name}: missing")
            continue
        value = values.pop(f.name)
        if not _is(value, _TYPES[f.name]):
            raise RecordError(f"{f.name}: expected {_TYPES[f.name]}, found {type(value).__name__}")
        known[f.name] = value
    return Capture(id=capture_id, **known, extra=values)


def _is(value: object, kind: object) -> bool:
    kind = typing.get_origin(kind) or kind
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind) if isinstance(kind, type) else True
