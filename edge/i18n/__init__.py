"""Message catalogues: every string a health worker or reviewer reads (HUD, page, export) in the board's language.

gettext's model without its binary .mo files: the English text is the message id, and each language is a JSON
file (`fr.json`, ...) mapping ids to translations, readable and editable by a translator without tools. The page
gets the same catalogue as JSON. A missing translation falls back to English (the catalogue test in
tests/test_i18n.py keeps every shipped language complete). Placeholders are `{name}` (str.format).

The HUD draws with OpenCV's Hershey fonts, which have ASCII glyphs only: `hud()` transliterates (é -> e,
ç -> c, œ -> oe), so French and Portuguese stay legible there; the page and the export show full Unicode.
"""

from __future__ import annotations

import json
import unicodedata
from functools import cache
from pathlib import Path

LANGUAGES = ("en", "fr", "pt", "sw")
NAMES = {"en": "English", "fr": "Français", "pt": "Português", "sw": "Kiswahili"}
HERE = Path(__file__).parent
# letters NFKD does not take apart into ASCII + accents
_LIGATURES = str.maketrans({"œ": "oe", "Œ": "OE", "æ": "ae", "Æ": "AE", "ß": "ss", "ø": "o", "Ø": "O", "ł": "l",
                            "Ł": "L", "đ": "d", "Đ": "D", "—": "-", "–": "-", "’": "'", "‘": "'", "“": '"',
                            "”": '"', "«": '"', "»": '"', "…": "...", "\u00a0": " ", "\u202f": " "})


@cache
def catalogue(language: str) -> dict[str, str]:
    """{English message: translation} of a shipped language (English: each message to itself)."""
    if language not in LANGUAGES:
        raise ValueError(f"language {language!r}: expected one of {', '.join(LANGUAGES)}")
    return json.loads((HERE / f"{language}.json").read_text(encoding="utf-8"))


def ascii_text(text: str) -> str:
    """`text` in the characters a Hershey font has: accents dropped, ligatures spelled out, others as '?'."""
    text = unicodedata.normalize("NFKD", text.translate(_LIGATURES))
    text = "".join(c for c in text if not unicodedata.combining(c))
    return text.encode("ascii", "replace").decode("ascii")


class Messages:
    """One language's messages: `msgs("Capture")` for the page and export, `msgs.hud(...)` for the HUD."""

    def __init__(self, language: str = "en"):
        self.language = language
        self._table = catalogue(language)

    def __call__(self, message: str, **values: object) -> str:
        text = self._table.get(message, message)
        return text.format(**values) if values else text

    def hud(self, message: str, **values: object) -> str:
        return ascii_text(self(message, **values))

    def table(self) -> dict[str, str]:
        """The whole catalogue, for the page's script."""
        return dict(self._table)


ENGLISH = Messages("en")
