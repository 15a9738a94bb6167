"""The uncertainty inequality (AlphaEvolve B.4): an even function whose last sign change is early.

For an even real f with Fourier transform f^(xi) = ∫ f(x) e^{-2 pi i x xi} dx, let
A(f) = inf{r > 0 : f(x) >= 0 for all |x| >= r}. C4 is the largest constant with A(f) A(f^) >= C4 for
every even f with f(0) <= 0 and f^(0) <= 0 (AlphaEvolve writes "< 0"; see docs/envs/uncertainty_inequality.md).
Every admissible f certifies C4 <= A(f) A(f^). Lower is better; reward = 1 / bound.

Both published families are +1 eigenfunctions of the Fourier transform, f(x) = g(2 pi x^2) e^{-pi x^2}
with g in the span of B_j(t) = e^{-E} t^{2j}, E = t D^2 + D/2 (that is H_4j(sqrt t) / 16^j for the
Hermite polynomials H, and a multiple of the Laguerre polynomial L_2j^(-1/2)(t)). So f^ = f,
f(0) = g(0) = 0, and the bound is r / (2 pi), r = the last sign change of g on (0, inf):

- route "laguerre" (default; Cohn and Goncalves 2019): a program returns k double roots z_1..z_k > 0;
  g(0) = 0, g'(0) = 1, g(z_i) = g'(z_i) = 0 fix g in span{B_0..B_2k+1}.
- route "hermite" (Goncalves, Oliveira e Silva and Steinerberger 2017): a program returns c_0..c_m-1,
  g = sum c_j H_4j(sqrt t) + c_m H_4m(sqrt t) with c_m chosen so that g(0) = 0.

Either way the sign of g is chosen positive at infinity. Scoring is exact: every float is a dyadic
rational, g is found by fraction-free elimination over the integers, and r is isolated among the
real roots of odd multiplicity (Descartes' rule of signs with bisection, Vincent's theorem) and
enclosed to about 1e-35 relative, so no grid, cell or cancellation can hide a later sign change.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from fractions import Fraction
from importlib import resources
from typing import Any

import numpy as np

from ttd_envs.core.arguments import one_of
from ttd_envs.core.exact import PI_HIGH, PI_LOW, Bound, dyadic_integers, float_up
from ttd_envs.core.problem import TrainerDefaults
from ttd_envs.core.program_problem import (
    DEFAULT_PRELOAD,
    InvalidConstruction,
    ProgramBudget,
    PythonProgramProblem,
    budget_and_record_lines,
    prompt_with_previous_attempt,
    real_array,
)
from ttd_envs.core.state import State
from ttd_envs.records import prompt_line, record_for

ROUTES = ("laguerre", "hermite")
MAX_ROOTS, MAX_ROOTS_CAP, MAX_COEFFICIENTS = 16, 20, 12
ROOT_RANGE = (1e-3, 300.0)
"""Allowed double roots (EA caps them at 300); the floor keeps the exact integers small."""
COEFFICIENT_RANGE = 2.0 ** -200, 2.0 ** 200
REFINE_BITS = 120
"""The last sign change is enclosed in an interval 2^-120 times its size wide."""
MAX_DEPTH = 4000


class RootIsolationError(ArithmeticError):
    """The Descartes search did not isolate a root within MAX_DEPTH halvings (not seen in practice)."""


# -- integer polynomials: lists of ints, lowest degree first ------------------------------------------
Poly = list[int]


def _trim(p: Poly) -> Poly:
    while len(p) > 1 and p[-1] == 0:
        p = p[:-1]
    return p


def _multiply(p: Poly, q: Poly) -> Poly:
    out = [0] * (len(p) + len(q) - 1)
    for i, a in enumerate(p):
        if a:
            for j, b in enumerate(q):
                out[i + j] += a * b
    return out


def _content_free(p: Poly) -> Poly:
    """p divided by the gcd of its coefficients (same roots, smaller integers)."""
    g = math.gcd(*p)
    return [a // g for a in p] if g > 1 else p


def _sign_variations(p: Poly) -> int:
    signs = [a > 0 for a in p if a]
    return sum(a != b for a, b in zip(signs, signs[1:]))


def _taylor_shift_one(p: Poly) -> Poly:
    """p(x + 1), by repeated synthetic division (d^2 / 2 additions)."""
    a = list(p)
    n = len(a)
    for i in range(n - 1):
        for j in range(n - 2, i - 1, -1):
            a[j] += a[j + 1]
    return a


def _roots_in_unit_interval_bound(p: Poly) -> int:
    """Descartes' bound on the roots of p in (0, 1): sign variations of (1 + x)^d p(1 / (1 + x))."""
    return _sign_variations(_taylor_shift_one(p[::-1]))


