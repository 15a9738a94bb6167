"""Circles in a rectangle of perimeter 4: n disjoint discs, largest sum of radii (AlphaEvolve B.13).

A packing is n rows [x, y, r]. Its rectangle is the circles' bounding box, W = max(x + r) - min(x - r)
and H likewise (any rectangle holding them is at least that large; its aspect ratio is free). It is
valid when, exactly and with no tolerance,

    r_i > 0,   (x_i - x_j)^2 + (y_i - y_j)^2 >= (r_i + r_j)^2   (touching allowed),   W + H <= 2,

and its score is sum_i r_i (higher is better; reward = the score), computed from the binary values
of the floats (exactly, in a certificate) and rounded down. No slack is given anywhere: a perimeter slack e is worth about 1.18e
in the sum, which is the size of the published "improvements" (the AE repository notebook's
np.isclose perimeter check admitted 2e-5). Zero radii are refused: they would be free circles.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from ttd_envs.core.construction_problem import ArrayConstructionProblem, finite_array
from ttd_envs.core.exact import Bound, fractions
from ttd_envs.core.program_problem import InvalidConstruction


def check_rectangle_packing(circles: np.ndarray) -> Fraction:
    """The exact sum of radii of a valid packing; InvalidConstruction naming the first broken rule."""
    exact = fractions(circles)
    for i, (_, _, r) in enumerate(exact):
        if r <= 0:
            raise InvalidConstruction(f"circle {i} has radius {float(r):.6g}: every radius must be positive")
    for i in range(len(exact)):
        xi, yi, ri = exact[i]
        for j in range(i + 1, len(exact)):
            xj, yj, rj = exact[j]
            gap = (xi - xj) ** 2 + (yi - yj) ** 2 - (ri + rj) ** 2
            if gap < 0:
                raise InvalidConstruction(f"circles {i} and {j} overlap: squared centre distance falls short of "
                                          f"(r_{i} + r_{j})^2 by {float(-gap):.3g} (checked exactly)")
    width = max(x + r for x, _, r in exact) - min(x - r for x, _, r in exact)
    height = max(y + r for _, y, r in exact) - min(y - r for _, y, r in exact)
    if width + height > 2:
        raise InvalidConstruction(f"the bounding rectangle has width + height = {float(width + height):.17g} > 2 "
                                  "(perimeter above 4, checked exactly)")
    return sum(r for _, _, r in exact)


class CirclePackingRectangle(ArrayConstructionProblem):
    """ttd/CirclePackingRectangle-v0. Kwargs: `n` (default 21), plus `initial`, `budget_s`,
    `timeout_s`, `cpus`. The program returns an (n, 3) array of [x, y, r] rows."""

    name = "CirclePackingRectangle"
    key = "circles"
    entry = "construct_circles"
    value_name = "sum of radii"
    summary = "Circles in a rectangle: 21 disjoint circles in a rectangle of perimeter 4, largest sum of radii"
    default_instance = {"n": 21}

    def __init__(self, n: int = 21, initial: str = "empty", budget_s: float = 60.0,
                 timeout_s: float | None = None, cpus: int = 1) -> None:
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive integer; got {n!r}")
        self.n = n
        self.summary = f"Circles in a rectangle: {n} disjoint circles in a rectangle of perimeter 4, largest sum of radii"
        super().__init__({"n": n}, initial, budget_s, timeout_s, cpus)

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.n, 3)

    def to_array(self, value: object) -> np.ndarray:
        return finite_array(value, self.shape, "the circles [x, y, r]")

    def exact_array(self, array: np.ndarray) -> Bound:
        return Bound.exact(check_rectangle_packing(array))

    def reward_for(self, score: float) -> float:
        return score

    def initial_program(self) -> str:
        return f"""```python
N = {self.n}

def construct_circles():
    \"\"\"Equal circles on a square grid in the unit square (width + height = 2), shrunk a little.\"\"\"
    k = int(np.ceil(np.sqrt(N)))
    r = 0.5 / k
    cells = [(i, j) for j in range(k) for i in range(k)][:N]
    return np.array([[(2 * i + 1) * r, (2 * j + 1) * r, r * (1 - 1e-12)] for i, j in cells])
```"""

    def statement(self) -> list[str]:
        return [f"Place {self.n} disjoint circles in a rectangle of perimeter 4 (width + height = 2, any aspect ratio) "
                "so that the sum of their radii is as large as possible.", "",
                "## Exact scoring",
                "The rectangle is your circles' bounding box: W = max(x + r) - min(x - r), H likewise. Valid means "
                "every r > 0, every pair has (x_i - x_j)^2 + (y_i - y_j)^2 >= (r_i + r_j)^2, and W + H <= 2, all "
                "checked exactly on the binary values of your floats with no tolerance (touching is fine). The "
                "score is the sum of radii; higher is better and reward = the score. An invalid packing scores 0."]
