"""The data and readout of the supervised bound (benchmarks/labs_learnability.py) are exact."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch

from benchmarks.labs_learnability import (
    local_rule_changes,
    mass_on_good,
    network,
    walk_states,
)
from ttd_envs.problems.labs import energy


def test_walk_states_carry_the_exact_energy_change_of_every_flip() -> None:
    states, changes = walk_states(20, 50, 3, 10.0)
    assert states.shape == changes.shape == (50, 20)
    assert set(np.unique(states)) <= {-1, 1}
    for s, change in zip(states, changes):
        for i in range(20):
            flipped = s.copy()
            flipped[i] = -flipped[i]
            assert change[i] == energy(flipped) - energy(s)
    assert len({row.tobytes() for row in states}) > 25, "the walk moves"


def test_local_rule_marks_positions_equal_to_their_right_neighbour() -> None:
    states = np.array([[1, 1, -1, -1, 1], [1, -1, 1, -1, 1]])
    assert local_rule_changes(states).tolist() == [[-10, 0, -10, 0, 0], [0, 0, 0, 0, 0]]


@pytest.mark.parametrize("kind", ["flip-policy", "mlp"])
def test_an_untrained_network_puts_about_the_uniform_share_on_good_flips(kind: str) -> None:
    states, changes = walk_states(32, 400, 5, 20.0)
    good = torch.tensor(changes < 0, dtype=torch.float32)
    args = argparse.Namespace(n=32, network=kind, width=64, d_model=64, layers=2, lr=1e-3)
    _, inputs_of, logp_of = network(args)
    with torch.no_grad():
        logp = logp_of(inputs_of(states))
    assert logp.shape == (400, 32)
    assert abs(mass_on_good(logp, good) - float(good.mean())) < 0.03
    assert mass_on_good(logp, torch.ones_like(good)) == pytest.approx(1.0)