def _halves(p: Poly) -> tuple[Poly, Poly]:
    """(2^d p(x / 2), 2^d p((x + 1) / 2)): p on (0, 1/2) and on (1/2, 1), each mapped to (0, 1)."""
    d = len(p) - 1
    left = [a << (d - i) for i, a in enumerate(p)]
    return left, _taylor_shift_one(left)


def _evaluate_dyadic(p: Poly, numerator: int, bits: int) -> int:
    """2^(bits d) p(numerator / 2^bits), exactly (its sign is the sign of p there)."""
    total, power = 0, 1
    for a in reversed(p):
        total = total * numerator + a * power
        power <<= bits
    return total


def _root_bound_bits(p: Poly) -> int:
    """b with every root of p below 2^b in magnitude (Fujiwara: 2 max_i |a_(d-i) / a_d|^(1/i))."""
    top = abs(p[-1]).bit_length() - 1
    exponents = [-(-(abs(a).bit_length() - top) // i) for i, a in enumerate(reversed(p[:-1]), start=1) if a]
    return max(exponents, default=0) + 1


def largest_positive_root(p: Poly, refine_bits: int = REFINE_BITS) -> tuple[Fraction, Fraction]:
    """An interval [low, high] holding the largest positive root of a square-free integer polynomial,
    refined to width 2^-refine_bits relative (low == high when the root is dyadic).
    Raises ValueError when p has no positive root."""
    p = _trim(p)
    while len(p) > 1 and p[0] == 0:  # roots at 0 are not positive
        p = p[1:]
    if len(p) == 1:
        raise ValueError("the polynomial has no positive root")
    bound_bits = _root_bound_bits(p)
    scaled = [a << (bound_bits * i) if bound_bits >= 0 else a << (-bound_bits * (len(p) - 1 - i))
              for i, a in enumerate(p)]  # a multiple of p(2^bound_bits x): the positive roots now lie in (0, 1)
    found = _rightmost_root(scaled)
    if found is None:
        raise ValueError("the polynomial has no positive root")
    numerator, bits, exact = found
    scale = Fraction(2) ** bound_bits
    if exact:
        return (Fraction(numerator, 1 << bits) * scale,) * 2
    positive_at_infinity = scaled[-1] > 0
    low, high = numerator, numerator + 1  # the root lies in (low, high) / 2^bits
    while low == 0 or (high - low) << refine_bits > low:
        low, high, bits = 2 * low, 2 * high, bits + 1
        middle = low + 1
        value = _evaluate_dyadic(scaled, middle, bits)
        if value == 0:
            return (Fraction(middle, 1 << bits) * scale,) * 2
        if (value > 0) == positive_at_infinity:
            high = middle  # beyond the largest root p has the sign it has at infinity
        else:
            low = middle
    return Fraction(low, 1 << bits) * scale, Fraction(high, 1 << bits) * scale


def _rightmost_root(p: Poly) -> tuple[int, int, bool] | None:
    """The rightmost root of p in (0, 1): (n, bits, exact) with the root in (n, n+1) / 2^bits, or
    equal to n / 2^bits when `exact`. Right halves are searched first; None when there is none."""
    stack: list[tuple[Poly | None, int, int]] = [(p, 0, 0)]  # p on (n, n+1)/2^bits mapped to (0, 1); None: the point n/2^bits
    while stack:
        q, n, bits = stack.pop()
        if q is None:
            return n, bits, True
        if bits > MAX_DEPTH:
            raise RootIsolationError(f"no isolating interval after {MAX_DEPTH} halvings")
        variations = _roots_in_unit_interval_bound(q)
        if variations == 0:
            continue
        if variations == 1:
            return n, bits, False
        left, right = _halves(q)
        stack.append((left, 2 * n, bits + 1))  # popped last
        if right[0] == 0:  # the midpoint is a root
            stack.append((None, 2 * n + 1, bits + 1))
            right = right[1:]
        stack.append((right, 2 * n + 1, bits + 1))  # popped first
    return None


# -- square-free part of odd multiplicity ---------------------------------------------------------
SQUAREFREE_PRIMES = (2**61 - 1, 2**89 - 1, 2**107 - 1)


def _degree_of_gcd_mod(p: Poly, q: Poly, prime: int) -> int:
    a, b = _trim([x % prime for x in p]), _trim([x % prime for x in q])
    while b != [0]:
        inverse = pow(b[-1], -1, prime)
        while len(a) >= len(b) and a != [0]:
            factor, shift = a[-1] * inverse % prime, len(a) - len(b)
            a = _trim([(x - factor * b[i - shift]) % prime if i >= shift else x for i, x in enumerate(a)][:-1] or [0])
        a, b = b, a
    return len(a) - 1


def _is_squarefree(p: Poly) -> bool:
    """True when gcd(p, p') is constant modulo a prime not dividing the leading coefficient: then it
    is constant over Q too (a repeated factor would survive the reduction). False: undecided."""
    derivative = [i * a for i, a in enumerate(p)][1:]
    return any(p[-1] % prime and _degree_of_gcd_mod(p, derivative, prime) == 0 for prime in SQUAREFREE_PRIMES)


QPoly = list[Fraction]


def _qtrim(p: QPoly) -> QPoly:
    while len(p) > 1 and p[-1] == 0:
        p = p[:-1]
    return p


def _qdivmod(p: QPoly, q: QPoly) -> tuple[QPoly, QPoly]:
    p, quotient = list(p), [Fraction(0)] * max(len(p) - len(q) + 1, 1)
    while len(p) >= len(q) and any(p):
        factor, shift = p[-1] / q[-1], len(p) - len(q)
        quotient[shift] = factor
        for i, b in enumerate(q):
            p[i + shift] -= factor * b
        p = _qtrim(p[:-1]) if len(p) > 1 else [Fraction(0)]
    return quotient, p


def _qgcd(p: QPoly, q: QPoly) -> QPoly:
    while any(q):
        p, q = q, _qdivmod(p, q)[1]
    return [a / p[-1] for a in p]


def _qderivative(p: QPoly) -> QPoly:
    return [i * a for i, a in enumerate(p)][1:] or [Fraction(0)]


def _qsubtract(p: QPoly, q: QPoly) -> QPoly:
    size = max(len(p), len(q))
    return _qtrim([(p[i] if i < len(p) else 0) - (q[i] if i < len(q) else 0) for i in range(size)])


def _qmultiply(p: QPoly, q: QPoly) -> QPoly:
    out = [Fraction(0)] * (len(p) + len(q) - 1)
    for i, a in enumerate(p):
        for j, b in enumerate(q):
            out[i + j] += a * b
    return out


def odd_multiplicity_part(p: Poly) -> Poly:
    """The square-free integer polynomial whose roots are the roots of odd multiplicity of p: the
    points where p changes sign. Square-free p (the generic case) is returned as it is; otherwise
    Yun's square-free factorisation over Q keeps the factors of odd multiplicity."""
    p = _content_free(_trim(p))
    if _is_squarefree(p):
        return p
    f = [Fraction(a) for a in p]
    common = _qgcd(f, _qderivative(f))
    b = _qdivmod(f, common)[0]  # Yun: b_i is the product of the factors of multiplicity >= i
    d = _qsubtract(_qdivmod(_qderivative(f), common)[0], _qderivative(b))
    odd, multiplicity = [Fraction(1)], 1
    while len(b) > 1:
        factor = _qgcd(b, d)  # the factors of multiplicity exactly `multiplicity`
        if multiplicity % 2:
            odd = _qmultiply(odd, factor)
        b = _qtrim(_qdivmod(b, factor)[0])
        d = _qsubtract(_qdivmod(d, factor)[0], _qderivative(b))
        multiplicity += 1
    denominator = math.lcm(*(x.denominator for x in odd))
    return _content_free([int(x * denominator) for x in odd])


# -- the two families ------------------------------------------------------------------------------
def _solve(matrix: list[list[int]], rhs: list[int]) -> tuple[list[int], int] | None:
    """Integers X and D != 0 with matrix . (X / D) = rhs, exactly, or None when the matrix is singular.

    Fraction-free Bareiss elimination, then back substitution on X = D x, where D is the last pivot
    (the determinant up to sign): every division is exact, and no gcd is ever taken."""
    n = len(matrix)
    a = [row[:] + [b] for row, b in zip(matrix, rhs)]
    previous = 1
    for k in range(n):
        candidates = [i for i in range(k, n) if a[i][k]]
        if not candidates:
            return None
        pivot = min(candidates, key=lambda i: a[i][k].bit_length())  # small pivots keep the integers small
        a[k], a[pivot] = a[pivot], a[k]
        pivot_row, pivot_value = a[k], a[k][k]
        for i in range(k + 1, n):
            row, factor = a[i], a[i][k]
            for j in range(k + 1, n + 1):
                row[j] = (row[j] * pivot_value - factor * pivot_row[j]) // previous
            row[k] = 0
        previous = pivot_value
    determinant = a[n - 1][n - 1]
    x = [0] * n
    for i in range(n - 1, -1, -1):
        x[i] = (a[i][n] * determinant - sum(a[i][j] * x[j] for j in range(i + 1, n))) // a[i][i]
    return x, determinant


def _exp_e_row(odd: int, top: int, shift: int) -> list[int]:
    """Row `odd` of e^{cE} on the monomials u^0..u^top, c = 2^(shift+1), where E = u D^2 + D/2 maps
    u^p to p (p - 1/2) u^(p-1): e^{cE} u^p has coefficient 2^(shift m) C(p, m) (2p-1)(2p-3)...(2p-2m+1)
    at u^(p-m)."""
    row = [0] * (top + 1)
    for p in range(odd, top + 1):
        m = p - odd
        row[p] = (math.comb(p, m) * math.prod(range(2 * p - 1, 2 * p - 2 * m, -2))) << (shift * m)
    return row


def laguerre_cofactor(roots: list[int], shift: int) -> Poly | None:
    """The q with g = u (u - a_1)^2 ... (u - a_k)^2 q(u), q(0) > 0, g in span{e^{-cE} u^2j : j <= 2k+1},
    for integer double roots a_i = 2^(shift+1) z_i (u = 2^(shift+1) t); None when the conditions are singular.

    g is in that span exactly when e^{cE} g has no odd powers of u (2k+1 linear conditions on the
    2k+2 coefficients of q); q(0) = 1 fixes the scale, and g'(0) > 0 follows."""
    w = [0, 1]
    for a in roots:
        w = _multiply(w, [a * a, -2 * a, 1])
    top = 2 * len(w) - 2  # deg g = 4k + 2
    rows = []
    for odd in range(1, top, 2):
        k_row = _exp_e_row(odd, top, shift)
        rows.append(_content_free([sum(k_row[l + i] * c for i, c in enumerate(w) if l + i <= top)
                                   for l in range(len(w))]))
    columns = [math.gcd(*(row[l] for row in rows)) or 1 for l in range(1, len(w))]
    matrix = [[row[l] // columns[l - 1] for l in range(1, len(w))] for row in rows]
    solution = _solve(matrix, [-row[0] for row in rows])
    if solution is None:
        return None
    scaled, determinant = solution  # q_l = scaled_l / (determinant * columns_l), q_0 = 1
    common = math.lcm(*columns)
    q = [determinant * common] + [x * (common // c) for x, c in zip(scaled, columns)]
    return _content_free(q if determinant > 0 else [-v for v in q])


def hermite_t_polynomials(count: int) -> list[Poly]:
    """H_0, H_4, ..., H_4(count-1) (physicists' Hermite) as integer polynomials in t = y^2."""
    previous, current = [1], [0, 2]  # H_0, H_1 in y
    even = {0: [1]}
    for n in range(1, 4 * (count - 1)):
        nxt = [0] + [2 * a for a in current]
        for i, a in enumerate(previous):
            nxt[i] -= 2 * n * a
        previous, current = current, nxt
        if (n + 1) % 4 == 0:
            even[n + 1] = current[::2]
    return [even[4 * j] for j in range(count)]


def hermite_cofactor(coefficients: list[int]) -> Poly | None:
    """g / t for g = sum_{j<m} c_j H_4j + c_m H_4m, c_m set so that g(0) = 0 (integer c_j, up to a
    common positive or negative factor, which moves no root). None when every c_j is 0."""
    if not any(coefficients):
        return None
    m = len(coefficients)
    basis = hermite_t_polynomials(m + 1)
    at_zero = sum(c * h[0] for c, h in zip(coefficients, basis))
    g = [0] * len(basis[-1])
    for c, h in zip(coefficients, basis):
        for i, a in enumerate(h):
            g[i] += c * a * basis[-1][0]
    for i, a in enumerate(basis[-1]):
        g[i] -= at_zero * a
    return _trim(g[1:])


# -- validation and scoring ------------------------------------------------------------------------
def _finite_vector(values: Any, what: str, most: int) -> np.ndarray:
    array = real_array(values, what)
    if array.ndim != 1:
        raise InvalidConstruction(f"{what} must be a flat list of numbers; got shape {array.shape}")
    if not 1 <= array.size <= most:
        raise InvalidConstruction(f"{what}: need between 1 and {most} numbers; got {array.size}")
    if not np.all(np.isfinite(array)):
        raise InvalidConstruction(f"{what} contain NaN or inf")
    return array


def double_roots(values: Any, max_roots: int = MAX_ROOTS) -> np.ndarray:
    """The prescribed double roots z_1 < ... < z_k as float64. Raises InvalidConstruction: not a flat
    list of 1..max_roots finite reals, a root outside ROOT_RANGE (z <= 0 included), or a repeat."""
    z = np.sort(_finite_vector(values, "the double roots", max_roots))
    low, high = ROOT_RANGE
    if z[0] <= 0:
        raise InvalidConstruction(f"the double roots must be positive (g has its simple root at 0); got {float(z[0])!r}")
    if z[0] < low or z[-1] > high:
        bad = z[0] if z[0] < low else z[-1]
        raise InvalidConstruction(f"every double root must lie in [{low:g}, {high:g}]; got {float(bad)!r}")
    if np.any(np.diff(z) == 0):
        raise InvalidConstruction("the double roots must be distinct: a repeated root makes the conditions singular")
    return z


def hermite_coefficients(values: Any, max_coefficients: int = MAX_COEFFICIENTS) -> np.ndarray:
    """c_0..c_m-1 as float64. Raises InvalidConstruction: not a flat list of 1..max_coefficients
    finite reals, all zero (g would vanish), or a nonzero |c| outside [2^-200, 2^200]."""
    c = _finite_vector(values, "the Hermite coefficients", max_coefficients)
    nonzero = np.abs(c[c != 0])
    if nonzero.size == 0:
        raise InvalidConstruction("the Hermite coefficients are all zero, so g = 0 and f = 0 certifies nothing")
    low, high = COEFFICIENT_RANGE
    if nonzero.min() < low or nonzero.max() > high:
        raise InvalidConstruction("every nonzero Hermite coefficient must be between 2^-200 and 2^200 in magnitude")
    return c


def last_sign_change(cofactor: Poly, scale_bits: int) -> tuple[Fraction, Fraction]:
    """[low, high] around r = the last sign change on (0, inf) of g = t (...)^2 cofactor, where the
    cofactor is in u = 2^scale_bits t. Raises InvalidConstruction when there is none."""
    try:
        low, high = largest_positive_root(odd_multiplicity_part(cofactor))
    except ValueError:
        raise InvalidConstruction("g never changes sign on (0, inf), so this f certifies nothing") from None
    scale = Fraction(1, 1 << scale_bits)
    return low * scale, high * scale


def laguerre_interval(z: np.ndarray) -> Bound:
    """The C4 bound r / (2 pi) of validated double roots, enclosed rigorously."""
    mantissas, exponent = dyadic_integers(z)  # z_i = mantissas_i 2^exponent
    shift = max(-exponent, 1) - 1  # u = 2^(shift+1) t makes every double root an integer
    cofactor = laguerre_cofactor([m << (exponent + shift + 1) for m in mantissas], shift)
    if cofactor is None:
        raise InvalidConstruction("these double roots make the linear conditions singular (no unique g); move them")
    return _c4_bound(*last_sign_change(cofactor, shift + 1))


def hermite_interval(c: np.ndarray) -> Bound:
    mantissas, _ = dyadic_integers(c)  # a common power of two moves no root
    cofactor = hermite_cofactor(mantissas)
    if cofactor is None:
        raise InvalidConstruction("the Hermite coefficients are all zero, so g = 0 and f = 0 certifies nothing")
    return _c4_bound(*last_sign_change(cofactor, 0))


def _c4_bound(low: Fraction, high: Fraction) -> Bound:
    return Bound(low / (2 * PI_HIGH), high / (2 * PI_LOW))


def laguerre_score(values: Any) -> float:
    """Validate, then the C4 bound rounded up (what the reward is computed from): `evaluate_bound`
    for Laguerre programs. Raises ValueError (InvalidConstruction) saying why."""
    return float_up(laguerre_interval(double_roots(values)).upper)


def hermite_score(values: Any) -> float:
    return float_up(hermite_interval(hermite_coefficients(values)).upper)


@dataclass(frozen=True)
class Route:
    """What differs between the two families: the program's entry, its input, the file key."""

    entry: str
    key: str
    construction_input: str
    scorer: str
    what: str


ROUTE_SPECS = {
    "laguerre": Route("propose_roots", "roots", "initial_roots", "laguerre_score", "double roots z_1..z_k"),
    "hermite": Route("propose_coefficients", "coefficients", "initial_coefficients", "hermite_score",
                     "Hermite coefficients c_0..c_m-1"),
}

CONSTRUCTIONS = {
    "together_13": ("laguerre", "uncertainty_together_13.json"),
    "alphaevolve_12": ("laguerre", "uncertainty_alphaevolve_12.json"),
    "alphaevolve_6": ("laguerre", "uncertainty_alphaevolve_6.json"),
    "alphaevolve_hermite": ("hermite", "uncertainty_alphaevolve_hermite.json"),
    "goncalves_2017": ("hermite", "uncertainty_goncalves_2017.json"),
}
"""Published constructions, by `initial` name: (route, file under data/math/baselines)."""
RECORD_CONSTRUCTION = {"laguerre": "together_13", "hermite": "alphaevolve_hermite"}

INITIAL_PROGRAM = '''```python
import time


def propose_roots(seed=42, budget_s=120, **kwargs):
    """Random multiplicative steps on the current double roots (or two small ones), keeping every
    improvement of the bound; now and then a root is added."""
    rng = np.random.default_rng(seed)
    best = np.array(initial_roots) if "initial_roots" in globals() else np.array([4.0, 6.0])
    best_bound = evaluate_bound(best)
    deadline = time.time() + min(budget_s / 2, 20)
    while time.time() < deadline:
        candidate = best * np.exp(rng.normal(0, 0.02, best.size) * (rng.random(best.size) < 0.5))
        if rng.random() < 0.05 and best.size < 8:
            candidate = np.append(candidate, best.max() * rng.uniform(1.1, 3))
        try:
            bound = evaluate_bound(candidate)
        except ValueError:
            continue
        if bound < best_bound:
            best, best_bound = np.sort(candidate), bound
    print("C4 bound", best_bound)
    return best
```'''


def load_construction(name: str) -> tuple[str, list[float]]:
    """(route, values) of a shipped construction."""
    route, file = CONSTRUCTIONS[name]
    node = resources.files("ttd_envs.data.math").joinpath("baselines", file)
    return route, json.loads(node.read_text())[ROUTE_SPECS[route].key]


class UncertaintyInequality(PythonProgramProblem):
    """ttd/UncertaintyInequality-v0. Kwargs: `route` ("laguerre" | "hermite"), `initial` ("empty" |
    "record" | a name in CONSTRUCTIONS of that route), `budget_s`, `timeout_s` (default 1.5 budget
    + 10 s), `max_roots` (<= 20; the exact solve takes about 0.7 s at 13 roots, 2.4 s at 16 and
    12 s at 20 on our machine), `max_coefficients`, `cpus`."""

    name = "UncertaintyInequality"
    summary = "Uncertainty inequality: an even function f = f^ whose last sign change is early (upper bound on C4)"
    record = record_for("UncertaintyInequality")
    record_instance: dict[str, Any] = {}
    """Both routes bound the same constant C4, so they share the record table's default rows."""
    defaults = TrainerDefaults(model_kind="llm", eval_timeout_s=300.0, cpus_per_eval=1)
    preload = (*DEFAULT_PRELOAD, "ttd_envs.problems.uncertainty_inequality")

    def __init__(self, route: str = "laguerre", initial: str = "empty", budget_s: float = 120.0,
                 timeout_s: float | None = None, max_roots: int = MAX_ROOTS,
                 max_coefficients: int = MAX_COEFFICIENTS, cpus: int = 1) -> None:
        one_of("route", route, ROUTES)
        one_of(f"initial for route {route!r}", initial,
               ("empty", "record", *(n for n, (r, _) in CONSTRUCTIONS.items() if r == route)))
        if not (1 <= max_roots <= MAX_ROOTS_CAP and 1 <= max_coefficients <= MAX_COEFFICIENTS):
            raise ValueError(f"need 1 <= max_roots <= {MAX_ROOTS_CAP} and 1 <= max_coefficients <= {MAX_COEFFICIENTS}")
        super().__init__(ProgramBudget.searching(budget_s, timeout_s, cpus=cpus))
        self.route, self.initial = route, initial
        self.spec = ROUTE_SPECS[route]
        self.entry, self.construction_input = self.spec.entry, self.spec.construction_input
        self.max_roots, self.max_coefficients = max_roots, max_coefficients
        self.result_bytes = 64 << 10

    def initial_state(self, rng: np.random.Generator) -> State:
        if self.initial == "empty":
            return State(is_initial=True)
        name = RECORD_CONSTRUCTION[self.route] if self.initial == "record" else self.initial
        construction, score = self.check(load_construction(name)[1])
        return State(construction=construction, score=score, reward=self.reward_for(score), is_initial=True)

    def program_kwargs(self) -> dict[str, Any]:
        return {"seed": 42, "budget_s": self.budget.budget_s}

    def example_answer(self) -> str:
        """A valid answer for `--model tiny`: two double roots (bound 0.387) or AlphaEvolve's form."""
        values = "[4.0, 6.0]" if self.route == "laguerre" else "[0.33, -0.0116, -8.9e-05]"
        return f"```python\ndef {self.entry}(*args, **kwargs):\n    return {values}\n```"

    def preset_modules(self) -> dict[str, str]:
        return {"np": "numpy", "evaluate_bound": f"ttd_envs.problems.uncertainty_inequality:{self.spec.scorer}"}

    def exact(self, value: Any, route: str | None = None) -> tuple[np.ndarray, Bound]:
        """(canonical construction, enclosure of the C4 bound) for the instance's route or `route`."""
        if (route or self.route) == "laguerre":
            z = double_roots(value, self.max_roots)
            return z, laguerre_interval(z)
        c = hermite_coefficients(value, self.max_coefficients)
        return c, hermite_interval(c)

    def check(self, value: Any) -> tuple[np.ndarray, float]:
        construction, bound = self.exact(value)
        return construction, float_up(bound.upper)

    def stored(self, data: Any) -> tuple[Any, str]:
        """A construction file's values and route: {"roots": [...]} (Laguerre) or {"coefficients": [...]}
        (Hermite), whatever this instance's route, so one verify command takes either."""
        keys = [route for route, spec in ROUTE_SPECS.items() if isinstance(data, dict) and spec.key in data]
        if len(keys) != 1:
            raise InvalidConstruction('expected a JSON object with either a "roots" or a "coefficients" list')
        return data[ROUTE_SPECS[keys[0]].key], keys[0]

    def score_construction(self, data: Any) -> float:
        """The C4 bound of a stored construction (rounded up), as a program's return value would score."""
        return float_up(self.exact_score(data).upper)

    def exact_score(self, data: Any) -> Bound:
        values, route = self.stored(data)
        return self.exact(values, route)[1]

    def construction_data(self, construction: Any) -> dict[str, Any]:
        return {self.spec.key: np.asarray(construction, dtype=np.float64).tolist()}

    def reward_for(self, score: float) -> float:
        return 1.0 / score

    def prompt(self, state: State) -> str:
        b = self.budget
        laguerre = self.route == "laguerre"
        parts = [
            f"# {self.summary}",
            "For an even real f with Fourier transform f^(ξ) = ∫ f(x) e^{−2πixξ} dx, let A(f) = inf{r > 0 : f(x) ≥ 0 "
            "for all |x| ≥ r}. C4 is the largest constant with A(f)·A(f^) ≥ C4 for every even f with f(0) ≤ 0 and "
            "f^(0) ≤ 0. Every such f certifies C4 ≤ A(f)·A(f^): find one whose bound is as low as possible.",
            "",
            "## The family",
            "f(x) = ±g(2πx²)·e^{−πx²} with g(t) a combination of H_0(√t), H_4(√t), H_8(√t), ... (physicists' Hermite "
            "polynomials; equivalently the Laguerre polynomials L_{2j}^{(−1/2)}(t)). Each is a +1 eigenfunction of the "
            "Fourier transform, so f^ = f, and with g(0) = 0 the bound is C4 ≤ r/(2π), r = the last point t > 0 where "
            "g changes sign. The sign ± is chosen so that f ≥ 0 far out.",
        ]
        if laguerre:
            parts.append("You prescribe k distinct double roots 0 < z_1 < ... < z_k (Cohn–Gonçalves): g is the unique "
                         "combination of L_0, L_2, ..., L_{4k+2} with g(0) = 0, g'(0) = 1 and g(z_i) = g'(z_i) = 0. "
                         "Good roots sit beyond r, where g only touches zero.")
        else:
            parts.append("You give c_0..c_{m−1}: g = Σ_{j<m} c_j H_{4j}(√t) + c_m H_{4m}(√t), with c_m chosen so that "
                         "g(0) = 0 (Gonçalves, Oliveira e Silva and Steinerberger).")
        parts += [
            "",
            "## Exact scoring",
            "g is solved for in exact rational arithmetic from the exact binary values of your floats, and r is "
            "isolated among the real roots of odd multiplicity over all of (0, ∞): no grid, so no sign change can "
            "hide. Lower is better; reward = 1 / bound.",
            "",
            "## Contract",
        ]
        if laguerre:
            low, high = ROOT_RANGE
            parts.append(f"Write one ```python block defining `propose_roots(seed=42, budget_s={b.budget_s:g}, "
                         f"**kwargs)` that returns 1 to {self.max_roots} distinct floats in [{low:g}, {high:g}] (any order).")
        else:
            parts.append(f"Write one ```python block defining `propose_coefficients(seed=42, budget_s={b.budget_s:g}, "
                         f"**kwargs)` that returns 1 to {self.max_coefficients} finite floats, not all zero.")
        parts += [
            "Already defined: `np` (numpy) and `evaluate_bound(values)`, the scorer of your reward (exact, so slow: "
            "about 0.01 s at 6 roots, 0.7 s at 13; it raises ValueError saying why for an invalid answer). For a "
            "fast search write your own float version and call `evaluate_bound` on the finalists.",
            *budget_and_record_lines(b, prompt_line(self.name)),
        ]
        if state.construction is not None:
            parts.append(f"A global `{self.construction_input}` (numpy float64 array, {len(state.construction)} "
                         f"values) holds the current {self.spec.what}, with bound {state.score:.10f}. You may start from it.")
        else:
            parts.append(f"There is no construction yet: write code that finds {self.spec.what} from scratch.")
        return prompt_with_previous_attempt(parts, state, value_name="C4 bound", digits=10)
