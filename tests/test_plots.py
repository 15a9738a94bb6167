"""The run's pictures: a plot with nothing to draw says so; a LABS run's best-so-far plot shows
the classic searches its summary compares against, at the same evaluations."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from ttd_agent.classic_search import hill_climb, tabu_search
from ttd_agent.plots import plot_best_so_far, plot_reward_distribution
from ttd_agent.trainer import DiscoveryConfig, DiscoveryTrainer
from ttd_envs.problems.labs import LABS


def dark_share_in_the_middle(path: Path) -> float:
    """Share of non-white pixels in the middle of the picture, where a bare axis is blank."""
    pixels = imread(path)[..., :3]
    height, width = pixels.shape[:2]
    middle = pixels[int(0.42 * height):int(0.58 * height), int(0.3 * width):int(0.7 * width)]
    return float(np.mean(middle.min(axis=-1) < 0.5))


def test_plots_with_nothing_to_draw_carry_a_note(tmp_path: Path) -> None:
    failed = [{"step": step, "reward": 0.0, "valid": False} for step in (1, 2) for _ in range(8)]
    plot_reward_distribution(failed, tmp_path / "rewards.png", "no valid rollout")
    plot_best_so_far({"best so far": ([0, 16], [float("nan"), float("nan")])}, tmp_path / "best.png", "no best")
    assert dark_share_in_the_middle(tmp_path / "rewards.png") > 0.02
    assert dark_share_in_the_middle(tmp_path / "best.png") > 0.02
    valid = [{**row, "reward": 1.0 + row["step"], "valid": True} for row in failed]
    plot_reward_distribution(valid, tmp_path / "drawn.png", "valid rollouts")
    plot_best_so_far({"best so far": ([0, 16], [1.0, 2.0])}, tmp_path / "drawn_best.png", "a best")
    assert dark_share_in_the_middle(tmp_path / "drawn.png") < 0.02, "the note is only for an empty plot"
    assert dark_share_in_the_middle(tmp_path / "drawn_best.png") < 0.02, "the note is only for an empty plot"


def test_a_labs_run_plots_the_classic_searches_at_its_own_evaluations(tmp_path: Path) -> None:
    config = DiscoveryConfig(env="ttd/LABS-v0", env_kwargs={"n": 16}, groups_per_step=4, group_size=8, steps=2,
                             embedded={"d_model": 32, "n_layer": 1, "n_head": 2}, edit_prior=False,
                             run_dir=str(tmp_path / "run"), seed=5)
    trainer = DiscoveryTrainer(config)
    trainer.run()
    evaluations = trainer.samples + trainer.initial_states
    assert (trainer.samples, trainer.initial_states) == (64, 4)
    curves = trainer.classic_curves()
    assert set(curves) == {"hill climbing (same evaluations)", "tabu search (same evaluations)"}
    problem = LABS(n=16)
    for name, search in (("hill climbing", hill_climb), ("tabu search", tabu_search)):
        xs, rewards = curves[f"{name} (same evaluations)"]
        assert xs[-1] == trainer.samples and xs == sorted(xs) and xs[0] == 0
        assert rewards[-1] == pytest.approx(problem.reward_for(search(16, evaluations, 5).best_energy))
        assert rewards == sorted(rewards)
    assert (tmp_path / "run" / "plots" / "best_so_far.png").stat().st_size > 0

