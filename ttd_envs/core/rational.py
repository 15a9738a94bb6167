"""Exact integer arithmetic on float constructions, fast enough for 10^5 entries.

Every finite float64 is m * 2^e with integers m and e, so an array of floats is an integer array
times one common power of two. Convolutions of such arrays are then exact integers, computed by
Kronecker substitution: pack each array into one big integer, multiply once (CPython's Karatsuba:
about 2 s for a 30 000-entry autoconvolution), and unpack the coefficients. Certificates use this
to state a score exactly instead of as a rounded float.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from decimal import Decimal
from fractions import Fraction

import numpy as np

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
