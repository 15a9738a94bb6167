"""Circle packing: n discs with disjoint interiors inside the unit square, maximise the sum of radii.

A packing is (centers (n, 2), radii (n,)). It is valid when, for every i and every pair i < j,

    r_i >= 0,   r_i - tol <= x_i <= 1 - r_i + tol   (and the same for y),
    |c_i - c_j| >= r_i + r_j - tol,

and its score is sum_i r_i (higher is better; reward = the score). Tolerance policy: `tol` is an
absolute slack of 1e-12 by default, the reference's training verifier. It absorbs the rounding of
an optimiser's output (the shipped n = 32 packing crosses a wall by 9.2e-16, so only a tolerant
check accepts it) and is far below anything that could raise the sum: 2n·tol < 1e-10. Pass
`tolerance=0` for the strict check (the shipped n = 26 packing passes it). Any reported sum is ignored: the score is recomputed.
"""

from __future__ import annotations

import json
from fractions import Fraction
from importlib import resources
from typing import Any

import numpy as np

from ttd_envs.core.arguments import one_of
from ttd_envs.core.drawing import circles_drawing
from ttd_envs.core.exact import Bound
from ttd_envs.core.problem import TrainerDefaults
from ttd_envs.core.program_problem import (
    InvalidConstruction,
    ProgramBudget,
    PythonProgramProblem,
    prompt_with_previous_attempt,
    real_array,
)
from ttd_envs.core.state import State
from ttd_envs.records import prompt_line, record_for

TOLERANCE = 1e-12
DATA_PACKAGE = "ttd_envs.data.math"


