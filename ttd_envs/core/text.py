"""The character set of every ttd Text space, the space itself, and helpers that keep prompts
and program output inside it."""

from __future__ import annotations

import re
import string
from typing import Any

from gymnasium import spaces

MATH_SYMBOLS = "−×÷·≤≥≠≈∞∑∫√²³¹⁰ₖᵢ→←↔‖∈∉⊂∪∩∀∃αβγδεζηθικλμνξπρστυφχψωΔΣΩ…–—‘’“”•°±"
LATIN_LETTERS = "".join(chr(c) for c in range(0xC0, 0x180))
CHARSET: str = "".join(sorted(set(string.printable) | set(MATH_SYMBOLS) | set(LATIN_LETTERS)))
_ALLOWED = frozenset(CHARSET)
MAX_PROMPT_CHARS = 400_000
MAX_ACTION_CHARS = 400_000


def sanitize(text: str) -> str:
    """Replace characters outside CHARSET (e.g. from a program's stdout) with '?'."""
    return "".join(c if c in _ALLOWED else "?" for c in text)


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")


def clean_output(text: str) -> str:
    """A program's output made safe to print and to store as JSON: control characters (escape
    sequences, NUL, carriage returns) and lone surrogates (undecodable bytes) become '?'; newlines
    and tabs stay. Other non-ASCII text is kept."""
    return _CONTROL.sub("?", text)


def unencodable(text: str) -> str | None:
    """Why `text` cannot be written as UTF-8 (a lone surrogate, e.g. from undecodable bytes), or None."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        line = text.count("\n", 0, error.start) + 1
        column = error.start - (text.rfind("\n", 0, error.start) + 1) + 1
        return (f"the code has a lone surrogate character U+{ord(text[error.start]):04X} at line {line}, column "
                f"{column}, which is not valid Unicode text and cannot be saved as UTF-8; remove it")
    return None


class AnswerText(spaces.Text):
    """The Text space of ttd prompts and answers.

    `sample()` draws from CHARSET, but `contains()` accepts any str within the length limits,
    because `step` accepts any text (non-ASCII included) and says what is wrong with it. The
    `repr` names the charset's size instead of printing its 400 characters.
    """

    def __init__(self, max_length: int) -> None:
        super().__init__(max_length=max_length, min_length=0, charset=CHARSET)

    def contains(self, x: Any) -> bool:
        return isinstance(x, str) and self.min_length <= len(x) <= self.max_length

    def __repr__(self) -> str:
        return f"AnswerText(max_length={self.max_length}, any str; sample() draws from {len(CHARSET)} characters)"


def tail(text: str, limit: int = 500) -> str:
    """The last `limit` characters, marked when something was cut."""
    if len(text) <= limit:
        return text
    return "[... output truncated ...]\n" + text[-limit:]
