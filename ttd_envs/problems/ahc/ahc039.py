"""ttd/AHC039-v0: "Purse Seine Fishing" - one axis-parallel polygon that encloses many good fish
and few bad ones. Judge and scorer follow the official tester's rules exactly (Numba geometry)."""

from __future__ import annotations

import csv
from functools import lru_cache
from typing import Any

import numba
import numpy as np

from ttd_envs.core.drawing import closed_path, plane_drawing, point_set
from ttd_envs.core.judge import JudgeReport, WrongAnswer
from ttd_envs.records import record_for
from ttd_envs.problems.ahc.common import MAX_INTEGER_CHARS, SHIPPED_SEEDS, AHCProblem, data_dir, parse_int

COORD_MAX = 100_000
MAX_VERTICES = 1000
MAX_PERIMETER = 400_000
N_FISH = 5000

STATEMENT = f"""
There are N = 5000 mackerels and N = 5000 sardines, each at a distinct integer point (x, y) with
0 <= x, y <= {COORD_MAX}. You place one fishing net: a closed, simple polygon whose edges are all
horizontal or vertical. Every fish strictly inside the net or on its boundary is caught. With a
mackerels and b sardines caught, the score of the test is max(0, a - b + 1).

Net rules (any violation is a Wrong Answer for the whole test):
- 4 <= m <= {MAX_VERTICES} vertices, all integer with 0 <= x, y <= {COORD_MAX}, given in order
  around the polygon (clockwise or counter-clockwise); consecutive vertices may be collinear.
- Each edge (including the closing edge from the last vertex to the first) is horizontal or
  vertical and has positive length.
- The polygon is simple: edges that are not neighbours must not touch or cross, and an edge may
  not double back over the previous one. Hence all vertices are distinct.
- The total edge length is at most {MAX_PERIMETER}.

Input (standard input):
N
x_0 y_0
...
x_(2N-1) y_(2N-1)
The first N points are the mackerels, the next N the sardines.

Output (standard output):
m
a_0 b_0
...
a_(m-1) b_(m-1)
You may print several polygons one after another; only the last one is scored (the earlier
ones must still be well-formed: 4 <= m <= {MAX_VERTICES} and coordinates in range). Printing
nothing is allowed and scores 1.

How the tests are made: the fish of each kind come from 10 to 25 Gaussian clusters with random
weights, centres uniform in [20000, 80000]^2 and standard deviations uniform in [1000, 5000];
points are rounded to integers and redrawn when outside the square or already taken.
"""


@numba.njit(cache=True, nogil=True)
def polygon_violation(xs: np.ndarray, ys: np.ndarray) -> tuple[int, int, int]:
    """First broken rule of the closed polygon (xs, ys) as (rule, i, j); rule 0 means valid.

    1: zero-length edge i; 2: edge i neither horizontal nor vertical; 3: edges i, i+1 are
    collinear and fold back ((p-q)*(r-q) > 0 along their axis); 4: non-adjacent edges i and j
    have intersecting closed bounding boxes; 5: total length sum(|dx|+|dy|) > MAX_PERIMETER.
    """
    m = xs.shape[0]
    for i in range(m):
        k = (i + 1) % m
        if xs[i] == xs[k] and ys[i] == ys[k]:
            return 1, i, k
    for i in range(m):
        k = (i + 1) % m
        if xs[i] != xs[k] and ys[i] != ys[k]:
            return 2, i, k
    for i in range(m):
        q = (i + 1) % m
        r = (i + 2) % m
        if xs[i] == xs[q] and xs[q] == xs[r] and (ys[i] - ys[q]) * (ys[r] - ys[q]) > 0:
            return 3, i, q
        if ys[i] == ys[q] and ys[q] == ys[r] and (xs[i] - xs[q]) * (xs[r] - xs[q]) > 0:
            return 3, i, q
    for i in range(m):
        i2 = (i + 1) % m
        lox, hix = min(xs[i], xs[i2]), max(xs[i], xs[i2])
        loy, hiy = min(ys[i], ys[i2]), max(ys[i], ys[i2])
        for step in range(2, m - 1):
            j = (i + step) % m
            if j < i:
                continue  # each unordered pair once
            j2 = (j + 1) % m
            if (max(lox, min(xs[j], xs[j2])) <= min(hix, max(xs[j], xs[j2]))
                    and max(loy, min(ys[j], ys[j2])) <= min(hiy, max(ys[j], ys[j2]))):
                return 4, i, j
    length = 0
    for i in range(m):
        k = (i + 1) % m
        length += abs(xs[i] - xs[k]) + abs(ys[i] - ys[k])
    if length > MAX_PERIMETER:
        return 5, length, 0
    return 0, 0, 0


