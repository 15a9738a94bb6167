"""The mechanism of the problems whose answer is one array checked exactly (point sets, vectors, circles).

A subclass says what the array means (`key`, `shape`), how to check and score it exactly
(`exact_array`), and what its prompt says about the problem; the rest is written once here: the
record to beat and the shipped starting construction (both from the env's record table,
`ttd_envs/data/records/<name>.json`), the program's inputs, reading a construction file for
`python -m ttd_envs.verify`, the frame of the prompt, and certificates (`ttd_envs.certificates`):
`exact_array` gives the score as an exact rational or a rigorous enclosure, and the float score is
that bound rounded in the safe direction (down when higher is better, up when lower is). Any score
the program reports is ignored.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ttd_envs.core.arguments import one_of
from ttd_envs.core.exact import Bound, float_down, float_up
from ttd_envs.core.problem import Record, TrainerDefaults
from ttd_envs.core.program_problem import (
    InvalidConstruction,
    ProgramBudget,
    PythonProgramProblem,
    prompt_with_previous_attempt,
    real_array,
)
from ttd_envs.core.state import State
from ttd_envs.records import load_records


def finite_array(value: Any, shape: tuple[int, ...], what: str) -> np.ndarray:
    """A float64 array of exactly `shape` with only finite real entries, or InvalidConstruction."""
    array = real_array(value, what)
    if array.shape != shape:
        raise InvalidConstruction(f"{what} must have shape {shape}; got {array.shape}")
    bad = ~np.isfinite(array)
    if bad.any():
        index = tuple(int(i) for i in np.unravel_index(int(np.argmax(bad)), array.shape))
        raise InvalidConstruction(f"{what} must be finite; found {array[index]} at index {index}")
    return array


def load_construction(path: Path, key: str) -> Any:
    """The `key` entry of a shipped construction file."""
    return json.loads(path.read_text())[key]


class ArrayConstructionProblem(PythonProgramProblem):
    """Base class. Kwargs common to every subclass: `initial` ("empty" | "record": start from the
    shipped best construction), `budget_s`, `timeout_s` (default 1.5 budget + 10 s), `cpus`. A
    subclass passes its `instance`, the kwargs that change the problem (e.g. {"n": 14, "d": 3}),
    which pick the record and the shipped file from the record table."""

    key: str  # the JSON key of a construction file; the program's global is `initial_<key>`
    entry: str  # the function the program defines; it returns the array
    value_name: str  # what the score is called in prompts, e.g. "min triangle area"
    default_instance: dict[str, Any]
    """The instance `make()` builds without kwargs; its entries in the record table name no instance."""
    result_bytes = 1 << 20
    defaults = TrainerDefaults(model_kind="llm", eval_timeout_s=200.0, cpus_per_eval=1)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.record = load_records(cls.name).record()  # the default instance's, for `ttd-agent envs`

    def __init__(self, instance: dict[str, Any], initial: str = "empty", budget_s: float = 60.0,
                 timeout_s: float | None = None, cpus: int = 1) -> None:
        table, key = load_records(self.name), {} if instance == self.default_instance else instance
        self.record_instance = key  # its row of the record table (what a certificate compares with)
        self.record: Record | None = table.record(key)
        self.higher_is_better = table.higher_is_better
        best = table.best(key, verified=True)
        self.record_file = best.path() if best is not None else None
        one_of("initial", initial, ("empty", "record"))
        if initial == "record" and self.record_file is None:
            raise ValueError(f"{self.name} ships no construction for these settings: use initial='empty'")
        super().__init__(ProgramBudget.searching(budget_s, timeout_s, cpus=cpus))
        self.initial = initial

    # -- what a subclass provides ----------------------------------------------------------------
    @property
    def shape(self) -> tuple[int | str, ...]:
        raise NotImplementedError

    @property
    def shape_text(self) -> str:
        return f"({', '.join(map(str, self.shape))})"

    def exact_array(self, array: np.ndarray) -> Bound:
        """Check `array` (already of `shape`) exactly; return its score as an exact rational or an
        interval holding it, or raise InvalidConstruction."""
        raise NotImplementedError

    def statement(self) -> list[str]:
        """The prompt's problem statement and exact scoring rules, as lines."""
        raise NotImplementedError

    def initial_program(self) -> str:
        """A simple valid answer (a markdown code block): the docs' example and the tests' first step."""
        raise NotImplementedError

    def to_array(self, value: Any) -> np.ndarray:
        """What the program returned, as an array of `shape` (integer problems override this)."""
        return finite_array(value, self.shape, f"{self.entry}()'s result")

    # -- the shared part ---------------------------------------------------------------------------
    def initial_state(self, rng: np.random.Generator) -> State:
        if self.initial == "empty":
            return State(is_initial=True)
        construction, score = self.check(load_construction(self.record_file, self.key))
        return State(construction=construction, score=score, reward=self.reward_for(score), is_initial=True)

    def program_inputs(self, state: State) -> dict[str, Any]:
        if state.construction is None:
            return {}
        return {f"initial_{self.key}": np.asarray(state.construction)}

    def score_array(self, array: np.ndarray) -> float:
        """The exact score as a float that never flatters: rounded down when higher is better, up otherwise."""
        bound = self.exact_array(array)
        return float_down(bound.lower) if self.higher_is_better else float_up(bound.upper)

    def check(self, value: Any) -> tuple[np.ndarray, float]:
        array = self.to_array(value)
        return array, self.score_array(array)

    def stored_value(self, data: Any) -> Any:
        """The `key` entry of a construction file's object, `{"<key>": [...]}`."""
        if not isinstance(data, dict) or self.key not in data:
            raise InvalidConstruction(f'expected a JSON object with a "{self.key}" list')
        return data[self.key]

    def score_construction(self, data: Any) -> float:
        """Score a construction file, `{"<key>": [...]}`, exactly as a program's return value."""
        return self.check(self.stored_value(data))[1]

    def exact_score(self, data: Any) -> Bound:
        """A construction file's score as an exact rational or a rigorous enclosure (for certificates),
        with the same checks as a program's return value."""
        return self.exact_array(self.to_array(self.stored_value(data)))

    def construction_data(self, construction: Any) -> dict[str, Any]:
        """A State's construction (the checked array) as a construction file's object."""
        return {self.key: np.asarray(construction).tolist()}

    def prompt(self, state: State) -> str:
        b = self.budget
        parts = [f"# {self.summary}", *self.statement(), "",
                 "## Contract",
                 f"Write one ```python block defining `{self.entry}()` that returns a numpy array of shape "
                 f"{self.shape_text}. Any score you compute yourself is ignored: the score is recomputed exactly from "
                 "the array.",
                 "Already defined: `np` (numpy). numpy, scipy and the standard library are available. No file or "
                 "network access.",
                 f"Finish within {b.budget_s:g} s of wall time on {b.cpus} CPU(s); at {b.timeout_s:g} s the program "
                 "is killed and scores 0.", ""]
        if self.record is not None:
            parts += [f"Best known {self.value_name}: {self.record.describe()}.", ""]
        parts.append("## Current state")
        if state.construction is not None:
            parts.append(f"A global `initial_{self.key}` (numpy array of shape {self.shape_text}) holds the current "
                         f"construction, with {self.value_name} {state.score:.12g}. You may start from it.")
        else:
            parts.append("There is no construction yet: write code that builds one from scratch.")
        return prompt_with_previous_attempt(parts, state, value_name=self.value_name, digits=10)
