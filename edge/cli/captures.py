"""`skinedge captures list|export|verify|key|send|queue`: the capture store (or an exported ZIP) from a shell,
and its forwarding to a hospital PACS."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from edge.cli.common import load_cfg

EXIT_DAMAGED, EXIT_ERROR, EXIT_INTERRUPTED = 1, 2, 130
EXIT_WAITING = 4  # `captures send`: captures still wait (PACS unreachable, or refused some)
NEEDS_DICOM = "needs the dicom extra (pydicom, pynetdicom, requests): pip install 'skinedge[dicom]'"


def _store_root(a: argparse.Namespace) -> Path:
    return a.store if a.store else Path(load_cfg(a.config, {}).store.path)


def _keys(a: argparse.Namespace) -> list[str]:
    """--key values: `ed25519:...` lines, or .pub files holding one (edge.trust.signing.read_public_key)."""
    from edge.trust.signing import read_public_key

    try:
        return [read_public_key(value) for value in a.key or []]
    except ValueError as e:
        raise ValueError(f"--key {e}") from None


def _captures(a: argparse.Namespace) -> int:
    from edge.record.credentials import CredentialsError
    from edge.record.destination import DestinationError
    from edge.record.export import Interrupted
    from edge.record.store import StoreError
    from edge.record.zipcheck import ZipCheckError

    try:
        if a.zip:
            if a.action != "verify":
                raise ValueError(f"--zip is for verify (an exported ZIP), not {a.action}")
            return _verify_zip(a.zip, _keys(a))
        if a.action == "key":
            return _key(_store_root(a))
        return _on_store(a, _store_root(a))
    except (StoreError, ZipCheckError, ValueError, CredentialsError, DestinationError) as e:
        print(f"skinedge captures: {e}", file=sys.stderr)
        return EXIT_ERROR
    except ImportError as e:
        print(f"skinedge captures: {a.action} {NEEDS_DICOM} ({e.name} is missing)", file=sys.stderr)
        return EXIT_ERROR
    except (Interrupted, KeyboardInterrupt) as e:
        print(f"skinedge captures: {a.action} {e or 'interrupted'}; nothing written", file=sys.stderr)
        return EXIT_INTERRUPTED


def _on_store(a: argparse.Namespace, root: Path) -> int:
    from edge.record.store import CaptureStore

    with CaptureStore(root, create=False, trusted=_keys(a)) as store:
        if store.read_only:
            print(f"note: {store.root} cannot be written: opened read-only", file=sys.stderr)
        return ACTIONS[a.action](a, store)


LIST_COLUMNS = ("id", "time (UTC)", "visit", "class", "confidence", "gate", "model", "version", "bundle", "duplicate",
                "note")


def _list(a: argparse.Namespace, store) -> int:
    """A header row, then one capture per line: tab-separated, '-' for an empty cell, so columns stay aligned."""
    print("\t".join(LIST_COLUMNS))
    n = 0
    for n, c in enumerate(store.captures(a.since, a.visit, a.until), 1):
        cells = (c.id, c.created_utc, c.visit_id, c.label, f"{c.confidence:.2f}", c.gate.get("gate", ""), c.model,
                 c.model_version, c.bundle_hash[:12], "duplicate" if c.duplicate_of else "", c.note)
        print("\t".join(str(v) if v != "" else "-" for v in cells))
    print(f"{n} capture(s) in {store.root}")
    for line in _queue_lines(a, store, detail=False):
        print(line)
    return 0


def _export(a: argparse.Namespace, store) -> int:
    from edge.record.export import PARTIAL, export_zip

    if not a.out and not a.dicom:
        raise ValueError("export needs --out FILE.zip and/or --dicom DIR")
    done = []
    if a.out:
        zipped = export_zip(store, a.out, a.since, force=a.force, progress=Progress(f"exporting to {a.out}"),
                            visit=a.visit, until=a.until, msgs=_messages(a))
        done.append((a.out, "ZIP", zipped, "listed in index.csv"))
    if a.dicom:
        from edge.record.dicomdir import export_dicom
        from edge.record.sender import station_for

        dicom = load_cfg(a.config, {}).dicom if a.config else None
        done.append((a.dicom, "DICOM file-set", export_dicom(store, a.dicom, station_for(dicom), a.since),
                     "not in the file-set"))
    for out, what, result, where in done:
        for _, why in result.skipped:
            print(f"skipped damaged {why}", file=sys.stderr)
        for line in result.chain_problems:
            print(line, file=sys.stderr)
        print(f"exported {len(result.exported)} capture(s) to {out} ({what})" + (
            f"; PARTIAL: {len(result.skipped)} damaged capture(s) skipped, {where}" if result.skipped
            else "") + (f"; PARTIAL: {len(result.chain_problems)} chain problem(s)" if result.chain_problems else ""))
    return PARTIAL if any(result.partial for _, _, result, _ in done) else 0


def _verify(a: argparse.Namespace, store) -> int:
    audit = store.audit(progress=Progress(f"verifying {store.root}"))
    _report(audit.lines(), audit.notices)
    if audit.problems:
        print(f"store DAMAGED: {len(audit.problems)} problem(s) among {audit.count} capture(s) in {store.root}")
        return EXIT_DAMAGED
    signed = f"; chain intact, signed by {_keys_text(audit.keys)}" if audit.chained else ""
    print(f"store OK: {audit.count} capture(s), all files match{signed}")
    return 0


def _forward_cfg(a: argparse.Namespace):
    if not a.config:
        raise ValueError(f"{a.action} needs --config: the device config's forward.url names the PACS")
    cfg = load_cfg(a.config, {})
    if not cfg.forward.enabled:
        raise ValueError(f"{cfg.path}: forward.url: not set, so forwarding is off (set it to the hospital's "
                         "https://.../dicom-web or dicom://AE@HOST:PORT)")
    return cfg


def _send(a: argparse.Namespace, store) -> int:
    from edge.record.outbox import Outbox
    from edge.record.sender import Sender, connect, idle_priority, policy_for, station_for

    cfg = _forward_cfg(a)
    priority = idle_priority() if a.priority == "idle" else "normal priority"  # before any thread: they inherit it
    transport = connect(cfg.forward)
    with Outbox(store.root, write=True) as outbox, _log_to_stderr(logging.INFO if a.watch else logging.WARNING):
        sender = Sender(store, outbox, transport, station_for(cfg.dicom), policy_for(cfg.forward))
        try:
            if a.watch:
                stop = _stop_on_signals()
                print(f"forwarding captures from {store.root} to {transport.name} ({priority})", flush=True)
                sender.watch(stop)
                return 0
            p = sender.run_once(limit=a.limit, now=True)
        finally:
            transport.close()
    print(f"sent {p.sent} capture(s) ({p.instances} instances) to {transport.name}; {p.refused} refused; "
          f"{p.waiting} waiting" + (f"; stopped: {p.error}" if p.error else ""))
    return EXIT_WAITING if p.waiting else 0


@contextmanager
def _log_to_stderr(level: int) -> Iterator[None]:
    """The sender's log lines ('skinedge send: ...') on stderr, which systemd puts in the journal."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("skinedge send: %(message)s"))
    logger = logging.getLogger("edge")
    saved = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