@numba.njit(cache=True, nogil=True)
def inside_mask(xs: np.ndarray, ys: np.ndarray, px: np.ndarray, py: np.ndarray) -> np.ndarray:
    """For a valid polygon: point p is caught iff it lies on an edge (closed segment) or an upward
    ray from it crosses an odd number of horizontal edges with y_e > p.y and min x <= p.x < max x."""
    m = xs.shape[0]
    out = np.zeros(px.shape[0], dtype=np.bool_)
    for t in range(px.shape[0]):
        x, y = px[t], py[t]
        crossings = 0
        on_edge = False
        for i in range(m):
            k = (i + 1) % m
            if xs[i] == xs[k]:
                if x == xs[i] and min(ys[i], ys[k]) <= y <= max(ys[i], ys[k]):
                    on_edge = True
                    break
            else:
                lo, hi = min(xs[i], xs[k]), max(xs[i], xs[k])
                if y == ys[i] and lo <= x <= hi:
                    on_edge = True
                    break
                if ys[i] > y and lo <= x < hi:
                    crossings += 1
        out[t] = on_edge or crossings % 2 == 1
    return out


_RULES = {
    1: "edge {i}->{j} has zero length (two consecutive vertices are equal)",
    2: "edge {i}->{j} is neither horizontal nor vertical",
    3: "edges at vertex {j} fold back onto each other (collinear edges turning by 180 degrees)",
    4: "non-adjacent edges {i} and {j} touch or cross (the polygon must be simple)",
    5: "total edge length {i} exceeds " + str(MAX_PERIMETER),
}


_SCAN_OK, _SCAN_BAD_TOKEN, _SCAN_BAD_COUNT, _SCAN_BAD_COORDINATE, _SCAN_TRUNCATED = range(5)


@numba.njit(cache=True, nogil=True)
def _scan_polygons(data: np.ndarray) -> tuple[int, int, int, int, int]:
    """One pass over the output bytes, O(1) memory: checks every token and polygon as
    `parse_polygons` documents, and returns (status, byte offset of the offending token,
    its value or the open polygon's m, coordinates still missing, byte offset of the last
    complete polygon or -1). Tokens: an optional sign and 1..18 digits, whitespace between."""
    n = data.shape[0]
    pos = 0
    last = -1
    current = -1
    m = 0
    missing = 0  # coordinates the open polygon still needs; 0 means the next token is a count m
    while True:
        while pos < n and (data[pos] == 32 or 9 <= data[pos] <= 13):
            pos += 1
        if pos >= n:
            break
        start = pos
        negative = data[pos] == 45
        if data[pos] == 43 or data[pos] == 45:
            pos += 1
        digits = 0
        value = 0
        while pos < n and not (data[pos] == 32 or 9 <= data[pos] <= 13):
            c = data[pos]
            if c < 48 or c > 57 or digits == 18:
                return _SCAN_BAD_TOKEN, start, 0, missing, last
            value = value * 10 + (c - 48)
            digits += 1
            pos += 1
        if digits == 0:
            return _SCAN_BAD_TOKEN, start, 0, missing, last
        if negative:
            value = -value
        if missing == 0:
            if value < 4 or value > MAX_VERTICES:
                return _SCAN_BAD_COUNT, start, value, 0, last
            current, m, missing = start, value, 2 * value
        else:
            if value < 0 or value > COORD_MAX:
                return _SCAN_BAD_COORDINATE, start, value, missing, last
            missing -= 1
            if missing == 0:
                last = current
    if missing:
        return _SCAN_TRUNCATED, current, m, missing, last
    return _SCAN_OK, 0, 0, 0, last


