"""The autocorrelation inequalities of AlphaEvolve and TTT-Discover, as step functions.

Heights a_0 .. a_{n-1} >= 0 describe a step function f on n equal steps of [-1/4, 1/4]. Its
autoconvolution f*f is piecewise linear with knots on the grid, so both bounds below are exact for
the step function and only need the full discrete autoconvolution c = a*a (length 2n - 1):

- AC1 (upper bound on C1, lower is better):  C(a) = 2n * max_k c_k / (sum a)^2.
- AC2 (lower bound on C2, higher is better): with y = [0, c_0, ..., c_{2n-2}, 0] on a grid of
  spacing h = 1/(2n),
      L2^2 = sum_i (h/3)(y_i^2 + y_i y_{i+1} + y_{i+1}^2),  L1 = h * sum c,  Linf = max c,
      C(a) = L2^2 / (L1 * Linf).

Both are invariant to scaling a, so the scorers divide by max(a) first (no overflow for any finite
input). c is computed by one real FFT round trip in float64 and clipped at 0: a >= 0, so negative
entries are FFT round-off (about 1e-15 of max c). The trusted side recomputes the score from the
returned heights; the program's own claim is never read.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from importlib import resources
from typing import Any

import numpy as np
from scipy.fft import irfft, next_fast_len, rfft

from ttd_envs.core.arguments import one_of
from ttd_envs.core.drawing import series, series_drawing
from ttd_envs.core.exact import Bound, convolve, dyadic_integers
from ttd_envs.core.problem import TrainerDefaults
from ttd_envs.core.program_problem import (
    DEFAULT_PRELOAD,
    RESULT_SLACK_BYTES,
    InvalidConstruction,
    ProgramBudget,
    PythonProgramProblem,
    prompt_with_previous_attempt,
)
from ttd_envs.core.state import State
from ttd_envs.records import prompt_line, record_for

log = logging.getLogger(__name__)

MAX_HEIGHTS = 100_000
DATA_PACKAGE = "ttd_envs.data.math"


# -- scoring -------------------------------------------------------------------------------------
def autoconvolution(a: np.ndarray) -> np.ndarray:
    """Full linear autoconvolution c_k = sum_i a_i a_{k-i} (length 2n - 1), by FFT in float64.

    Padded to a fast length >= 2n - 1, so there is no wrap-around; clipped at 0 because the
    inputs are non-negative and anything below 0 is round-off.
    """
    n = a.size
    size = next_fast_len(2 * n - 1, real=True)
    spectrum = rfft(a, size)
    spectrum *= spectrum
    c = irfft(spectrum, size, overwrite_x=True)[:2 * n - 1]
    np.maximum(c, 0.0, out=c)
    return c


def ac1_bound(a: np.ndarray) -> float:
    """AC1 upper bound C(a) = 2n * max_k (a*a)_k / (sum a)^2 for valid heights (see `heights`)."""
    a = a / a.max()
    c = autoconvolution(a)
    return float(2 * a.size * c.max() / np.sum(a) ** 2)


def ac2_bound(a: np.ndarray) -> float:
    """AC2 lower bound C(a) = L2^2 / (L1 * Linf) of f*f for valid heights (see `heights`).

    With y padded by a zero at each end, sum_i (y_i^2 + y_i y_{i+1} + y_{i+1}^2) equals
    2 sum c^2 + sum c_k c_{k+1}; h = 1/(2n) is the grid spacing of the 2n - 1 interior nodes.
    """
    a = a / a.max()
    c = autoconvolution(a)
    h = 1.0 / (2 * a.size)
    l2_squared = h / 3.0 * (2.0 * np.dot(c, c) + np.dot(c[:-1], c[1:]))
    l1 = h * np.sum(c)
    return float(l2_squared / (l1 * c.max()))


def exact_autoconvolution(a: np.ndarray) -> tuple[list[int], int]:
    """(integer autoconvolution of m, sum of m) for a = m * 2^e: both scores are ratios in which 2^e cancels."""
    m, _ = dyadic_integers(a)
    return convolve(m, m), sum(m)


def ac1_exact(a: np.ndarray) -> Fraction:
    """`ac1_bound` as an exact rational (no FFT, no rounding): 2n max c / (sum a)^2."""
    c, total = exact_autoconvolution(a)
    return Fraction(2 * a.size * max(c), total * total)


def ac2_exact(a: np.ndarray) -> Fraction:
    """`ac2_bound` as an exact rational: (2 sum c^2 + sum c_k c_{k+1}) / (3 sum c max c); h cancels."""
    c, _ = exact_autoconvolution(a)
    squares = 2 * sum(v * v for v in c) + sum(x * y for x, y in zip(c, c[1:]))
    return Fraction(squares, 3 * sum(c) * max(c))


def heights(values: Any, max_len: int = MAX_HEIGHTS, signed: bool = False) -> np.ndarray:
    """Validate a construction and return it as a float64 1-D array. Raises InvalidConstruction.

    Accepted: any 1-D list, tuple or numpy array of real numbers (ints or floats of any width),
    1 to `max_len` long, all finite, all >= 0, not all zero. Rejected with a reason: booleans,
    complex numbers, strings or other objects, nested or 2-D data, NaN, inf, negative heights.
    Unlike the reference we neither clamp negatives nor cap large values: the score is scale
    invariant, and a silently altered construction is not the one the program returned.
    """
    if isinstance(values, (list, tuple)):
        if any(isinstance(v, (bool, np.bool_)) for v in values):
            raise InvalidConstruction("heights must be real numbers, not booleans")
    elif not isinstance(values, np.ndarray):
        raise InvalidConstruction(f"the construction must be a 1-D list or numpy array of heights; got a "
                                  f"{type(values).__name__}")
    try:
        array = np.asarray(values)
    except (TypeError, ValueError) as exc:
        raise InvalidConstruction(f"the heights are not a flat sequence of numbers ({exc}); return one 1-D "
                                  "list or numpy array, not a tuple of several things") from None
    kind = array.dtype.kind
    if kind == "b":
        raise InvalidConstruction("heights must be real numbers, not booleans")
    if kind == "c":
        raise InvalidConstruction("heights must be real numbers; got complex values (take .real if that is "
                                  "what you meant)")
    if kind not in "iuf":
        raise InvalidConstruction(f"heights must be real numbers; got elements of type {array.dtype} (return "
                                  "one flat 1-D list or numpy array of floats)")
    if array.ndim != 1:
        raise InvalidConstruction(f"heights must be a 1-D sequence; got shape {array.shape}")
    if array.size == 0:
        raise InvalidConstruction("the sequence of heights is empty; return at least one height")
    if array.size > max_len:
        raise InvalidConstruction(f"{array.size} heights is too long: at most {max_len} are allowed")
    array = array.astype(np.float64)
    bad = ~np.isfinite(array)
    if bad.any():
        i = int(np.argmax(bad))
        raise InvalidConstruction(f"heights must be finite; found {array[i]} at index {i}")
    if signed:
        return array  # callers check what their bound needs of the sum
    if array.min() < 0.0:
        i = int(np.argmin(array))
        raise InvalidConstruction(f"heights must be non-negative; found {array[i]:.6g} at index {i} "
                                  "(use np.maximum(a, 0) if negatives are round-off)")
    if array.max() == 0.0:
        raise InvalidConstruction("all heights are zero; the bound needs a function with positive integral")
    return array


def ac1_score(values: Any) -> float:
    """Validate, then score with `ac1_bound`: the function programs get as `evaluate_sequence`."""
    return ac1_bound(heights(values))


def ac2_score(values: Any) -> float:
    """Validate, then score with `ac2_bound`: the function programs get as `evaluate_sequence`."""
    return ac2_bound(heights(values))


# -- shipped constructions -----------------------------------------------------------------------
@dataclass(frozen=True)
class Construction:
    """A known construction shipped in `ttd_envs/data/math/` (`{"sequence": [...]}` JSON)."""

    path: str
    holder: str
    score: float

    def load(self) -> np.ndarray:
        node = resources.files(DATA_PACKAGE)
        for part in self.path.split("/"):
            node = node.joinpath(part)
        return np.asarray(json.loads(node.read_text())["sequence"], dtype=np.float64)


AC1_CONSTRUCTIONS: dict[str, Construction] = {
    "together": Construction("baselines/ac1_together_30000.json", "Together AI (n = 30000)", 1.5028628587053108),
    "ttt_discover": Construction("ttt_ac1_sequence.json", "TTT-Discover (n = 30000)", 1.5028628982558263),
    "thetaevolve": Construction("baselines/ac1_thetaevolve_1319.json", "ThetaEvolve (n = 1319)",
                                1.5031324359797773),
    "alphaevolve_v2": Construction("baselines/ac1_alphaevolve_v2_1319.json", "AlphaEvolve v2 (n = 1319)",
                                   1.503163554681561),
    "alphaevolve_v1": Construction("baselines/ac1_alphaevolve_v1_600.json", "AlphaEvolve v1 (n = 600)",
                                   1.5052939684401607),
    "thetaevolve_wo_rl": Construction("baselines/ac1_thetaevolve_wo_rl_200.json",
                                      "ThetaEvolve without RL (n = 200)", 1.5068026727114598),
    "prev_human": Construction("baselines/ac1_prev_human_208.json", "best human construction (n = 208)",
                               1.5097201507458793),
}

AC2_CONSTRUCTIONS: dict[str, Construction] = {
    "together": Construction("baselines/ac2_together_100000.json", "Together AI (n = 100000)", 0.9612055422690102),
    "alphaevolve": Construction("baselines/ac2_alphaevolve_50000.json", "AlphaEvolve (n = 50000)",
                                0.9610210777840243),
    "ttt_discover": Construction("ttt_ac2_sequence.json", "TTT-Discover (n = 50000)", 0.9591797711482716),
}


# -- the environments ----------------------------------------------------------------------------
class _Autocorrelation(PythonProgramProblem):
    """What AC1 and AC2 share: heights in, one bound out; subclasses fill in the facts below."""

    bound: Callable[[np.ndarray], float]
    exact: Callable[[np.ndarray], Fraction]  # the same score as an exact rational, for certificates
    score_function: str  # "module:function" injected as `evaluate_sequence`
    constructions: dict[str, Construction]
    record_name: str
    bound_name: str
    goal: str  # "minimise" | "maximise"
    maths: str
    formula: str
    method_note: str
    height_rule = "finite, non-negative real numbers, not all zero"
    construction_input = "height_sequence_1"
    defaults = TrainerDefaults(model_kind="llm", eval_timeout_s=600.0, cpus_per_eval=2)
    preload = (*DEFAULT_PRELOAD, "ttd_envs.problems.autocorrelation")

    def __init__(self, initial: str = "random", budget_s: float = 300.0, timeout_s: float | None = None,
                 max_len: int = MAX_HEIGHTS, cpus: int = 2) -> None:
        one_of("initial", initial, ("random", "empty", "record", *self.constructions))
        super().__init__(ProgramBudget.searching(budget_s, timeout_s, cpus=cpus))
        self.initial = initial
        self.max_len = max_len
        self.result_bytes = 8 * max_len + RESULT_SLACK_BYTES  # float64 heights; 0.8 MB at the default

    def initial_state(self, rng: np.random.Generator) -> State:
        """`random`: a constant sequence of random height and length 1000..7999 (AC1 = 2, AC2 = 2/3);
        `record` or a construction name: that shipped construction; `empty`: nothing to start from."""
        if self.initial == "empty":
            return State(is_initial=True)
        if self.initial == "random":
            a = np.full(int(rng.integers(1000, 8000)), rng.uniform(0.05, 1.0))
        else:
            a = self.constructions[self.record_name if self.initial == "record" else self.initial].load()
        score = self.bound(self.validate(a))
        return State(construction=a, score=score, reward=self.reward_for(score), is_initial=True)

    def drawing(self, construction: Any) -> dict[str, Any]:
        """The heights and their autoconvolution, each scaled to a peak of 1 (the run viewer's picture)."""
        a = heights(construction, self.max_len)
        c = autoconvolution(a)
        return series_drawing(f"{a.size} heights, {self.bound_name} {self.bound(a):.8f}", "position (scaled to [0, 1])",
                              "value / max", series("heights", np.linspace(0, 1, a.size), a / a.max(), "step"),
                              series("autoconvolution", np.linspace(0, 1, c.size), c / c.max()))

    def program_kwargs(self) -> dict[str, Any]:
        return {"seed": 42, "budget_s": self.budget.budget_s}

    def preset_modules(self) -> dict[str, str]:
        return {"np": "numpy", "evaluate_sequence": self.score_function}

    def check(self, value: Any) -> tuple[np.ndarray, float]:
        a = self.validate(value)
        return a, self.bound(a)

    def validate(self, value: Any) -> np.ndarray:
        return heights(value, self.max_len)

    def score_construction(self, data: Any) -> float:
        """Score a stored construction, `{"sequence": [...]}`, exactly as a program's return value."""
        return self.check(self.stored_sequence(data))[1]

    def stored_sequence(self, data: Any) -> Any:
        if not isinstance(data, dict) or "sequence" not in data:
            raise InvalidConstruction('expected a JSON object with a "sequence" list of heights')
        return data["sequence"]

    def exact_score(self, data: Any) -> Bound:
        """The score of a stored construction as an exact rational (for certificates)."""
        return Bound.exact(self.exact(self.check(self.stored_sequence(data))[0]))

    def construction_data(self, construction: Any) -> dict[str, Any]:
        return {"sequence": np.asarray(construction, dtype=np.float64).tolist()}

    def prompt(self, state: State) -> str:
        b = self.budget
        better = "lower" if self.goal == "minimise" else "higher"
        parts = [
            f"# {self.summary}",
            self.maths,
            "",
            "## Exact scoring",
            "Your heights a_0 .. a_{n-1} define a step function on n equal steps of [-1/4, 1/4]. With the full "
            "autoconvolution c = np.convolve(a, a) (length 2n − 1), the score is",
            self.formula,
            f"It is exact for the step function and unchanged by scaling a. {better.capitalize()} is better; "
            f"reward = {'1/C' if self.goal == 'minimise' else 'C'}. The score is recomputed from the heights you "
            "return; nothing you report is used.",
            "",
            "## Contract",
            f"Write one ```python block defining `{self.entry}(seed=42, budget_s={b.budget_s:g}, **kwargs)` that "
            f"returns the heights: a 1-D list or numpy array of {self.height_rule}, "
            f"at most {self.max_len} long.",
            "Already defined (do not import or redefine them): `np` (numpy), and `evaluate_sequence(a)`, which "
            "validates a and returns its score with the same fast O(n log n) float64 code that sets your reward "
            "(it raises ValueError, saying why, for an invalid a).",
            "numpy, scipy and the standard library are available. Use top-level functions only (no lambdas or "
            "closures in process pools), no file or network access. print() progress: its tail is shown back.",
            f"Finish within budget_s = {b.budget_s:g} s of wall time on {b.cpus} CPU(s); at {b.timeout_s:g} s the "
            "program is killed and scores 0. Thousands to tens of thousands of heights work well; each "
            "evaluation costs milliseconds at n = 100000.",
            "",
            f"## Method note\n{self.method_note}",
            "",
            prompt_line(self.name),
            "",
            "## Current state",
        ]
        if state.construction is not None:
            parts.append(f"A global `height_sequence_1` (numpy float64 array, length {len(state.construction)}) "
                         f"holds the current construction, with C = {state.score:.10f}. Starting from it is "
                         "usually better than starting from scratch.")
        else:
            parts.append("There is no construction yet (`height_sequence_1` is not defined): write optimisation "
                         "code that builds one from scratch.")
        return prompt_with_previous_attempt(parts, state, value_name=self.bound_name, digits=10)


class AutocorrelationAC1(_Autocorrelation):
    """ttd/AutocorrelationAC1-v0: lower the upper bound on the first autocorrelation constant C1.

    Kwargs: `initial` ("random" | "empty" | "record" | a name in AC1_CONSTRUCTIONS), `budget_s`,
    `timeout_s` (default 1.5 budget + 10 s), `max_len`, `cpus`. Reward 1/C.
    """

    name = "AutocorrelationAC1"
    summary = "First autocorrelation inequality: lower the upper bound on C1"
    entry = "propose_candidate"
    bound = staticmethod(ac1_bound)
    exact = staticmethod(ac1_exact)
    score_function = "ttd_envs.problems.autocorrelation:ac1_score"
    constructions = AC1_CONSTRUCTIONS
    record_name = "together"
    record = record_for("AutocorrelationAC1")
    bound_name = "upper bound on C1"
    goal = "minimise"
    maths = ("C1 is the largest constant with max_{|t| ≤ 1/2} (f*f)(t) ≥ C1·(∫f)² for every f ≥ 0 supported on "
             "[−1/4, 1/4]. Every such f certifies C1 ≤ ‖f*f‖_∞ / (∫f)². Find an f whose bound is as low as possible.")
    formula = "    C(a) = 2n · max_k c_k / (Σ a)²"
    method_note = ("A linear-programming iteration has worked well: normalise Σa = √(2n); solve the LP "
                   "max Σb subject to (a*b)_k ≤ max(a*a) for all k and b ≥ 0; rescale b the same way and move "
                   "a ← (1 − t)·a + t·b for a small step t; repeat while the bound drops. Gradient steps on a "
                   "smoothed maximum and upsampling a good short sequence are other options.")

    def reward_for(self, score: float) -> float:
        return 1.0 / score


class AutocorrelationAC2(_Autocorrelation):
    """ttd/AutocorrelationAC2-v0: raise the lower bound on the second autocorrelation constant C2.

    Kwargs as AC1; `initial` names come from AC2_CONSTRUCTIONS ("record" is Together AI's, the best
    verified one; higher claims without a public construction are in the record table). Reward C.
    """

    name = "AutocorrelationAC2"
    summary = "Second autocorrelation inequality: raise the lower bound on C2"
    entry = "construct_function"
    bound = staticmethod(ac2_bound)
    exact = staticmethod(ac2_exact)
    score_function = "ttd_envs.problems.autocorrelation:ac2_score"
    constructions = AC2_CONSTRUCTIONS
    record_name = "together"
    record = record_for("AutocorrelationAC2")
    bound_name = "lower bound on C2"
    goal = "maximise"
    maths = ("C2 = sup over f ≥ 0 of ‖f*f‖₂² / (‖f*f‖₁ · ‖f*f‖_∞). Every f ≥ 0 certifies a lower bound. Find an f "
             "whose ratio is as high as possible.")
    formula = ("    y = [0, c_0, …, c_{2n−2}, 0] on nodes of [−1/2, 1/2] with spacing h = 1/(2n)\n"
               "    L2² = Σ_i (h/3)·(y_i² + y_i·y_{i+1} + y_{i+1}²)   (exact for the piecewise-linear f*f)\n"
               "    L1 = h · Σ c,   L∞ = max c,   C(a) = L2² / (L1 · L∞)")
    method_note = ("A coarse-to-fine search has worked well (arXiv 2506.16750): random perturbations with a "
                   "shrinking scale at a small n, then projected gradient ascent (keep a ≥ 0), then upsample by "
                   "repeating each entry and fine-tune again. Batches of candidates with restarts help.")

    def reward_for(self, score: float) -> float:
        return score
