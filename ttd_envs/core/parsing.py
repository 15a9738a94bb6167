"""Pull the program out of an LLM's answer: the last fenced block in the expected language."""

from __future__ import annotations

import re

_FENCE = re.compile(r"^[ \t]*```[ \t]*([A-Za-z0-9_+#.-]*)[^\n]*\n(.*?)^[ \t]*```[ \t]*$", re.DOTALL | re.MULTILINE)

LANGUAGE_TAGS: dict[str, frozenset[str]] = {
    "python": frozenset({"python", "py", "python3"}),
    "cpp": frozenset({"cpp", "c++", "cc", "cxx"}),
    "text": frozenset({"text", "txt", ""}),
}


def extract_code_block(text: str, language: str = "python") -> str | None:
    """Return the body of the last closed ```<language> block, or None if there is none.

    The last block wins because models often sketch first and give the final program at the end;
    an unclosed block (a truncated answer) is not a program.
    """
    tags = LANGUAGE_TAGS.get(language, frozenset({language}))
    blocks = [m.group(2) for m in _FENCE.finditer(text) if m.group(1).lower() in tags]
    return blocks[-1] if blocks else None


def missing_block_message(language: str = "python") -> str:
    return f"no ```{language} code block found in the answer; put the whole program in one fenced ```{language} block"
