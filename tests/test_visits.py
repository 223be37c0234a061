"""Visits: IDs that are pseudonyms, read from real QR codes and printed barcodes by the camera, and duplicates."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edge.config import ConfigError, VisitsConfig, load_config
from edge.record.visits import CardReader, Duplicates, VisitError, VisitState, check_visit, read_card
from tests._board import DEMO
from tests._cards import ean13, on_card, qr_code


@pytest.fixture(scope="module")
def lesion() -> np.ndarray:
    """A frame of the shipped demo clip at a camera's 640x480: the background a card is held over."""
    cap = cv2.VideoCapture(str(DEMO / "clip.mp4"))
    ok, bgr = cap.read()
    cap.release()
    assert ok
    return cv2.resize(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), (640, 480), interpolation=cv2.INTER_LINEAR)


def test_visit_ids_are_pseudonyms():
    for good in ("V-2026-0042", "4006381333931", "clinic3.visit_17", "  P1234  "):
        assert check_visit(good) == good.strip()
    for bad in ("Amina Juma", "AMINA", "", "V 2026", "x" * 41 + "1", "V-1\n2", "<script>1"):
        with pytest.raises(VisitError, match="does not match visits.pattern"):
            check_visit(bad)
    assert check_visit("AB", r"[A-Z]{2}") == "AB"  # a clinic's own pattern


def test_qr_card_is_read(lesion):
    qr, bars = cv2.QRCodeDetector(), cv2.barcode.BarcodeDetector()
    for width, angle in ((150, 0.0), (200, 8.0), (260, -12.0)):
        frame = on_card(qr_code("V-2026-0042"), lesion, width, angle)
        assert read_card(frame, qr, bars) == ["V-2026-0042"], (width, angle)
    assert read_card(lesion, qr, bars) == []  # no card, nothing read


def test_printed_barcode_card_is_read(lesion):
    qr, bars = cv2.QRCodeDetector(), cv2.barcode.BarcodeDetector()
    code = ean13("400638133393")  # python-barcode adds the check digit: 4006381333931
    for width, angle in ((330, 0.0), (420, 4.0), (500, -8.0)):  # the card held so the code spans half the frame or more
        frame = on_card(code, lesion, width, angle)
        assert read_card(frame, qr, bars) == ["4006381333931"], (width, angle)
    # at 260 px (1.6 px per bar module) OpenCV's detector finds nothing: README says to hold a barcode card closer
    assert read_card(on_card(code, lesion, 260), qr, bars) == []


def test_card_reader_sets_the_visit_and_ignores_other_codes(lesion):
    state = VisitState(VisitsConfig())
    reader = CardReader(state, interval=0.0)
    try:
        reader.offer(on_card(qr_code("https://example.org/not-a-visit"), lesion, 200))
        assert reader.wait_reads(1, 30) and state.current is None
        reader.offer(on_card(qr_code("V-2026-0077"), lesion, 200))
        assert reader.wait_reads(2, 30)
        assert state.current.id == "V-2026-0077" and state.current.source == "card"
    finally:
        reader.close()


def test_duplicates_are_near_identical_captures_of_one_visit_within_the_window(lesion):
    dup = Duplicates(VisitsConfig(duplicate_seconds=10, duplicate_change=0.08))
    noisy = np.clip(lesion.astype(np.int16) + np.random.default_rng(1).normal(0, 3, lesion.shape), 0, 255
                    ).astype(np.uint8)
    moved = np.roll(lesion, lesion.shape[1] // 4, axis=1)
    assert dup.of(lesion, "V-1", now=0.0) is None
    dup.kept("first", lesion, "V-1", now=0.0)
    assert dup.of(noisy, "V-1", now=3.0) == "first"  # the same picture again, with sensor noise
    assert dup.of(moved, "V-1", now=3.0) is None  # the camera moved to another spot
    assert dup.of(noisy, "V-2", now=3.0) is None  # another patient
    assert dup.of(noisy, "V-1", now=11.0) is None  # after the window


def test_config_keys_for_visits_page_and_language(tmp_path):
    demo = DEMO / "demo.yaml"
    cases = {("visits.pattern", "[a-"): "visits.pattern (override): expected a regular expression",
             ("web.address", "clinic.local"): "web.address (override): expected an IP address",
             ("web.tls_cert", "cert.pem"): "web.tls_cert: TLS needs both web.tls_cert and web.tls_key",
             ("language", "de"): "language (override): expected one of 'en', 'fr', 'pt', 'sw'",
             ("web.port", 70000): "web.port (override): expected an integer in 0..65535"}
    for (key, value), message in cases.items():
        with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
            load_config(demo, {key: value})
    cfg = load_config(demo, {"language": "sw", "visits.required": True, "web.enabled": True})
    assert cfg.language == "sw" and cfg.visits.required and cfg.web.address == "127.0.0.1" and cfg.web.port == 8080
