"""`skinedge`: one entry point for the board (run, verify, val, bench, captures, demo) and the workstation
(synth, train, convert — imported lazily, so the board never loads torch). One module per group of verbs, each
with its own `add_parsers`."""

from __future__ import annotations

import argparse
import sys

from edge.cli import bench, captures, convert, run, trust, val, web, wheelhouse
from edge.cli.common import Parser, needs_extra

VERBS = (convert, trust, run, val, bench, captures, web, wheelhouse)


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="skinedge", description=__doc__)
    # own dests: a verb's options of the same name (convert --version: the model's) must not set these
    p.add_argument("--version", action="store_true", dest="show_version",
                   help="print the version and the commit it was built from")
    p.add_argument("-v", "--verbose", action="store_true", dest="show_runtimes",
                   help="with --version: the runtimes' versions too")
    sub = p.add_subparsers(dest="cmd", metavar="VERB")
    for verbs in VERBS:
        verbs.add_parsers(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    for stream in (sys.stdout, sys.stderr):  # a file name that is not UTF-8 (Linux allows any bytes) is shown as
        if hasattr(stream, "reconfigure"):   # \xff escapes, not a UnicodeEncodeError traceback on a UTF-8 terminal
            stream.reconfigure(errors="backslashreplace")
    if argv[:1] == ["synth"]:
        from calibration.synthetic import main as synth_main

        return synth_main(argv[1:])
    if argv[:1] == ["train"]:
        with needs_extra("train"):
            from convert.train import main as train_main
        return train_main(argv[1:])
    p = build_parser()
    a = p.parse_args(argv)
    if a.show_version:
        from edge.about import version_text

        print(version_text(a.show_runtimes))
        return 0
    if a.cmd is None:
        p.error("choose a verb (skinedge --help lists them)")
    return a.fn(a)


if __name__ == "__main__":
    raise SystemExit(main())
