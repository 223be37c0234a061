"""Captures on a USB stick as DICOM: the instances the sender would send, in a DICOMDIR file-set.

A hospital without a network link imports the stick into its PACS (every PACS and most viewers read a
DICOMDIR). The instances are what forwarding sends (the same encoder, the same UIDs), so a capture that
arrives both ways is one instance at the hospital. Damaged captures, and records that fail the chain's
verification, are skipped and reported as in the ZIP export (PARTIAL). The file-set is written by pydicom's FileSet into a private temp folder beside DIR and renamed
into place when complete: an interrupted export leaves no half file-set that an import would take for whole.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from pydicom.fileset import DIRECTORY_RECORDERS, FileSet, RecordNode

from edge.record import dicom
from edge.record.durable import TMP_PREFIX, fsync_dir
from edge.record.export import SYSTEM_DIRS, Export, _alive, _signals_raise
from edge.record.store import CaptureStore, StoreError, describe_error


def export_dicom(store: CaptureStore, out: Path | str, station: dicom.Station, since: str | None = None) -> Export:
    """Write every intact capture (at or after `since`) to the new or empty folder `out`, with its DICOMDIR."""
    out = Path(out)
    _check_target(out)
    result = Export(out)
    encode = dicom.Encoder(store, station)  # a visit's study starts at its first capture, also when --since cuts it
    caps = store.list(since)
    audit = store.audit(files=False)
    selected = {c.id for c in caps}
    result.chain_problems = [p.line() for p in audit.problems if p.id not in selected]
    _remove_stale_temps(out)
    tmp = out.with_name(f"{TMP_PREFIX}{out.name}.{os.getpid()}")
    try:
        with _signals_raise():
            fs = FileSet()
            fs.ID = "SKINEDGE"
            for cap in caps:
                if not audit.intact(cap):  # an edited record is not exported as if genuine
                    result.skipped.append((cap, "; ".join(p.line() for p in audit.problems if p.id == cap.id)))
                    continue
                try:
                    instances = encode(cap)
                except (StoreError, ValueError) as e:
                    result.skipped.append((cap, str(e)))
                    continue
                for ds in instances:
                    _add(fs, ds)
                result.exported.append(cap.id)
            os.mkdir(tmp, 0o700)
            fs.write(tmp)
            _fsync_tree(tmp)
            if out.is_dir():
                out.rmdir()  # empty, checked above
            os.replace(tmp, out)
        fsync_dir(out.parent)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError):
            raise StoreError(f"export {out}: {describe_error(e)}") from e
        raise
    return result


def _check_target(out: Path) -> None:
    if not out.parent.is_dir():
        raise StoreError(f"export {out}: folder {out.parent} does not exist")
    folder = str(out.parent.resolve())
    if any(folder == d or folder.startswith(d + "/") for d in SYSTEM_DIRS):
        raise StoreError(f"export {out}: {folder} is a system folder; give a folder on a disk or USB stick")
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise StoreError(f"export {out}: exists and is not a folder; give a new or empty folder for the DICOM file-set")
    if out.is_dir() and any(out.iterdir()):
        raise StoreError(f"export {out}: folder is not empty; give a new or empty folder for the DICOM file-set")


def _add(fs: FileSet, ds) -> None:
    """Add one instance. A report's directory record keeps no content items: pydicom copies the whole content tree
    into it, where PS3.3 Annex F allows only the root's HAS CONCEPT MOD items (dciodvfy reports the rest)."""
    if ds.Modality != "SR":
        fs.add(ds)
        return
    nodes = []
    for kind in ("PATIENT", "STUDY", "SERIES", "SR DOCUMENT"):
        record = DIRECTORY_RECORDERS[kind](ds)
        record.DirectoryRecordType = kind
        if kind == "SR DOCUMENT":
            del record.ContentSequence
            record.ReferencedSOPInstanceUIDInFile = ds.SOPInstanceUID  # the leaf's key, needed before adding
        nodes.append(RecordNode(record))
    for parent, child in zip(nodes, nodes[1:]):
        child.parent = parent
    fs.add_custom(ds, nodes[-1])


def _fsync_tree(root: Path) -> None:
    for folder, _, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(folder, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(folder))


def _remove_stale_temps(out: Path) -> None:
    """Temp file-sets of earlier exports to `out` whose process is gone (SIGKILL, power cut)."""
    prefix = f"{TMP_PREFIX}{out.name}."
    for entry in os.scandir(out.parent):
        pid = entry.name[len(prefix):]
        if entry.name.startswith(prefix) and pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(entry.path, ignore_errors=True)
