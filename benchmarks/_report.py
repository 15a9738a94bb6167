"""Write one benchmark's table into its own marked section of docs/benchmarks.md."""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path

import numpy as np

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


def machine_line() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs ({cpu}), "
            f"Python {platform.python_version()}, numpy {np.__version__}")


def write_section(name: str, markdown: str, doc: Path = DOC) -> None:
    """Replace the text between `<!-- begin:name -->` and `<!-- end:name -->` of `doc` (append if absent)."""
    begin, end = f"<!-- begin:{name} -->", f"<!-- end:{name} -->"
    body = f"{begin}\nMeasured on: {machine_line()}\n\n{markdown.strip()}\n{end}"
    text = doc.read_text() if doc.exists() else f"# {doc.stem.capitalize()}\n"
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.DOTALL)
    text = pattern.sub(lambda _: body, text) if pattern.search(text) else text.rstrip() + "\n\n" + body + "\n"
    doc.write_text(text)


def markdown_table(header: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
