"""Captures leave the board as a ZIP (index.csv, README.txt, index.html + PNGs + the signed chain), usually onto a
USB stick. What a reviewer reads (edge/record/exportdoc.py) is made from the signed records.

One damaged capture must not keep the other 800 on the board: a capture whose file is missing, changed, or
not a regular file inside the store, or whose record fails the chain (edited, inserted, reordered), is skipped,
listed in index.csv with the reason, and reported; the export is then *partial* (exit status PARTIAL), as it
is when the chain shows deleted records. Each file is hashed as it goes into the archive, so the ZIP holds
exactly the bytes the signed records vouch for. Beside them: chain.jsonl (the stored chain entries from the
first exported capture on), head.json (the signed head), device-key.pub and VERIFY.txt, so that
`skinedge captures verify --zip FILE` checks the ZIP on any machine, offline (edge/record/zipcheck.py).

The archive is written to a private (0600) temp file beside `out` and renamed into place only when complete;
an error, Ctrl-C or SIGTERM removes the temp file, and a temp left by a SIGKILLed export (its process gone) is
removed by the next export to the same place. An existing `out` is replaced only with `force`, and only if it is
a regular file: a device node, FIFO or socket is never replaced, and nothing is written under /dev, /proc or
/sys. Text cells of index.csv are escaped so a spreadsheet cannot read a note like `=HYPERLINK(...)` as a
formula, and quoted when they hold a line break (CR or LF).
"""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import stat
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from edge.i18n import ENGLISH, Messages
from edge.record.capture import Capture
from edge.record.durable import TMP_PREFIX, fsync_dir
from edge.record.exportdoc import INDEX, Documents, cell, index_header, index_row  # noqa: F401  (cell: zipcheck)
from edge.record.store import CaptureStore, DamagedCapture, StoreError, describe_error

PARTIAL = 3  # exit status of `skinedge captures export` when damaged captures were skipped
SYSTEM_DIRS = ("/dev", "/proc", "/sys")  # pseudo filesystems: an export is never written there
CHAIN, HEAD, PUBKEY, README = "chain.jsonl", "head.json", "device-key.pub", "VERIFY.txt"
VERIFY_TEXT = """\
This ZIP is an export of a skinedge capture store: index.csv (one row per capture), images/ (each capture's
frame and overlay PNG), chain.jsonl (the store's signed hash chain from the first exported capture on),
head.json (the chain's signed head at export time) and device-key.pub (the public key of the board that
signed it).

To check it, on any machine, offline:

    pip install skinedge        (or a copy of the skinedge source: python -m edge.cli ...)
    skinedge captures verify --zip THIS.zip --key ed25519:...

--key is the board's public key as systemd/install.sh printed it when the board was set up (or
`skinedge captures key --store STORE` on the board). Without --key the key in device-key.pub is used, which
shows edits by anyone without the board's key, but not a ZIP forged whole with another key: compare the key
that verify prints with the board's.

Exit status: 0 every record intact and signed by that key, every image matching its record; 1 a problem,
each named by capture id (edited, deleted, inserted, reordered, image changed or missing, row of index.csv
changed); 2 the file is not a readable export.

Without skinedge: each line of chain.jsonl is {"id", "entry", "hash", "sig", "key"}. `entry` is the signed
text: canonical JSON {"kind": "capture", "chain": "skinedge-capture-chain/1", "id": n, "prev": <hash of entry
n-1, or 64 zeros for entry 1>, "record": {...}}. hash = sha256 of entry's UTF-8 bytes; sig = base64 Ed25519
signature of those bytes by key (ed25519:<base64 of the 32-byte public key>). head.json's entry
{"kind": "head", "id": last id, "hash": its hash} is signed the same way. A record's frame_sha256 and
overlay_sha256 are the sha256 of its two PNG files.
"""


