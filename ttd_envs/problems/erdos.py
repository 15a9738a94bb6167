"""Erdős minimum overlap: find a step function whose overlap bound on C5 is as low as possible.

Any h: [0, 2] -> [0, 1] with integral 1 certifies C5 <= sup_k ∫ h(x) (1 - h(x + k)) dx. With h
sampled at n points (dx = 2/n, sum h = n/2) the bound is

    C5(h) = (2/n) * max_k sum_i h[i + k] * (1 - h[i])        over all 2n - 1 lags.

Reward = 1 / C5 (higher is better); the trusted side recomputes C5 from the returned samples.
"""

from __future__ import annotations

import json
import math
from fractions import Fraction
from typing import Any, Literal

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
    real_array,
)
from ttd_envs.core.state import State
from ttd_envs.records import load_records, prompt_line, record_for

CLAIM_ATOL, CLAIM_RTOL = 1e-4, 1e-5


def c5_bound(h: np.ndarray) -> float:
    """C5(h) = (2/n) max_k sum_i h[i+k](1 - h[i]), in O(n log n).

    corr(h, 1 - h) = corr(h, 1) - corr(h, h). The autocorrelation r is symmetric and costs one real
    FFT round trip (padded to 2n - 1, so no wrap-around); the other term is a window sum, so lag
    +-k gives max(sum h[:n-k], sum h[k:]) - r[k]. Float64 throughout.
    """
    h = np.asarray(h, dtype=np.float64)
    n = h.size
    size = next_fast_len(2 * n - 1, real=True)
    spectrum = rfft(h, size)
    power = spectrum.real**2
    power += spectrum.imag**2
    autocorr = irfft(power, size, overwrite_x=True)[:n]
    prefix = np.cumsum(h)
    left = prefix[::-1]  # lag -k: sum of h[0 .. n-1-k]
    right = np.empty(n)
    right[0] = prefix[-1]
    right[1:] = prefix[-1] - prefix[:-1]  # lag +k: sum of h[k .. n-1]
    best = np.maximum(left, right)
    best -= autocorr
    return float(best.max() * 2.0 / n)


def c5_exact(h: np.ndarray) -> Fraction:
    """The C5 bound of h made *exactly* valid (values in [0, 1], sum exactly n/2), as a rational.

    The float check rescales h in floating point, so its sum is n/2 only up to rounding, and an
    exact rescaling can push a value of 1 above 1. So the missing mass is added where h < 1 instead
    (h' = (1 - t) h + t) and surplus mass is removed by scaling down (h' = s h): both keep h' in
    [0, 1], and both are affine, h' = p h + q. Over the L = n - |k| overlapping samples of lag k,

        sum h'[i+k] (1 - h'[i]) = p(1-q) A - p q B + q(1-q) L - p^2 R_k,

    with A, B the window sums of the shifted and unshifted parts and R_k the autocorrelation of h.
    """
    n = h.size
    m, e = dyadic_integers(h)
    unit, total = Fraction(2) ** e, sum(m)
    deficit = Fraction(n, 2) - total * unit
    if deficit >= 0:
        t = deficit / (n - total * unit)  # n - sum h > 0, since h <= 1 and sum h < n
        p, q = 1 - t, t
    else:
        p, q = Fraction(n, 2) / (total * unit), Fraction(0)
    autocorr = convolve(m, m[::-1])[n - 1:]  # lag k >= 0; the autocorrelation is symmetric
    prefix = np.cumsum(np.array(m, dtype=object)).tolist()
    scaled = p * unit  # p h in units of the integers m
    best = None
    for k in range(n):
        right, left = total - (prefix[k - 1] if k else 0), prefix[n - 1 - k]
        constant = q * (1 - q) * (n - k) - scaled * scaled * autocorr[k]
        for shifted, unshifted in ((right, left), (left, right)):
            value = (1 - q) * scaled * shifted - q * scaled * unshifted + constant
            best = value if best is None or value > best else best
    return best * Fraction(2, n)


