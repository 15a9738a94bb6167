"""A run directory: everything a run writes, laid out so a kill at any moment loses one step at most.

    run_dir/
      config.json          the resolved configuration (what --resume reuses)
      metrics.jsonl        one JSON object per finished step
      rollouts.jsonl       one JSON object per rollout (reward, validity, error head, tokens)
      states.jsonl         one JSON object per state the buffer took in (code, construction, parent)
      checkpoints/step-000012/   policy weights, buffer, trainer state of one finished step
      latest.json          {"step": 12, "path": "checkpoints/step-000012"} - written last, atomically
      best.json (+ best code)    the best state found so far
      plots/*.png

A checkpoint directory is written under a temporary name and renamed into place, and `latest.json`
is replaced atomically after it, so `latest.json` always names a complete checkpoint. Lines that
`metrics.jsonl` and `rollouts.jsonl` gained after that checkpoint are dropped on resume.

Every file may still be damaged or deleted by hand, a bad disk or a copy cut short; each has a
fallback or a one-line error that names it. A damaged or missing `latest.json`: the newest
checkpoint directory. `config.json`: the copy each checkpoint holds. `best.json`: the best state
each checkpoint's `trainer.json` holds. A damaged line of a `.jsonl` log: skipped with a warning.
A damaged checkpoint: the one before it.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

CHECKPOINTS_KEPT = 2


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write JSON to a temporary file in the same directory, fsync it, rename it over `path`, and
    fsync the directory: a crash at any moment leaves the old file or the new one, never a torn one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w") as out:
            json.dump(payload, out, indent=1, default=_json_default)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # make the rename itself durable
    finally:
        os.close(directory)


def read_json(path: Path) -> Any:
    """The JSON in `path`; a damaged file is a ValueError that names it."""
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is damaged ({_one_line(error)})") from error


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


class RunDir:
    """Reads and writes one run directory (see the module docstring for the layout)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.checkpoints = self.path / "checkpoints"
        self.plots = self.path / "plots"
        self.metrics_file = self.path / "metrics.jsonl"
        self.rollouts_file = self.path / "rollouts.jsonl"
        self.states_file = self.path / "states.jsonl"
        self.config_file = self.path / "config.json"
        self.best_file = self.path / "best.json"

    def refuse_existing(self) -> None:
        """A fresh run never writes over another: checked before any expensive set-up."""
        if self.config_file.exists() or self._finished():
            raise FileExistsError(f"{self.path} already holds a run; pass --resume to continue it or choose another --run-dir")

    def create(self, config: dict[str, Any], *, restart: bool = False) -> None:
        """Start a fresh run; refuses a directory that already holds one (use --resume). `restart`:
        a resumed run killed before its first checkpoint starts over in its own directory."""
        if restart:
            self.truncate_logs(-1)
        else:
            self.refuse_existing()
        self.path.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.config_file, config)

    def config(self) -> dict[str, Any]:
        """config.json; where it is damaged or missing, the copy in the newest checkpoint (restored)."""
        damage = None
        if self.config_file.exists():
            try:
                saved = read_json(self.config_file)
                if isinstance(saved, dict):
                    return saved
                damage = f"{self.config_file} is damaged (not a JSON object)"
            except ValueError as error:
                damage = str(error)
        for _, directory in self.checkpoints_newest_first():
            try:
                saved = read_json(directory / "config.json")
            except (OSError, ValueError):
                continue
            log.warning("%s; using the copy in %s", damage or f"{self.config_file} is missing", directory)
            write_json_atomic(self.config_file, saved)
            return saved
        if damage:
            raise ValueError(f"{damage}, and no checkpoint holds a copy; start a new run in another --run-dir")
        raise FileNotFoundError(f"{self.path} holds no run (no config.json); start one without --resume")

    def best(self) -> dict[str, Any] | None:
        """best.json ({env, step, samples, state}); where it is damaged or missing, the best state of
        the newest checkpoint that holds one. None when the run has neither."""
        damage = None
        if self.best_file.exists():
            try:
                best = read_json(self.best_file)
                if isinstance(best, dict) and isinstance(best.get("state"), dict):
                    return best
                damage = f"{self.best_file} is damaged (no state in it)"
            except ValueError as error:
                damage = str(error)
        for _, directory in self.checkpoints_newest_first():
            try:
                saved = read_json(directory / "trainer.json")
            except (OSError, ValueError):
                continue
            if isinstance(saved, dict) and saved.get("best"):
                log.warning("%s; showing the best state of %s", damage or f"{self.best_file} is missing", directory)
                try:
                    env = self.config().get("env", "?")
                except (OSError, ValueError):
                    env = "?"
                return {"env": env, "step": saved["step"], "samples": saved["samples"], "state": saved["best"]}
        if damage:
            raise ValueError(f"{damage}, and no checkpoint holds the best state")
        return None

    # -- logs --------------------------------------------------------------------------------
    def append(self, file: Path, rows: list[dict[str, Any]]) -> None:
        with file.open("a") as out:
            for row in rows:
                out.write(json.dumps(row, default=_json_default) + "\n")

    def log_step(self, metrics: dict[str, Any], rollouts: list[dict[str, Any]]) -> None:
        self.append(self.rollouts_file, rollouts)
        self.append(self.metrics_file, [metrics])

    def log_states(self, states: list[Any]) -> None:
        """Every state the buffer takes in, once, with the step it was found at (0: initial), so
        the run viewer can draw the whole tree and show any state's program, evicted or not."""
        self.append(self.states_file, [{"id": s.id, "parent": s.parent_id, "step": s.metadata.get("step", 0),
                                        "reward": s.reward, "score": s.score, "initial": s.is_initial,
                                        "code": s.code, "construction": s.to_dict()["construction"],
                                        "stdout": s.stdout[-1000:]} for s in states])

    def read(self, file: Path) -> list[dict[str, Any]]:
        if not file.exists():
            return []
        rows, damaged = [], 0
        lines = file.read_text(errors="replace").splitlines()
        for number, line in enumerate(lines, 1):
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                row = None
            if isinstance(row, dict):
                rows.append(row)
            elif number < len(lines):  # the last line may be one cut by a kill mid-write: expected
                damaged += 1
        if damaged:
            log.warning("%s: %d damaged line(s) skipped", file, damaged)
        return rows

    def truncate_logs(self, last_step: int) -> None:
        """Keep only rows of steps <= last_step (what the latest checkpoint covers)."""
        for file in (self.metrics_file, self.rollouts_file, self.states_file):
            kept = [row for row in self.read(file) if row.get("step", -1) <= last_step]
            tmp = file.with_suffix(".jsonl.tmp")
            tmp.write_text("".join(json.dumps(row) + "\n" for row in kept))
            os.replace(tmp, file)

    # -- checkpoints -------------------------------------------------------------------------
    def save_checkpoint(self, step: int, write: Callable[[Path], None]) -> Path:
        """`write(directory)` fills a fresh directory; it becomes checkpoints/step-NNNNNN atomically."""
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        final = self.checkpoints / f"step-{step:06d}"
        staging = Path(tempfile.mkdtemp(prefix=f".step-{step:06d}.", dir=self.checkpoints))
        try:
            write(staging)
            if self.config_file.exists():  # the copy config() falls back to
                shutil.copyfile(self.config_file, staging / "config.json")
            if final.exists():
                shutil.rmtree(final)
            os.replace(staging, final)
        except BaseException as error:
            full = isinstance(error, Exception) and not isinstance(error, OSError) and _disk_full(self.checkpoints)
            shutil.rmtree(staging, ignore_errors=True)
            if full:  # torch and safetensors report a full disk as a RuntimeError about write positions
                raise OSError(errno.ENOSPC, "no space left for the checkpoint", str(self.checkpoints)) from error
            raise
        write_json_atomic(self.path / "latest.json", {"step": step, "path": str(final.relative_to(self.path))})
        self._prune(keep=final)
        return final

    def latest_checkpoint(self) -> tuple[int, Path] | None:
        """What latest.json names; where it is damaged or missing, the newest checkpoint directory."""
        latest = self.path / "latest.json"
        if latest.exists():
            try:
                data = read_json(latest)
                return int(data["step"]), self.path / data["path"]
            except (ValueError, KeyError, TypeError) as error:
                damage = str(error) if isinstance(error, ValueError) else f"{latest} is damaged (no step or path)"
                log.warning("%s; using the newest checkpoint directory instead", damage)
        finished = self._finished()
        return finished[-1] if finished else None

    def _finished(self) -> list[tuple[int, Path]]:
        """The finished checkpoint directories, oldest first."""
        if not self.checkpoints.is_dir():
            return []
        return sorted((int(p.name.removeprefix("step-")), p) for p in self.checkpoints.glob("step-*")
                      if p.is_dir() and p.name.removeprefix("step-").isdigit())

    def checkpoints_newest_first(self) -> list[tuple[int, Path]]:
        """The latest checkpoint, then the older finished ones kept beside it."""
        latest = self.latest_checkpoint()
        if latest is None:
            return []
        return [latest] + [(step, p) for step, p in reversed(self._finished()) if step < latest[0] and p != latest[1]]

    def restore(self, load: Callable[[int, Path], None]) -> int | None:
        """`load(step, directory)` the newest checkpoint that loads, falling back to an older one
        with a warning when the latest is damaged (a truncated file, a disk that filled up).
        Returns the step restored, None when the run has no checkpoint yet."""
        candidates = self.checkpoints_newest_first()
        failures = []
        for step, directory in candidates:
            try:
                load(step, directory)
            except Exception as error:  # noqa: BLE001 - any damage means: try the previous one
                failures.append(f"{directory.relative_to(self.path)}: {type(error).__name__}: {_one_line(error)}")
                log.warning("checkpoint %s cannot be loaded (%s); falling back to the previous one",
                            directory, _one_line(error))
                continue
            if failures:
                log.warning("resumed from %s, an older checkpoint: the steps after it are run again", directory)
            return step
        if failures:
            raise ValueError(f"no intact checkpoint in {self.path} ({'; '.join(failures)}); "
                             f"start a new run in another --run-dir")
        return None

    def _prune(self, keep: Path) -> None:
        finished = sorted(p for p in self.checkpoints.glob("step-*") if p.is_dir())
        for old in finished[:-CHECKPOINTS_KEPT]:
            if old != keep:
                shutil.rmtree(old, ignore_errors=True)
        for stale in self.checkpoints.glob(".step-*"):  # staging left by a kill mid-write
            shutil.rmtree(stale, ignore_errors=True)

    def iter_steps(self) -> Iterator[dict[str, Any]]:
        yield from self.read(self.metrics_file)


def _disk_full(directory: Path, margin: int = 1 << 20) -> bool:
    """Less than `margin` bytes left for us on the file system of `directory`."""
    stats = os.statvfs(directory)
    return stats.f_bavail * stats.f_frsize < margin


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text[:200] if text else type(error).__name__
