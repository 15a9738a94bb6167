"""The worked example of docs/adding_a_problem.md is real: it registers, passes check_env and scores."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import gymnasium as gym
from gymnasium.utils.env_checker import check_env

EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "examples" / "golomb.py"


def test_golomb_example_end_to_end():
    spec = importlib.util.spec_from_file_location("golomb_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert len(EXAMPLE.read_text().splitlines()) < 50
    env = gym.make("examples/GolombRuler-v0")
    try:
        check_env(env.unwrapped, skip_render_check=True)
        env.reset(seed=0)
        optimal = "```python\ndef ruler():\n    return [0, 1, 4, 13, 28, 33, 47, 54, 64, 70, 72]\n```"
        _, reward, _, _, info = env.step(optimal)
        assert info["valid"] and info["score"] == 72 and reward == 121 / 72
        clash = "```python\ndef ruler():\n    return list(range(11))\n```"
        _, reward, _, _, info = env.step(clash)
        assert reward == 0 and "same difference" in info["error"]
    finally:
        env.unwrapped.problem.close()
        gym.registry.pop("examples/GolombRuler-v0")
