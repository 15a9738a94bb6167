"""Classic LABS local search, the baselines a learned search has to beat at equal evaluations.

Three searches over single-sign flips, all with random restarts:

- `hill_climb`: steepest descent. From a uniform random sequence, score all N one-flip
  neighbours, move to the best one while it is strictly lower, restart at a local minimum.
- `tabu_search`: the tabu walk at the core of the memetic-tabu LABS solvers (Gallardo, Cotta &
  Fernández 2009). From a uniform random sequence, score all N one-flip neighbours and move to the
  best one that is not tabu, even when it is worse; a flipped position stays tabu for a tenure
  drawn uniformly from [`min_tenure`, `max_tenure`] moves; a tabu flip is still taken when it
  would beat the walk's best (aspiration). After `walk_length` moves the walk restarts from a new
  random sequence.
- `simulated_annealing`: a walk that scores one flip per move instead of a whole neighbourhood.
  Each move proposes one position (uniformly drawn) and takes it when it does not raise the energy,
  or else with the Metropolis probability exp(-ΔE/T); T falls geometrically from `t_start` to
  `t_end` over a walk of `walk_length` proposals, then the walk restarts from a new random sequence.
  Defaults (`default_annealing_rules`): walks of 256N proposals, T from 20N/32 to 5N/32.
  It is the shape of search a policy that proposes one flip at a time would run, so it also takes
  its proposal as an argument (a compiled function of the state, see `_anneal`).

Evaluations are counted the way a policy's samples are: every scored sequence costs one, so a
start costs 1, a neighbourhood scan N and an annealing move 1. The budget is exact: a scan cut
short by the budget stops after the neighbours it could still afford. Neighbour energies are computed
incrementally from the autocorrelations (O(N) each instead of O(N²)); that makes the searches
fast, not cheaper in evaluations.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numba
import numpy as np


@dataclass
class SearchResult:
    """The best sequence a search found and how its best energy fell."""

    best_energy: int
    best_sequence: np.ndarray
    curve: list[tuple[int, int]]
    """(evaluations so far, best energy so far) at each improvement, starting with the first."""
    evaluations: int


@numba.njit(cache=True, nogil=True)
def _correlations(s: np.ndarray, c: np.ndarray) -> int:  # pragma: no cover - compiled
    """Fill c[k] = C_k for k = 1..N-1 and return the energy Σ C_k²."""
    n = s.shape[0]
    total = 0
    for k in range(1, n):
        value = 0
        for i in range(n - k):
            value += s[i] * s[i + k]
        c[k] = value
        total += value * value
    return total


@numba.njit(cache=True, nogil=True)
def _flip_energy(s: np.ndarray, c: np.ndarray, i: int) -> int:  # pragma: no cover - compiled
    """Energy after flipping s[i], from the current correlations c (s and c are left unchanged)."""
    n = s.shape[0]
    total = 0
    for k in range(1, n):
        delta = 0
        if i + k < n:
            delta += s[i] * s[i + k]
        if i - k >= 0:
            delta += s[i] * s[i - k]
        value = c[k] - 2 * delta
        total += value * value
    return total


@numba.njit(cache=True, nogil=True)
def _apply_flip(s: np.ndarray, c: np.ndarray, i: int) -> None:  # pragma: no cover - compiled
    n = s.shape[0]
    for k in range(1, n):
        delta = 0
        if i + k < n:
            delta += s[i] * s[i + k]
        if i - k >= 0:
            delta += s[i] * s[i - k]
        c[k] -= 2 * delta
    s[i] = -s[i]


@numba.njit(cache=True, nogil=True)
def random_start(s: np.ndarray, c: np.ndarray) -> int:  # pragma: no cover - compiled
    """Fill s with uniform random signs and c with its correlations; return its energy."""
    for i in range(s.shape[0]):
        s[i] = 1 if np.random.random() < 0.5 else -1
    return _correlations(s, c)


@numba.njit(cache=True, nogil=True)
def metropolis(energy: int, proposed: int, temperature: float) -> bool:  # pragma: no cover - compiled
    """Take a move that does not raise the energy, else with probability exp(-ΔE/T)."""
    return proposed <= energy or np.random.random() < np.exp((energy - proposed) / temperature)


@numba.njit(cache=True, nogil=True)
def _note_flip(s: np.ndarray, i: int, value: int, evaluation: int, points: int, best_seq: np.ndarray,
               curve_evals: np.ndarray, curve_energy: np.ndarray) -> int:  # pragma: no cover - compiled
    """Record s with position i flipped (energy `value`, scored as `evaluation`) as the new best,
    leaving s unchanged; return the new number of curve points."""
    s[i] = -s[i]
    best_seq[:] = s
    s[i] = -s[i]
    curve_evals[points], curve_energy[points] = evaluation, value
    return points + 1


@numba.njit(cache=True, nogil=True)
def _restart(s: np.ndarray, c: np.ndarray, used: int, points: int, best_seq: np.ndarray, curve_evals: np.ndarray,
             curve_energy: np.ndarray) -> tuple[int, int, int, int]:  # pragma: no cover - compiled
    """Draw a uniform random start into s (its correlations into c) and score it as one evaluation,
    recording it if it beats the best so far: (its energy, evaluations used, curve points, best)."""
    energy = random_start(s, c)
    used += 1
    if points == 0 or energy < curve_energy[points - 1]:
        best_seq[:] = s
        curve_evals[points], curve_energy[points] = used, energy
        points += 1
    return energy, used, points, curve_energy[points - 1]


@numba.njit(cache=True, nogil=True)
def _search(n: int, budget: int, walk_length: int, min_tenure: int, max_tenure: int, seed: int,
            curve_evals: np.ndarray, curve_energy: np.ndarray, best_seq: np.ndarray) -> int:  # pragma: no cover
    """Restarted local search; walk_length 0 = steepest descent, else a tabu walk of that many moves.
    Writes the improvement curve and the best sequence; returns the number of curve points."""
    np.random.seed(seed)
    s = np.empty(n, dtype=np.int64)
    c = np.zeros(n, dtype=np.int64)
    tabu_until = np.zeros(n, dtype=np.int64)
    neighbour = np.empty(n, dtype=np.int64)
    used, points = 0, 0
    while used < budget:
        energy, used, points, best = _restart(s, c, used, points, best_seq, curve_evals, curve_energy)
        walk_best = energy
        tabu_until[:] = 0
        move = 0
        while used < budget:
            scanned = min(n, budget - used)
            for i in range(scanned):
                neighbour[i] = _flip_energy(s, c, i)
            used += scanned
            pick, pick_energy = -1, 1 << 62
            for i in range(scanned):
                if neighbour[i] < best:  # every scored sequence counts towards the best found
                    best = neighbour[i]
                    points = _note_flip(s, i, best, used - scanned + i + 1, points, best_seq, curve_evals,
                                        curve_energy)
                allowed = walk_length == 0 or tabu_until[i] <= move or neighbour[i] < walk_best
                if allowed and neighbour[i] < pick_energy:
                    pick, pick_energy = i, neighbour[i]
            if scanned < n:
                break
            if walk_length == 0:
                if pick_energy >= energy:
                    break  # a local minimum: restart
            elif pick < 0 or move >= walk_length:
                break
            _apply_flip(s, c, pick)
            energy = pick_energy
            move += 1
            if walk_length:
                tabu_until[pick] = move + min_tenure + np.random.randint(0, max_tenure - min_tenure + 1)
                walk_best = min(walk_best, energy)
    return points


@numba.njit(cache=True, nogil=True)
def uniform_position(s: np.ndarray, c: np.ndarray, energy: int, knob: float) -> int:  # pragma: no cover
    """The annealer's default proposal: a position drawn uniformly (`knob` is unused)."""
    return np.random.randint(s.shape[0])


