"""The one YAML reader for manifests and device configs: plain data only, bounded, with one-line errors.

yaml.safe_load runs no code but still expands aliases: a few hundred bytes of nested `*a` references
become gigabytes in memory (and in any error message that prints the value). Neither a manifest nor a
device config needs anchors, so they are refused outright, as are duplicate keys (YAML keeps the last one
silently) and files larger than any real manifest or config.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import yaml

MAX_BYTES = 1 << 20  # manifests and configs are a few kB
SHOWN = 200  # characters of a value an error message may echo


class YamlError(ValueError):
    """One line: where in the text and what is wrong."""


def cut(text: str, limit: int = SHOWN) -> str:
    """`text` cut to `limit` characters so an error line stays one readable line."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def shown(value: object, limit: int = SHOWN) -> str:
    """repr(value), cut to `limit` characters."""
    return cut(repr(value), limit)


_BASE = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's parser where PyYAML was built with it


class _Loader(_BASE):
    """Safe loading without duplicate keys (`load` refuses aliases from the parser's events first)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, (str, int, float, bool)) and key is not None:
                raise yaml.constructor.ConstructorError(None, None, "mapping keys must be plain scalars",
                                                        key_node.start_mark)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {shown(key)}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data) -> bool:  # a shared object is written out again, never as &anchor/*alias
        return True


def dump(data: object) -> str:
    """YAML text `load` accepts: plain data, no anchors or aliases, keys in the given order."""
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False)


def read(path: Path) -> bytes:
    """The file's bytes, refusing (before reading it all) one larger than any manifest or config."""
    raw = read_small(path, MAX_BYTES + 1)
    if len(raw) > MAX_BYTES:
        raise YamlError(f"larger than the {MAX_BYTES} bytes a manifest or config may have")
    return raw


def read_small(path: Path | str, limit: int) -> bytes:
    """At most `limit` bytes of a regular file. A FIFO, device or directory given where a small file belongs is an
    OSError at once (opened without blocking, checked before reading): reading a FIFO would wait forever."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            what = "a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "a device or socket"
            raise OSError(f"{path} is {what}, not a regular file")
        return f.read(limit)


def load(raw: bytes | str) -> object:
    """Parse YAML text; YamlError('line L, column C: ...') for anything malformed, aliased or oversized."""
    if len(raw) > MAX_BYTES:
        raise YamlError(f"larger than the {MAX_BYTES} bytes a manifest or config may have")
    try:
        for event in yaml.parse(raw, Loader=_BASE):  # events only: an alias is never expanded
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
                raise yaml.composer.ComposerError(None, None, "anchors and aliases (&name, *name) are not allowed",
                                                  event.start_mark)
        return yaml.load(raw, Loader=_Loader)  # a SafeLoader subclass: builds plain data only
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        what = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise YamlError(f"{where}malformed YAML: {what[:SHOWN]}") from None
