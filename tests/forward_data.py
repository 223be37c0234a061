"""Capture stores for the forwarding tests and benchmark: real photographs (scikit-image's samples, cropped) as
frames, the board's own HUD renderer for the overlays, and a device config pointing at a test Orthanc."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from edge.record.store import CaptureStore

LABELS = ["monkeypox", "chickenpox", "measles", "normal"]
FRAME = 64  # px: small frames keep 1,000 captures quick; the encoder does not care about size
SCREEN = (192, 128)  # the overlay as a small panel renders it
MODEL = ("micro-mpoxnet-demo", "0.3.1", "ed25519:3f9a0c1d2b4e5f60")  # name, version, signature (a pinned key's ID)


def visit_of(i: int) -> str:
    """Capture i's visit: every third capture has none, the others come in visits of two."""
    return "" if i % 3 == 0 else f"V-{1000 + i // 3}"


def fill_store(root: Path, n: int, device_id: str = "test-board", seed: int = 0, frame: int = FRAME,
               screen: tuple[int, int] = SCREEN, progress: bool = False) -> CaptureStore:
    """A store of `n` captures of real photo crops (`frame` px square), each with its overlay rendered for a
    `screen` panel and a gate record."""
    from calibration.photos import find_photos, photo_crops
    from edge.overlay import Prediction, render

    photos = find_photos()
    assert photos, "no sample photographs installed (scikit-image is in the dev extra)"
    crops, _ = photo_crops(photos, frame, per_photo=max(1, -(-min(n, 60) // len(photos))), seed=seed)
    rng = np.random.default_rng(seed)
    store = CaptureStore(root, device_id=device_id)
    for i in range(n):
        view = crops[i % len(crops)]
        probs = rng.dirichlet(np.ones(len(LABELS)) * 0.5)
        cam = rng.random((7, 7)).astype(np.float32)
        overlay = render(view, cam, Prediction(LABELS, probs), size=screen, min_confidence=0.6, fps=None)
        gate = {"gate": "pass", "gate_sharpness": round(float(rng.uniform(50, 500)), 4),
                "gate_ood_score": round(float(rng.uniform(0, 3)), 4), "gate_ood_threshold": 3.5}
        store.add(view, overlay, probs, LABELS, "f" * 64, gate=gate, model=MODEL[0], model_version=MODEL[1],
                  signature=MODEL[2], visit_id=visit_of(i))
        if progress and (i + 1) % 100 == 0:
            print(f"  {i + 1}/{n} captures kept", flush=True)
    return store


def write_config(folder: Path, store: Path, url: str, credentials: dict | None = None, **forward) -> Path:
    """A device config (null display, folder source) whose forward section names `url`; credentials 0600."""
    lines = ["source: {kind: folder, path: .}", "display: {kind: 'null'}", f"store: {{path: '{store}'}}",
             "forward:", f"  url: '{url}'"]
    if credentials is not None:
        cred = folder / "pacs.cred"
        fd = os.open(cred, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("".join(f"{k}: '{v}'\n" for k, v in credentials.items()))
        lines.append(f"  credentials: '{cred}'")
    lines += [f"  {k}: {v!r}" if isinstance(v, str) else f"  {k}: {v}" for k, v in forward.items()]
    cfg = folder / "device.yaml"
    cfg.write_text("\n".join(lines) + "\n")
    return cfg


def send_child(cfg: str) -> None:
    """The `captures send` CLI in a process forked from a forkserver that has imported everything already, so the
    SIGKILL loop costs no interpreter start per kill (tests/test_forward.py)."""
    import sys

    from edge.cli import main

    sys.exit(main(["captures", "send", "--config", cfg, "--priority", "normal"]))


def expected_instances(store_root: Path, station=None) -> dict[str, tuple]:
    """SOP Instance UID -> (capture, role, dataset) for every instance the store's captures become."""
    from edge.record import dicom

    station = station or dicom.Station()
    with CaptureStore(store_root, create=False) as store:
        encode = dicom.Encoder(store, station)
        out = {}
        for cap in store.list():
            out.update({ds.SOPInstanceUID: (cap, role, ds) for role, ds in zip(("frame", "overlay", "report"),
                                                                              encode(cap))})
    return out


def expected_counts(expected: dict[str, tuple]) -> tuple[int, int, int]:
    """(instances, series, studies) the PACS should hold: 3 and 2 per capture, one study per visit (or capture)."""
    datasets = [ds for _, _, ds in expected.values()]
    return (len(datasets), len({ds.SeriesInstanceUID for ds in datasets}),
            len({ds.StudyInstanceUID for ds in datasets}))


def sr_items(ds) -> dict[str, object]:
    """Concept meaning -> value over a report's whole content tree (TEXT, CODE meaning, NUM, IMAGE reference)."""
    found = {}

    def walk(items):
        for it in items:
            name = it.ConceptNameCodeSequence[0].CodeMeaning
            if it.ValueType == "TEXT":
                found[name] = it.TextValue
            elif it.ValueType == "CODE":
                found[name] = it.ConceptCodeSequence[0].CodeMeaning
            elif it.ValueType == "NUM":
                found[name] = float(it.MeasuredValueSequence[0].NumericValue)
            elif it.ValueType == "IMAGE":
                found[name] = it.ReferencedSOPSequence[0].ReferencedSOPInstanceUID
            elif it.ValueType == "UIDREF":
                found[name] = it.UID
            walk(it.get("ContentSequence", []))

    walk(ds.ContentSequence)
    return found


def check_instances(pacs, expected: dict[str, tuple], stored: dict[str, dict]) -> None:
    """Every instance's patient, study, series and equipment attributes as encoded, and every report's content
    read back from the PACS's stored file (AssertionError naming the first difference)."""
    from pydicom.uid import EnhancedSRStorage

    frames = {c.uuid: uid for uid, (c, role, _) in expected.items() if role == "frame"}
    for uid, (cap, role, ds) in expected.items():
        tags = stored[uid]
        for key in ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "StationName", "Manufacturer", "Modality",
                    "InstanceNumber", "SeriesDescription"):
            assert str(tags[key]) == str(ds.get(key)), (key, role, cap.id)
        if role == "report":
            report = pacs.dataset(tags["_id"])
            assert report.SOPClassUID == EnhancedSRStorage
            items = sr_items(report)
            assert items["Finding"] == cap.label and "not a diagnosis" in items["Comment"], cap.id
            assert all(abs(items[f"Probability of {lab}"] - p) < 1e-6 for lab, p in cap.probs.items()), cap.id
            assert items["Source image"] == frames[cap.uuid], cap.id


def kill_loop(pacs, cfg: Path, kills: int) -> tuple[int, int]:
    """SIGKILL the `captures send` CLI as soon as the PACS holds more instances than at the last kill (mid-request,
    or between the PACS's answer and the commit of the send state), `kills` times or until a run finishes first.
    Children fork from a forkserver that has imported everything, so a kill costs no interpreter start.
    Returns (kills done, kills that left a capture half stored)."""
    import multiprocessing
    import signal
    import time

    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["edge.cli", "edge.cli.captures", "edge.record.sender", "requests", "tests.forward_data"])
    last, done, mid_capture = pacs.count(), 0, 0
    while done < kills:
        child = ctx.Process(target=send_child, args=(str(cfg),))
        child.start()
        while pacs.count() <= last and child.is_alive():
            time.sleep(0.005)
        if not child.is_alive():
            break
        os.kill(child.pid, signal.SIGKILL)
        child.join()
        done += 1
        last = pacs.count()
        mid_capture += last % 3 != 0
    return done, mid_capture