@numba.njit(nogil=True)  # not cached: Numba cannot cache a function that takes a function
def _anneal(n: int, budget: int, walk_length: int, t_start: float, t_end: float, propose: Callable[..., int],
            knob: float, seed: int, curve_evals: np.ndarray, curve_energy: np.ndarray, best_seq: np.ndarray) -> int:  # pragma: no cover
    """Restarted simulated annealing; `propose(s, c, energy, knob)` picks the position to try at each move.
    Writes the improvement curve and the best sequence; returns the number of curve points."""
    np.random.seed(seed)
    s = np.empty(n, dtype=np.int64)
    c = np.zeros(n, dtype=np.int64)
    used, points = 0, 0
    while used < budget:
        energy, used, points, best = _restart(s, c, used, points, best_seq, curve_evals, curve_energy)
        moves = min(walk_length, budget - used)
        for move in range(moves):
            temperature = t_start * (t_end / t_start) ** (move / max(1, moves - 1))
            i = propose(s, c, energy, knob)
            proposed = _flip_energy(s, c, i)
            used += 1
            if proposed < best:  # every scored sequence counts, taken or not
                best = proposed
                points = _note_flip(s, i, best, used, points, best_seq, curve_evals, curve_energy)
            if metropolis(energy, proposed, temperature):
                _apply_flip(s, c, i)
                energy = proposed
    return points