def packing_arrays(centers: Any, radii: Any, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Shape and type checks: centers as (n, 2) and radii as (n,) float64 arrays, all finite."""
    c = real_array(centers, "centers")
    r = real_array(radii, "radii")
    if c.shape != (n, 2):
        raise InvalidConstruction(f"expected {n} circles: centers must have shape ({n}, 2), got {c.shape}")
    if r.shape != (n,):
        raise InvalidConstruction(f"expected {n} circles: radii must have shape ({n},), got {r.shape}")
    for array, what in ((c, "centers"), (r, "radii")):
        bad = ~np.isfinite(array)
        if bad.any():
            index = np.unravel_index(int(np.argmax(bad)), array.shape)
            raise InvalidConstruction(f"{what} must be finite; found {array[index]} at index {index[0]}")
    return c, r


def check_packing(centers: np.ndarray, radii: np.ndarray, tol: float = TOLERANCE) -> None:
    """Raise InvalidConstruction naming the worst violation; vectorised over circles and pairs."""
    if radii.min() < 0:
        i = int(np.argmin(radii))
        raise InvalidConstruction(f"circle {i} has a negative radius {radii[i]:.6g}")
    # How far each circle sticks out past the nearest wall (positive = outside).
    outside = np.maximum(radii[:, None] - centers, centers + radii[:, None] - 1.0).max(axis=1)
    i = int(np.argmax(outside))
    if outside[i] > tol:
        x, y = centers[i]
        raise InvalidConstruction(f"circle {i} (x={x:.12g}, y={y:.12g}, r={radii[i]:.12g}) sticks out of the unit "
                                  f"square by {outside[i]:.3g} (tolerance {tol:g})")
    if radii.size < 2:
        return
    i_idx, j_idx = np.triu_indices(radii.size, k=1)
    gaps = np.hypot(*(centers[i_idx] - centers[j_idx]).T) - (radii[i_idx] + radii[j_idx])
    worst = int(np.argmin(gaps))
    if gaps[worst] < -tol:
        i, j = int(i_idx[worst]), int(j_idx[worst])
        raise InvalidConstruction(f"circles {i} and {j} overlap by {-gaps[worst]:.3g}: their centres are "
                                  f"{gaps[worst] + radii[i] + radii[j]:.12g} apart but r_{i} + r_{j} = "
                                  f"{radii[i] + radii[j]:.12g} (tolerance {tol:g})")


def exact_packing_sum(centers: np.ndarray, radii: np.ndarray, tol: float = TOLERANCE) -> Fraction:
    """Σr as an exact rational, after checking every rule of `check_packing` in exact arithmetic
    on the binary values (the tolerance too is taken as its exact binary value)."""
    slack = Fraction(tol)
    rows = [[Fraction(v) for v in row] for row in np.column_stack([centers, radii]).tolist()]
    for i, (x, y, r) in enumerate(rows):
        if r < 0 or min(x, y) < r - slack or max(x, y) > 1 - r + slack:
            raise InvalidConstruction(f"circle {i} has a negative radius or leaves the unit square (exact check, "
                                      f"tolerance {tol:g})")
    for i, (xi, yi, ri) in enumerate(rows):
        for j in range(i + 1, len(rows)):
            xj, yj, rj = rows[j]
            reach = ri + rj - slack
            if reach > 0 and (xi - xj) ** 2 + (yi - yj) ** 2 < reach * reach:
                raise InvalidConstruction(f"circles {i} and {j} overlap (exact check, tolerance {tol:g})")
    return sum((r for _, _, r in rows), Fraction(0))


def load_circles(filename: str) -> np.ndarray:
    """A shipped packing as an (n, 3) array of [x, y, r] rows."""
    text = resources.files(DATA_PACKAGE).joinpath(filename).read_text()
    return np.asarray(json.loads(text)["circles"], dtype=np.float64)


class CirclePacking(PythonProgramProblem):
    """n circles in the unit square; `CirclePacking26` and `CirclePacking32` fix n and the record.

    Kwargs: `initial` ("empty" | "record"), `budget_s`, `timeout_s` (default 1.5 budget + 10 s),
    `tolerance`, `cpus`. The current packing is given to the program as `initial_circles`.
    """

    n: int
    record_file: str
    target: float  # the reference prompt's goal
    entry = "run_packing"
    construction_input = "initial_circles"
    result_bytes = 1 << 20  # 32 circles are under 2 KB however they are encoded
    defaults = TrainerDefaults(model_kind="llm", eval_timeout_s=300.0, cpus_per_eval=1)

    def __init__(self, initial: str = "empty", budget_s: float = 120.0, timeout_s: float | None = None,
                 tolerance: float = TOLERANCE, cpus: int = 1) -> None:
        one_of("initial", initial, ("empty", "record"))
        if tolerance < 0:
            raise ValueError(f"tolerance must be >= 0, got {tolerance}")
        super().__init__(ProgramBudget.searching(budget_s, timeout_s, cpus=cpus))
        self.initial = initial
        self.tolerance = tolerance

    def initial_state(self, rng: np.random.Generator) -> State:
        if self.initial == "empty":
            return State(is_initial=True)
        circles = load_circles(self.record_file)
        _, score = self.check((circles[:, :2], circles[:, 2], None))
        return State(construction=circles, score=score, reward=score, is_initial=True)

    def check(self, value: Any) -> tuple[np.ndarray, float]:
        if not isinstance(value, (tuple, list)) or len(value) != 3:
            got = f"a {type(value).__name__}" + (f" of length {len(value)}" if isinstance(value, (tuple, list)) else "")
            raise InvalidConstruction(f"run_packing() must return a tuple (centers, radii, sum_radii); got {got}")
        centers, radii = packing_arrays(value[0], value[1], self.n)
        check_packing(centers, radii, self.tolerance)
        return np.column_stack([centers, radii]), float(np.sum(radii))

    def score_construction(self, data: Any) -> float:
        """Score a stored packing, `{"circles": [[x, y, r], ...]}`, exactly as a program's return value."""
        return self.check((*self.stored_arrays(data), None))[1]

    def stored_arrays(self, data: Any) -> tuple[np.ndarray, np.ndarray]:
        """(centres, radii) of a stored packing, `{"circles": [[x, y, r], ...]}`."""
        if not isinstance(data, dict) or "circles" not in data:
            raise InvalidConstruction('expected a JSON object with a "circles" list of [x, y, r] rows')
        circles = real_array(data["circles"], "circles")
        if circles.ndim != 2 or circles.shape[1] != 3:
            raise InvalidConstruction(f'"circles" must be a list of [x, y, r] rows; got shape {circles.shape}')
        return circles[:, :2], circles[:, 2]

    def exact_score(self, data: Any) -> Bound:
        """Σr of a stored packing as an exact rational, every rule checked exactly (for certificates)."""
        circles = self.check((*self.stored_arrays(data), None))[0]
        return Bound.exact(exact_packing_sum(circles[:, :2], circles[:, 2], self.tolerance))

    def construction_data(self, construction: Any) -> dict[str, Any]:
        return {"circles": np.asarray(construction, dtype=np.float64).tolist()}

    def drawing(self, construction: Any) -> dict[str, Any]:
        """The packing in the unit square (the run viewer's picture of a state)."""
        rows = np.asarray(construction, dtype=np.float64)
        return circles_drawing(f"{rows.shape[0]} circles, sum of radii {rows[:, 2].sum():.6f}", rows)

    def reward_for(self, score: float) -> float:
        return score

    def prompt(self, state: State) -> str:
        b, n = self.budget, self.n
        parts = [
            f"# {self.summary}",
            f"Place {n} circles inside the unit square [0, 1] × [0, 1] so that no two overlap, and make the sum of "
            "their radii as large as possible.",
            "",
            "## Exact scoring",
            f"A packing is valid when every radius r_i ≥ 0, every circle lies inside the square "
            f"(r_i ≤ x_i ≤ 1 − r_i and the same for y) and every pair satisfies ‖c_i − c_j‖ ≥ r_i + r_j, each up to "
            f"an absolute tolerance of {self.tolerance:g}. The score is Σ r_i, recomputed from your centres and "
            "radii (the sum you report is ignored); higher is better and reward = Σ r_i. An invalid packing scores 0.",
            "",
            "## Contract",
            "Write one ```python block defining `run_packing()` that returns `(centers, radii, sum_radii)`: a "
            f"({n}, 2) array of centres, a ({n},) array of radii and their sum.",
            "Already defined: `np` (numpy). numpy, scipy (e.g. scipy.optimize with SLSQP and analytic constraint "
            "Jacobians) and the standard library are available. No file or network access.",
            f"Finish within {b.budget_s:g} s of wall time on {b.cpus} CPU(s); at {b.timeout_s:g} s the program is "
            "killed and scores 0. Shrink radii slightly at the end if rounding could make a constraint fail.",
            "",
            f"{prompt_line(self.name)} The reference prompt's target is {self.target:.3f}.",
            "",
            "## Current state",
        ]
        if state.construction is not None:
            parts.append(f"A global `initial_circles` (numpy array of shape ({n}, 3), rows [x, y, r]) holds the "
                         f"current packing, with Σ r = {state.score:.10f} ({_gap(self.target - state.score)}). You may "
                         "start from it.")
        else:
            parts.append("There is no packing yet: write code that builds one from scratch (for example a "
                         "hexagonal or row-based start followed by constrained optimisation of centres and radii).")
        return prompt_with_previous_attempt(parts, state, value_name="sum of radii", digits=6)


def _gap(gap: float) -> str:
    return f"{gap:.6f} below the target" if gap > 0 else f"{-gap:.6f} above the target"


class CirclePacking26(CirclePacking):
    """ttd/CirclePacking26-v0: 26 circles; initial='record' starts from TTT-Discover's 2.6359773947542573
    (valid at tolerance 0; the record table's better SimpleTES packing needs the 1e-12 tolerance)."""

    name = "CirclePacking26"
    summary = "Circle packing: 26 circles in the unit square with the largest sum of radii"
    n = 26
    record_file = "our_best_circles.json"
    record = record_for("CirclePacking26")
    target = 2.636


class CirclePacking32(CirclePacking):
    """ttd/CirclePacking32-v0: 32 circles; initial='record' starts from 2.93957249964032 (TTT-Discover's
    program, run by us); the record table's best is SimpleTES's."""

    name = "CirclePacking32"
    summary = "Circle packing: 32 circles in the unit square with the largest sum of radii"
    n = 32
    record_file = "cp32_generated_from_new_our_best_32.json"
    record = record_for("CirclePacking32")
    target = 2.940
