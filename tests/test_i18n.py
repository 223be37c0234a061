"""Languages: every string a health worker or reviewer reads comes from the catalogue, every shipped language has
all of them with the same placeholders, and the HUD stays legible in OpenCV's ASCII-only fonts."""

from __future__ import annotations

import ast
import html
import re
import string
from pathlib import Path

import numpy as np
import pytest

from edge import gates, overlay, pipeline
from edge.i18n import LANGUAGES, Messages, ascii_text, catalogue
from edge.record import exportdoc
from edge.record.store import Capture
from edge.record.visits import SOURCES
from edge.trust import admit
from edge.web import app

EDGE = Path(__file__).resolve().parents[1] / "edge"
# what the page shows from the API's answers (edge.web.app, edge.web.security, the loop's capture answers)
SERVER_MESSAGES = [
    "not paired: enter the code shown on the board's screen",
    "wrong or expired code: read the code on the board's screen again",
    "too many pairing attempts; wait and read the code on the board's screen again",
    "missing or wrong CSRF token; reload the page", "cross-site request refused",
    "captures are still being kept; try again", "the camera loop did not keep the capture in time",
    "this board keeps no captures", "the camera loop has stopped", "no captures kept yet", app.VISIT_INVALID,
]


def _fields(text: str) -> set[str]:
    return {f for _, f, _, _ in string.Formatter().parse(text) if f}


def _callee(func: ast.expr) -> str:
    return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""


def used_messages() -> set[str]:
    """Every message id the HUD, the page and the export use."""
    used = {gates.message(r) for r in (*gates.RETAKE, gates.NOT_RECOGNISED)} | {gates.CHECKING}
    used |= {pipeline.CAMERA_LOST, pipeline.CAPTURE_NOT_SAVED, pipeline.VISIT_REQUIRED, overlay.DISCLAIMER,
             overlay.UNCERTAIN, exportdoc.DISCLAIMER, exportdoc.PROBABILITY, exportdoc.STATUS, *SERVER_MESSAGES,
             *SOURCES, "pass", "checking", *gates.RETAKE, gates.NOT_RECOGNISED, "running", "starting", "signed",
             "unsigned"}
    used |= {meaning for _, _, meaning in exportdoc.COLUMNS_BEFORE + exportdoc.COLUMNS_AFTER}
    used |= {f"{pipeline.CAPTURE_NOT_KEPT} - {gates.message(r)}" for r in (*gates.RETAKE, gates.NOT_RECOGNISED)}
    used |= {admit.UNSIGNED_MODEL, admit.NOT_PINNED, "signer not pinned", pipeline.CAPTURE_NOT_KEPT}
    for py in EDGE.rglob("*.py"):  # msgs("..."), msgs.hud("..."), t("...") with a literal (joined) message
        for node in ast.walk(ast.parse(py.read_text())):
            if (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
                    and isinstance(node.args[0].value, str) and _callee(node.func) in ("msgs", "hud", "t")):
                used.add(node.args[0].value)
    script = (EDGE / "web" / "static" / "app.js").read_text()
    used |= set(re.findall(r'\bt\("((?:[^"\\]|\\.)+)"', script))
    used |= set(re.findall(r'\["([A-Z][^"]+)", ', script))  # the capture page's row names, t(k) below
    used |= set(re.findall(r'data-i18n="([^"]+)"', (EDGE / "web" / "static" / "index.html").read_text()))
    return {u.replace("\\'", "'") for u in used}


def test_every_message_shown_is_in_every_language():
    english = catalogue("en")
    missing = sorted(used_messages() - set(english))
    assert not missing, f"not in edge/i18n/en.json: {missing}"
    for lang in LANGUAGES:
        table = catalogue(lang)
        assert set(table) == set(english), lang
        for msgid, text in table.items():
            assert text.strip(), (lang, msgid)
            assert _fields(text) == _fields(msgid), (lang, msgid, text)
    assert catalogue("fr")["Capture"] == "Capturer" and catalogue("sw")["Capture"] == "Piga picha"