def _run(n: int, budget: int, seed: int, kernel: Callable[..., int], *knobs: object) -> SearchResult:
    """Run a compiled search `kernel(n, budget, *knobs, seed, curve_evals, curve_energy, best_seq)`."""
    if n < 3 or budget < 1:
        raise ValueError(f"need n >= 3 and budget >= 1, got n={n}, budget={budget}")
    # improvements are at most the number of evaluations, and at most E(first) + 1 distinct values
    size = min(budget, n * n * n) + 1
    evals, energy = np.zeros(size, dtype=np.int64), np.zeros(size, dtype=np.int64)
    best = np.zeros(n, dtype=np.int64)
    points = kernel(n, budget, *knobs, seed % (2**32), evals, energy, best)
    curve = list(zip(evals[:points].tolist(), energy[:points].tolist()))
    return SearchResult(best_energy=curve[-1][1], best_sequence=best.astype(np.int8), curve=curve,
                        evaluations=budget)


def hill_climb(n: int, budget: int, seed: int) -> SearchResult:
    """Steepest-descent hill climbing with random restarts, `budget` evaluations (see the module doc)."""
    return _run(n, budget, seed, _search, 0, 0, 0)


def default_tabu_rules(n: int) -> tuple[int, int, int]:
    """(walk_length, min_tenure, max_tenure) used when none are given: see `tabu_search`."""
    return 2 * n, max(1, n // 8), max(1, n // 4)


def tabu_search(n: int, budget: int, seed: int, walk_length: int | None = None, min_tenure: int | None = None,
                max_tenure: int | None = None) -> SearchResult:
    """Tabu search with random restarts, `budget` evaluations (see the module doc).

    Defaults (`default_tabu_rules`): walks of 2N moves, tenure uniform in [N/8, N/4] moves.
    """
    default_walk, default_min, default_max = default_tabu_rules(n)
    walk = default_walk if walk_length is None else walk_length
    low = default_min if min_tenure is None else min_tenure
    high = default_max if max_tenure is None else max_tenure
    if walk < 1 or not 0 <= low <= high < n:
        raise ValueError(f"need walk_length >= 1 and 0 <= min_tenure <= max_tenure < n = {n}; got "
                         f"{walk}, {low}, {high}")
    return _run(n, budget, seed, _search, walk, low, high)


def default_annealing_rules(n: int) -> tuple[int, float, float]:
    """(walk_length, t_start, t_end) used when none are given: see `simulated_annealing`."""
    return 256 * n, 20.0 * n / 32, 5.0 * n / 32


def simulated_annealing(n: int, budget: int, seed: int, walk_length: int | None = None, t_start: float | None = None,
                        t_end: float | None = None, propose: Callable[..., int] = uniform_position,
                        knob: float = 0.0) -> SearchResult:
    """Simulated annealing with random restarts, `budget` evaluations (see the module doc).

    `propose(s, c, energy, knob)`, a `numba.njit` function of the walk's sequence, its
    correlations and energy, returns the position to try; it must not change s or c.
    """
    default_walk, default_start, default_end = default_annealing_rules(n)
    walk = default_walk if walk_length is None else walk_length
    start = default_start if t_start is None else t_start
    end = default_end if t_end is None else t_end
    if walk < 1 or not 0 < end <= start:
        raise ValueError(f"need walk_length >= 1 and 0 < t_end <= t_start; got {walk}, {start}, {end}")
    return _run(n, budget, seed, _anneal, walk, float(start), float(end), propose, float(knob))


def same_budget_searches(problem: object, evaluations: int, seed: int) -> dict[str, SearchResult]:
    """What the classic searches reach with a run's number of evaluations on a LABS problem (well
    under a second at N = 32); none for any other problem. Annealing is left out: its kernel takes
    its proposal as an argument, so it compiles anew in every process (seconds), while these two
    load from Numba's cache."""
    from ttd_envs.problems.labs import LABS

    if not isinstance(problem, LABS) or evaluations < 1:
        return {}
    return {"hill climbing": hill_climb(problem.n, evaluations, seed),
            "tabu search": tabu_search(problem.n, evaluations, seed)}


def same_budget_rows(problem: object, samples: int, initial_states: int, seed: int) -> list[tuple[str, str]]:
    """Lines for a run's summary: each classic search with as many evaluations as the run scored
    (its samples and its initial states)."""
    evaluations = samples + initial_states
    searches = same_budget_searches(problem, evaluations, seed)
    if not searches:
        return []
    rows = [(f"{name} (score)", str(result.best_energy)) for name, result in searches.items()]
    return [*rows, ("classic search", f"each with {evaluations:,} evaluations, as many as this run scored "
                                      f"({samples:,} samples + {initial_states:,} initial states), and random "
                                      f"restarts; TTT against them over 8 seeds: docs/results.md")]