def parse_polygons(output: bytes) -> tuple[np.ndarray, np.ndarray] | None:
    """Read every polygon of the output; return the last one's vertices, or None for no polygon.

    Each polygon is a count m in [4, MAX_VERTICES] and 2m coordinates in [0, COORD_MAX]; every
    token is a plain integer. The scan is linear in the output and keeps no token list (a 16 MiB
    output of tiny polygons took 7.9 s and GiBs with one Python object per token); only the last
    polygon is materialised.
    """
    status, offset, value, missing, last = _scan_polygons(np.frombuffer(output, dtype=np.uint8))
    if status == _SCAN_BAD_TOKEN:
        token = output[offset:offset + MAX_INTEGER_CHARS + 1].split()[0]
        parse_int(token, "a coordinate" if missing else "the vertex count m")
        raise WrongAnswer(f"parse error: token {token[:40]!r} is not an integer of at most 18 digits")
    if status == _SCAN_BAD_COUNT:
        raise WrongAnswer(f"out of range: vertex count m = {value} must be in [4, {MAX_VERTICES}]")
    if status == _SCAN_BAD_COORDINATE:
        raise WrongAnswer(f"out of range: coordinate {value} must be in [0, {COORD_MAX}]")
    if status == _SCAN_TRUNCATED:
        raise WrongAnswer(f"unexpected end of output: a polygon with m = {value} needs {2 * value} coordinates, "
                          f"got {2 * value - missing}")
    if last < 0:
        return None
    tokens = output[last:].split(maxsplit=2 * MAX_VERTICES + 1)
    m = int(tokens[0])
    array = np.array(tokens[1:1 + 2 * m], dtype=np.int64).reshape(m, 2)
    return np.ascontiguousarray(array[:, 0]), np.ascontiguousarray(array[:, 1])


def polygon_score(points: np.ndarray, n: int, output: bytes) -> int:
    """max(0, a - b + 1) for the output's last polygon, a (b) = mackerels (sardines) caught."""
    polygon = parse_polygons(output)
    if polygon is None:
        return 1
    xs, ys = polygon
    rule, i, j = polygon_violation(xs, ys)
    if rule:
        raise WrongAnswer(_RULES[rule].format(i=i, j=j))
    caught = inside_mask(xs, ys, points[:, 0], points[:, 1])
    return max(0, int(caught[:n].sum()) - int(caught[n:].sum()) + 1)


def parse_fish(data: bytes) -> tuple[np.ndarray, int]:
    """(points (2N, 2) int64, N) from an input file."""
    values = np.array(data.split(), dtype=np.int64)
    n = int(values[0])
    return np.ascontiguousarray(values[1:1 + 4 * n].reshape(2 * n, 2)), n


def generate(seed: int) -> str:
    """An input drawn from the official generator's distribution (not bit-compatible with it)."""
    rng = np.random.default_rng(seed)
    taken: set[tuple[int, int]] = set()
    lines = [str(N_FISH)]
    for _kind in range(2):
        clusters = int(rng.integers(10, 26))
        weights = rng.random(clusters)
        centres = rng.integers(20_000, 80_001, size=(clusters, 2))
        sigmas = rng.integers(1000, 5001, size=clusters).astype(float)
        chosen = 0
        while chosen < N_FISH:
            k = rng.choice(clusters, size=4096, p=weights / weights.sum())
            raw = centres[k] + sigmas[k, None] * rng.standard_normal((4096, 2))
            rounded = np.trunc(raw + np.copysign(0.5, raw)).astype(np.int64)  # half away from zero
            for x, y in rounded:
                if chosen < N_FISH and 0 <= x <= COORD_MAX and 0 <= y <= COORD_MAX and (x, y) not in taken:
                    taken.add((int(x), int(y)))
                    lines.append(f"{x} {y}")
                    chosen += 1
    return "\n".join(lines) + "\n"


