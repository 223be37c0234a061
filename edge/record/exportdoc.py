"""What makes an export readable by a doctor without us: index.csv's columns, README.txt and index.html.

The export ZIP goes to a reviewer who has never seen skinedge. index.csv names, per capture, the model (name,
version, bundle hash, signing key ID), the device, the software, the visit, the gate outcome and scores and the
time with its time zone; README.txt says what every column means, the disclaimer and how to check that the
files are the ones the board kept; index.html shows every capture (frame beside overlay) in any browser, offline,
once the ZIP is unpacked. Every text a reader sees comes from the board's message catalogue (edge/i18n).
All three are made from the signed records alone (and the language), so `captures verify --zip` makes them
again and reports any change (edge/record/zipcheck.py).
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Callable

from edge.i18n import ENGLISH, LANGUAGES, NAMES, Messages
from edge.record.capture import ADDED, Capture

INDEX, README_TXT, INDEX_HTML = "index.csv", "README.txt", "index.html"

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")  # what spreadsheets read as the start of a formula
# gate scores as edge.gates.Verdict.record() names them, and what they mean
GATE_SCORES = {
    "gate_sharpness": "Sharpness: variance of the Laplacian of the frame (low = blurred).",
    "gate_level": "Mean brightness of the frame (0 to 255).",
    "gate_dark_share": "Share of pixels that are black (0 to 1).",
    "gate_bright_share": "Share of pixels that are white (0 to 1).",
    "gate_motion": "Change from the previous frame (high = moving); empty for a single image.",
    "gate_ood_score": "Out-of-distribution score: how unlike the model's training images the frame is (higher = "
                      "less alike); empty when the model has no such check.",
    "gate_ood_threshold": "Above this out-of-distribution score the board says NOT RECOGNISED.",
}
DISCLAIMER = ("Screening aid - not a diagnosis. These results come from an automatic classifier and must be "
              "reviewed by a qualified clinician.")


def _gate(c: Capture, key: str) -> object:
    value = c.gate.get(key)
    return "" if value is None else value


# index.csv's columns before the per-class probabilities, after them, and what each means (a catalogue msgid)
Column = tuple[str, Callable[[Capture], object], str]
COLUMNS_BEFORE: list[Column] = [
    ("id", lambda c: c.id, "Row number in the board's capture store."),
    ("uuid", lambda c: c.uuid, "Unique identifier of the capture."),
    ("time_local", lambda c: c.created_local, ("When the capture was kept, in the board's time zone, with its offset "
                                              "from UTC (ISO 8601).")),
    ("created_utc", lambda c: c.created_utc, "The same time in UTC (ISO 8601)."),
    ("visit", lambda c: c.visit_id, ("Pseudonymous visit (patient) ID: typed, given on the command line or read from the "
                                 "patient card. Empty: none was set. No names are stored.")),
    ("device_id", lambda c: c.device_id, "Pseudonymous identifier of the board that kept the capture."),
    ("model", lambda c: c.model, "Name of the model (bundle) that classified the frame."),
    ("model_version", lambda c: c.model_version, "Version of that model."),
    ("bundle_hash", lambda c: c.bundle_hash, "SHA-256 of the model bundle's manifest: identifies the exact model files."),
    ("signature", lambda c: c.signature, ("ID of the key that signed the model ('not pinned' if this board does not "
                                         "trust that key), or UNSIGNED.")),
    ("software", lambda c: c.software, "Version of the skinedge software on the board."),
    ("label", lambda c: c.label, "The class with the highest probability."),
    ("confidence", lambda c: f"{c.confidence:.6f}", "Its probability (0 to 1)."),
]
COLUMNS_AFTER: list[Column] = [
    ("gate", lambda c: c.gate.get("gate", ""), ("Image checks before a class is shown: pass, or why the frame was "
                                               "not fit to classify (too dark, too bright, blurred, moving, not "
                                               "recognised).")),
    *((key, lambda c, key=key: _gate(c, key), meaning) for key, meaning in GATE_SCORES.items()),
    ("duplicate_of", lambda c: c.duplicate_of, ("If set: this capture repeats an earlier one of the same visit (uuid "
                                               "given), taken moments before with nearly the same picture.")),
    ("note", lambda c: c.note, "Free text kept with the capture."),
    ("frame_file", lambda c: c.frame_file, "The camera frame the model classified (PNG)."),
    ("overlay_file", lambda c: c.overlay_file, ("What the screen showed: the heat map of the regions that drove the "
                                               "answer, the class, the visit, the model and the time (PNG).")),
    ("frame_sha256", lambda c: c.frame_sha256, "SHA-256 of the frame file as the board kept it."),
    ("overlay_sha256", lambda c: c.overlay_sha256, "SHA-256 of the overlay file as the board kept it."),
]
# record fields the columns above already show (the others added to Capture get a column each, named after them)
SHOWN = ("visit_id", "duplicate_of", "model", "model_version", "signature", "software", "utc_offset")
PROBABILITY = "p_<class>: probability of that class (0 to 1); the probabilities of a row add up to 1."
STATUS = "status: ok, or why the capture is not in this ZIP (a damaged file on the board)."


def cell(value: object) -> str:
    """A CSV cell a spreadsheet shows as text: a leading ' before anything it would read as a formula."""
    text = value if isinstance(value, str) else json.dumps(value) if isinstance(value, (dict, list)) else str(value)
    return "'" + text if text.startswith(FORMULA_START) else text


