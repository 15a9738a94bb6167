"""ttd/ErdosOverlap-v0: exact scoring against the direct formula, the record, and the env contract."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from ttd_envs.core.state import State
from ttd_envs.problems.erdos import ErdosOverlap, c5_bound, load_record_construction

RECORD_C5 = 0.38087031058621895  # Together AI's n = 600, the best verified construction (the record to beat)


def direct_c5(h: np.ndarray) -> float:
    """The definition, O(n^2): (2/n) max over lags of sum_i h[i+k](1 - h[i])."""
    return float(np.max(np.correlate(h, 1.0 - h, "full")) * 2.0 / h.size)


@pytest.mark.parametrize("n", [1, 2, 3, 17, 600, 1000, 4096, 10_007])
def test_fft_scorer_matches_direct_formula(n):
    rng = np.random.default_rng(n)
    for _ in range(3):
        h = rng.random(n)
        assert c5_bound(h) == pytest.approx(direct_c5(h), rel=1e-12, abs=0)


def test_record_construction_scores_the_record():
    h = load_record_construction()
    assert h.size == 600 and np.sum(h) == 300.0
    assert abs(c5_bound(h) - RECORD_C5) < 1e-12
    assert abs(direct_c5(h) - RECORD_C5) < 1e-12


@pytest.fixture(scope="module")
def env():
    env = gym.make("ttd/ErdosOverlap-v0", initial="record", budget_s=5, timeout_s=20)
    yield env
    env.unwrapped.problem.close()


def program(body: str) -> str:
    return f"Here is my program.\n```python\n{body}\n```\n"


def test_check_env_passes():
    env = gym.make("ttd/ErdosOverlap-v0")
    check_env(env.unwrapped, skip_render_check=True)
    env.unwrapped.problem.close()


def test_record_program_step_gives_record_score_and_reward(env):
    env.reset(seed=0)
    code = ("def run(seed=42, budget_s=5, **kwargs):\n"
            "    h = initial_h_values.copy()\n"
            "    print('n =', h.size)\n"
            "    return h, c5_bound(h), h.size")
    obs, reward, terminated, truncated, info = env.step(program(code))
    assert info["valid"] and info["error"] is None
    assert abs(info["score"] - RECORD_C5) < 1e-12
    assert reward == 1.0 / info["score"]
    assert terminated and not truncated
    assert "n = 600" in info["stdout"]
    assert isinstance(info["state"], State) and info["state"].parent_id is not None
    assert "initial_h_values" in obs


def test_reward_is_the_recomputed_value_not_the_claim(env):
    """Under-reporting within the reference's 1e-4 tolerance must not earn a better reward."""
    env.reset(seed=0)
    code = ("def run(seed=42, budget_s=5, **kwargs):\n"
            "    h = initial_h_values\n"
            "    return h, c5_bound(h) - 9e-5, h.size")
    _, reward, _, _, info = env.step(program(code))
    assert info["valid"]
    assert abs(info["score"] - RECORD_C5) < 1e-12
    assert reward == pytest.approx(1.0 / RECORD_C5, rel=1e-15)


def test_a_wrong_claim_is_rejected(env):
    env.reset(seed=0)
    code = ("def run(seed=42, budget_s=5, **kwargs):\n"
            "    h = initial_h_values\n"
            "    return h, 0.2, h.size")
    _, reward, _, _, info = env.step(program(code))
    assert reward == 0.0 and not info["valid"] and "disagrees with the recomputed" in info["error"]


def test_random_initial_state_is_seeded_and_in_range():
    problem = ErdosOverlap()
    a = problem.initial_state(np.random.default_rng(5))
    b = problem.initial_state(np.random.default_rng(5))
    np.testing.assert_array_equal(a.construction, b.construction)
    assert 40 <= a.construction.size <= 99
    assert 0.45 < a.score < 0.56 and a.reward == 1.0 / a.score


def test_improving_program_from_random_start_gets_a_valid_lower_bound():
    env = gym.make("ttd/ErdosOverlap-v0", budget_s=5, timeout_s=20)
    try:
        _, info0 = env.reset(seed=3)
        code = ("def run(seed=42, budget_s=5, **kwargs):\n"
                "    n = 200\n"
                "    x = np.linspace(0, 2, n, endpoint=False)\n"
                "    h = np.clip(1.0 - np.abs(x - 1.0), 0, 1) ** 0.5\n"
                "    h = h * (n / 2) / h.sum()\n"
                "    h = np.clip(h, 0, 1)\n"
                "    return h, c5_bound(h * (n / 2) / h.sum()), n")
        _, reward, _, _, info = env.step(program(code))
        assert info["valid"], info["error"]
        assert info["score"] == pytest.approx(direct_c5(info["state"].construction), rel=1e-12)
        assert reward == 1.0 / info["score"]
    finally:
        env.unwrapped.problem.close()
