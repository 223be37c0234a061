"""Semantic versions (semver.org 2.0.0): what a bundle's `version` must be, and which of two is older.

A version that is not a semantic version cannot be ordered, so a board could not tell 0.1.0 after 0.2.0 from
an upgrade ("zzz older than anything" passed before): the manifest schema refuses it.
"""

from __future__ import annotations

import re

_NUM = r"0|[1-9]\d*"
_ID = rf"(?:{_NUM}|\d*[A-Za-z-][0-9A-Za-z-]*)"
PATTERN = rf"({_NUM})\.({_NUM})\.({_NUM})(?:-({_ID}(?:\.{_ID})*))?(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?"
MAX_LEN = 50


def parse(version: str) -> tuple:
    """A sort key with semver precedence: MAJOR.MINOR.PATCH numerically, a pre-release (1.0.0-rc.1) before its
    release, pre-release identifiers numeric < alphanumeric, build metadata (+...) ignored; ValueError if
    `version` is not a semantic version."""
    m = re.fullmatch(PATTERN, version) if isinstance(version, str) and len(version) <= MAX_LEN else None
    if m is None:
        raise ValueError(f"expected a semantic version MAJOR.MINOR.PATCH such as 1.4.0 or 2.0.0-rc.1, found "
                         f"{str(version)[:MAX_LEN]!r}")
    major, minor, patch, pre = m.groups()
    if pre is None:
        return int(major), int(minor), int(patch), (1,)  # a release sorts after all its pre-releases
    ids = tuple((0, int(i), "") if i.isdigit() else (1, 0, i) for i in pre.split("."))
    return int(major), int(minor), int(patch), (0, ids)


def older(a: str, b: str) -> bool:
    """True when version `a` precedes version `b`."""
    return parse(a) < parse(b)