def _stop_on_signals() -> threading.Event:
    """SIGTERM (systemd stop) and SIGINT end `--watch` after the batch in flight (it is recorded or resent)."""
    stop = threading.Event()
    for s in (signal.SIGTERM, signal.SIGINT):
        signal.signal(s, lambda *_: stop.set())
    return stop


def _queue(a: argparse.Namespace, store) -> int:
    lines = _queue_lines(a, store, detail=True)
    print("\n".join(lines) if lines else "no destination configured (forward.url) and nothing sent yet")
    return 0


def _queue_lines(a: argparse.Namespace, store, detail: bool) -> list[str]:
    """'N waiting to be sent to URL (M refused ...)' per destination: the config's, else those in outbox.db."""
    from edge.record.outbox import Outbox

    cfg = load_cfg(a.config, {}) if a.config else None
    with Outbox(store.root) as outbox:
        destinations = [cfg.forward.url] if cfg and cfg.forward.enabled else outbox.destinations()
        caps = store.list()
        lines = []
        for dest in destinations:
            q = outbox.queue(caps, dest)
            lines.append(f"{len(q.waiting)} capture(s) waiting to be sent to {dest}"
                         + (f" ({len(q.refused)} refused, kept for retry)" if q.refused else ""))
            if detail:
                by_uuid = {c.uuid: c for c in q.waiting}
                for uuid, r in sorted(q.refused.items(), key=lambda kv: by_uuid[kv[0]].id):
                    lines.append(f"  #{by_uuid[uuid].id} {uuid}: {r.attempts} attempt(s), last {r.last_utc}: "
                                 f"{r.last_error}; next try after {r.next_utc}")
    return lines


ACTIONS = {"list": _list, "export": _export, "verify": _verify, "send": _send, "queue": _queue}


def _messages(a: argparse.Namespace):
    """The export's language: the device config's (--config), else English."""
    from edge.i18n import ENGLISH, Messages

    return Messages(load_cfg(a.config, {}).language) if a.config else ENGLISH


