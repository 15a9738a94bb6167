"""Exact arithmetic on the values a program returned, and bounds rounded the safe way.

Every float64 is a dyadic rational m * 2^e, so a construction given as floats can be checked with
no tolerance at all: `Fraction(x)` is the exact binary value (not the shortest decimal that prints
as `x`). A record claim is then a statement about the construction, never about rounding.

- Directed rounding: `float_down`/`float_up` and `decimal_down`/`decimal_up` round a rational to a
  float or to decimal text that is a true lower (upper) bound; `Bound` is the interval a
  certificate states (ttd_envs.certificates).
- Fast exact integers for 10^5 entries: an array of floats is an integer array times one power of
  two (`dyadic_integers`), and convolutions of such arrays are exact integers by Kronecker
  substitution (`convolve`: pack each array into one big integer, multiply once with CPython's
  Karatsuba, about 2 s for a 30 000-entry autoconvolution, unpack the coefficients).
- Enclosures of irrational scores: `sqrt_bounds`, `ln_bounds`, `PI_LOW`/`PI_HIGH`.
- Exact plane geometry: `orientation`, `convex_hull_area`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal, localcontext
from fractions import Fraction
from typing import Any

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


def decimal_down(q: Fraction, digits: int = 40) -> str:
    """q rounded down to `digits` significant digits, as text (a lower bound)."""
    return _directed(q, digits, math.floor)


def decimal_up(q: Fraction, digits: int = 40) -> str:
    """q rounded up to `digits` significant digits, as text (an upper bound)."""
    return _directed(q, digits, math.ceil)


def _directed(q: Fraction, digits: int, rounder) -> str:
    """floor or ceil of q at `digits` significant digits, for numerators and denominators of any size."""
    if q == 0:
        return "0"
    magnitude = int((abs(q.numerator).bit_length() - q.denominator.bit_length()) * math.log10(2))
    shift = digits - 1 - magnitude  # q * 10^shift has about `digits` digits before the point
    whole = rounder(q * Fraction(10) ** shift)
    while len(str(abs(whole))) != digits:  # the estimate of the magnitude can be one off either way
        shift += 1 if len(str(abs(whole))) < digits else -1
        whole = rounder(q * Fraction(10) ** shift)
    return str(Decimal(f"{whole}E{-shift}"))


@dataclass(frozen=True)
class Bound:
    """The true score lies in [lower, upper] (equal when the score is an exact rational)."""

    lower: Fraction
    upper: Fraction

    @classmethod
    def exact(cls, value: Fraction) -> Bound:
        return cls(value, value)

    @property
    def error_bound(self) -> float:
        """Half the width, rounded up to a float: |score - midpoint| is at most this."""
        return float(Fraction(decimal_up((self.upper - self.lower) / 2, 3)))

    def as_json(self) -> dict[str, Any]:
        return {"lower": decimal_down(self.lower, 40), "upper": decimal_up(self.upper, 40),
                "float": float((self.lower + self.upper) / 2), "error_bound": self.error_bound,
                "exact": self.lower == self.upper}


MAX_EXPONENT_SPREAD = 4096
"""Largest spread of binary exponents accepted (bits): keeps the integers of a hostile input small."""


def dyadic_integers(values: np.ndarray) -> tuple[list[int], int]:
    """Integers m_i and an exponent e with values[i] == m_i * 2**e exactly (finite input only)."""
    parts = [(0, 0) if x == 0.0 else _mantissa_exponent(float(x)) for x in values.tolist()]
    exponents = [e for m, e in parts if m]
    if not exponents:
        return [0] * len(parts), 0
    low = min(exponents)
    if max(exponents) - low > MAX_EXPONENT_SPREAD:
        raise ValueError(f"the values span more than 2^{MAX_EXPONENT_SPREAD} in magnitude")
    return [m << (e - low) if m else 0 for m, e in parts], low


def _mantissa_exponent(x: float) -> tuple[int, int]:
    fraction, exponent = math.frexp(x)
    return int(fraction * (1 << 53)), exponent - 53


def convolve(x: Sequence[int], y: Sequence[int]) -> list[int]:
    """The full linear convolution of two integer sequences, exactly (signs allowed)."""
    x_pos, x_neg = [max(v, 0) for v in x], [max(-v, 0) for v in x]
    y_pos, y_neg = [max(v, 0) for v in y], [max(-v, 0) for v in y]
    plus = _add(_convolve_nonnegative(x_pos, y_pos), _convolve_nonnegative(x_neg, y_neg))
    minus = _add(_convolve_nonnegative(x_pos, y_neg), _convolve_nonnegative(x_neg, y_pos))
    return [a - b for a, b in zip(plus, minus)]


def _add(a: list[int], b: list[int]) -> list[int]:
    return [p + q for p, q in zip(a, b)]


def _convolve_nonnegative(x: Sequence[int], y: Sequence[int]) -> list[int]:
    size = len(x) + len(y) - 1
    if not any(x) or not any(y):
        return [0] * size
    bits = max(x).bit_length() + max(y).bit_length() + min(len(x), len(y)).bit_length() + 1
    width = (bits + 7) // 8
    product = _pack(x, width) * _pack(y, width)
    raw = product.to_bytes(size * width + width, "little")
    return [int.from_bytes(raw[i * width:(i + 1) * width], "little") for i in range(size)]


def _pack(values: Sequence[int], width: int) -> int:
    return int.from_bytes(b"".join(v.to_bytes(width, "little") for v in values), "little")


def sqrt_fraction(q: Fraction, digits: int = 40) -> Decimal:
    """sqrt(q) to `digits` significant digits (for scores that are square roots of exact rationals)."""
    with localcontext() as context:
        context.prec = digits
        return (Decimal(q.numerator) / Decimal(q.denominator)).sqrt()


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
