"""Sums and differences of finite sets (AlphaEvolve B.6): a set of integers certifying a lower bound on C6.

C6 is the largest constant such that there are arbitrarily large finite sets of integers A, B with
|A+B| << |A| and |A-B| >> |A+B|^C6. Gyarmati, Hennecart and Ruzsa (2007) showed that any finite set
U of non-negative integers with 0 in U (and |U-U| <= 2 max U + 1, automatic for such U) gives

    C6 >= theta(U) = 1 + ln(|U-U| / |U+U|) / ln(2 max U + 1).

Higher is better; reward = theta. A set is translated so that its minimum is 0 (that changes
neither |U+U| nor |U-U|, and it is the lemma applied to U - min U). |U+U| and |U-U| are counted
exactly by sweeping the value range in cache-sized windows, so the cost is |U|^2 pair steps (3.7 s
for AlphaEvolve's 54 265-element set on one core of our 2-core machine) and 2 MB of memory;
`max_size` and `max_value` bound it. theta itself is enclosed in an interval about 1e-58 wide
(correctly rounded 60-digit logarithms, widened by one unit each) for certificates.
"""

from __future__ import annotations

import json
from importlib import resources
from collections.abc import Callable
from typing import Any

import numba
import numpy as np

from ttd_envs.core.arguments import one_of
from ttd_envs.core.exact import Bound, ln_bounds
from ttd_envs.core.problem import TrainerDefaults
from ttd_envs.core.program_problem import (
    InvalidConstruction,
    ProgramBudget,
    PythonProgramProblem,
    budget_and_record_lines,
    numeric_array,
    prompt_with_previous_attempt,
)
from ttd_envs.core.state import State
from ttd_envs.records import prompt_line, record_for

MAX_SIZE, MAX_VALUE = 60_000, 1_000_000_000
EXACT_FLOAT = 2**53

INITIAL_PROGRAM = '''```python
import time


def construct_set(seed=42, budget_s=60, **kwargs):
    """Random local search from the current set (or a classic sum-dominant set): add or drop one
    element, keep the change when the bound does not drop."""
    rng = np.random.default_rng(seed)
    best = sorted(set(initial_set.tolist())) if "initial_set" in globals() else [0, 2, 3, 4, 7, 11, 12, 14]
    best_score = evaluate_set(best)
    deadline = time.time() + min(budget_s / 2, 20)
    while time.time() < deadline:
        candidate = set(best)
        if rng.random() < 0.5 and len(candidate) > 3:
            candidate.discard(int(rng.choice(best)))
        else:
            candidate.add(int(rng.integers(0, 2 * max(best) + 2)))
        score = evaluate_set(sorted(candidate))
        if score >= best_score:
            best, best_score = sorted(candidate), score
    print("theta", best_score)
    return best
```'''


def integer_set(values: Any, max_size: int = MAX_SIZE, max_value: int = MAX_VALUE) -> np.ndarray:
    """The distinct elements, sorted and translated to start at 0, as int64. Raises InvalidConstruction.

    Accepted: a 1-D list, tuple or array of integers; floats only when integral and below 2^53 in
    magnitude (so that they are exactly the integers meant). Refused with a reason: booleans,
    complex numbers, strings, nested data, NaN, inf, fractional values, fewer than 2 distinct
    elements, more than `max_size`, or a span above `max_value`.
    """
    if not isinstance(values, (list, tuple, np.ndarray)):
        raise InvalidConstruction(f"the set must be a 1-D list or numpy array of integers; got a {type(values).__name__}")
    if isinstance(values, (list, tuple)) and any(isinstance(v, (bool, np.bool_)) for v in values):
        raise InvalidConstruction("the elements must be integers, not booleans")
    if isinstance(values, (list, tuple)) and any(isinstance(v, int) and abs(v) >= 2**62 for v in values):
        raise InvalidConstruction(f"an element is too large: the span must stay within max_value = {max_value}")
    array = numeric_array(values, "the set")
    if array.ndim != 1:
        raise InvalidConstruction(f"the set must be 1-D; got shape {array.shape}")
    if array.dtype.kind == "f":
        if not np.all(np.isfinite(array)):
            raise InvalidConstruction("the set contains NaN or inf")
        if np.any(np.abs(array) >= EXACT_FLOAT) or np.any(array != np.round(array)):
            raise InvalidConstruction("float elements must be whole numbers below 2^53 in magnitude (or return ints)")
    if array.dtype.kind == "u" and array.size and array.max() >= 2**62:
        raise InvalidConstruction(f"an element is too large: the span must stay within max_value = {max_value}")
    u = np.unique(array.astype(np.int64))
    if u.size < 2:
        raise InvalidConstruction(f"the set needs at least 2 distinct elements; got {u.size}")
    if u.size > max_size:
        raise InvalidConstruction(f"the set has {u.size} distinct elements; at most max_size = {max_size} are allowed")
    span = int(u[-1]) - int(u[0])
    if span > max_value:
        raise InvalidConstruction(f"max U - min U = {span} is above max_value = {max_value}")
    return u - u[0]