class Interrupted(BaseException):
    """SIGTERM, SIGINT or SIGHUP arrived during an export (a BaseException, like KeyboardInterrupt)."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(f"interrupted by {signal.Signals(signum).name}")


@dataclass
class Export:
    out: Path
    exported: list[int] = field(default_factory=list)  # ids (not Captures: 5,000 of those cost 20 MB)
    skipped: list[tuple[Capture, str]] = field(default_factory=list)  # capture, why
    chain_problems: list[str] = field(default_factory=list)  # e.g. deleted records: no capture to skip

    @property
    def partial(self) -> bool:
        return bool(self.skipped or self.chain_problems)


def check_target(out: Path, force: bool) -> None:
    """StoreError unless `out` may be written: a new file or (with force) a regular file, in a real folder."""
    if not out.parent.is_dir():
        raise StoreError(f"export {out}: folder {out.parent} does not exist")
    folder = str(out.parent.resolve())
    if any(folder == d or folder.startswith(d + "/") for d in SYSTEM_DIRS):
        raise StoreError(f"export {out}: {folder} is a system folder; give a file on a disk or USB stick")
    try:
        st = os.lstat(out)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode) or stat.S_ISLNK(st.st_mode):
        raise StoreError(f"export {out}: is a directory or a symlink; give a new .zip file name")
    if not stat.S_ISREG(st.st_mode):
        raise StoreError(f"export {out}: is a {_kind(st.st_mode)}, not a file; it is never replaced, even with "
                         "--force")
    if not force:
        raise StoreError(f"export {out}: exists; pass --force to replace it")


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"), (stat.S_ISFIFO, "FIFO"),
                       (stat.S_ISSOCK, "socket")):
        if test(mode):
            return name
    return "special file"


def export_zip(store: CaptureStore, out: Path | str, since: str | None = None, force: bool = False,
               progress: Callable[[int, int], None] | None = None, visit: str | None = None,
               until: str | None = None, msgs: Messages = ENGLISH) -> Export:
    """Write every intact capture (at or after `since`, before `until`, of `visit`), index.csv, README.txt and
    index.html (edge.record.exportdoc, in the language of `msgs`) and the chain to the ZIP `out`.
    `progress(done, total)` is called once the temp file exists (done = 0) and after each capture."""
    out = Path(out)
    check_target(out, force)
    result = Export(out)
    selection = {"since": since, "visit": visit, "until": until}
    with store.snapshot():  # the captures, their audit and the chain written below: one state of the store
        _write(store, out, selection, force, progress, result, msgs)
    return result


def _write(store: CaptureStore, out: Path, selection: dict[str, str | None], force: bool,
           progress: Callable[[int, int], None] | None, result: Export, msgs: Messages) -> None:
    """Two passes over the captures (labels and ids, then images and rows), so memory does not grow with them
    beyond index.csv's and index.html's text."""
    labels: list[str] = []
    selected: set[int] = set()
    for cap in store.captures(**selection):
        labels += [lab for lab in cap.probs if lab not in labels]
        selected.add(cap.id)
    audit = store.audit(files=False)
    why: dict[int | None, list[str]] = {}
    for p in audit.problems:
        why.setdefault(p.id, []).append(p.text)
    first = min(selected, default=None)
    result.chain_problems = [p.line() for p in audit.problems if p.id not in selected
                             and (p.id is None or first is not None and p.id >= first)]
    _remove_stale_temps(out)
    tmp = out.with_name(f"{TMP_PREFIX}{out.name}.{os.getpid()}")
    try:
        with _signals_raise(), _private_file(tmp) as f:
            if progress:
                progress(0, len(selected))
            with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED) as zf:  # PNG is compressed already
                index = io.StringIO()
                rows = csv.writer(index, lineterminator="\r\n")  # RFC 4180; "\n" would leave a bare CR unquoted
                rows.writerow(index_header(labels))
                docs = Documents(msgs)
                for done, cap in enumerate(store.captures(**selection), 1):
                    status = _add_capture(zf, store, cap, why.get(cap.id), result)
                    rows.writerow(index_row(cap, labels, status))
                    docs.add(cap, None if status == "ok" else status.removeprefix("skipped: "))
                    if progress:
                        progress(done, len(selected))
                zf.writestr(INDEX, index.getvalue())
                for name, text in docs.files().items():
                    zf.writestr(name, text, compress_type=zipfile.ZIP_DEFLATED)
                _add_chain(zf, store, audit.keys, first if first is not None else 1 << 62)
            f.flush()
            os.fsync(f.fileno())
            check_target(out, force)  # again: out may have been replaced by something else meanwhile
            os.replace(tmp, out)
        fsync_dir(out.parent)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise StoreError(f"export {out}: {describe_error(e)}") from e
        raise


def _add_capture(zf: zipfile.ZipFile, store: CaptureStore, cap: Capture, problems: list[str] | None,
                 result: Export) -> str:
    """Its two images into the ZIP if it is intact; its status for index.csv ('ok' or 'skipped: why')."""
    if problems:
        why = f"capture #{cap.id} ({cap.uuid}): " + "; ".join(problems)
    else:
        try:
            files = store.read_checked(cap)
        except DamagedCapture as e:
            why = str(e)
        else:
            for rel, data in files.items():
                zf.writestr(rel, data)
            result.exported.append(cap.id)
            return "ok"
    result.skipped.append((cap, why))
    return f"skipped: {why}"


def _add_chain(zf: zipfile.ZipFile, store: CaptureStore, keys: list[str], first: int) -> None:
    """chain.jsonl (entries from `first` on, as stored), head.json, device-key.pub and VERIFY.txt."""
    if store.schema >= 3:
        with zf.open(zipfile.ZipInfo(CHAIN, time.localtime()[:6]), "w") as f:
            for link in store.links(first):
                f.write((json.dumps({"id": link.row, "entry": link.entry, "hash": link.hash, "sig": link.sig,
                                     "key": link.key}) + "\n").encode())
        head = store.head()
        if head is not None:
            zf.writestr(HEAD, json.dumps({"entry": head.entry, "sig": head.sig, "key": head.key}) + "\n")
    if keys:
        zf.writestr(PUBKEY, "\n".join(keys) + "\n")
    zf.writestr(README, VERIFY_TEXT)


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

