"""Points with the smallest ratio of maximum to minimum distance (AlphaEvolve B.8).

For n points x_1..x_n in R^d the score is the squared ratio (Friedman's and AlphaEvolve's convention)

    R = max_{i<j} |x_i - x_j|^2 / min_{i<j} |x_i - x_j|^2,

lower is better; reward = 1/R. R is invariant under translation, rotation and scaling, so there is
no region and no absolute distinctness threshold: the points are valid when no two coincide
(min distance > 0). Squared distances of the exact float values are rationals, so R is computed
exactly (a certificate states it as that rational) and reported rounded up (an upper bound, as the
problem asks for).
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from ttd_envs.core.construction_problem import ArrayConstructionProblem
from ttd_envs.core.exact import Bound, fractions
from ttd_envs.core.program_problem import InvalidConstruction

INITIAL_PROGRAM = '''```python
def construct_points():
    """A triangular-lattice patch: the n lattice points nearest the origin."""
    n, d = 16, 2
    span = np.arange(-4, 5)
    grid = np.array([(i + j / 2, j * np.sqrt(3) / 2) for i in span for j in span])
    if d > 2:
        grid = np.column_stack([grid, np.zeros((len(grid), d - 2))])
    order = np.argsort(np.linalg.norm(grid - grid.mean(axis=0), axis=1), kind="stable")
    return grid[order[:n]]
```'''


def squared_distance_ratio(points: np.ndarray) -> Fraction:
    """max |x_i - x_j|^2 / min |x_i - x_j|^2 over pairs, exactly; InvalidConstruction on a repeated point."""
    exact = fractions(points)
    best_min, best_max, closest = None, Fraction(0), (0, 1)
    for i in range(len(exact)):
        for j in range(i + 1, len(exact)):
            d2 = sum((a - b) ** 2 for a, b in zip(exact[i], exact[j]))
            if best_min is None or d2 < best_min:
                best_min, closest = d2, (i, j)
            best_max = max(best_max, d2)
    if not best_min:
        raise InvalidConstruction(f"points {closest[0]} and {closest[1]} coincide: every pair must be distinct")
    return best_max / best_min


class MinMaxDistance(ArrayConstructionProblem):
    """ttd/MinMaxDistance-v0. Kwargs: `n` (default 16), `d` (default 2; the published instances are
    (16, 2) and (14, 3)), plus `initial`, `budget_s`, `timeout_s`, `cpus`."""

    name = "MinMaxDistance"
    key = "points"
    entry = "construct_points"
    value_name = "squared max/min distance ratio"
    summary = "Min/max distance ratio: 16 points in the plane (or n in d-D) with the smallest max/min distance ratio"
    default_instance = {"n": 16, "d": 2}

    def __init__(self, n: int = 16, d: int = 2, initial: str = "empty", budget_s: float = 60.0,
                 timeout_s: float | None = None, cpus: int = 1) -> None:
        if not (isinstance(n, int) and isinstance(d, int)) or n < 3 or d < 1:
            raise ValueError(f"need integers n >= 3 and d >= 1; got n={n!r}, d={d!r}")
        self.n, self.d = n, d
        self.summary = f"Min/max distance ratio: {n} points in {d}-D with the smallest max/min distance ratio"
        super().__init__({"n": n, "d": d}, initial, budget_s, timeout_s, cpus)

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.n, self.d)

    def exact_array(self, array: np.ndarray) -> Bound:
        return Bound.exact(squared_distance_ratio(array))

    def reward_for(self, score: float) -> float:
        return 1.0 / score

    def initial_program(self) -> str:
        return f"""```python
def construct_points():
    \"\"\"A triangular-lattice patch: the {self.n} lattice points nearest the origin.\"\"\"
    span = np.arange(-6, 7)
    grid = np.array([(i + j / 2, j * np.sqrt(3) / 2) for i in span for j in span])
    grid = np.column_stack([grid, np.zeros((len(grid), {self.d} - 2))]) if {self.d} > 2 else grid[:, :{self.d}]
    order = np.argsort(np.linalg.norm(grid + 0.01, axis=1), kind="stable")
    return grid[order[:{self.n}]]
```"""

    def statement(self) -> list[str]:
        return [f"Place {self.n} distinct points in R^{self.d} so that the ratio of the largest to the smallest "
                "pairwise distance is as small as possible.", "",
                "## Exact scoring",
                "The score is R = (max distance)^2 / (min distance)^2 over all pairs, computed exactly from the "
                "binary values of your coordinates (no tolerance); lower is better and reward = 1/R. R does not "
                "change under translation, rotation or scaling. Two coinciding points make the answer invalid."]
