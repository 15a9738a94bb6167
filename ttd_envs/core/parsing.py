"""Pull the program out of an LLM's answer: the last fenced block in the expected language."""

from __future__ import annotations

import re

_OPENER = re.compile(r"[ \t]*```[ \t]*([A-Za-z0-9_+#.-]*)")

LANGUAGE_TAGS: dict[str, frozenset[str]] = {
    "python": frozenset({"python", "py", "python3"}),
    "cpp": frozenset({"cpp", "c++", "cc", "cxx"}),
    "text": frozenset({"text", "txt", ""}),
}


def extract_code_block(text: str, language: str = "python") -> str | None:
    """Return the body of the last closed ```<language> block, or None if there is none.

    The last block wins because models often sketch first and give the final program at the end;
    an unclosed block (a truncated answer) is not a program. A block opens at a line that starts
    (after spaces or tabs) with ``` and an optional tag, and closes at the next line that is only
    ``` (spaces and tabs aside). One pass over the lines, so the time is linear in the answer
    whatever its fences (a regex with a lazy body took a minute on 80 KB of unclosed fences).
    """
    tags = LANGUAGE_TAGS.get(language, frozenset({language}))
    lines = text.split("\n")
    last: tuple[int, int] | None = None
    start, tag = -1, ""
    for index, line in enumerate(lines):
        if start < 0:
            opener = _OPENER.match(line)
            if opener and index + 1 < len(lines):
                start, tag = index + 1, opener.group(1).lower()
        elif line.strip(" \t") == "```":
            if tag in tags:
                last = (start, index)
            start = -1
    if last is None:
        return None
    body = lines[last[0]:last[1]]
    return "\n".join(body) + "\n" if body else ""


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
