"""Kissing configurations: as many nonzero vectors in R^d as possible, pairwise at least 60 degrees apart.

Unit spheres centred at 2u/|u| all touch the unit sphere at the origin, and two of them overlap
exactly when the angle between u and v is below 60 degrees. So N nonzero vectors x_1..x_N form a
kissing configuration iff, for every pair,

    <x_i, x_j> <= 0   or   4 <x_i, x_j>^2 <= |x_i|^2 |x_j|^2        (cos <= 1/2, touching allowed),

which also rejects parallel duplicates. The score is N (higher is better; reward = N), 0 unless valid.
Coordinates are checked exactly: integers (any size), floats taken as their exact binary values
(scaled by a common power of two to integers), or elements a + b*sqrt(2) of Z[sqrt(2)] given as
integer pairs [a, b] (an array of shape (N, d, 2)), the form of the 604-vector record in d = 11.
A float screen finds the pairs that could fail; each of them is then decided exactly, so a
600-vector answer costs well under a second rather than 180,000 big-integer inner products.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

import numpy as np

from ttd_envs.core.construction_problem import ArrayConstructionProblem
from ttd_envs.core.exact import Bound
from ttd_envs.core.program_problem import InvalidConstruction

MAX_VECTORS = 100_000
SCREEN_MARGIN = 1e-9
"""Pairs with a float cosine above 1/2 - this are decided exactly; float error is ~1e-15."""
Surd = tuple[int, int]  # a + b*sqrt(2)


def exact_integers(value: Any, d: int) -> tuple[list[list[Any]], bool]:
    """The vectors as lists of Python ints, or of (a, b) pairs for Z[sqrt(2)]; the flag says which."""
    try:
        array = np.asarray(value, dtype=object if _holds_big_ints(value) else None)
    except (TypeError, ValueError) as exc:
        raise InvalidConstruction(f"the vectors must be a numeric array ({exc})") from None
    if array.ndim not in (2, 3) or array.shape[1:2] != (d,) or (array.ndim == 3 and array.shape[2] != 2):
        raise InvalidConstruction(f"expected an (N, {d}) array of coordinates, or (N, {d}, 2) integer pairs "
                                  f"[a, b] meaning a + b*sqrt(2); got shape {array.shape}")
    if not 1 <= len(array) <= MAX_VECTORS:
        raise InvalidConstruction(f"expected between 1 and {MAX_VECTORS} vectors; got {len(array)}")
    surd = array.ndim == 3
    flat = array.reshape(-1)
    if any(isinstance(x, (bool, np.bool_)) or not isinstance(x, (int, float, np.integer, np.floating)) for x in flat):
        raise InvalidConstruction("coordinates must be integers or finite floats (no booleans, complex or strings)")
    if any(isinstance(x, (float, np.floating)) and not math.isfinite(x) for x in flat):
        raise InvalidConstruction("coordinates must be finite; found NaN or infinity")
    if surd and any(isinstance(x, (float, np.floating)) and not float(x).is_integer() for x in flat):
        raise InvalidConstruction("Z[sqrt(2)] coordinates [a, b] must be integers")
    exact = [Fraction(int(x)) if isinstance(x, (int, np.integer)) else Fraction(float(x)) for x in flat]
    scale = math.lcm(*(q.denominator for q in exact))
    ints = [int(q * scale) for q in exact]
    if surd:
        pairs = [tuple(ints[k:k + 2]) for k in range(0, len(ints), 2)]
        return [pairs[i * d:(i + 1) * d] for i in range(len(array))], True
    return [ints[i * d:(i + 1) * d] for i in range(len(array))], False


def _holds_big_ints(value: Any) -> bool:
    """Python ints beyond int64 must stay exact (numpy would turn a ragged mix into floats or fail)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, (list, tuple)):
            stack.extend(item)
        elif isinstance(item, int) and not isinstance(item, bool) and abs(item) >= 2 ** 63:
            return True
    return False


def surd_sign(s: Surd) -> int:
    """The sign of a + b*sqrt(2), exactly."""
    a, b = s
    if a >= 0 and b >= 0:
        return 1 if a > 0 or b > 0 else 0
    if a <= 0 and b <= 0:
        return -1
    # opposite signs: compare a^2 with 2 b^2
    return (1 if a > 0 else -1) * (1 if a * a > 2 * b * b else -1 if a * a < 2 * b * b else 0)


def surd_mul(s: Surd, t: Surd) -> Surd:
    return (s[0] * t[0] + 2 * s[1] * t[1], s[0] * t[1] + s[1] * t[0])


def surd_dot(x: list[Surd], y: list[Surd]) -> Surd:
    products = [surd_mul(a, b) for a, b in zip(x, y)]
    return (sum(p[0] for p in products), sum(p[1] for p in products))


