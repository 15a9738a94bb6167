"""ttd/AHC058-v0: grow apples with a four-level hierarchy of machines over 500 turns. The judge
replays the action list with exact integers, as the official tester does with i64."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np

from ttd_envs.core.drawing import series, series_drawing
from ttd_envs.core.judge import WrongAnswer
from ttd_envs.records import record_for
from ttd_envs.problems.ahc.common import AHCProblem, parse_int

STATEMENT = """
You run a factory of N x L apple machines: machine j at level i (ID j in 0..N-1, level i in
0..L-1). Each machine type has a count B[i][j] (initially 1) and a power P[i][j] (initially 0).
You start with K apples. The game lasts T turns; each turn has two phases:
1. Action: either do nothing, or strengthen one machine type (i, j). Strengthening costs
   C[i][j] * (P[i][j] + 1) apples and then increases P[i][j] by 1. You cannot spend more apples
   than you have.
2. Production, in this order: for level i = 0, 1, ..., L-1, and within a level j = 0..N-1,
   - level 0 machines produce A[j] * B[0][j] * P[0][j] apples;
   - a level i >= 1 machine type adds B[i][j] * P[i][j] to the count B[i-1][j].
   So a level's output reaches the level below one turn later.
The score of a test is round(100000 * log2(S)), where S is your number of apples after T turns.

Input (standard input):
N L T K
A_0 ... A_(N-1)
C_(0,0) ... C_(0,N-1)
...
C_(L-1,0) ... C_(L-1,N-1)
Always N = 10, L = 4, T = 500, K = 1. 1 <= A_j <= 100, sorted ascending with A_0 = 1.
1 <= C_(i,j) <= 1.25e12 and C_(0,0) = 1.

Output (standard output): T lines, one per turn in order: "i j" to strengthen machine j at
level i, or "-1" to do nothing. Blank lines and lines starting with '#' are ignored. Fewer than
T actions, a malformed line (e.g. "-1 0"), an out-of-range level or ID, or an unaffordable
action is a Wrong Answer; anything after the T-th action is ignored.

