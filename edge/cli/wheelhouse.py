"""`skinedge wheelhouse`: the board's install as files, for a clinic with no internet."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _wheelhouse(a: argparse.Namespace) -> int:
    from edge.wheelhouse import DEFAULT_GLIBC, DEFAULT_PYTHON, Target, WheelhouseError, build

    target = Target(a.extra, a.python or DEFAULT_PYTHON, a.machine, a.glibc or DEFAULT_GLIBC)
    try:
        wheels = build(a.out, target, a.source)
    except WheelhouseError as e:
        print(f"skinedge wheelhouse: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"skinedge wheelhouse: interrupted; {a.out} removed", file=sys.stderr)
        return 130
    mb = sum(w.stat().st_size for w in wheels) / 1e6
    print(f"wheelhouse {a.out}: {len(wheels)} wheels, {mb:.0f} MB, pinned with their sha256 in "
          f"{a.out / 'requirements.txt'}\non the board (no internet needed): sudo systemd/install.sh --device BOARD "
          f"--wheelhouse {a.out} --bundle BUNDLE ...")
    return 0


def add_parsers(sub) -> None:
    w = sub.add_parser("wheelhouse", help="skinedge's wheel and every dependency for a board's platform and Python, "
                                          "to install with no internet (systemd/install.sh --wheelhouse DIR)")
    w.add_argument("--out", type=Path, required=True, help="a new or empty folder")
    w.add_argument("--extra", default="pi", help="the board's extra: pi (default), jetson or edge, with ',dicom' "
                                               "where install.sh --pacs forwards captures (e.g. pi,dicom)")
    w.add_argument("--python", help="the board's Python, major.minor (default 3.11: Raspberry Pi OS Bookworm; "
                                    "a Jetson on JetPack 6 has 3.10)")
    w.add_argument("--machine", default="aarch64", choices=["aarch64", "x86_64"], help="the board's CPU (default "
                                                                                      "aarch64)")
    w.add_argument("--glibc", help="the board's glibc (default 2.36: Debian 12; JetPack 6: 2.35)")
    w.add_argument("--source", type=Path, help="the skinedge checkout to build from (default: this one)")
    w.set_defaults(fn=_wheelhouse)