def test_hud_text_is_ascii_and_fits_every_panel_in_every_language():
    """OpenCV's Hershey fonts draw ASCII only: accents are dropped (é -> e, ç -> c, œ -> oe), never '?'."""
    hud_msgs = [gates.message(r) for r in (*gates.RETAKE, gates.NOT_RECOGNISED)] + [gates.CHECKING]
    assert ascii_text("Caméra perdue - reconnexion, cœur, Ação") == "Camera perdue - reconnexion, coeur, Acao"
    for lang in LANGUAGES:
        msgs = Messages(lang)
        for msg in [*hud_msgs, pipeline.CAMERA_LOST, overlay.DISCLAIMER, overlay.UNCERTAIN, pipeline.VISIT_REQUIRED,
                    admit.UNSIGNED_MODEL, admit.NOT_PINNED]:
            assert msgs.hud(msg).isascii() and "?" not in msgs.hud(msg), (lang, msg)
        for size in ((320, 240), (480, 320), (800, 480), (480, 800)):
            pred = overlay.Prediction(["a", "b", "c"], np.array([0.7, 0.2, 0.1]))
            for gate in [None, *hud_msgs]:
                layout = overlay.hud(pred, size, 0.6, 12.3, gate=gate, msgs=msgs,
                                     footer=overlay.footer_lines(12.3, "V-2026-0042", (), msgs))
                for t in layout.texts:
                    x, y, w, h = t.box
                    assert x >= 0 and x + w <= size[0] and y >= 0 and y + h <= size[1], (lang, size, t.text)
            clinical = [(msgs.hud("Visit {visit}", visit="V-2026-0042"), overlay.WHITE),
                        (msgs.hud("Model {name} {version}", name="demo-micro_mpoxnet-synthetic", version="0.1.0"),
                         overlay.GREY), ("2026-12-07 00:41:37 +0000", overlay.GREY)]
            layout = overlay.hud(pred, size, 0.6, None, warning=admit.UNSIGNED_MODEL, msgs=msgs, footer=clinical)
            px, py, pw, ph = layout.panel
            for t in layout.texts[:-2]:  # the panel's texts (the last two are the warning and disclaimer bands')
                x, y, w, h = t.box
                assert px <= x and x + w <= px + pw and py <= y and y + h <= py + ph, (lang, size, t.text)
            status = overlay.hud(None, size, 0.6, None, status=pipeline.CAMERA_LOST, msgs=msgs)
            assert msgs.hud(pipeline.CAMERA_LOST).split(" - ")[0].split()[0] in " ".join(t.text for t in status.texts)


@pytest.mark.parametrize("lang", LANGUAGES)
def test_export_readme_and_index_in_the_board_language(lang):
    cap = Capture(1, "u-1", "2026-12-06T09:00:00.000000Z", "pox_like", 0.9, {"pox_like": 0.9, "normal": 0.1}, "h" * 64,
                  "dev1", "images/a_frame.png", "images/a_overlay.png", "f" * 64, "o" * 64, "", {"gate": "pass"},
                  model="m", model_version="1.0", signature="UNSIGNED", visit_id="V-2026-0042", software="0.1.0",
                  utc_offset="+03:00")
    msgs = Messages(lang)
    docs = exportdoc.documents([cap], {}, msgs)
    readme, page = docs[exportdoc.README_TXT], docs[exportdoc.INDEX_HTML]
    assert msgs(exportdoc.DISCLAIMER) in readme and html.escape(msgs(exportdoc.DISCLAIMER)) in page
    assert msgs("How to verify") in readme and "skinedge captures verify --zip" in readme
    assert all(name in readme for name, _, _ in exportdoc.COLUMNS_BEFORE + exportdoc.COLUMNS_AFTER)
    assert f'<html lang="{lang}">' in page and "2026-12-06T12:00:00+03:00" in page and "V-2026-0042" in page