def _others() -> list[str]:
    """Record fields added by others (edge/record/capture.py) that the named columns do not show: a column each."""
    return [name for name in ADDED if name not in SHOWN]


def index_header(labels: list[str]) -> list[str]:
    return [cell(c) for c in ([n for n, _, _ in COLUMNS_BEFORE] + [f"p_{lab}" for lab in labels]
                              + [n for n, _, _ in COLUMNS_AFTER] + _others() + ["status"])]


def index_row(c: Capture, labels: list[str], status: str) -> list[str]:
    """The row of index.csv for capture `c`, from its record alone (captures verify --zip checks it so)."""
    return [cell(v) for v in (
        [get(c) for _, get, _ in COLUMNS_BEFORE]
        + [f"{c.probs[lab]:.6f}" if lab in c.probs else "" for lab in labels]
        + [get(c) for _, get, _ in COLUMNS_AFTER]
        + ["" if getattr(c, name) in ({}, [], None, "") else getattr(c, name) for name in _others()] + [status])]


class Documents:
    """README.txt and index.html, built one capture at a time (the export streams the store; verify --zip streams
    the chain): `add()` each capture with why it was skipped (None: exported), then `files()`."""

    def __init__(self, msgs: Messages = ENGLISH):
        self.msgs = msgs
        self.parts: dict[int, str] = {}  # capture id -> its part of index.html
        self.devices: set[str] = set()
        self.skipped = 0

    def add(self, cap: Capture, why: str | None) -> None:
        self.parts[cap.id] = capture_html(cap, why, self.msgs)
        self.devices.add(cap.device_id)
        self.skipped += why is not None

    def files(self, order: list[int] | None = None) -> dict[str, str]:
        """Both documents, the captures in `order` (ids; default: as added)."""
        ids = [i for i in (order if order is not None else self.parts) if i in self.parts]
        devices = ", ".join(sorted(self.devices)) or "-"
        return {README_TXT: readme(len(ids), devices, self.skipped, self.msgs),
                INDEX_HTML: page_head(len(ids), devices, self.msgs) + "".join(self.parts[i] for i in ids)
                + "</body></html>\n"}


def documents(caps: list[Capture], skipped: dict[str, str], msgs: Messages = ENGLISH) -> dict[str, str]:
    """README.txt and index.html for these captures (`skipped`: why, by uuid), in the language of `msgs`."""
    docs = Documents(msgs)
    for cap in caps:
        docs.add(cap, skipped.get(cap.uuid))
    return docs.files()


def language_of(page: str) -> str | None:
    """The language index.html was written in (its <html lang>), if it is a shipped one."""
    m = re.search(r'<html lang="([a-z]+)">', page[:300])
    return m.group(1) if m and m.group(1) in LANGUAGES else None


