"""Captures leave the board as a ZIP (index.csv + PNGs), usually onto a USB stick.

One damaged capture must not keep the other 800 on the board: a capture whose file is missing, changed,
or not a regular file inside the store is skipped, listed in index.csv with the reason, and reported;
the export is then *partial* (exit status PARTIAL). Each file is hashed as it goes into the archive, so
the ZIP holds exactly the bytes the database vouches for. The archive is written to a private (0600)
temp file beside `out` and renamed into place only when complete; an error, Ctrl-C or SIGTERM removes
the temp file, and a temp left by a SIGKILLed export (its process gone) is removed by the next export
to the same place. An existing `out` is replaced only with `force`. Text cells of index.csv are escaped
so a spreadsheet cannot read a note like `=HYPERLINK(...)` as a formula.
"""

from __future__ import annotations

import csv
import io
import os
import signal
import threading
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from edge.record.store import TMP_PREFIX, Capture, CaptureStore, StoreError, describe_error, fsync_dir

PARTIAL = 3  # exit status of `skinedge captures export` when damaged captures were skipped
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")  # what spreadsheets read as the start of a formula


class Interrupted(BaseException):
    """SIGTERM, SIGINT or SIGHUP arrived during an export (a BaseException, like KeyboardInterrupt)."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(f"interrupted by {signal.Signals(signum).name}")


@dataclass
class Export:
    out: Path
    exported: list[Capture] = field(default_factory=list)
    skipped: list[tuple[Capture, str]] = field(default_factory=list)  # capture, why


def export_zip(store: CaptureStore, out: Path | str, since: str | None = None, force: bool = False) -> Export:
    """Write every intact capture (at or after `since`) and index.csv to the ZIP `out`."""
    out = Path(out)
    if not out.parent.is_dir():
        raise StoreError(f"export {out}: folder {out.parent} does not exist")
    if out.is_dir() or out.is_symlink():
        raise StoreError(f"export {out}: is a directory or a symlink; give a new .zip file name")
    if out.exists() and not force:
        raise StoreError(f"export {out}: exists; pass --force to replace it")
    result = Export(out)
    caps = store.list(since)
    _remove_stale_temps(out)
    tmp = out.with_name(f"{TMP_PREFIX}{out.name}.{os.getpid()}")
    try:
        with _signals_raise(), _private_file(tmp) as f:
            with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED) as zf:  # PNG is compressed already
                for cap in caps:
                    try:
                        files = store.read_checked(cap)
                    except StoreError as e:
                        result.skipped.append((cap, str(e)))
                        continue
                    for rel, data in files.items():
                        zf.writestr(rel, data)
                    result.exported.append(cap)
                zf.writestr("index.csv", index_csv(caps, {c.uuid: why for c, why in result.skipped}))
            f.flush()
            os.fsync(f.fileno())
            os.replace(tmp, out)
        fsync_dir(out.parent)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise StoreError(f"export {out}: {describe_error(e)}") from e
        raise
    return result


@contextmanager
def _private_file(path: Path) -> Iterator[io.BufferedWriter]:
    """A new file readable by this user only (0600 from the first byte), whatever the umask."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as f:
        yield f


@contextmanager
def _signals_raise() -> Iterator[None]:
    """While the temp ZIP exists, SIGTERM, SIGINT and SIGHUP (the SSH session dropped) raise Interrupted so that
    it is removed (main thread only: Python runs signal handlers there)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, _frame):
        raise Interrupted(signum)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
                if signal.getsignal(s) is not signal.SIG_IGN}  # nohup: an ignored SIGHUP stays ignored
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _remove_stale_temps(out: Path) -> None:
    """Temp ZIPs of earlier exports to `out` whose process is gone (SIGKILL, power cut)."""
    prefix = f"{TMP_PREFIX}{out.name}."
    for entry in os.scandir(out.parent):
        pid = entry.name[len(prefix):]
        if entry.name.startswith(prefix) and pid.isdigit() and not _alive(int(pid)):
            os.unlink(entry.path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def cell(value: object) -> str:
    """A CSV cell a spreadsheet shows as text: a leading ' before anything it would read as a formula."""
    text = str(value)
    return "'" + text if text.startswith(FORMULA_START) else text


def index_csv(caps: list[Capture], skipped: dict[str, str]) -> str:
    """One row per capture; `status` is 'ok' or why the capture is not in the ZIP (by uuid in `skipped`)."""
    labels: list[str] = []
    for cap in caps:
        labels += [lab for lab in cap.probs if lab not in labels]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([cell(c) for c in ("id", "uuid", "created_utc", "device_id", "bundle_hash", "label", "confidence",
                                  *(f"p_{lab}" for lab in labels), "frame_file", "overlay_file", "frame_sha256",
                                  "overlay_sha256", "note", "gate", "gate_ood_score", "status")])
    for c in caps:
        w.writerow([cell(v) for v in (
            c.id, c.uuid, c.created_utc, c.device_id, c.bundle_hash, c.label, f"{c.confidence:.6f}",
            *(f"{c.probs[lab]:.6f}" if lab in c.probs else "" for lab in labels),
            c.frame_file, c.overlay_file, c.frame_sha256, c.overlay_sha256, c.note, c.gate.get("gate", ""),
            "" if c.gate.get("gate_ood_score") is None else c.gate["gate_ood_score"],
            f"skipped: {skipped[c.uuid]}" if c.uuid in skipped else "ok")])
    return buf.getvalue()
