"""`skinedge captures list|export|verify`: the capture store from a shell."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edge.cli.common import load_cfg


def _store_root(a: argparse.Namespace) -> Path:
    return a.store if a.store else Path(load_cfg(a.config, {}).store.path)


def _captures(a: argparse.Namespace) -> int:
    from edge.record.export import PARTIAL, Interrupted, export_zip
    from edge.record.store import CaptureStore, StoreError

    try:
        with CaptureStore(_store_root(a), create=False) as store:
            if a.action == "list":
                caps = store.list(a.since)
                for c in caps:
                    print(f"{c.id}\t{c.created_utc}\t{c.label}\t{c.confidence:.2f}\t{c.bundle_hash[:12]}\t{c.note}")
                print(f"{len(caps)} capture(s) in {store.root}")
            elif a.action == "export":
                if not a.out:
                    raise ValueError("export needs --out FILE.zip")
                done = export_zip(store, a.out, a.since, force=a.force)
                for _, why in done.skipped:
                    print(f"skipped damaged {why}", file=sys.stderr)
                print(f"exported {len(done.exported)} capture(s) to {a.out}" + (
                    f"; PARTIAL: {len(done.skipped)} damaged capture(s) skipped, listed in index.csv"
                    if done.skipped else ""))
                return PARTIAL if done.skipped else 0
            else:
                problems = store.verify()
                print("\n".join(problems) if problems else f"store OK: {len(store.list())} capture(s), all files match")
                return 1 if problems else 0
    except (StoreError, ValueError) as e:
        print(f"skinedge captures: {e}", file=sys.stderr)
        return 2
    except (Interrupted, KeyboardInterrupt) as e:
        print(f"skinedge captures: {a.action} {e or 'interrupted'}; nothing written", file=sys.stderr)
        return 130
    return 0


def add_parsers(sub) -> None:
    cs = sub.add_parser("captures", help="list, export or verify the point-of-care capture store",
                        epilog="exit status: 0 ok; 1 verify found damage; 2 error (nothing written); 3 export "
                               "PARTIAL (damaged captures skipped, listed in index.csv); 130 interrupted")
    cs.add_argument("action", choices=["list", "export", "verify"])
    where = cs.add_mutually_exclusive_group(required=True)
    where.add_argument("--store", type=Path, help="store directory")
    where.add_argument("--config", type=Path, help="device config whose store.path to use")
    cs.add_argument("--since", help="ISO date or time (UTC), e.g. 2026-11-01")
    cs.add_argument("--out", type=Path, help="ZIP file to write (export)")
    cs.add_argument("--force", action="store_true", help="export: replace an existing --out file")
    cs.set_defaults(fn=_captures)