def readme(count: int, devices: str, skipped: int, msgs: Messages = ENGLISH) -> str:
    """README.txt: what the export holds, the disclaimer, each column, how to verify it."""
    t = msgs
    lines = [t("skinedge capture export"), "=" * len(t("skinedge capture export")), "",
             t(DISCLAIMER), "",
             t("{n} capture(s) from board(s) {devices}.", n=count, devices=devices)]
    if skipped:
        lines.append(t("{n} capture(s) could not be exported because their files on the board are damaged; "
                       "index.csv lists them with the reason.", n=skipped))
    lines += ["", t("Contents"), "-" * len(t("Contents")),
              "index.html  " + t("every capture with its frame and overlay; open it in a browser once the ZIP is "
                                 "unpacked (no internet needed)."),
              "index.csv   " + t("one row per capture (columns below); opens in any spreadsheet."),
              "images/     " + t("the frames and overlays (PNG), as the board kept them."),
              "VERIFY.txt  " + t("how to check this ZIP against the board's signed records (chain.jsonl, "
                                 "head.json, device-key.pub)."), "",
              t("Columns of index.csv"), "-" * len(t("Columns of index.csv"))]
    lines += [f"{name}: {t(meaning)}" for name, _, meaning in COLUMNS_BEFORE]
    lines.append(t(PROBABILITY))
    lines += [f"{name}: {t(meaning)}" for name, _, meaning in COLUMNS_AFTER]
    lines += [t(STATUS), "", t("How to verify"), "-" * len(t("How to verify")),
              t("1. With skinedge, on any computer, offline: skinedge captures verify --zip THIS.zip --key KEY, where "
                "KEY is the board's public key; it names every capture that was changed, removed or added since the "
                "board kept it (VERIFY.txt says more)."),
              t("2. Without skinedge: the SHA-256 of each image (sha256sum images/*) must equal its frame_sha256 or "
                "overlay_sha256 in index.csv."),
              t("3. bundle_hash and signature identify the model: ask the model's publisher which bundle hashes "
                "and keys are genuine."), "",
              t("Language: {language}", language=NAMES[msgs.language]), ""]
    return "\n".join(lines)


_STYLE = """body{font-family:sans-serif;margin:1em;color:#111}h1{font-size:1.3em}.d{background:#fff3cd;padding:.5em}
.c{border:1px solid #ccc;margin:.8em 0;padding:.5em;break-inside:avoid}.c img{width:48%;max-width:480px;
margin-right:1%}table{border-collapse:collapse}td{padding:.1em .6em .1em 0;vertical-align:top}.w{color:#a00}"""


def page_head(count: int, devices: str, msgs: Messages = ENGLISH) -> str:
    """index.html up to the first capture: title, disclaimer, how many captures from which boards."""
    t, e = msgs, html.escape
    return "\n".join([
        f'<!DOCTYPE html><html lang="{msgs.language}"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        ("<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src 'self' file:; "
         "style-src 'unsafe-inline'\">"),
        f"<title>{e(t('skinedge capture export'))}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{e(t('skinedge capture export'))}</h1><p class=\"d\">{e(t(DISCLAIMER))}</p>",
        f"<p>{e(t('{n} capture(s) from board(s) {devices}.', n=count, devices=devices))}</p>\n"])


def capture_html(c: Capture, why: str | None, msgs: Messages = ENGLISH) -> str:
    """One capture on index.html: what the reviewer needs, then frame and overlay side by side (or why not)."""
    t, e = msgs, html.escape
    rows = [(t("Time"), c.created_local), (t("Visit"), c.visit_id or "-"),
            (t("Result"), f"{c.label} {c.confidence:.0%}"), (t("Image checks"), c.gate.get("gate", "-")),
            (t("Model"), f"{c.model or '-'} {c.model_version}"), (t("Signing key"), c.signature or "-"),
            (t("Device"), c.device_id), ("uuid", c.uuid)]
    if c.duplicate_of:
        rows.append((t("Duplicate of"), c.duplicate_of))
    if c.note:
        rows.append((t("Note"), c.note))
    table = "".join(f"<tr><td>{e(k)}</td><td>{e(str(v))}</td></tr>" for k, v in rows)
    if why is not None:
        images = f'<p class="w">{e(t("Not exported: damaged on the board"))}: {e(why)}</p>'
    else:
        images = (f'<img src="{e(c.frame_file)}" alt="{e(t("frame"))}">'
                  f'<img src="{e(c.overlay_file)}" alt="{e(t("overlay"))}">')
    return f'<div class="c" id="{e(c.uuid)}"><table>{table}</table>{images}</div>\n'
