"""The character set of every ttd Text space, and helpers that keep prompts inside it."""

from __future__ import annotations

import string

MATH_SYMBOLS = "−×÷·≤≥≠≈∞∑∫√²³¹⁰ₖᵢ→←↔‖∈∉⊂∪∩∀∃αβγδεζηθικλμνξπρστυφχψωΔΣΩ…–—‘’“”•°±"
LATIN_LETTERS = "".join(chr(c) for c in range(0xC0, 0x180))
CHARSET: str = "".join(sorted(set(string.printable) | set(MATH_SYMBOLS) | set(LATIN_LETTERS)))
_ALLOWED = frozenset(CHARSET)
MAX_PROMPT_CHARS = 400_000
MAX_ACTION_CHARS = 400_000


def sanitize(text: str) -> str:
    """Replace characters outside CHARSET (e.g. from a program's stdout) with '?'."""
    return "".join(c if c in _ALLOWED else "?" for c in text)


def tail(text: str, limit: int = 500) -> str:
    """The last `limit` characters, marked when something was cut."""
    if len(text) <= limit:
        return text
    return "[... output truncated ...]\n" + text[-limit:]