def normalised_samples(values: Any, max_points: int) -> np.ndarray:
    """The checks of the problem, in order; returns h rescaled to sum n/2. Raises InvalidConstruction."""
    h = real_array(values, "h_values")
    if h.ndim != 1:
        raise InvalidConstruction(f"h_values must be 1-D, got shape {h.shape}")
    if not 1 <= h.size <= max_points:
        raise InvalidConstruction(f"h_values must have between 1 and {max_points} samples, got {h.size}")
    if not np.all(np.isfinite(h)):
        raise InvalidConstruction("h_values contains NaN or inf")
    if h.min() < 0.0 or h.max() > 1.0:
        raise InvalidConstruction(f"every h value must lie in [0, 1]; got min {float(h.min())!r}, max {float(h.max())!r}")
    n = h.size
    total = float(np.sum(h))
    if total <= 0.0:
        raise InvalidConstruction("h_values sums to 0; h must have integral 1 (sum n/2)")
    if total != n / 2:
        scale = (n / 2) / total
        if not math.isfinite(scale):
            raise InvalidConstruction(f"h_values sums to {total:.3g}, too little to rescale to sum n/2 = {n / 2:g}; "
                                      "h must have integral 1 (sum n/2) with every value in [0, 1]")
        h = h * scale
        if h.max() > 1.0:
            raise InvalidConstruction(
                f"after rescaling to sum n/2 = {n / 2:g}, the largest value is {float(h.max())!r}, above 1 by "
                f"{float(h.max()) - 1:.3g}; "
                "scale h so that sum(h) = n/2 with every value in [0, 1]"
            )
    return h