@lru_cache(maxsize=1)
def contest_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(standing ranks, standing scores, table ranks, performances) of the real AHC039."""
    def read(name: str) -> np.ndarray:
        with open(data_dir("ahc039") / name) as handle:
            return np.array([[float(v) for v in row] for row in list(csv.reader(handle))[1:]])
    standings, performance = read("standings_scores.csv"), read("performance.csv")
    return standings[:, 0], standings[:, 1], performance[:, 0], performance[:, 1]


def contest_rank(total: float) -> float:
    """Rank a contest total would have had: the rank of the first standing it strictly beats (the
    rank shared by equal standings on a tie, averaged if they differ); 1 above everyone."""
    ranks, scores, _, _ = contest_tables()
    equal = ranks[scores == total]
    if equal.size:
        return float(equal.mean())
    beaten = ranks[scores < total]
    return float(beaten.min()) if beaten.size else float(ranks.max() + 1)


def contest_performance(rank: float) -> float:
    """AtCoder performance of a rank, interpolated linearly in the contest's table."""
    _, _, table_ranks, performances = contest_tables()
    return float(np.interp(rank, table_ranks, performances))


class AHC039(AHCProblem):
    name = "ttd/AHC039-v0"
    problem_id = "ahc039"
    title = "Purse Seine Fishing (AtCoder Heuristic Contest 039)"
    summary = "AHC039: one C++ program draws an axis-parallel net that catches mackerels and avoids sardines"
    record = record_for("AHC039")
    role = ("You are a world-class algorithm engineer taking part in a heuristic optimisation contest: the "
            "problem is NP-hard, so the goal is the best score you can reach within the limits.")
    statement = STATEMENT
    target_mean = 5000.0
    reward_scale = 1500.0
    score_digits = 1
    output_bytes = 16 << 20

    def parse_input(self, data: bytes) -> tuple[np.ndarray, int]:
        return parse_fish(data)

    def score_output(self, problem_input: tuple[np.ndarray, int], output: bytes) -> int:
        points, n = problem_input
        return polygon_score(points, n, output)

    def generate_input(self, seed: int) -> str:
        return generate(seed)

    def output_drawing(self, problem_input: tuple[np.ndarray, int], output: bytes) -> dict[str, Any]:
        """The two schools of fish and the net the output leaves (its last polygon; none: an empty net)."""
        points, n = problem_input
        polygon = parse_polygons(output)
        paths = [] if polygon is None else [closed_path("net (the last polygon printed)", np.column_stack(polygon))]
        return plane_drawing("the net and the fish", (0, 0, COORD_MAX, COORD_MAX),
                             [point_set("mackerels (+1 each)", points[:n]), point_set("sardines (-1 each)", points[n:])],
                             paths)

    def contest_info(self, report: JudgeReport) -> dict[str, Any]:
        """Rank and performance a total would earn in the real contest (its 150 tests were different
        ones, so this is an equivalent, not an official, placement). Scaled to 150 tests."""
        if not report.accepted:
            return {"contest_total_150": 0.0, "contest_rank": contest_rank(0.0),
                    "contest_performance": contest_performance(contest_rank(0.0))}
        total = report.mean * SHIPPED_SEEDS
        rank = contest_rank(total)
        return {"contest_total_150": total, "contest_rank": rank, "contest_performance": contest_performance(rank)}
