"""Exact arithmetic on the values a program returned.

Every float64 is a dyadic rational, so a construction given as floats can be checked with no
tolerance at all: `Fraction(x)` is the exact binary value (not the shortest decimal that prints as
`x`). A record claim is then a statement about the construction, never about rounding.
"""

from __future__ import annotations

import math
from decimal import Decimal, localcontext
from fractions import Fraction

import numpy as np


def fractions(array: np.ndarray) -> list:
    """The exact rational value of every entry of a finite float (or integer) array, nested like it."""
    return np.vectorize(Fraction, otypes=[object])(array).tolist() if array.size else array.tolist()


def float_up(q: Fraction) -> float:
    """The smallest float >= q: an upper bound that rounding can only loosen."""
    x = float(q)
    return math.nextafter(x, math.inf) if Fraction(x) < q else x


def float_down(q: Fraction) -> float:
    """The largest float <= q: a lower bound that rounding can only loosen."""
    x = float(q)
    return math.nextafter(x, -math.inf) if Fraction(x) > q else x


def sqrt_fraction(q: Fraction, digits: int = 40) -> Decimal:
    """sqrt(q) to `digits` significant digits (for scores that are square roots of exact rationals)."""
    with localcontext() as context:
        context.prec = digits
        return (Decimal(q.numerator) / Decimal(q.denominator)).sqrt()


def orientation(a: tuple, b: tuple, c: tuple) -> Fraction:
    """Twice the signed area of the triangle abc: > 0 when it turns left, 0 when collinear."""
    return (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])


def convex_hull_area(points: list[tuple]) -> Fraction:
    """Exact area of the convex hull of 2-D rational points (monotone chain, shoelace formula)."""
    ordered = sorted(set(points))
    if len(ordered) < 3:
        return Fraction(0)

    def chain(sequence: list[tuple]) -> list[tuple]:
        hull: list[tuple] = []
        for p in sequence:
            while len(hull) >= 2 and orientation(hull[-2], hull[-1], p) <= 0:
                hull.pop()
            hull.append(p)
        return hull

    lower, upper = chain(ordered), chain(ordered[::-1])
    hull = lower[:-1] + upper[:-1]
    twice = sum(hull[i][0] * hull[(i + 1) % len(hull)][1] - hull[(i + 1) % len(hull)][0] * hull[i][1]
                for i in range(len(hull)))
    return abs(Fraction(twice)) / 2


PI_TEXT = "3.14159265358979323846264338327950288419716939937510582097494459"
"""pi to 63 significant digits; PI_LOW < pi < PI_HIGH."""
PI_LOW = Fraction(Decimal(PI_TEXT))
PI_HIGH = PI_LOW + Fraction(1, 10 ** 62)


def ln_bounds(n: int, digits: int = 60) -> tuple[Fraction, Fraction]:
    """An interval holding ln(n) for an integer n >= 1. Decimal's ln is correctly rounded to
    `digits` significant digits, so one unit of the last digit on either side encloses it."""
    with localcontext() as context:
        context.prec = digits
        value = Fraction(Decimal(n).ln())
    slack = abs(value) / 10 ** (digits - 1)
    return value - slack, value + slack


def sqrt_bounds(q: Fraction, digits: int = 40) -> tuple[Fraction, Fraction]:
    """An interval holding sqrt(q) (q >= 0), about 10^-digits wide relative, checked by squaring."""
    x = Fraction(sqrt_fraction(q, digits))
    low, high = x * (1 - Fraction(1, 10 ** (digits - 1))), x * (1 + Fraction(1, 10 ** (digits - 1)))
    if not low * low <= q <= high * high:
        raise ArithmeticError(f"sqrt_bounds: the enclosure of sqrt({float(q)}) failed its exact check")
    return low, high
