"""ttd/AutocorrelationAC3-v0: signed heights, both variants, exact scores, hostile returns."""

from __future__ import annotations

import json
from fractions import Fraction

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from ttd_envs.core.program_problem import InvalidConstruction
from ttd_envs.problems.autocorrelation_ac3 import (
    AC3_CONSTRUCTIONS,
    INITIAL_PROGRAM,
    AutocorrelationAC3,
    ac3_abs_bound,
    ac3_bound,
    ac3_exact,
    signed_heights,
)


def direct(a: list[float], absolute: bool = False) -> float:
    c = np.convolve(a, a)
    peak = np.abs(c).max() if absolute else abs(c.max())
    return 2 * len(a) * peak / np.sum(a) ** 2


@pytest.mark.parametrize("name", AC3_CONSTRUCTIONS)
def test_shipped_constructions_score_as_listed(name):
    entry = AC3_CONSTRUCTIONS[name]
    a = entry.load()
    assert abs(ac3_bound(a) - entry.score) < 1e-12 and abs(direct(a.tolist()) - entry.score) < 1e-12
    assert abs(float(ac3_exact(a)) - entry.score) < 1e-14


def test_the_two_variants_differ_where_the_convolution_dips_below_minus_its_max():
    """AlphaEvolve's C3 function is a poor C3' certificate (its |min c| is larger), SimpleTES's is not."""
    alpha, simpletes = AC3_CONSTRUCTIONS["alphaevolve"].load(), AC3_CONSTRUCTIONS["simpletes"].load()
    assert ac3_abs_bound(alpha) == pytest.approx(4.334046524, abs=1e-8)
    assert ac3_abs_bound(simpletes) == pytest.approx(ac3_bound(simpletes), abs=1e-15)
    assert AutocorrelationAC3(variant="abs").record.score == pytest.approx(1.4536754656, abs=1e-9)


def test_small_cases_are_exact():
    assert ac3_exact(np.array([3.0])) == 2 and ac3_exact(np.ones(7)) == 2
    a = np.array([1.0, -0.5, 2.0])  # c = [1, -1, 4.25, -2, 4]: max 4.25, sum 2.5
    assert ac3_exact(a) == Fraction(2 * 3 * 17, 4) / Fraction(25, 4)
    assert ac3_bound(a) == pytest.approx(float(ac3_exact(a)), rel=1e-15)


@pytest.mark.parametrize("values,message", [
    ([1.0, float("nan")], "finite"),
    ([[1.0, 2.0]], "1-D"),
    ([1.0, -1.0], "about 0"),
    ([0.0, 0.0], "all heights are zero"),
    ([True, False], "booleans"),
    ([1 + 1j], "complex"),
    ("1, 2", "1-D list or numpy array"),
])
def test_hostile_heights_are_refused_with_a_reason(values, message):
    with pytest.raises(InvalidConstruction, match=message):
        signed_heights(values, 100)


def test_check_env_passes():
    env = gym.make("ttd/AutocorrelationAC3-v0")
    try:
        check_env(env.unwrapped, skip_render_check=True)
    finally:
        env.unwrapped.problem.close()


def test_initial_program_steps_to_a_valid_reward_within_its_budget():
    env = gym.make("ttd/AutocorrelationAC3-v0", initial="alphaevolve", budget_s=4, timeout_s=30, cpus=1)
    try:
        env.reset(seed=0)
        _, reward, _, _, info = env.step(INITIAL_PROGRAM)
        assert info["valid"], info["error"]
        assert info["score"] <= AC3_CONSTRUCTIONS["alphaevolve"].score and reward == 1 / info["score"]
        _, reward, _, _, info = env.step("```python\ndef propose_candidate(**kw):\n    return [1.0, float('nan')]\n```")
        assert not info["valid"] and reward == 0 and "finite" in info["error"]
    finally:
        env.unwrapped.problem.close()


def test_certificate_of_the_record_is_an_exact_tie():
    from ttd_envs import certificates

    problem = AutocorrelationAC3()
    certificate = certificates.certify_state("ttd/AutocorrelationAC3-v0", problem, AC3_CONSTRUCTIONS["simpletes"].load())
    assert certificate["verdict"] == "tie" and certificate["score"]["exact"]
    assert certificate["score"]["lower"].startswith("1.45367546559518")
    assert json.loads(json.dumps(certificate))["record"]["who"] == "SimpleTES"
