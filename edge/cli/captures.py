"""`skinedge captures list|export|verify|key`: the capture store (or an exported ZIP) from a shell."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from edge.cli.common import load_cfg

EXIT_DAMAGED, EXIT_ERROR, EXIT_INTERRUPTED = 1, 2, 130


def _store_root(a: argparse.Namespace) -> Path:
    return a.store if a.store else Path(load_cfg(a.config, {}).store.path)


def _keys(a: argparse.Namespace) -> list[str]:
    """--key values: `ed25519:...` lines, or .pub files holding one."""
    from edge.trust.signing import key_bytes

    keys = []
    for value in a.key or []:
        line = value
        if not value.startswith("ed25519:"):
            try:
                line = Path(value).read_text(encoding="ascii").strip().splitlines()[0]
            except (OSError, UnicodeDecodeError, IndexError) as e:
                raise ValueError(f"--key {value}: neither a public key (ed25519:...) nor a readable .pub file "
                                 f"({getattr(e, 'strerror', None) or e})") from None
        try:
            key_bytes(line)
        except ValueError as e:
            raise ValueError(f"--key {value}: {e}") from None
        keys.append(line)
    return keys


def _captures(a: argparse.Namespace) -> int:
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
    except (StoreError, ZipCheckError, ValueError) as e:
        print(f"skinedge captures: {e}", file=sys.stderr)
        return EXIT_ERROR
    except (Interrupted, KeyboardInterrupt) as e:
        print(f"skinedge captures: {a.action} {e or 'interrupted'}; nothing written", file=sys.stderr)
        return EXIT_INTERRUPTED


def _on_store(a: argparse.Namespace, root: Path) -> int:
    from edge.record.export import PARTIAL, export_zip
    from edge.record.store import CaptureStore

    with CaptureStore(root, create=False, trusted=_keys(a)) as store:
        if store.read_only:
            print(f"note: {store.root} cannot be written: opened read-only", file=sys.stderr)
        if a.action == "list":
            caps = store.list(a.since, a.visit, a.until)
            for c in caps:
                print(f"{c.id}\t{c.created_utc}\t{c.visit_id or '-'}\t{c.label}\t{c.confidence:.2f}\t"
                      f"{c.gate.get('gate', '-')}\t{c.bundle_hash[:12]}" + ("\tduplicate" if c.duplicate_of else "")
                      + (f"\t{c.note}" if c.note else ""))
            print(f"{len(caps)} capture(s) in {store.root}")
            return 0
        if a.action == "export":
            if not a.out:
                raise ValueError("export needs --out FILE.zip")
            done = export_zip(store, a.out, a.since, force=a.force, progress=Progress(a.out), visit=a.visit,
                              until=a.until, msgs=_messages(a))
            for _, why in done.skipped:
                print(f"skipped damaged {why}", file=sys.stderr)
            for line in done.chain_problems:
                print(line, file=sys.stderr)
            print(f"exported {len(done.exported)} capture(s) to {a.out}" + (
                f"; PARTIAL: {len(done.skipped)} damaged capture(s) skipped, listed in index.csv" if done.skipped
                else "") + (f"; PARTIAL: {len(done.chain_problems)} chain problem(s)" if done.chain_problems else ""))
            return PARTIAL if done.partial else 0
        audit = store.audit()
        _report(audit.lines(), audit.notices)
        if audit.problems:
            print(f"store DAMAGED: {len(audit.problems)} problem(s) among {audit.count} capture(s) in {store.root}")
            return EXIT_DAMAGED
        signed = f"; chain intact, signed by {_keys_text(audit.keys)}" if audit.chained else ""
        print(f"store OK: {audit.count} capture(s), all files match{signed}")
        return 0


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
    """Export progress on stderr: a line when the export starts, then at most one every 5 seconds."""

    def __init__(self, out: Path, every: float = 5.0):
        self.out, self.every, self.last = out, every, 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if done == 0:
            print(f"exporting {total} capture(s) to {self.out} ...", file=sys.stderr, flush=True)
        elif now - self.last >= self.every and done < total:
            print(f"  {done}/{total} capture(s)", file=sys.stderr, flush=True)
        else:
            return
        self.last = now


def add_parsers(sub) -> None:
    cs = sub.add_parser("captures", help="list, export or verify the point-of-care capture store (or an exported ZIP)",
                        epilog="exit status: 0 ok; 1 verify found damage or tampering (each record named by id); "
                               "2 error (nothing written); 3 export PARTIAL (damaged captures skipped, listed in "
                               "index.csv, or records missing from the chain); 130 interrupted")
    cs.add_argument("action", choices=["list", "export", "verify", "key"],
                    help="key: print the device public key that signs this store's records (made if missing)")
    where = cs.add_mutually_exclusive_group(required=True)
    where.add_argument("--store", type=Path, help="store directory")
    where.add_argument("--config", type=Path, help="device config whose store.path to use")
    where.add_argument("--zip", type=Path, help="verify: an exported ZIP instead of a store (works offline, anywhere)")
    cs.add_argument("--key", action="append", metavar="KEY",
                    help="verify: the board's public key (ed25519:... or a .pub file) the chain must be signed "
                         "with; repeatable (default: the device key beside the store, or the ZIP's device-key.pub)")
    cs.add_argument("--since", help="ISO date or time (UTC), e.g. 2026-11-01")
    cs.add_argument("--until", help="ISO date or time (UTC): captures before it")
    cs.add_argument("--visit", help="list/export: only the captures of this visit ID")
    cs.add_argument("--out", type=Path, help="ZIP file to write (export)")
    cs.add_argument("--force", action="store_true", help="export: replace an existing --out file")
    cs.set_defaults(fn=_captures)