How the tests are made: A_0 = 1 and the other nine A_j are round(10^u) with u uniform in [0, 2],
then sorted; C_(0,0) = 1 and every other C_(i,j) = round(A_j * 500^i * 10^u), fresh u uniform in
[0, 2].
"""


@dataclass(frozen=True)
class Factory:
    n: int
    levels: int
    turns: int
    apples: int
    a: tuple[int, ...]
    c: tuple[tuple[int, ...], ...]


def parse_factory(data: bytes) -> Factory:
    values = [int(v) for v in data.split()]
    n, levels, turns, apples = values[:4]
    a = tuple(values[4:4 + n])
    flat = values[4 + n:4 + n + levels * n]
    return Factory(n, levels, turns, apples, a, tuple(tuple(flat[i * n:(i + 1) * n]) for i in range(levels)))


@numba.njit(cache=True, nogil=True)
def action_lines(data: np.ndarray, turns: int) -> np.ndarray:
    """(line number, start, end) of the first `turns` action lines of the output bytes: lines that
    are not empty after trimming whitespace and do not start with '#'. One pass, stopping at the
    last action needed, so 16 MiB of blank or comment lines cost milliseconds."""
    found = np.empty((turns, 3), dtype=np.int64)
    count = 0
    line = 1
    pos = 0
    n = data.shape[0]
    while pos < n and count < turns:
        end = pos
        while end < n and data[end] != 10:
            end += 1
        first = pos
        while first < end and (data[first] == 32 or 9 <= data[first] <= 13):
            first += 1
        if first < end and data[first] != 35:
            found[count, 0] = line
            found[count, 1] = first
            found[count, 2] = end
            count += 1
        line += 1
        pos = end + 1
    return found[:count]


def parse_actions(factory: Factory, output: bytes) -> list[tuple[int, int] | None]:
    """The first T actions (None = do nothing). Lines are trimmed; empty and '#' lines are skipped;
    reading stops at the T-th action, so anything after it is ignored. Linear in the output and
    never splits it whole: `action_lines` finds the lines, and only the first three tokens of an
    action line are read."""
    actions: list[tuple[int, int] | None] = []
    for number, first, end in action_lines(np.frombuffer(output, dtype=np.uint8), factory.turns).tolist():
        tokens = output[first:end].split(maxsplit=2)
        level = parse_int(tokens[0], f"the level on line {number}")
        if not -1 <= level < factory.levels:
            raise WrongAnswer(f"out of range: level {level} on line {number} must be in [-1, {factory.levels - 1}]")
        if level == -1:
            if len(tokens) > 1:
                raise WrongAnswer(f"too many tokens on line {number}: '-1' must stand alone")
            actions.append(None)
            continue
        if len(tokens) < 2:
            raise WrongAnswer(f"line {number}: level {level} must be followed by a machine ID")
        if len(tokens) > 2:
            raise WrongAnswer(f"too many tokens on line {number}: expected 'i j' or '-1'")
        machine = parse_int(tokens[1], f"the machine ID on line {number}")
        if not 0 <= machine < factory.n:
            raise WrongAnswer(f"out of range: machine ID {machine} on line {number} must be in [0, {factory.n - 1}]")
        actions.append((level, machine))
    if len(actions) < factory.turns:
        raise WrongAnswer(f"too few actions: got {len(actions)}, expected one line per turn ({factory.turns})")
    return actions


def simulate(factory: Factory, actions: list[tuple[int, int] | None], trace: list[int] | None = None) -> int:
    """Final apples S after replaying `actions` (exact integers). Per turn: pay C[i][j]*(P[i][j]+1)
    and raise P[i][j]; then level 0 adds sum_j A[j]*B[0][j]*P[0][j] apples and each level i >= 1,
    in order, adds B[i][j]*P[i][j] to B[i-1][j]. `trace`, given, gets the apples after each turn."""
    n, levels = factory.n, factory.levels
    count = [[1] * n for _ in range(levels)]
    power = [[0] * n for _ in range(levels)]
    apples = factory.apples
    for turn, action in enumerate(actions):
        if action is not None:
            i, j = action
            cost = factory.c[i][j] * (power[i][j] + 1)
            if cost > apples:
                raise WrongAnswer(f"turn {turn}: strengthening machine {j} at level {i} costs {cost} apples "
                                  f"but only {apples} are available")
            apples -= cost
            power[i][j] += 1
        for j in range(n):
            apples += factory.a[j] * count[0][j] * power[0][j]
        for i in range(1, levels):
            below, here, strength = count[i - 1], count[i], power[i]
            for j in range(n):
                below[j] += here[j] * strength[j]
        if trace is not None:
            trace.append(apples)
    return apples


def apple_score(apples: int) -> int:
    """round(100000 * log2(S)), rounding half away from zero; S <= 0 is a Wrong Answer."""
    if apples <= 0:
        raise WrongAnswer(f"the final number of apples {apples} must be positive")
    value = 100000 * math.log2(apples)
    return int(math.floor(value + 0.5)) if value >= 0 else -int(math.floor(-value + 0.5))


def factory_score(factory: Factory, output: bytes) -> int:
    return apple_score(simulate(factory, parse_actions(factory, output)))


def generate(seed: int) -> str:
    """An input drawn from the official generator's distribution (not bit-compatible with it)."""
    rng = np.random.default_rng(seed)
    n, levels = 10, 4
    a = np.sort(np.concatenate([[1], np.round(10 ** rng.uniform(0, 2, n - 1))]).astype(np.int64))
    c = np.empty((levels, n), dtype=np.int64)
    for i in range(levels):
        for j in range(n):
            c[i, j] = 1 if i == j == 0 else int(math.floor(a[j] * 500.0 ** i * 10 ** rng.uniform(0, 2) + 0.5))
    lines = [f"{n} {levels} 500 1", " ".join(map(str, a))] + [" ".join(map(str, row)) for row in c]
    return "\n".join(lines) + "\n"


class AHC058(AHCProblem):
    name = "ttd/AHC058-v0"
    problem_id = "ahc058"
    title = "Hierarchical apple machines (AtCoder Heuristic Contest 058)"
    summary = "AHC058: one C++ program plans 500 upgrades of a four-level machine hierarchy to maximise apples"
    record = record_for("AHC058")
    role = ("You are a world-class algorithm engineer taking part in a heuristic optimisation contest; the aim "
            "is the best leaderboard rank, so squeeze out every point within the limits.")
    statement = STATEMENT + "\nUse the full time budget (but never more) if it helps; answer with code only.\n"
    target_mean = 6_500_000.0
    reward_scale = 3_000_000.0
    score_digits = 0
    output_bytes = 16 << 20

    def parse_input(self, data: bytes) -> Factory:
        return parse_factory(data)

    def score_output(self, problem_input: Factory, output: bytes) -> int:
        return factory_score(problem_input, output)

    def generate_input(self, seed: int) -> str:
        return generate(seed)

    def output_drawing(self, problem_input: Factory, output: bytes) -> dict[str, Any]:
        """log2 of the apples after each turn (the score is 100000 log2 of the last): a replay of the
        output with the judge's own simulation, 500 turns, milliseconds."""
        apples: list[int] = []
        simulate(problem_input, parse_actions(problem_input, output), apples)
        turns = np.arange(1, len(apples) + 1)
        return series_drawing("apples by turn", "turn", "log2(apples + 1)",
                              series("log2(apples + 1) after the turn", turns, [math.log2(a + 1) for a in apples]))