class ErdosOverlap(PythonProgramProblem):
    """ttd/ErdosOverlap-v0. Kwargs: `initial` ("random" | "record" | "empty"), `budget_s`,
    `timeout_s`, `max_points`, `cpus`."""

    name = "ErdosOverlap"
    summary = "Erdős minimum overlap: a step function with the lowest upper bound on C5"
    record = record_for("ErdosOverlap")
    defaults = TrainerDefaults(model_kind="llm", eval_timeout_s=600.0, cpus_per_eval=2)
    entry = "run"
    construction_input = "initial_h_values"
    preload = (*DEFAULT_PRELOAD, "ttd_envs.problems.erdos")

    def __init__(self, initial: Literal["random", "record", "empty"] = "random", budget_s: float = 300.0,
                 timeout_s: float | None = None, max_points: int = 100_000, cpus: int = 2) -> None:
        one_of("initial", initial, ("random", "record", "empty"))
        super().__init__(ProgramBudget.searching(budget_s, timeout_s, cpus=cpus))
        self.initial = initial
        self.max_points = max_points
        self.result_bytes = 8 * max_points + RESULT_SLACK_BYTES  # float64 samples; 0.8 MB at the default

    def initial_state(self, rng: np.random.Generator) -> State:
        if self.initial == "empty":
            return State(is_initial=True)
        if self.initial == "record":
            h = load_record_construction()
        else:
            n = int(rng.integers(40, 100))
            u = rng.uniform(-0.4, 0.4, n)
            h = 0.5 + (u - u.mean())
        score = c5_bound(normalised_samples(h, self.max_points))
        return State(construction=h, score=score, reward=1.0 / score, is_initial=True)

    def drawing(self, construction: Any) -> dict[str, Any]:
        """The step function h on [0, 2] (the run viewer's picture of a state)."""
        h = normalised_samples(construction, self.max_points)
        x = np.arange(h.size + 1) * 2.0 / h.size
        return series_drawing(f"h with {h.size} steps, C5 bound {c5_bound(h):.8f}", "x", "h(x)",
                              series("h", x, np.r_[h, h[-1]], "step"))

    def program_kwargs(self) -> dict[str, Any]:
        return {"seed": 42, "budget_s": self.budget.budget_s}

    def preset_modules(self) -> dict[str, str]:
        return {"np": "numpy", "c5_bound": "ttd_envs.problems.erdos:c5_bound"}

    def check(self, value: Any) -> tuple[np.ndarray, float]:
        if not isinstance(value, (tuple, list)) or len(value) != 3:
            raise InvalidConstruction(
                f"run() must return a tuple (h_values, c5_bound, n_points); got {_describe(value)}")
        values, claimed, n_points = value
        h = normalised_samples(values, self.max_points)
        if not isinstance(n_points, (int, float)) or n_points != h.size:
            raise InvalidConstruction(f"n_points = {n_points!r} does not match len(h_values) = {h.size}")
        score = c5_bound(h)
        if not (isinstance(claimed, (int, float)) and math.isfinite(claimed)):
            raise InvalidConstruction(f"c5_bound must be a finite number, got {claimed!r}")
        if abs(score - claimed) > CLAIM_ATOL + CLAIM_RTOL * abs(claimed):
            raise InvalidConstruction(
                f"reported c5_bound {claimed:.10g} disagrees with the recomputed {score:.10g}; "
                "report c5_bound(h) for the h you return (the recomputed value is the one that counts)")
        if not score > 0:
            raise InvalidConstruction(f"C5 must be positive, got {score}")
        return h, score

    def reward_for(self, score: float) -> float:
        return 1.0 / score

    def score_construction(self, data: Any) -> float:
        """Score a stored construction, `{"sequence": [...]}`, with the checks `check` applies to h."""
        if not isinstance(data, dict) or "sequence" not in data:
            raise InvalidConstruction('expected a JSON object with a "sequence" list of h values')
        return c5_bound(normalised_samples(data["sequence"], self.max_points))

    def exact_score(self, data: Any) -> Bound:
        """The stored construction's bound as an exact rational (for certificates)."""
        if not isinstance(data, dict) or "sequence" not in data:
            raise InvalidConstruction('expected a JSON object with a "sequence" list of h values')
        return Bound.exact(c5_exact(normalised_samples(data["sequence"], self.max_points)))

    def construction_data(self, construction: Any) -> dict[str, Any]:
        return {"sequence": np.asarray(construction, dtype=np.float64).tolist()}

    def prompt(self, state: State) -> str:
        b = self.budget
        parts = [
            "# Erdős minimum overlap problem: lower the upper bound on C5",
            "For any step function h: [0, 2] -> [0, 1] with ∫h = 1, the constant C5 of Erdős' minimum overlap "
            "problem satisfies C5 ≤ sup_k ∫ h(x)·(1 − h(x + k)) dx. Find an h that makes this bound small.",
            "",
            "## Exact scoring",
            "h is given by n samples on [0, 2] (dx = 2/n). Every value must lie in [0, 1]; h is rescaled to sum "
            "n/2 (integral 1) and must still lie in [0, 1]. The bound is",
            "    C5(h) = (2/n) · max_k Σ_i h[i+k]·(1 − h[i])   (all 2n − 1 lags) = max(np.correlate(h, 1 − h, 'full')) · 2/n",
            "Lower is better; reward = 1/C5. The score is recomputed from your h; your reported value is only checked.",
            "",
            "## Contract",
            f"Write one ```python block defining `run(seed=42, budget_s={b.budget_s:g}, **kwargs)` that returns "
            "`(h_values, c5_bound, n_points)`: a 1-D numpy array, its C5 bound, and len(h_values).",
            "Already defined: `np` (numpy) and `c5_bound(h)`, a fast O(n log n) scorer identical to the one used "
            "for your reward. numpy, scipy and the standard library are available.",
            f"Finish within budget_s = {b.budget_s:g} s of wall time on {b.cpus} CPU(s); the program is killed at "
            f"{b.timeout_s:g} s. No file or network access. n ≤ {self.max_points}; a few hundred to a few "
            "thousand samples are typical.",
            "",
            prompt_line(self.name),
            "",
            "## Current state",
        ]
        if state.construction is not None:
            n = len(state.construction)
            parts.append(f"A global `initial_h_values` (numpy array, n = {n}) holds the current construction, "
                         f"with C5 = {state.score:.10f}. You may start from it.")
        else:
            parts.append("There is no construction yet: write optimisation code from scratch.")
        return prompt_with_previous_attempt(parts, state, value_name="C5 bound", digits=6)


def load_record_construction() -> np.ndarray:
    """The record to beat as shipped: the best verified entry of the record table (so `initial="record"`
    follows the table when a better construction is verified)."""
    text = load_records("ErdosOverlap").best(verified=True).path().read_text()
    return np.asarray(json.loads(text)["sequence"], dtype=np.float64)


def _describe(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of length {len(value)}"
    return f"a {type(value).__name__}"
