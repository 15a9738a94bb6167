"""Heilbronn problems: n points whose smallest triangle is as large as possible (AlphaEvolve B.9, B.10).

`region="triangle"`: the points lie in the equilateral triangle T with vertices (0, 0), (1, 0),
(1/2, sqrt(3)/2), on its boundary or inside; score = min_{i<j<k} area(x_i x_j x_k) / area(T).
The problem is affine-invariant, so this is the unit-area-triangle problem. Containment is decided
exactly without sqrt(3): for y >= 0, y <= sqrt(3) x  <=>  x >= 0 and y^2 <= 3 x^2 (likewise with
1 - x), so a point outside by 1e-18 is outside.

`region="convex"`: the region is the convex hull of the points (the smallest convex region holding
them); score = min triangle area / area(hull). It does not depend on position, scale or shear.

Both: higher is better, reward = the score. Triangle areas, the hull (monotone chain with exact
orientation tests) and its area (shoelace) are exact rationals; three collinear or two repeated
points are valid and score 0; points all on one line have no region and are invalid. A
certificate states the convex score as that rational, the triangle score as an interval around
sqrt(exact square) about 1e-39 wide (`sqrt_bounds`, checked by squaring).
"""

from __future__ import annotations

from fractions import Fraction
from itertools import combinations

import numpy as np

from ttd_envs.core.construction_problem import ArrayConstructionProblem
from ttd_envs.core.exact import Bound, convex_hull_area, fractions, orientation, sqrt_bounds
from ttd_envs.core.program_problem import InvalidConstruction

DEFAULT_N = {"triangle": 11, "convex": 13}
SQRT_DIGITS = 40
"""The triangle score is sqrt of an exact rational: enclosed about 1e-39 wide relative, so a
certificate's interval is far inside the 1e-14 tie tolerance."""


def outside_triangle(x: Fraction, y: Fraction) -> bool:
    """True when (x, y) lies outside the closed equilateral triangle (0,0), (1,0), (1/2, sqrt(3)/2)."""
    return y < 0 or x < 0 or x > 1 or y * y > 3 * x * x or y * y > 3 * (1 - x) * (1 - x)


def smallest_triangle(points: list[tuple]) -> tuple[Fraction, tuple[int, int, int]]:
    """Twice the smallest triangle area over all triples, exactly, and the triple that attains it."""
    best, where = None, (0, 1, 2)
    for i, j, k in combinations(range(len(points)), 3):
        twice = abs(orientation(points[i], points[j], points[k]))
        if best is None or twice < best:
            best, where = twice, (i, j, k)
    return best, where


def heilbronn_score(points: np.ndarray, region: str) -> Fraction:
    """The exact square of the score for the triangle (sqrt(3) makes it irrational), the score for convex."""
    exact = [tuple(p) for p in fractions(points)]
    if region == "triangle":
        for index, (x, y) in enumerate(exact):
            if outside_triangle(x, y):
                raise InvalidConstruction(f"point {index} ({float(x):.17g}, {float(y):.17g}) lies outside the triangle "
                                          "(0, 0), (1, 0), (1/2, sqrt(3)/2) (checked exactly, no tolerance)")
        twice, _ = smallest_triangle(exact)
        return (Fraction(twice, 2) * 4) ** 2 / 3  # (min area / (sqrt(3)/4))^2
    hull = convex_hull_area(exact)
    if hull == 0:
        raise InvalidConstruction("the points lie on one line: their convex hull has no area")
    twice, _ = smallest_triangle(exact)
    return Fraction(twice, 2) / hull


class Heilbronn(ArrayConstructionProblem):
    """ttd/Heilbronn-v0. Kwargs: `region` ("triangle" | "convex"), `n` (default 11 for the triangle,
    13 for convex; 14 is the other published convex instance), plus `initial`, `budget_s`,
    `timeout_s`, `cpus`."""

    name = "Heilbronn"
    key = "points"
    entry = "construct_points"
    value_name = "normalised smallest triangle area"
    summary = "Heilbronn: 11 points in a triangle (or n in a convex region) with the largest smallest triangle"
    default_instance = {"region": "triangle", "n": 11}

    def __init__(self, region: str = "triangle", n: int | None = None, initial: str = "empty", budget_s: float = 60.0,
                 timeout_s: float | None = None, cpus: int = 1) -> None:
        if region not in DEFAULT_N:
            raise ValueError(f"region must be 'triangle' or 'convex'; got {region!r}")
        n = DEFAULT_N[region] if n is None else n
        if not isinstance(n, int) or n < 3:
            raise ValueError(f"n must be an integer >= 3; got {n!r}")
        self.region, self.n = region, n
        where = "an equilateral triangle" if region == "triangle" else "a convex region"
        self.summary = f"Heilbronn ({region}): {n} points in {where} with the largest smallest triangle"
        super().__init__({"region": region, "n": n}, initial, budget_s, timeout_s, cpus)

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.n, 2)

    def exact_array(self, array: np.ndarray) -> Bound:
        exact = heilbronn_score(array, self.region)
        if self.region == "triangle":
            return Bound(*sqrt_bounds(exact, SQRT_DIGITS))  # sqrt of the exact square, checked by squaring
        return Bound.exact(exact)

    def reward_for(self, score: float) -> float:
        return score

    def initial_program(self) -> str:
        if self.region == "triangle":
            body = """    # Points on a circle inside the triangle, at irrational angles: no three collinear.
    t = 2 * np.pi * (np.arange(N) + 0.5) / N + 0.1
    centre, radius = np.array([0.5, np.sqrt(3) / 6]), 0.25
    return centre + radius * np.column_stack([np.cos(t), np.sin(t)])"""
        else:
            body = """    # A regular polygon: its vertices are in convex position, so no three are collinear.
    t = 2 * np.pi * np.arange(N) / N
    return np.column_stack([np.cos(t), np.sin(t)])"""
        return f"```python\nN = {self.n}\n\ndef construct_points():\n{body}\n```"

    def statement(self) -> list[str]:
        if self.region == "triangle":
            rule = ("Every point must lie in the closed equilateral triangle with vertices (0, 0), (1, 0) and "
                    "(1/2, sqrt(3)/2), checked exactly with no tolerance. The score is the smallest area of a triangle "
                    "formed by three of your points, divided by the triangle's area sqrt(3)/4.")
        else:
            rule = ("The region is the convex hull of your points (any position, scale or shear is equivalent). The "
                    "score is the smallest area of a triangle formed by three of your points, divided by the area of "
                    "their convex hull. Points all on one line are invalid.")
        return [f"Place {self.n} points so that the smallest triangle they form is as large as possible.", "",
                "## Exact scoring", rule,
                "Areas are computed exactly from the binary values of your coordinates; higher is better and reward = "
                "the score. Three collinear points (or a repeated point) give score 0."]
