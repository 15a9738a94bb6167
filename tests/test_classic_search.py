"""The classic LABS baselines: exact energies, exact evaluation counts, and they do search."""

from __future__ import annotations

import numba
import numpy as np
import pytest

from ttd_agent.classic_search import (
    _correlations,
    _flip_energy,
    hill_climb,
    same_budget_rows,
    simulated_annealing,
    tabu_search,
)
from ttd_envs.problems.labs import LABS, energy, reference_energy

SEARCHES = {"hill climbing": hill_climb, "tabu": tabu_search, "annealing": simulated_annealing}


def test_incremental_flip_energy_is_exact() -> None:
    rng = np.random.default_rng(0)
    for n in (3, 7, 32, 65):
        s = rng.choice(np.array([-1, 1]), size=n).astype(np.int64)
        c = np.zeros(n, dtype=np.int64)
        assert _correlations(s, c) == energy(s)
        for i in range(n):
            flipped = s.copy()
            flipped[i] = -flipped[i]
            assert _flip_energy(s, c, i) == energy(flipped), (n, i)


@pytest.mark.parametrize("name", SEARCHES)
def test_result_is_consistent_and_within_budget(name: str) -> None:
    search = SEARCHES[name]
    result = search(32, 3000, seed=5)
    assert energy(result.best_sequence) == result.best_energy
    evals = [e for e, _ in result.curve]
    energies = [E for _, E in result.curve]
    assert evals[0] == 1, "the first scored sequence is the first random start"
    assert all(a < b for a, b in zip(evals, evals[1:])) and evals[-1] <= 3000
    assert all(a > b for a, b in zip(energies, energies[1:])) and energies[-1] == result.best_energy
    again = search(32, 3000, seed=5)
    assert again.curve == result.curve, "a seed fixes the whole search"
    assert search(32, 3000, seed=6).curve != result.curve


@pytest.mark.parametrize("name", SEARCHES)
def test_every_scored_sequence_counts(name: str) -> None:
    """A budget of 1 scores only the start; a start plus one scan of N flips (or N annealing moves)
    costs 1 + N."""
    one = SEARCHES[name](32, 1, seed=3)
    assert one.curve == [(1, one.best_energy)]
    scan = SEARCHES[name](32, 33, seed=3)
    assert scan.curve[0] == one.curve[0], "same seed, same start"
    assert all(e <= 33 for e, _ in scan.curve)
    # a random N = 32 sequence is never a local minimum in practice: a scan (or one of 32 uniform
    # proposals) finds a lower flip
    assert len(scan.curve) >= 2 and 2 <= scan.curve[1][0] <= 33


@pytest.mark.parametrize("name", SEARCHES)
def test_small_optimum_is_found(name: str) -> None:
    """N = 13 (the Barker sequence, E* = 6) is easy for each search with restarts."""
    optimum, _ = reference_energy(13)
    assert SEARCHES[name](13, 20_000, seed=0).best_energy == optimum


def test_tabu_rules_are_checked() -> None:
    with pytest.raises(ValueError, match="tenure"):
        tabu_search(16, 100, seed=0, min_tenure=4, max_tenure=16)
    with pytest.raises(ValueError, match="budget"):
        hill_climb(16, 0, seed=0)


def test_annealing_rules_are_checked() -> None:
    with pytest.raises(ValueError, match="t_end"):
        simulated_annealing(16, 100, seed=0, t_start=1.0, t_end=2.0)
    with pytest.raises(ValueError, match="walk_length"):
        simulated_annealing(16, 100, seed=0, walk_length=0)


@numba.njit
def _always_first(s: np.ndarray, c: np.ndarray, energy: int, knob: float) -> int:  # pragma: no cover
    return 0


def test_annealing_tries_only_what_its_proposal_proposes() -> None:
    """With a proposal that always names position 0, one walk sees only its start and that flip."""
    start = simulated_annealing(32, 1, seed=4).best_sequence.astype(np.int64)
    flipped = start.copy()
    flipped[0] = -flipped[0]
    walk = simulated_annealing(32, 1 + 200, seed=4, walk_length=200, propose=_always_first)
    assert walk.best_energy == min(energy(start), energy(flipped))
    assert len(walk.curve) <= 2
    uniform = simulated_annealing(32, 1 + 200, seed=4, walk_length=200)
    assert uniform.curve[0] == walk.curve[0], "same seed, same start"
    assert uniform.best_energy < walk.best_energy, "uniform proposals reach further than one position"


def test_a_run_summary_shows_each_classic_search_at_the_runs_budget() -> None:
    rows = dict(same_budget_rows(LABS(n=20), 1_992, 8, seed=2))
    assert rows["hill climbing (score)"] == str(hill_climb(20, 2_000, seed=2).best_energy)
    assert rows["tabu search (score)"] == str(tabu_search(20, 2_000, seed=2).best_energy)
    assert "2,000 evaluations" in rows["classic search"], "the same thousands separator as the samples"
    assert "(1,992 samples + 8 initial states)" in rows["classic search"], "the two counts reconciled"
    assert same_budget_rows(object(), 692, 8, seed=2) == [], "only LABS has classic baselines"
