"""The board's health as the page shows it: model, self-test, frame rate, temperature, free disk, captures."""

from __future__ import annotations

import shutil
from pathlib import Path

from edge.pointofcare import PointOfCare
from edge.record.store import CaptureStore

THERMAL = Path("/sys/class/thermal")


def cpu_temperature(root: Path = THERMAL) -> float | None:
    """°C of the CPU's thermal zone (the first zone when none is named for the CPU); None where unreadable."""
    zones = sorted(root.glob("thermal_zone*"))
    named = [z for z in zones if "cpu" in _read(z / "type").lower() or "soc" in _read(z / "type").lower()]
    for zone in named + zones:
        try:
            return round(int(_read(zone / "temp")) / 1000.0, 1)
        except ValueError:
            continue
    return None


def free_disk(path: Path) -> int | None:
    """Bytes free for the store: on its file system, or its nearest existing parent's before it exists."""
    path = Path(path)
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def unsent(poc: PointOfCare, store: CaptureStore | None) -> int | None:
    """Captures waiting to be forwarded to the configured PACS (edge.record.outbox); None when the board forwards
    nothing."""
    forward = poc.cfg.forward
    if not forward.enabled:
        return None
    if store is None:
        return 0
    from edge.record.outbox import Outbox

    with Outbox(store.root) as outbox:
        return len(outbox.queue(store.list(), forward.url).waiting)


def report(poc: PointOfCare, store_root: Path, store: CaptureStore | None) -> dict:
    board = poc.board
    snap = poc.live.latest() if poc.live is not None else None
    visit = poc.visits.current
    return {
        "state": "running" if board is not None else "starting",
        "model": board.model.record() if board else None,  # model, model_version, bundle_hash, signature, ...
        "warning": board.model.warning if board else None,  # UNSIGNED MODEL, SIGNER NOT PINNED, or None
        "backend": board.backend if board else None,
        "ready": board.ready if board else None,  # model, backend, golden self-test and OOD gate, as at start-up
        "fps": None if snap is None or snap.fps is None else round(snap.fps, 1),
        "temperature_c": cpu_temperature(),
        "free_disk_bytes": free_disk(store_root),
        "kept": store.count() if store is not None else 0,
        "unsent": unsent(poc, store),  # waiting for the hospital's PACS; None: the board forwards nothing
        "visit": None if visit is None else {"id": visit.id, "source": visit.source},
        "language": poc.msgs.language,
    }


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""