WINDOW = 1 << 21
"""Values counted per pass (a 256 KB bitmap, kept in cache while every pair landing in it is marked)."""


@numba.njit(cache=True, nogil=True)
def _count_window_sweep(u: np.ndarray, subtract: bool, top: int) -> int:  # pragma: no cover - compiled
    """How many distinct values u[j] + u[i] (or u[j] - u[i]) over j >= i lie in [0, top].

    The value range is swept in windows of WINDOW values; for each i a pointer remembers where its
    run of j stopped, so each pair is visited once and every write lands in the small window."""
    n = u.size
    start = np.arange(n)  # the next j of each i (pairs j >= i)
    seen = np.zeros(WINDOW, dtype=np.bool_)
    total = 0
    for low in range(0, top + 1, WINDOW):
        high = low + WINDOW
        for i in range(n):
            j = start[i]
            while j < n:
                v = u[j] - u[i] if subtract else u[j] + u[i]
                if v >= high:
                    break
                seen[v - low] = True
                j += 1
            start[i] = j
        for k in range(WINDOW):
            if seen[k]:
                total += 1
                seen[k] = False
    return total


def sums_and_differences(u: np.ndarray, sweep: Callable[[np.ndarray, bool, int], int] = _count_window_sweep,
                         ) -> tuple[int, int]:
    """(|U+U|, |U-U|) of a sorted, translated set, exactly: U-U is symmetric, so it has twice as
    many values as there are distinct differences u_j - u_i > 0, plus the difference 0. `sweep` is
    the compiled counter (the sandbox has its own: it cannot read numba's cache)."""
    u = np.ascontiguousarray(u, dtype=np.int64)
    top = int(u[-1])
    return sweep(u, False, 2 * top), 2 * sweep(u, True, top) - 1


def theta_interval(sums: int, differences: int, top: int) -> Bound:
    """An interval, about 1e-58 wide, around theta = 1 + (ln D - ln S) / ln(2M + 1), from enclosures
    of the three logarithms (interval division: the denominator is positive)."""
    d_low, d_high = ln_bounds(differences)
    s_low, s_high = ln_bounds(sums)
    m_low, m_high = ln_bounds(2 * top + 1)
    low, high = d_low - s_high, d_high - s_low
    return Bound(1 + min(low / m_low, low / m_high), 1 + max(high / m_low, high / m_high))


def theta(values: Any, sweep: Callable[[np.ndarray, bool, int], int] = _count_window_sweep) -> float:
    """Validate, count and return theta as a float (a lower bound): what programs call `evaluate_set`."""
    u = integer_set(values)
    return float(theta_interval(*sums_and_differences(u, sweep), int(u[-1])).lower)


CONSTRUCTIONS = {"alphaevolve_54265": "sums_differences_alphaevolve_54265.json",
                 "alphaevolve_2003": "sums_differences_alphaevolve_2003.json"}
"""AlphaEvolve's two published sets (theta 1.1584172816 and 1.1479888965), by `initial` name."""


def load_set(name: str) -> list[int]:
    node = resources.files("ttd_envs.data.math").joinpath("baselines", CONSTRUCTIONS[name])
    return json.loads(node.read_text())["set"]


