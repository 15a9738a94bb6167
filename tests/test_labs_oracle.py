"""The oracle proposal of the LABS ceiling study (benchmarks/labs_oracle.py) does what docs/results.md says."""

from __future__ import annotations

import numpy as np

from benchmarks.labs_ablation import UniformFlips
from benchmarks.labs_oracle import (
    OracleFlips,
    best_flip_oracle,
    improving_flip_oracle,
    run_walk_oracle,
)
from ttd_agent.classic_search import _correlations, _flip_energy, simulated_annealing
from ttd_envs.problems.labs import energy, string_to_sequence


def _prompts(count: int, n: int = 16, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return ["".join(rng.choice(["+", "-"], size=n)) for _ in range(count)]


def test_p_one_always_takes_the_best_single_flip() -> None:
    oracle = OracleFlips(1.0, seed=3)
    for prompt, group in zip(prompts := _prompts(5), oracle.sample(prompts, 4, temperature=1.0, max_new_tokens=16)):
        seq = string_to_sequence(prompt)
        best = min(energy(np.where(np.arange(len(seq)) == i, -seq, seq)) for i in range(len(seq)))
        for sample in group:
            assert sum(a != b for a, b in zip(prompt, sample.text)) == 1
            assert energy(string_to_sequence(sample.text)) == best
    assert oracle.oracle_moves == oracle.samples == 20


def test_p_zero_repeats_the_uniform_flips_of_the_benchmark() -> None:
    prompts = _prompts(4)
    ours = OracleFlips(0.0, seed=7).sample(prompts, 8, temperature=1.0, max_new_tokens=16)
    theirs = UniformFlips(seed=7).sample(prompts, 8, temperature=1.0, max_new_tokens=16)
    assert [[s.text for s in g] for g in ours] == [[s.text for s in g] for g in theirs]


def test_improving_choice_draws_improving_flips() -> None:
    oracle = OracleFlips(1.0, seed=5, choose="improving")
    for prompt, group in zip(prompts := _prompts(5), oracle.sample(prompts, 8, temperature=1.0, max_new_tokens=16)):
        start = energy(string_to_sequence(prompt))
        for sample in group:
            assert energy(string_to_sequence(sample.text)) < start


def test_walk_oracle_at_p_zero_is_the_plain_annealer() -> None:
    plain = simulated_annealing(24, 3000, seed=9)
    assert run_walk_oracle(24, 3000, 9, 0.0, "improving").curve == plain.curve


def test_walk_oracles_take_the_flip_they_promise() -> None:
    rng = np.random.default_rng(2)
    for _ in range(20):
        s = rng.choice(np.array([-1, 1]), size=20).astype(np.int64)
        c = np.zeros(20, dtype=np.int64)
        start = _correlations(s, c)
        found = [_flip_energy(s, c, i) for i in range(20)]
        assert found[best_flip_oracle(s, c, start, 1.0)] == min(found)
        if min(found) < start:
            assert found[improving_flip_oracle(s, c, start, 1.0)] < start
