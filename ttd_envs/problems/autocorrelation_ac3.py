"""The third autocorrelation inequality (AlphaEvolve B.3): heights of either sign, lower is better.

C3 is the largest constant with |max_{|t| <= 1/2} (f*f)(t)| >= C3 (∫f)^2 for every real f supported
on [-1/4, 1/4]. A step function with heights a_0 .. a_{n-1} on n equal steps certifies, exactly,

    C3 <= S(a) = 2n |max_k c_k| / (sum a)^2,      c = a*a (full discrete autoconvolution),

because f*f is piecewise linear with its knots on the grid. With `variant="abs"` the sibling
constant C3' (max |f*f| instead of |max f*f|; AlphaEvolve's notebook before its Dec 2025 fix) is
scored instead: S'(a) = 2n max_k |c_k| / (sum a)^2. Both are invariant to scaling a, so the scorer
divides by max |a| first. The mechanism (program contract, prompts, shipped starts) is AC1's.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import numpy as np
from scipy.fft import irfft, next_fast_len, rfft

from ttd_envs.core.exact import convolve, dyadic_integers
from ttd_envs.core.program_problem import InvalidConstruction
from ttd_envs.problems.autocorrelation import Construction, _Autocorrelation, heights
from ttd_envs.records import record_for

VARIANTS = ("max", "abs")

INITIAL_PROGRAM = '''```python
import time


def propose_candidate(seed=42, budget_s=300, **kwargs):
    """Random local search from the current heights (or a constant), keeping every improvement."""
    rng = np.random.default_rng(seed)
    best = np.array(height_sequence_1) if "height_sequence_1" in globals() else np.ones(200)
    best_score = evaluate_sequence(best)
    deadline = time.time() + min(budget_s / 2, 20)
    step = 0.05 * np.abs(best).max()
    while time.time() < deadline:
        candidate = best + rng.normal(0, step, best.size) * (rng.random(best.size) < 0.05)
        try:
            score = evaluate_sequence(candidate)
        except ValueError:
            continue
        if score < best_score:
            best, best_score = candidate, score
    print("C3 bound", best_score)
    return best
```'''


def signed_autoconvolution(a: np.ndarray) -> np.ndarray:
    """Full linear autoconvolution of a real sequence by one real FFT round trip (no clipping)."""
    size = next_fast_len(2 * a.size - 1, real=True)
    spectrum = rfft(a, size)
    return irfft(spectrum * spectrum, size)[:2 * a.size - 1]


def ac3_bound(a: np.ndarray) -> float:
    """S(a) = 2n |max c| / (sum a)^2 for valid heights (see `signed_heights`)."""
    a = a / np.abs(a).max()
    return float(2 * a.size * abs(signed_autoconvolution(a).max()) / np.sum(a) ** 2)


def ac3_abs_bound(a: np.ndarray) -> float:
    """S'(a) = 2n max |c| / (sum a)^2, the C3' variant."""
    a = a / np.abs(a).max()
    return float(2 * a.size * np.abs(signed_autoconvolution(a)).max() / np.sum(a) ** 2)


def ac3_exact(a: np.ndarray) -> Fraction:
    m, _ = dyadic_integers(a)
    return Fraction(2 * a.size * abs(max(convolve(m, m))), sum(m) ** 2)


def ac3_abs_exact(a: np.ndarray) -> Fraction:
    m, _ = dyadic_integers(a)
    return Fraction(2 * a.size * max(map(abs, convolve(m, m))), sum(m) ** 2)


def signed_heights(values: Any, max_len: int) -> np.ndarray:
    """Real heights of either sign (the checks of `heights`, less non-negativity), with a sum far
    enough from 0 for the bound to be finite. Raises InvalidConstruction."""
    a = heights(values, max_len, signed=True)
    scale = np.abs(a).max()
    if scale == 0.0:
        raise InvalidConstruction("all heights are zero; the bound needs a function with nonzero integral")
    total = float(np.sum(a / scale))
    if abs(total) < 1e-9 * a.size:
        raise InvalidConstruction(f"the heights sum to {total * scale:.3g}, about 0 next to their size: the bound "
                                  "divides by (sum a)^2, so f must have a clearly nonzero integral")
    return a


def ac3_score(values: Any) -> float:
    """Validate, then score with `ac3_bound`: the function programs get as `evaluate_sequence`."""
    return ac3_bound(signed_heights(values, 100_000))


def ac3_abs_score(values: Any) -> float:
    return ac3_abs_bound(signed_heights(values, 100_000))


AC3_CONSTRUCTIONS: dict[str, Construction] = {
    "simpletes": Construction("baselines/ac3_simpletes_400.json", "SimpleTES (n = 400)", 1.4536754655951831),
    "together": Construction("baselines/ac3_together_400.json", "Together AI (n = 400)", 1.454554862698333),
    "alphaevolve": Construction("baselines/ac3_alphaevolve_400.json", "AlphaEvolve (n = 400)", 1.4556427953745406),
}


class AutocorrelationAC3(_Autocorrelation):
    """ttd/AutocorrelationAC3-v0: lower the upper bound on C3 with a step function of either sign.

    Kwargs as AC1 plus `variant` ("max": C3, the default; "abs": C3'). `initial` names come from
    AC3_CONSTRUCTIONS ("record" is SimpleTES's, the best verified). Reward 1/S.
    """

    name = "AutocorrelationAC3"
    summary = "Third autocorrelation inequality: lower the upper bound on C3 (heights of either sign)"
    entry = "propose_candidate"
    bound = staticmethod(ac3_bound)
    exact = staticmethod(ac3_exact)
    score_function = "ttd_envs.problems.autocorrelation_ac3:ac3_score"
    constructions = AC3_CONSTRUCTIONS
    record_name = "simpletes"
    record = record_for("AutocorrelationAC3")
    bound_name = "upper bound on C3"
    goal = "minimise"
    height_rule = "finite real numbers of either sign whose sum is clearly nonzero"
    preload = (*_Autocorrelation.preload, "ttd_envs.problems.autocorrelation_ac3")
    maths = ("C3 is the largest constant with |max_{|t| ≤ 1/2} (f*f)(t)| ≥ C3·(∫f)² for every real f (negative values "
             "allowed) supported on [−1/4, 1/4]. Every such f with ∫f ≠ 0 certifies C3 ≤ |max f*f| / (∫f)². Find an f "
             "whose bound is as low as possible.")
    formula = "    C(a) = 2n · |max_k c_k| / (Σ a)²      (the max of c itself, not of |c|)"
    method_note = ("Negative heights are what lets this bound drop below AC1's: the autoconvolution's peak can be "
                   "cancelled. Gradient descent on a smoothed maximum (log-sum-exp with a rising temperature) over "
                   "a few hundred heights, with restarts and small random perturbations, has worked well; keep "
                   "the sum of the heights away from 0.")

    def __init__(self, initial: str = "random", budget_s: float = 300.0, timeout_s: float | None = None,
                 max_len: int = 100_000, cpus: int = 2, variant: str = "max") -> None:
        if variant not in VARIANTS:
            raise ValueError(f"variant must be 'max' (C3) or 'abs' (C3'); got {variant!r}")
        if variant == "abs":
            self.bound, self.exact = ac3_abs_bound, ac3_abs_exact
            self.score_function = "ttd_envs.problems.autocorrelation_ac3:ac3_abs_score"
            self.formula = "    C(a) = 2n · max_k |c_k| / (Σ a)²      (the C3′ variant)"
            self.bound_name = "upper bound on C3′"
        self.variant = variant
        self.record_instance = {} if variant == "max" else {"variant": "abs"}
        self.record = record_for(self.name, self.record_instance)
        super().__init__(initial, budget_s, timeout_s, max_len, cpus)

    def validate(self, value: Any) -> np.ndarray:
        return signed_heights(value, self.max_len)

    def reward_for(self, score: float) -> float:
        return 1.0 / score
