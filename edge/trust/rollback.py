"""No rollback: the board remembers the highest version it has accepted per (model name, signing key) and
refuses an older one, unless the operator says `--allow-downgrade` (then the ready line, the log and every
capture say so).

An old bundle signed by the clinic's own key is still a valid signature: without this, whoever holds an older
release (with a known fault) could put it back on the board. The state is one small JSON file in the device
config's `state_dir`, replaced atomically (temp file, fsync, rename, fsync of the directory) under a lock, so a
power cut leaves the old state or the new one, never a torn file. Unsigned bundles (allow_unsigned boards) are
not tracked: without a key nothing ties two versions to one maker. Someone who can rewrite the state directory
can reset it; that is the limit of a board whose storage is in the attacker's hand.
"""

from __future__ import annotations

import fcntl
import json
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from edge.record.durable import TMP_PREFIX, fsync_dir, write_durable
from edge.trust import semver

STATE_FILE = "accepted-versions.json"
LOCK_FILE = ".accepted-versions.lock"
FORMAT = "skinedge-accepted-versions/1"
MAX_BYTES = 1 << 20


class RollbackError(ValueError):
    """One line: an older version refused, or a state file that cannot be read or written."""


@dataclass(frozen=True)
class Decision:
    """What check() found: `downgrade_from` is the higher version accepted before, when an older one was allowed."""

    highest: str | None  # the highest version accepted before for this (model, key)
    downgrade_from: str | None = None


class VersionBook:
    """The accepted-versions file of one state directory."""

    def __init__(self, state_dir: Path | str):
        self.dir = Path(state_dir)
        self.path = self.dir / STATE_FILE

    def check(self, model: str, key: str, version: str, allow_downgrade: bool = False) -> Decision:
        """RollbackError if `version` is older than the highest accepted for (model, key), unless allow_downgrade."""
        highest = self._read().get(_entry(model, key), {}).get("version")
        if highest is None or not semver.older(version, highest):
            return Decision(highest)
        if not allow_downgrade:
            raise RollbackError(f"{model} {version} is older than {highest}, which this board has accepted from the "
                                f"same signer ({key}; {self.path}): refused as a rollback (skinedge run "
                                "--allow-downgrade runs it, logged and recorded in every capture)")
        return Decision(highest, downgrade_from=highest)

    def accept(self, model: str, key: str, version: str) -> None:
        """Record `version` as accepted for (model, key) if it is the highest yet; atomic and crash-safe."""
        try:
            self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(self.dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as e:
            raise RollbackError(f"state_dir {self.dir}: cannot write the accepted versions there "
                                f"({e.strerror or e}); set state_dir in the device config") from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # two processes (run, capture) never lose each other's entry
            book = self._read()
            old = book.get(_entry(model, key), {}).get("version")
            if old is not None and not semver.older(old, version):
                return
            book[_entry(model, key)] = {"model": model, "key": key, "version": version,
                                        "accepted_utc": datetime.now(timezone.utc).isoformat(timespec="seconds")}
            self._write(book)
        finally:
            os.close(fd)

    def _read(self) -> dict[str, dict]:
        try:
            with open(self.path, "rb") as f:
                raw = f.read(MAX_BYTES + 1)
        except FileNotFoundError:
            return {}
        except OSError as e:
            raise RollbackError(f"{self.path}: unreadable ({e.strerror or e}): the board cannot check for a rollback"
                                ) from e
        try:
            data = json.loads(raw)
            if len(raw) > MAX_BYTES or data.get("format") != FORMAT:
                raise ValueError("not a " + FORMAT + " file")
            entries = {_entry(e["model"], e["key"]): e for e in data["accepted"]}
            for e in entries.values():
                semver.parse(e["version"])
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise RollbackError(f"{self.path}: damaged ({str(e)[:100]}): the board cannot check for a rollback; "
                                "restore it from a backup, or remove it to accept any version once") from None
        return entries

    def _write(self, book: dict[str, dict]) -> None:
        data = json.dumps({"format": FORMAT, "accepted": sorted(book.values(), key=lambda e: (e["model"], e["key"]))},
                          indent=1).encode()
        try:  # under the lock: no other writer; a temp left by a crash is ours to remove
            self.path.with_name(f"{TMP_PREFIX}{self.path.name}").unlink(missing_ok=True)
            write_durable(self.path, data)
            fsync_dir(self.dir)
        except OSError as e:
            raise RollbackError(f"{self.path}: cannot record the accepted version ({e.strerror or e})") from e


def _entry(model: str, key: str) -> str:
    return f"{model}\n{key}"
