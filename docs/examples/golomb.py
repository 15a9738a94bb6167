"""A complete new problem in under 50 lines: a Golomb ruler with m marks, as short as possible."""

import numpy as np

from ttd_envs import Record, State, TrainerDefaults, register_problem
from ttd_envs.core.program_problem import InvalidConstruction, ProgramBudget, PythonProgramProblem


class GolombRuler(PythonProgramProblem):
    """Marks 0 = a_0 < ... < a_{m-1} with all pairwise differences distinct; score = a_{m-1}."""

    name, summary = "GolombRuler", "Golomb ruler: m integer marks with distinct differences, shortest wins"
    record = Record(72, "the known optimum for m = 11", higher_is_better=False)
    defaults = TrainerDefaults(model_kind="llm", eval_timeout_s=60)
    entry = "ruler"

    def __init__(self, marks: int = 11) -> None:
        super().__init__(ProgramBudget(budget_s=20, timeout_s=40))
        self.marks = marks

    def initial_state(self, rng: np.random.Generator) -> State:
        return State(is_initial=True)

    def check(self, value: object) -> tuple[list[int], float]:
        a = np.asarray(value)
        if a.shape != (self.marks,) or a.dtype.kind not in "iuf" or not np.all(a == np.round(a)):
            raise InvalidConstruction(f"return {self.marks} integer marks, got {a.dtype} array of shape {a.shape}")
        a = np.sort(a.astype(np.int64))
        a -= a[0]
        diffs = (a[:, None] - a[None, :])[np.triu_indices(self.marks, 1)]
        if np.unique(diffs).size != diffs.size:
            raise InvalidConstruction("two pairs of marks have the same difference")
        return a.tolist(), float(a[-1])

    def reward_for(self, score: float) -> float:
        return self.marks**2 / score

    def example_answer(self) -> str:  # what `--model tiny` learns to write: powers of 2 repeat no difference
        return f"```python\ndef ruler():\n    return [2 ** k for k in range({self.marks})]\n```"

    def prompt(self, state: State) -> str:
        best = "none yet" if state.score is None else f"{state.construction} (length {state.score:g})"
        return (f"Write a ```python block defining ruler() that returns {self.marks} distinct integer marks whose "
                f"pairwise differences are all distinct, with the largest minus the smallest as small as possible. "
                f"Best so far: {best}. Best known length: {self.record.score:g}.")


register_problem("examples/GolombRuler-v0", GolombRuler)  # your own namespace, not ttd/
