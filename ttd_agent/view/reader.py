"""Read a run directory while it is being written, without trusting it to be whole.

A live run appends to its JSON-lines logs; each poll reads only the bytes added since the last
one and parses only complete lines (a line still being written waits for its newline). A file
that shrank or was replaced (a resume truncates its logs) is read again from the start. Lines
that do not parse are counted, not fatal: the page says how many it skipped.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


@dataclass
class JsonLines:
    """The rows of one JSON-lines file, read incrementally."""

    path: Path
    rows: list[dict[str, Any]] = field(default_factory=list)
    damaged: int = 0
    """Complete lines that were not a JSON object."""
    pending: int = 0
    """Bytes after the last newline: a line being written, or one cut by a kill."""
    _offset: int = 0
    _inode: int | None = None

    def poll(self) -> bool:
        """Read what was appended since the last poll; True when the rows changed."""
        try:
            stat = self.path.stat()
        except OSError:
            changed = bool(self.rows)
            self.rows, self.damaged, self.pending, self._offset, self._inode = [], 0, 0, 0, None
            return changed
        changed = False
        if stat.st_ino != self._inode or stat.st_size < self._offset:  # replaced or truncated: start over
            changed = bool(self.rows)
            self.rows, self.damaged, self._offset, self._inode = [], 0, 0, stat.st_ino
        if stat.st_size == self._offset:
            self.pending = 0
            return changed
        with self.path.open("rb") as handle:
            handle.seek(self._offset)
            chunk = handle.read(stat.st_size - self._offset)
        end = chunk.rfind(b"\n") + 1
        self.pending = len(chunk) - end
        for line in chunk[:end].splitlines():
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                self.damaged += 1
                continue
            if isinstance(row, dict):
                self.rows.append(row)
                changed = True
            else:
                self.damaged += 1
        self._offset += end
        return changed


@dataclass
class JsonFile:
    """One JSON file, read again only when its modification time or size changes."""

    path: Path
    value: Any = None
    error: str | None = None
    _stamp: tuple[int, int] | None = None

    def poll(self) -> bool:
        try:
            stat = self.path.stat()
        except OSError:
            changed = self.value is not None or self._stamp is not None
            self.value, self.error, self._stamp = None, None, None
            return changed
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            self.value, self.error = json.loads(self.path.read_text()), None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            self.value, self.error = None, f"{type(error).__name__}: {error}"
            log.warning("%s cannot be read (%s)", self.path, self.error)
        return True


class RunFiles:
    """Every file of a run directory the viewer reads, each polled incrementally."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if not self.path.is_dir():
            raise FileNotFoundError(f"{self.path} is not a directory: pass a run directory (the --run-dir of a run)")
        self.config = JsonFile(self.path / "config.json")
        self.best = JsonFile(self.path / "best.json")
        self.latest = JsonFile(self.path / "latest.json")
        self.buffer = JsonFile(self.path / "checkpoints" / "none")
        self.metrics = JsonLines(self.path / "metrics.jsonl")
        self.rollouts = JsonLines(self.path / "rollouts.jsonl")
        self.states = JsonLines(self.path / "states.jsonl")

    def poll(self) -> bool:
        """Read what changed since the last poll; True when anything did."""
        changed = False
        for part in (self.config, self.best, self.latest, self.metrics, self.rollouts, self.states):
            changed |= part.poll()
        checkpoint = self.latest.value.get("path") if isinstance(self.latest.value, dict) else None
        buffer_path = self.path / str(checkpoint) / "buffer.json" if checkpoint else self.path / "checkpoints" / "none"
        if buffer_path != self.buffer.path:
            self.buffer = JsonFile(buffer_path)
        changed |= self.buffer.poll()
        return changed
