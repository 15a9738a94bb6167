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


def last_fenced_block(text: str) -> str | None:
    """The content of the last closed ``` block of any language, or None. One linear pass over the
    lines (no regex), so hostile fences cannot make it slow. For answers that are data, not code.

    A block opens at a line whose stripped form starts with ``` (any info string, e.g. ```text)
    and closes at the next line whose stripped form is exactly ```. An unclosed block is ignored.
    """
    if "```" not in text:
        return None
    lines = text.split("\n")
    start, last = -1, None
    for index, line in enumerate(lines):
        stripped = line.strip()
        if start < 0:
            if stripped.startswith("```"):
                start = index + 1
        elif stripped == "```":
            last = (start, index)
            start = -1
    return None if last is None else "\n".join(lines[last[0]:last[1]])


def missing_block_message(language: str = "python") -> str:
    return f"no ```{language} code block found in the answer; put the whole program in one fenced ```{language} block"