def pair_is_far(dot: Any, norm_x: Any, norm_y: Any, surd: bool) -> bool:
    """cos(x, y) <= 1/2, exactly: <x,y> <= 0 or 4 <x,y>^2 <= |x|^2 |y|^2."""
    if not surd:
        return dot <= 0 or 4 * dot * dot <= norm_x * norm_y
    if surd_sign(dot) <= 0:
        return True
    left, right = surd_mul((4, 0), surd_mul(dot, dot)), surd_mul(norm_x, norm_y)
    return surd_sign((right[0] - left[0], right[1] - left[1])) >= 0


def check_kissing(vectors: list[list[Any]], surd: bool) -> None:
    """InvalidConstruction naming a zero vector or the first pair closer than 60 degrees."""
    dot = surd_dot if surd else (lambda x, y: sum(a * b for a, b in zip(x, y)))
    norms = [dot(v, v) for v in vectors]
    for i, n in enumerate(norms):
        if (surd and n == (0, 0)) or (not surd and n == 0):
            raise InvalidConstruction(f"vector {i} is zero: every vector must be nonzero")
    as_float = np.array([[a + b * math.sqrt(2) for a, b in v] if surd else v for v in vectors], dtype=np.float64)
    unit = as_float / np.linalg.norm(as_float, axis=1, keepdims=True)
    cos = unit @ unit.T
    i_idx, j_idx = np.nonzero(np.triu(cos > 0.5 - SCREEN_MARGIN, k=1))
    for i, j in zip(i_idx.tolist(), j_idx.tolist()):
        if not pair_is_far(dot(vectors[i], vectors[j]), norms[i], norms[j], surd):
            raise InvalidConstruction(f"vectors {i} and {j} are less than 60 degrees apart (cos = {cos[i, j]:.15f} > 1/2, "
                                      "checked exactly): their spheres would overlap")


class KissingNumber(ArrayConstructionProblem):
    """ttd/KissingNumber-v0. Kwargs: `d` (default 11), plus `initial`, `budget_s`, `timeout_s`, `cpus`."""

    name = "KissingNumber"
    key = "vectors"
    entry = "construct_vectors"
    value_name = "number of vectors"
    summary = "Kissing number: as many unit spheres as possible touching one sphere in 11 (or d) dimensions"
    default_instance = {"d": 11}

    def __init__(self, d: int = 11, initial: str = "empty", budget_s: float = 60.0,
                 timeout_s: float | None = None, cpus: int = 1) -> None:
        if not isinstance(d, int) or not 2 <= d <= 32:
            raise ValueError(f"d must be an integer from 2 to 32; got {d!r}")
        self.d = d
        self.summary = f"Kissing number: as many unit spheres as possible touching one sphere in {d} dimensions"
        super().__init__({"d": d}, initial, budget_s, timeout_s, cpus)

    @property
    def shape(self) -> tuple[int, ...]:
        return ("N", self.d)

    def to_array(self, value: Any) -> np.ndarray:
        vectors, surd = exact_integers(value, self.d)
        check_kissing(vectors, surd)
        fits = all(-2 ** 63 <= x < 2 ** 63 for x in np.ravel(np.array(vectors, dtype=object)))
        return np.array(vectors, dtype=np.int64 if fits else object)  # scaled exactly to integers

    def exact_array(self, array: np.ndarray) -> Bound:
        return Bound.exact(Fraction(len(array)))  # `to_array` has checked every pair exactly

    def reward_for(self, score: float) -> float:
        return score

    def initial_program(self) -> str:
        return f"""```python
from itertools import combinations

def construct_vectors():
    \"\"\"The D_{self.d} root system: every vector with two entries +-1 (cos <= 1/2 between any two).\"\"\"
    d, vectors = {self.d}, []
    for i, j in combinations(range(d), 2):
        for si in (1, -1):
            for sj in (1, -1):
                v = [0] * d
                v[i], v[j] = si, sj
                vectors.append(v)
    return np.array(vectors)
```"""

    def statement(self) -> list[str]:
        return [f"Find as many nonzero vectors in R^{self.d} as you can such that the angle between any two is at "
                "least 60 degrees (then unit spheres centred at 2u/|u| all touch the central unit sphere without "
                "overlapping).", "",
                "## Exact scoring",
                "For every pair, <x, y> <= 0 or 4 <x, y>^2 <= |x|^2 |y|^2 must hold exactly (touching is allowed; "
                "parallel duplicates fail). Give integer coordinates (int64: larger integers cannot travel back from "
                f"the sandbox), floats (taken as their exact binary values), or an (N, {self.d}, 2) integer array of pairs "
                "[a, b] meaning a + b*sqrt(2). The score is N if valid, else 0; higher is better and reward = N."]
