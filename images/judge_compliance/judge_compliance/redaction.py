"""Redaction: personal data out of a transcript before any of it leaves the machine."""

from __future__ import annotations

import re
from collections.abc import Iterable

_URL = re.compile(r"\bhttps?://\S+", re.IGNORECASE)
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_PHONE = re.compile(r"(?<!\w)\+?\d[\d\s().-]{6,}\d(?!\w)")
_NUMBER = re.compile(r"\d+(?:[.,:/]\d+)*")
# \w stops at Indic vowel signs, so a name's end is checked against those scripts too.
_WORD_CHAR = r"[\w\u0900-\u0DFF]"


class Redactor:
    """Replaces personal data with placeholders: URLs, e-mail addresses, phone numbers,
    every other number (any script's digits), and the given names (whole words)."""

    def __init__(self, names: Iterable[str] = ()) -> None:
        names = sorted({n for n in names if n.strip()}, key=len, reverse=True)
        self._names = (
            re.compile(
                rf"(?<!{_WORD_CHAR})(?:{'|'.join(map(re.escape, names))})(?!{_WORD_CHAR})",
                re.IGNORECASE,
            )
            if names
            else None
        )

    def __call__(self, text: str) -> str:
        text = _URL.sub("[URL]", text)
        text = _EMAIL.sub("[EMAIL]", text)
        text = _PHONE.sub("[PHONE]", text)
        text = _NUMBER.sub("[NUMBER]", text)
        if self._names is not None:
            text = self._names.sub("[NAME]", text)
        return text
