"""A store on a write-protected SD card can be listed, verified and exported: a real read-only bind mount, which
the kernel presents as an SD card's write-protect switch does (EROFS on every write). The store is left exactly
as it was. (Where this machine cannot mount, the tests are skipped: as root, permission bits prove nothing, and
an unprivileged user cannot run the venv's Python from /root.)"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from edge.record.schema import DB_NAME
from tests.test_store import REPO, _old_store


def _try(cmd: list[str]) -> bool:
    return subprocess.run(cmd, capture_output=True, check=False).returncode == 0


def _tree(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_size for p in sorted(root.rglob("*"))}


@pytest.fixture
def read_only(tmp_path):
    """view(src) -> a read-only bind mount of the directory src."""
    mounts: list[Path] = []

    def view(src: Path) -> Path:
        mnt = tmp_path / f"ro{len(mounts)}"
        mnt.mkdir()
        if not _try(["mount", "--bind", str(src), str(mnt)]):
            pytest.skip("cannot bind-mount here (no CAP_SYS_ADMIN)")
        mounts.append(mnt)
        if not _try(["mount", "-o", "remount,bind,ro", str(mnt)]):
            pytest.skip("cannot remount a bind mount read-only here")
        with pytest.raises(OSError, match="Read-only file system"):
            (mnt / "probe").write_bytes(b"")
        return mnt

    yield view
    for mnt in reversed(mounts):
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edge.cli", "captures", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=120, check=False)


def _kept_by_a_killed_writer(root: Path, acks: int) -> set[str]:
    """Captures kept by a process then SIGKILLed (no checkpoint, no clean close): the -wal and -shm stay."""
    child = subprocess.Popen([sys.executable, str(REPO / "tests" / "_capture_loop.py"), str(root), "7"],
                             stdout=subprocess.PIPE, text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert child.stdout.readline() == "OPEN\n"
    kept = {child.stdout.readline().split()[1] for _ in range(acks)}
    child.send_signal(signal.SIGKILL)
    child.wait()
    child.stdout.close()
    assert (root / f"{DB_NAME}-wal").stat().st_size > 0
    return kept


def _check_read_only(root: Path, n: int, out: Path, chained: bool = True) -> None:
    before = _tree(root)
    r = _cli("list", "--store", str(root))
    assert r.returncode == 0 and f"{n} capture(s)" in r.stdout and "opened read-only" in r.stderr, r.stderr
    r = _cli("verify", "--store", str(root))
    assert r.returncode == 0 and r.stdout.splitlines()[-1].startswith(f"store OK: {n} capture(s)"), r.stdout + r.stderr
    assert ("chain intact" in r.stdout) == chained and ("predates the chain" in r.stdout) != chained
    r = _cli("export", "--store", str(root), "--out", str(out))
    assert r.returncode == 0 and f"exported {n} capture(s)" in r.stdout, r.stderr
    assert "Traceback" not in r.stderr
    with zipfile.ZipFile(out) as zf:
        assert sum(name.endswith(".png") for name in zf.namelist()) == 2 * n
    assert _tree(root) == before  # nothing created, moved or changed


def test_a_read_only_store_can_be_listed_verified_and_exported(tmp_path, read_only):
    src = tmp_path / "card"
    src.mkdir()
    kept = _kept_by_a_killed_writer(src / "store", 3)  # the card was pulled from a running board
    (src / "store" / "images" / "20260101T000000Z_orphan_frame.png").write_bytes(b"no record")
    usb = tmp_path / "usb"
    usb.mkdir()
    mounted = read_only(src)
    root = mounted / "store"
    _check_read_only(root, len(kept), usb / "a.zip")
    r = _cli("verify", "--store", str(root))
    notice = next(x for x in r.stdout.splitlines() if "that no record references" in x)  # (and maybe the files of
    assert "(not moved: the store is read-only)" in notice and "_orphan_frame.png" in notice  # the killed capture)


def test_read_only_store_without_its_shm_file(tmp_path, read_only):
    """A -wal but no -shm (copied off a card by a tool that skipped it): read from a private copy, WAL included."""
    src = tmp_path / "card"
    src.mkdir()
    kept = _kept_by_a_killed_writer(src / "store", 2)
    (src / "store" / f"{DB_NAME}-shm").unlink()
    usb = tmp_path / "usb"
    usb.mkdir()
    _check_read_only(read_only(src) / "store", len(kept), usb / "b.zip")


def test_read_only_store_from_before_the_chain(tmp_path, read_only):
    src = tmp_path / "card"
    _old_store(src / "store", 2, [1, 2])
    db = sqlite3.connect(src / "store" / DB_NAME)
    db.execute("PRAGMA journal_mode = DELETE")  # closed cleanly long ago: no -wal
    db.close()
    usb = tmp_path / "usb"
    usb.mkdir()
    _check_read_only(read_only(src) / "store", 2, usb / "c.zip", chained=False)
