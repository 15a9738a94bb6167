"""The shared mechanism of every problem whose action is a Python program.

A subclass says what the program must define, what it is given, and how to check and score what
it returns; `evaluate` (parse, sandbox, check, recompute, reward) is written once, here.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ttd_envs.core.parsing import extract_code_block, missing_block_message
from ttd_envs.core.problem import Evaluation, Record, TrainerDefaults
from ttd_envs.core.sandbox import GiB, Grants, MiB, Limits, Sandbox, SandboxResult
from ttd_envs.core.state import State
from ttd_envs.core.text import tail, unencodable

log = logging.getLogger(__name__)

STDOUT_TAIL_CHARS = 500
RESULT_SLACK_BYTES = 64 << 10
"""Room for the JSON header and `.npy` headers on top of a problem's largest valid payload."""
DEFAULT_PRELOAD = ("numpy", "scipy", "scipy.signal", "scipy.optimize")


class InvalidConstruction(ValueError):
    """The returned construction broke a rule of the problem; the message says which. `details`
    (e.g. the metrics of a prediction a gate rejected) still reach `info`."""

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.details = dict(details or {})


def numeric_array(value: Any, what: str) -> np.ndarray:
    """An integer or float array from real numbers only, not converted (an int64 or uint64 entry
    above 2^53 stays exact). `np.asarray(x, dtype=float)` would silently turn booleans into 0/1,
    drop the imaginary part of complex values and parse numeric strings; here each of those, and
    ragged nesting or other objects, is an InvalidConstruction naming `what`."""
    try:
        array = np.asarray(value)
    except (TypeError, ValueError) as exc:
        raise InvalidConstruction(f"{what} must be a numeric array: a flat sequence or equal-length rows of "
                                  f"numbers ({exc})") from None
    if array.dtype.kind not in "iuf":
        kind = {"b": "booleans", "c": "complex numbers"}.get(array.dtype.kind, f"elements of type {array.dtype}")
        raise InvalidConstruction(f"{what} must hold real numbers; got {kind}")
    return array


def real_array(value: Any, what: str) -> np.ndarray:
    """A float64 array from real numbers only (`numeric_array`, then cast)."""
    return numeric_array(value, what).astype(np.float64)


@dataclass(frozen=True)
class ProgramBudget:
    """`budget_s` is what the prompt promises the program; `timeout_s` is the hard kill, kept well
    above it so a program that honours its budget is never killed (the reference set them equal)."""

    budget_s: float
    timeout_s: float
    memory_bytes: int = 4 * GiB
    cpus: int = 1

    def __post_init__(self) -> None:
        if not 0 < self.budget_s < self.timeout_s:
            raise ValueError(f"need 0 < budget_s < timeout_s, got budget_s={self.budget_s}, timeout_s={self.timeout_s}")

    @classmethod
    def searching(cls, budget_s: float, timeout_s: float | None = None, **limits: Any) -> ProgramBudget:
        """A search program's budget: unless `timeout_s` is given, the kill comes at 1.5 budget + 10 s,
        time enough to return what it found when its own clock says stop."""
        return cls(budget_s, timeout_s or budget_s * 1.5 + 10, **limits)