class SumsDifferences(PythonProgramProblem):
    """ttd/SumsDifferences-v0. Kwargs: `initial` ("empty" | "record" | a name in CONSTRUCTIONS),
    `budget_s`, `timeout_s` (default 1.5 budget + 10 s), `max_size`, `max_value`, `cpus`."""

    name = "SumsDifferences"
    summary = "Sums and differences of finite sets: a set of integers with a large lower bound on C6"
    record = record_for("SumsDifferences")
    defaults = TrainerDefaults(model_kind="llm", eval_timeout_s=300.0, cpus_per_eval=1)
    entry = "construct_set"
    preload = ("numpy", "scipy", "ttd_envs.problems.sums_differences_program")

    def __init__(self, initial: str = "empty", budget_s: float = 120.0, timeout_s: float | None = None,
                 max_size: int = MAX_SIZE, max_value: int = MAX_VALUE, cpus: int = 1) -> None:
        one_of("initial", initial, ("empty", "record", *CONSTRUCTIONS))
        if not (0 < max_size <= MAX_SIZE and 0 < max_value <= MAX_VALUE):
            raise ValueError(f"need 0 < max_size <= {MAX_SIZE} and 0 < max_value <= {MAX_VALUE}")
        super().__init__(ProgramBudget.searching(budget_s, timeout_s, cpus=cpus))
        self.initial, self.max_size, self.max_value = initial, max_size, max_value
        self.result_bytes = 8 * max_size + (64 << 10)

    def initial_state(self, rng: np.random.Generator) -> State:
        if self.initial == "empty":
            return State(is_initial=True)
        name = "alphaevolve_54265" if self.initial == "record" else self.initial
        u, score = self.check(load_set(name))
        return State(construction=u, score=score, reward=score, is_initial=True)

    def program_inputs(self, state: State) -> dict[str, Any]:
        return {} if state.construction is None else {"initial_set": np.asarray(state.construction, dtype=np.int64)}

    def program_kwargs(self) -> dict[str, Any]:
        return {"seed": 42, "budget_s": self.budget.budget_s}

    def preset_modules(self) -> dict[str, str]:
        return {"np": "numpy", "evaluate_set": "ttd_envs.problems.sums_differences_program:evaluate_set"}

    def exact(self, value: Any) -> tuple[np.ndarray, Bound]:
        u = integer_set(value, self.max_size, self.max_value)
        return u, theta_interval(*sums_and_differences(u), int(u[-1]))

    def check(self, value: Any) -> tuple[np.ndarray, float]:
        u, bound = self.exact(value)
        return u, float(bound.lower)

    def stored_set(self, data: Any) -> Any:
        if not isinstance(data, dict) or "set" not in data:
            raise InvalidConstruction('expected a JSON object with a "set" list of integers')
        return data["set"]

    def score_construction(self, data: Any) -> float:
        """Score a stored set, `{"set": [...]}`, exactly as a program's return value."""
        return self.check(self.stored_set(data))[1]

    def exact_score(self, data: Any) -> Bound:
        return self.exact(self.stored_set(data))[1]

    def construction_data(self, construction: Any) -> dict[str, Any]:
        return {"set": np.asarray(construction, dtype=np.int64).tolist()}

    def reward_for(self, score: float) -> float:
        return score

    def prompt(self, state: State) -> str:
        b = self.budget
        parts = [
            f"# {self.summary}",
            "C6 is the largest constant such that there are arbitrarily large finite sets of integers A, B with "
            "|A+B| ≪ |A| and |A−B| ≫ |A+B|^C6. Gyarmati, Hennecart and Ruzsa (2007): every finite set U of "
            "non-negative integers containing 0 certifies C6 ≥ θ(U) = 1 + ln(|U−U| / |U+U|) / ln(2·max U + 1).",
            "",
            "## Exact scoring",
            "Your integers are made distinct and shifted so that the smallest is 0; |U+U| and |U−U| are counted "
            "exactly and θ is computed to 40+ digits. Higher is better; reward = θ. Sum-dominant sets (|U+U| > |U−U|) "
            "score below 1; the lemma caps θ at 1.25.",
            "",
            "## Contract",
            f"Write one ```python block defining `construct_set(seed=42, budget_s={b.budget_s:g}, **kwargs)` that "
            f"returns a 1-D list or numpy array of integers: at least 2 and at most {self.max_size} distinct values, "
            f"spanning at most {self.max_value} (max − min). Floats are accepted only when whole and below 2^53.",
            "Already defined: `np` (numpy) and `evaluate_set(u)`, the scorer of your reward (it raises ValueError, "
            "saying why, for an invalid set; a set of n elements costs about n²/2 steps, e.g. 1 s at n = 30 000).",
            *budget_and_record_lines(b, prompt_line(self.name)),
        ]
        if state.construction is not None:
            parts.append(f"A global `initial_set` (numpy int64 array, {len(state.construction)} elements) holds the "
                         f"current set, with θ = {state.score:.10f}. You may start from it.")
        else:
            parts.append("There is no set yet: write code that builds one from scratch (digit constructions in a "
                         "base b — all integers whose base-b digits lie in a chosen digit set — work well).")
        return prompt_with_previous_attempt(parts, state, value_name="theta", digits=10)
