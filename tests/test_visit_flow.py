"""The issue's bar: a capture taken from the page (in Chromium), one from a QR-coded patient card held up to the
camera, and one from `skinedge capture --visit` all carry their visit ID through the store, the export's CSV and
its HTML index."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
import zipfile

import cv2
import pytest

from edge.config import load_config
from edge.record.store import CaptureStore
from tests import _browser
from tests._board import DEMO, REPO, Board
from tests._cards import on_card, qr_code

CARD, PAGE, CLI = "V-CARD-2026-01", "V-PAGE-2026-02", "V-CLI-2026-03"


def _card_clip(path, frames: int = 40) -> None:
    """A video of the card held up in front of the lesion, then the lesion alone (the demo clip's frames)."""
    cap = cv2.VideoCapture(str(DEMO / "clip.mp4"))
    clip = []
    while (got := cap.read())[0] and len(clip) < frames:
        clip.append(cv2.resize(got[1], (640, 480)))
    cap.release()
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 15, (640, 480))
    code = qr_code(CARD)
    for i, bgr in enumerate(clip):
        out.write(cv2.cvtColor(on_card(code, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), 200, 5, seed=i), cv2.COLOR_RGB2BGR)
                  if i < frames // 2 else bgr)
    out.release()


@pytest.mark.skipif(_browser.missing() is not None, reason=str(_browser.missing()))
def test_visit_ids_from_page_card_and_command_line_reach_store_csv_and_html(tmp_path):
    video, store_dir = tmp_path / "card.mp4", tmp_path / "store"
    _card_clip(video)
    config = tmp_path / "board.yaml"
    config.write_text(f"bundle: {DEMO / 'bundle'}\nbackend: tflite\nthreads: 1\n"
                      f"source: {{kind: video, path: {video}, loop: true}}\ndisplay: {{kind: 'null'}}\n"
                      f"store: {{path: {store_dir}}}\nweb: {{enabled: true, port: 0}}\nwatchdog: {{enabled: false}}\n"
                      "allow_unsigned: true\ngates: {motion_max: 1000.0}\n")
    board = Board(load_config(config))
    try:
        # 1. the card: the camera reads it, the HUD shows the visit, the button keeps a capture under it
        _browser.wait_for(lambda: board.poc.visits.current, timeout=60, message="the card read")
        assert board.poc.visits.current.id == CARD and board.poc.visits.current.source == "card"
        for _ in range(60):  # the health worker presses until a frame passes the gates (a card is not skin)
            board.trigger.set()
            _browser.wait_for(lambda: not board.trigger.is_set(), message="the press taken")
            if board.store._store is not None and board.store._store.count() == 1:
                break
        assert board.store._store.count() == 1

        # 2. the page: a health worker types another visit on the tablet and presses capture
        driver = _browser.chromium(_browser.TABLET, str(tmp_path))
        try:
            driver.get(board.url + "/")
            _browser.wait_for(lambda: driver.find_element("id", "pair-code").is_displayed(), message="pairing form")
            driver.find_element("id", "pair-code").send_keys(board.page.pairing.current())
            driver.find_element("id", "pair-button").click()
            _browser.wait_for(lambda: driver.find_element("id", "capture").is_displayed(), message="the live view")
            box = driver.find_element("id", "visit-input")
            _browser.wait_for(lambda: box.get_attribute("value") == CARD, message="the card's visit shown on the page")
            box.clear()  # another patient: the health worker types over the card's visit
            box.send_keys(PAGE)
            _browser.capture_until_kept(driver)  # again while the card, not skin, is in front of the camera
        finally:
            _browser.quit_browser(driver)
    finally:
        board.close()

    # 3. the command line
    r = subprocess.run([sys.executable, "-m", "edge.cli", "capture", "--config", str(config), "--visit", CLI,
                        "--source", str(DEMO / "clip.mp4")], check=False, capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 0 and f"visit {CLI}" in r.stdout, r.stderr

    with CaptureStore(store_dir, create=False) as store:
        assert [c.visit_id for c in store.list()] == [CARD, PAGE, CLI]
        assert all(len(store.list(visit=v)) == 1 for v in (CARD, PAGE, CLI))
    zip_path = tmp_path / "export.zip"
    r = subprocess.run([sys.executable, "-m", "edge.cli", "captures", "export", "--store", str(store_dir), "--out",
                        str(zip_path)], check=False, capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 0, r.stderr
    with zipfile.ZipFile(zip_path) as zf:
        rows = list(csv.DictReader(io.StringIO(zf.read("index.csv").decode())))
        page = zf.read("index.html").decode()
    assert [row["visit"] for row in rows] == [CARD, PAGE, CLI]
    for visit in (CARD, PAGE, CLI):
        assert f"<td>{visit}</td>" in page
    r = subprocess.run([sys.executable, "-m", "edge.cli", "captures", "list", "--store", str(store_dir), "--visit", PAGE],
                       check=False, capture_output=True, text=True, cwd=REPO, timeout=60)
    assert r.returncode == 0 and PAGE in r.stdout and CARD not in r.stdout and "1 capture(s)" in r.stdout