def _verify_zip(path: Path, keys: list[str]) -> int:
    from edge.record.zipcheck import verify_zip

    audit = verify_zip(path, keys)
    _report([p.line() for p in audit.problems], audit.notices)
    if audit.problems:
        print(f"ZIP DAMAGED: {len(audit.problems)} problem(s) among {audit.count} capture(s) in {path}")
        return EXIT_DAMAGED
    pinned = "" if keys else " (from the ZIP itself: compare it with the key install.sh printed for the board)"
    print(f"ZIP OK: {audit.count} capture(s), {audit.images} image(s) match their records"
          + (f"; chain intact, signed by {_keys_text(audit.keys)}{pinned}" if audit.keys else ""))
    return 0


def _report(problems: list[str], notices: list[str]) -> None:
    for line in problems:
        print(line)
    for line in notices:
        print(f"note: {line}")


def _keys_text(keys: list[str]) -> str:
    return ("device key " if len(keys) == 1 else "device keys ") + ", ".join(keys)


def _key(root: Path) -> int:
    """Print this store's device public key, making the key if there is none (install.sh calls this)."""
    from edge.record.devicekey import DeviceKeyError, key_path, load_or_create
    from edge.record.store import StoreError

    path = key_path(root)
    if not path.parent.is_dir():
        raise StoreError(f"device key {path}: folder {path.parent} does not exist")
    try:
        key = load_or_create(path)
    except DeviceKeyError as e:
        raise StoreError(str(e)) from e
    print(f"device key {path}: {key.public}")
    return 0


class Progress:
    """Long work on stderr: a line when it starts, then at most one every 5 seconds."""

    def __init__(self, what: str, every: float = 5.0):
        self.what, self.every, self.last = what, every, 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if done == 0:
            print(f"{self.what}: {total} capture(s) ...", file=sys.stderr, flush=True)
        elif now - self.last >= self.every and done < total:
            print(f"  {done}/{total} capture(s)", file=sys.stderr, flush=True)
        else:
            return
        self.last = now


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, found {text!r}")
    return int(text)


def add_parsers(sub) -> None:
    cs = sub.add_parser("captures", help="list, export, verify or forward the point-of-care capture store (or verify "
                                         "an exported ZIP)",
                        epilog="exit status: 0 ok; 1 verify found damage or tampering (each record named by id); "
                               "2 error (nothing written); 3 export PARTIAL (damaged captures skipped, listed in "
                               "index.csv, or records missing from the chain); 4 send: captures still wait (PACS "
                               "unreachable or refused some; see `captures queue`); 130 interrupted")
    cs.add_argument("action", choices=[*ACTIONS, "key"],
                    help="key: print the device public key that signs this store's records (made if missing); "
                         "send: forward what waits to forward.url now (--watch: keep forwarding); queue: what waits")
    where = cs.add_mutually_exclusive_group(required=True)
    where.add_argument("--store", type=Path, help="store directory")
    where.add_argument("--config", type=Path, help="device config whose store.path to use (send and queue: and its "
                                                   "forward and dicom settings)")
    where.add_argument("--zip", type=Path, help="verify: an exported ZIP instead of a store (works offline, anywhere)")
    cs.add_argument("--key", action="append", metavar="KEY",
                    help="verify: the board's public key (ed25519:... or a .pub file) the chain must be signed "
                         "with; repeatable (default: the device key beside the store, or the ZIP's device-key.pub)")
    cs.add_argument("--since", help="ISO date or time (UTC), e.g. 2026-11-01")
    cs.add_argument("--until", help="ISO date or time (UTC): captures before it")
    cs.add_argument("--visit", help="list/export: only the captures of this visit ID")
    cs.add_argument("--out", type=Path, help="ZIP file to write (export)")
    cs.add_argument("--dicom", type=Path, help="export: a new or empty folder for a DICOM file-set with DICOMDIR, "
                                               "for a PACS to import")
    cs.add_argument("--force", action="store_true", help="export: replace an existing --out file")
    cs.add_argument("--watch", action="store_true", help="send: keep forwarding new captures until stopped, with "
                                                         "back-off while the PACS does not answer")
    cs.add_argument("--limit", type=_positive, help="send: at most this many captures in this pass")
    cs.add_argument("--priority", choices=["idle", "normal"], default="idle",
                    help="send: idle (default) runs only on CPU time the classification loop leaves; normal competes "
                         "with everything else on the machine (a workstation or a busy test machine)")
    cs.set_defaults(fn=_captures)