class PythonProgramProblem:
    """Base class: subclasses set `entry`, and implement `program_inputs`, `check`, `reward_for`."""

    name: str
    summary: str
    record: Record | None
    defaults: TrainerDefaults
    entry: str
    preload: tuple[str, ...] = DEFAULT_PRELOAD
    result_bytes: int = 64 * MiB
    """The largest result the trusted side reads; a program whose result passes it is killed.
    Subclasses set it from their largest valid answer, so a huge result fails early and cheaply."""
    info_keys: tuple[str, ...] = ("sandbox",)
    """Problem-specific keys of the env's `info` (None on steps that did not produce them)."""
    construction_input: str | None = None
    """The global under which the program finds the state's construction as a float64 array (None: not given)."""

    def __init__(self, budget: ProgramBudget) -> None:
        self.budget = budget
        self._sandbox: Sandbox | None = None

    @property
    def sandbox(self) -> Sandbox:
        if self._sandbox is None:
            self._sandbox = Sandbox(preload=self.preload, threads=self.budget.cpus, grants=self.grants())
        return self._sandbox

    def grants(self) -> Grants:
        """What this problem's programs see beyond the closed default view (nothing by default)."""
        return Grants()

    def close(self) -> None:
        if self._sandbox is not None:
            self._sandbox.close()
            self._sandbox = None

    def __getstate__(self) -> dict[str, Any]:
        """Problems travel to worker processes; each worker starts its own zygote."""
        return {**self.__dict__, "_sandbox": None}

    # -- what a subclass provides ------------------------------------------------------------
    def program_inputs(self, state: State) -> dict[str, Any]:
        """Globals the program finds already defined (arrays travel as .npy): the state's construction
        under `construction_input`, where the problem names one and the state has one."""
        if self.construction_input is None or state.construction is None:
            return {}
        return {self.construction_input: np.asarray(state.construction, dtype=np.float64)}

    def program_kwargs(self) -> dict[str, Any]:
        return {}

    def preset_modules(self) -> dict[str, str]:
        return {"np": "numpy"}

    def check(self, value: Any) -> tuple[Any, float]:
        """Validate the returned value; return (construction to store, the problem's score)."""
        raise NotImplementedError

    def reward_for(self, score: float) -> float:
        raise NotImplementedError

    def example_answer(self) -> str:
        """An answer in this problem's format, which `--model tiny` is taught to write so a CPU
        plumbing check reaches the sandbox and `check()`. This one defines `entry` and returns
        None (check() rejects it); override it with a valid answer to see valid programs too."""
        return f"```python\ndef {self.entry}(*args, **kwargs):\n    return None\n```"

    # -- the shared evaluation ---------------------------------------------------------------
    def limits(self) -> Limits:
        return Limits(wall_s=self.budget.timeout_s, memory_bytes=self.budget.memory_bytes,
                      result_bytes=self.result_bytes)

    def run_program(self, code: str, state: State) -> SandboxResult:
        return self.sandbox.run_python(code, self.entry, kwargs=self.program_kwargs(),
                                       inputs=self.program_inputs(state), preset_modules=self.preset_modules(),
                                       limits=self.limits())

    def evaluate(self, action: str, state: State) -> Evaluation:
        code = extract_code_block(action, "python")
        if code is None:
            return Evaluation.failure(missing_block_message("python"))
        if (problem := unencodable(code)) is not None:
            return Evaluation.failure(problem, code=code)
        result = self.run_program(code, state)
        output = tail(result.stdout + (f"\n[stderr]\n{result.stderr}" if result.stderr.strip() else ""),
                      STDOUT_TAIL_CHARS)
        details = {"sandbox": result.summary()}
        if not result.ok:
            return Evaluation.failure(result.error or "the program failed", code=code, stdout=output,
                                      elapsed_s=result.elapsed_s, details=details)
        try:
            construction, score = self.check(result.value)
        except InvalidConstruction as exc:
            return Evaluation.failure(_bounded(str(exc)), code=code, stdout=output, elapsed_s=result.elapsed_s,
                                      details=details | exc.details)
        except Exception as exc:  # noqa: BLE001 - step never raises because of what a program returned
            log.warning("%s: the checker raised %s on a returned value", self.name, type(exc).__name__,
                        exc_info=True)
            return Evaluation.failure(_bounded(f"could not read the returned value ({type(exc).__name__}: {exc})"),
                                      code=code, stdout=output, elapsed_s=result.elapsed_s, details=details)
        reward = self.reward_for(score)
        if not math.isfinite(reward):
            return Evaluation.failure(f"score {score!r} gives a non-finite reward", code=code, stdout=output,
                                      elapsed_s=result.elapsed_s, details=details)
        return Evaluation(reward=reward, valid=True, score=score, code=code, construction=construction,
                          stdout=output, elapsed_s=result.elapsed_s, details=details)


def _bounded(message: str, limit: int = 2000) -> str:
    """A checker's message can quote what the program returned (a megabyte-long string, say)."""
    return message if len(message) <= limit else message[:limit] + " [... message truncated]"


def budget_and_record_lines(budget: ProgramBudget, record_line: str) -> list[str]:
    """The end of a contract section: the time the program has, the record to beat, then the heading
    of the current state (shared by the prompts that say nothing more about the budget)."""
    return [f"Finish within budget_s = {budget.budget_s:g} s on {budget.cpus} CPU(s); at {budget.timeout_s:g} s "
            "the program is killed and scores 0. No file or network access.", "", record_line, "", "## Current state"]


def previous_attempt_section(state: State, *, value_name: str, digits: int, language: str = "python") -> str:
    """The part of a prompt that shows the state's program, how its value moved, and its output."""
    if not state.code:
        return ""
    lines = ["## Previous program", f"```{language}", state.code.rstrip(), "```"]
    if state.score is not None:
        before = "n/a" if state.parent_score is None else f"{state.parent_score:.{digits}f}"
        lines.append(f"{value_name}: parent {before} -> this program {state.score:.{digits}f}")
    if state.stdout.strip():
        lines += ["Its output (tail):", "```text", state.stdout.rstrip(), "```"]
    lines.append("Improve on it. A different idea is welcome if the current one has stalled.")
    return "\n".join(lines)


def prompt_with_previous_attempt(parts: list[str], state: State, *, value_name: str, digits: int) -> str:
    """The prompt `parts` make, then the previous program's section when the state has one."""
    attempt = previous_attempt_section(state, value_name=value_name, digits=digits)
    return "\n".join([*parts, "", attempt] if attempt else parts)
