"""`skinedge`: one entry point for the board (run, verify, bench, captures, demo) and the workstation
(synth, train, convert — imported lazily, so the board never loads torch). One module per group of verbs, each
with its own `add_parsers`."""

from __future__ import annotations

import argparse
import sys

from edge.cli import bench, captures, convert, run, trust, web

VERBS = (convert, trust, run, bench, captures, web)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="skinedge", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    for verbs in VERBS:
        verbs.add_parsers(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["synth"]:
        from calibration.synthetic import main as synth_main

        return synth_main(argv[1:])
    if argv[:1] == ["train"]:
        from convert.train import main as train_main

        return train_main(argv[1:])
    a = build_parser().parse_args(argv)
    return a.fn(a)


if __name__ == "__main__":
    raise SystemExit(main())
