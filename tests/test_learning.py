"""Learning happens on LABS, and where it stands against hill climbing at equal evaluations.

TTT and best-of-N start from the same embedded policy (edit prior included) and draw the same
samples (STEPS x 8 groups x 16); best-of-N never updates and never leaves the initial states.
Hill climbing (steepest descent with random restarts, `ttd_agent.classic_search`) gets the same
evaluations: the 2,048 samples plus the 8 scored initial states.

Measured at N = 32, 16 steps (best energy; merit factor = 512 / E; seeds 0-4 re-read from the
runs of `benchmarks/labs_ablation.py`, which pass through the same 2,056 evaluations, seed 5 from
the first measurement of this test):
seed               0    1    2    3    4    5
TTT              112  100  112  128  104  120
best-of-N        176  180  176  172  140  192
hill climbing     92  108  132   92  116  120
TTT is far ahead of best-of-N on every seed (merit factor gap >= 1.02, MARGIN = 0.75), but at
this budget it does not beat hill climbing: it is behind on seeds 0 and 3 by up to 36, ahead on
1, 2 and 4 (issue 15; docs/results.md). HILL_CLIMBING_SLACK = 40 holds on every seed tried and
fails if TTT falls further behind. CI runs seeds 0 and 1.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ttd_agent.classic_search import hill_climb
from ttd_agent.trainer import DiscoveryConfig, DiscoveryTrainer

N, STEPS = 32, 16
SEEDS = (0, 1)
MARGIN = 0.75
"""Merit factor TTT minus best-of-N that must hold (smallest measured: 1.02, see the module docstring)."""
HILL_CLIMBING_SLACK = 40
"""Energy by which TTT may trail hill climbing at equal evaluations (largest measured: 36)."""


def run(tmp_path: Path, seed: int, **overrides: object) -> tuple[float, int]:
    """(best merit factor, evaluations: samples plus the scored initial states) of one run."""
    config = DiscoveryConfig(env="ttd/LABS-v0", env_kwargs={"n": N}, steps=STEPS, seed=seed,
                             run_dir=str(tmp_path / f"run-{seed}-{len(overrides)}"), plot_every=10**9, **overrides)
    trainer = DiscoveryTrainer(config)
    best = trainer.run()
    return float(best.reward), trainer.samples + trainer.config.groups_per_step


@pytest.mark.slow
@pytest.mark.parametrize("seed", SEEDS)
def test_ttt_against_best_of_n_and_hill_climbing_at_equal_evaluations(tmp_path: Path, seed: int) -> None:
    ttt, evaluations = run(tmp_path, seed)
    best_of_n, same = run(tmp_path, seed, update=False, reuse="none")
    assert same == evaluations
    assert ttt >= best_of_n + MARGIN, f"seed {seed}: TTT merit factor {ttt:.3f} vs best-of-N {best_of_n:.3f}"
    ttt_energy = round(N * N / (2 * ttt))
    climb = hill_climb(N, evaluations, seed).best_energy
    assert ttt_energy <= climb + HILL_CLIMBING_SLACK, (
        f"seed {seed}: TTT best energy {ttt_energy} vs hill climbing {climb} at {evaluations} evaluations")
