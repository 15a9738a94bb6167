"""The record table: every math problem's best results, with sources, as data.

One JSON file per env, `ttd_envs/data/records/<Name>.json`, where Name is the env id without the
`ttd/` namespace and the `-vN` version (`ttd/ErdosOverlap-v0` -> `ErdosOverlap.json`; it is also the
Problem class's `name`). The file:

    {
      "env_id": "ttd/ErdosOverlap-v0",
      "metric": "upper bound on C5",            # what `value` measures, in the problem's own units
      "direction": "min",                       # "min" (lower is better) or "max"
      "tie_tolerance": 1e-12,                   # |score - record| <= this is a tie, not a record
      "entries": [
        {
          "value": 0.3808703104,                # the score, in the metric above
          "who": "Together AI",                 # person, team or system
          "when": "2026-03",                    # ISO date: YYYY, YYYY-MM or YYYY-MM-DD
          "source": "arXiv 2601.16175; repository togethercomputer/...",   # URL-free text
          "construction_public": true,          # the source published the construction
          "construction_file": "ttd_envs/data/math/x.json",  # shipped copy (repo-relative) or null
          "verified": true,                     # our verifier accepts that file and scores it `value`
          "note": "n = 600",                    # anything else worth knowing ("" if nothing)
          "instance": {"n": 16, "d": 2}         # optional: env kwargs this entry is for (parameterised
        }                                       # envs); absent = the env's default instance
      ]
    }

Rules the loader enforces: `verified` implies a `construction_file`; a shipped file exists. The
"record to beat" is the best entry, verified by us or not, since a published claim is the state of
the art whether or not we hold its file; the best *verified* entry is named beside it and is what
`initial="record"` starts from. `tests/test_records.py` checks
that every verified entry's file scores `value` under `python -m ttd_envs.verify`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from ttd_envs.core.problem import Record

RECORDS_PACKAGE = "ttd_envs.data.records"
PACKAGE_PREFIX = "ttd_envs/"
ENTRY_KEYS = {"value", "who", "when", "source", "construction_public", "construction_file", "verified", "note"}


class RecordsError(ValueError):
    """A records file breaks the format above; the message names the file and the field."""


@dataclass(frozen=True)
class RecordEntry:
    """One published result: a verified record, or a claim we could not check."""

    value: float
    who: str
    when: str
    source: str
    construction_public: bool
    construction_file: str | None
    verified: bool
    note: str = ""
    instance: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        """`0.38087 (Together AI, 2026-03; arXiv 2601.16175)`: value, who, when and source."""
        return f"{self.value:.10g} ({self.who}, {self.when}; {self.source})"

    def path(self) -> Path | None:
        """The shipped construction as a file path (inside the installed package), or None."""
        if self.construction_file is None:
            return None
        return Path(str(resources.files("ttd_envs").joinpath(self.construction_file.removeprefix(PACKAGE_PREFIX))))


@dataclass(frozen=True)
class RecordTable:
    """All entries of one env, with the questions the package asks of them."""

    env_id: str
    metric: str
    direction: Literal["min", "max"]
    tie_tolerance: float
    entries: tuple[RecordEntry, ...]

    @property
    def higher_is_better(self) -> bool:
        return self.direction == "max"

    def better(self, a: float, b: float) -> bool:
        """True when score a is strictly better than score b (no tolerance)."""
        return a > b if self.higher_is_better else a < b

    def for_instance(self, instance: dict[str, Any] | None = None) -> list[RecordEntry]:
        """The entries of one instance (the default one when `instance` is empty or None)."""
        wanted = dict(instance or {})
        return [e for e in self.entries if e.instance == wanted]

    def best(self, instance: dict[str, Any] | None = None, *, verified: bool) -> RecordEntry | None:
        """The best verified entry (`verified=True`), or the best of all entries, verified or not."""
        pool = [e for e in self.for_instance(instance) if e.verified or not verified]
        if not pool:
            return None
        return max(pool, key=lambda e: e.value) if self.higher_is_better else min(pool, key=lambda e: e.value)

    def record(self, instance: dict[str, Any] | None = None) -> Record | None:
        """The Record to beat: the best published value, verified by us or not (a run that beats only
        the best verified one has not beaten the state of the art); the holder text says which."""
        verified, claimed = self.best(instance, verified=True), self.best(instance, verified=False)
        if claimed is None:
            return None
        if verified is not None and abs(claimed.value - verified.value) <= self.tie_tolerance:
            claimed = verified  # a claim that only ties the verified entry does not raise the bar
        holder = f"{claimed.who}, {claimed.when}; {claimed.source}"
        if verified is None:
            holder += "; a claim: no construction our verifier accepts"
        elif claimed is not verified:
            holder += f"; a claim we could not verify; best verified {verified.describe()}"
        return Record(claimed.value, holder, self.higher_is_better)

    def summary(self, instance: dict[str, Any] | None = None) -> str:
        """One line for `ttd-agent envs` and the README: best verified, and best claimed if better."""
        verified, claimed = self.best(instance, verified=True), self.best(instance, verified=False)
        direction = "higher" if self.higher_is_better else "lower"
        parts = [f"best verified {verified.describe()}" if verified else "no verified construction"]
        if claimed is not None and claimed is not verified:
            parts.append(f"best claimed {claimed.describe()}")
        return f"{'; '.join(parts)} [{self.metric}, {direction} is better]"


def _entry(raw: Any, where: str) -> RecordEntry:
    if not isinstance(raw, dict):
        raise RecordsError(f"{where}: each entry must be an object")
    missing = ENTRY_KEYS - raw.keys()
    unknown = raw.keys() - ENTRY_KEYS - {"instance"}
    if missing or unknown:
        raise RecordsError(f"{where}: missing {sorted(missing)}, unknown {sorted(unknown)}")
    if not isinstance(raw["value"], (int, float)) or isinstance(raw["value"], bool):
        raise RecordsError(f"{where}: value must be a number")
    for key in ("construction_public", "verified"):
        if not isinstance(raw[key], bool):
            raise RecordsError(f"{where}: {key} must be true or false")
    file = raw["construction_file"]
    if file is not None and not (isinstance(file, str) and file.startswith(PACKAGE_PREFIX + "data/")):
        raise RecordsError(f"{where}: construction_file must be null or a path under ttd_envs/data/")
    if raw["verified"] and file is None:
        raise RecordsError(f"{where}: a verified entry needs its construction_file")
    entry = RecordEntry(float(raw["value"]), str(raw["who"]), str(raw["when"]), str(raw["source"]),
                        raw["construction_public"], file, raw["verified"], str(raw["note"]),
                        dict(raw.get("instance") or {}))
    if file is not None and not entry.path().is_file():
        raise RecordsError(f"{where}: construction_file {file} is not shipped")
    return entry


def parse_table(raw: Any, where: str) -> RecordTable:
    """A RecordTable from a decoded records file; RecordsError says what is wrong."""
    if not isinstance(raw, dict):
        raise RecordsError(f"{where}: expected a JSON object")
    if raw.get("direction") not in ("min", "max"):
        raise RecordsError(f"{where}: direction must be 'min' or 'max'")
    tolerance = raw.get("tie_tolerance")
    if not isinstance(tolerance, (int, float)) or tolerance < 0:
        raise RecordsError(f"{where}: tie_tolerance must be a number >= 0")
    entries = raw.get("entries")
    if not isinstance(entries, list) or not entries:
        raise RecordsError(f"{where}: entries must be a non-empty list")
    return RecordTable(str(raw.get("env_id", "")), str(raw.get("metric", "")), raw["direction"], float(tolerance),
                       tuple(_entry(e, f"{where} entry {i}") for i, e in enumerate(entries)))


def table_name(env_id: str) -> str:
    """`ttd/ErdosOverlap-v0` -> `ErdosOverlap` (a bare name passes through)."""
    name = env_id.removeprefix("ttd/")
    head, _, version = name.rpartition("-v")
    return head if head and version.isdigit() else name


@lru_cache(maxsize=None)
def load_records(name: str) -> RecordTable:
    """The record table of one env, by env id or Name. Raises KeyError when it has no file."""
    node = resources.files(RECORDS_PACKAGE).joinpath(f"{table_name(name)}.json")
    if not node.is_file():
        raise KeyError(f"no records file for {name!r} (expected ttd_envs/data/records/{table_name(name)}.json)")
    try:
        raw = json.loads(node.read_text())
    except ValueError as exc:
        raise RecordsError(f"{table_name(name)}.json is not valid JSON: {exc}") from None
    return parse_table(raw, f"{table_name(name)}.json")


def available() -> list[str]:
    """The Names that have a records file."""
    return sorted(p.name.removesuffix(".json") for p in resources.files(RECORDS_PACKAGE).iterdir()
                  if p.name.endswith(".json"))
