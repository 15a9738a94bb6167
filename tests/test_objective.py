"""Group advantages: hand-computed cases, limits, the adaptive-beta constraint, invariances."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ttd_agent.objective import (
    OBJECTIVES,
    adaptive_beta,
    entropic_advantages,
    group_advantages,
    grpo_advantages,
    is_informative,
    mean_advantages,
    tilted_kl,
)


def naive_entropic(rewards: list[float], beta: float) -> np.ndarray:
    """agent.md section 2 written out term by term, without any numerical care."""
    k = len(rewards)
    top = max(rewards)
    e = [math.exp(beta * (r - top)) for r in rewards]
    out = []
    for i in range(k):
        z = sum(e[j] for j in range(k) if j != i) / (k - 1)
        out.append(e[i] / (z + 1e-12) - 1)
    return np.array(out)


def naive_kl(rewards: list[float], beta: float) -> float:
    """KL(q || uniform) straight from the definition (fine for moderate beta * r)."""
    w = [math.exp(beta * r) for r in rewards]
    q = [x / sum(w) for x in w]
    return sum(p * math.log(p * len(q)) for p in q if p > 0)


def test_entropic_two_rewards_by_hand() -> None:
    # beta = ln 3, r = [0, 1]: e = [1/3, 1], each Z_i is the other e, so A = [1/3 - 1, 3 - 1].
    advantages = entropic_advantages(np.array([0.0, 1.0]), math.log(3))
    np.testing.assert_allclose(advantages, [-2 / 3, 2.0], rtol=1e-10)


def test_entropic_three_rewards_by_hand() -> None:
    # beta = 1, r = [0, 0, ln 2]: e = [1/2, 1/2, 1]; Z = [3/4, 3/4, 1/2]; A = [-1/3, -1/3, 1].
    advantages = entropic_advantages(np.array([0.0, 0.0, math.log(2)]), 1.0)
    np.testing.assert_allclose(advantages, [-1 / 3, -1 / 3, 1.0], rtol=1e-10)


def test_entropic_matches_the_formula_on_random_groups() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        rewards = rng.normal(size=int(rng.integers(2, 16))).tolist()
        beta = float(rng.uniform(0.0, 5.0))
        np.testing.assert_allclose(entropic_advantages(np.array(rewards), beta), naive_entropic(rewards, beta),
                                   rtol=1e-9, atol=1e-12)


def test_entropic_keeps_small_weights_that_a_subtraction_would_erase() -> None:
    # e = [1, 1e-10]: Z_0 must be 1e-10 exactly, not (1 + 1e-10) - 1 with its rounding error.
    beta = 10 * math.log(10)
    advantages = entropic_advantages(np.array([1.0, 0.0]), beta)
    np.testing.assert_allclose(advantages[0], 1 / (1e-10 + 1e-12) - 1, rtol=1e-12)


def test_entropic_small_beta_limit_is_a_scaled_mean_baseline() -> None:
    # e_i ≈ c (1 + beta r_i) so A_i = beta (r_i - mean_{j != i} r_j) + O(beta^2),
    # and r_i - mean_{j != i} r_j = k / (k - 1) * (r_i - mean r).
    rewards = np.array([0.3, -1.2, 0.7, 2.0, 0.0])
    k = rewards.size
    limit = k / (k - 1) * mean_advantages(rewards)
    errors = [np.abs(entropic_advantages(rewards, beta) / beta - limit).max() for beta in (1e-2, 1e-3, 1e-4)]
    assert errors[2] < 1e-3
    # first-order convergence: ten times smaller beta, about ten times smaller error
    assert 5 < errors[0] / errors[1] < 20 and 5 < errors[1] / errors[2] < 20


def test_tilted_kl_by_hand() -> None:
    # r = [0, ln 3], beta = 1: q = [1/4, 3/4], KL = 1/4 ln(2/4) + 3/4 ln(6/4).
    expected = 0.25 * math.log(0.5) + 0.75 * math.log(1.5)
    assert tilted_kl(np.array([0.0, math.log(3)]), 1.0) == pytest.approx(expected, rel=1e-12)
    assert tilted_kl(np.array([0.0, math.log(3)]), 0.0) == 0.0


def test_tilted_kl_is_stable_for_huge_beta() -> None:
    # One winner out of four: KL -> log 4 as beta -> inf, with no overflow on the way.
    assert tilted_kl(np.array([0.0, 0.1, 0.2, 1.0]), 1e9) == pytest.approx(math.log(4), rel=1e-12)


@pytest.mark.parametrize("rewards", [
    [0.0, 0.0, 0.0, 1.0],
    [0.1, 0.5, 0.2, 0.9, 0.3, 0.3, 0.0, 0.05],
    [1000.0, 1000.001, 1000.002, 1000.0005],  # beta must exceed 1 by far: the doubling bracket
    [0.0, 50.0, 100.0, 25.0],                  # KL(1) is already above ln 2: bisect on [0, 1]
])
def test_adaptive_beta_hits_ln2(rewards: list[float]) -> None:
    beta = adaptive_beta(np.array(rewards))
    assert 0 < beta < 1e6
    assert tilted_kl(np.array(rewards), beta) == pytest.approx(math.log(2), abs=1e-6)
    centred = [r - rewards[0] for r in rewards]  # the naive KL cannot take exp(beta * 1000)
    assert naive_kl(centred, beta) == pytest.approx(math.log(2), abs=1e-6)


def test_adaptive_beta_caps_when_ln2_is_out_of_reach() -> None:
    # KL -> log(k / #winners) < ln 2 in each case, so no finite beta reaches delta.
    for rewards in ([0.0, 1.0, 1.0], [0.0, 1.0, 1.0, 1.0, 1.0], [3.0, 3.0, 3.0]):
        assert adaptive_beta(np.array(rewards)) == 1e6
    assert adaptive_beta(np.array([0.0, 0.0, 1.0]), beta_max=2.0) == 2.0  # KL(2) ≈ 0.43
    # a spread too small for beta_max to tilt enough is capped too
    assert adaptive_beta(np.array([0.0, 0.0, 0.0, 1e-9])) == 1e6


def test_adaptive_beta_at_the_ln2_limit_stops_where_double_precision_does() -> None:
    # k = 2, one winner: KL -> ln 2 from below and equals it in floating point from beta ~ 40.
    beta = adaptive_beta(np.array([0.0, 1.0]))
    assert 30 < beta < 50
    assert tilted_kl(np.array([0.0, 1.0]), beta) == pytest.approx(math.log(2), abs=1e-12)


def test_adaptive_beta_of_a_single_reward_is_zero() -> None:
    assert adaptive_beta(np.array([0.7])) == 0.0


def test_adaptive_advantages_are_affine_invariant() -> None:
    rng = np.random.default_rng(1)
    rewards = rng.uniform(size=8)
    reference, beta = group_advantages(rewards, "entropic-adaptive")
    for a, b in ((3.0, -2.0), (1e-3, 5.0), (250.0, 0.0)):
        advantages, scaled_beta = group_advantages(a * rewards + b, "entropic-adaptive")
        np.testing.assert_allclose(advantages, reference, rtol=1e-6, atol=1e-9)
        assert scaled_beta == pytest.approx(beta / a, rel=1e-6)


def test_grpo_by_hand() -> None:
    # r = [1, 2, 3, 4]: mean 2.5, unbiased std sqrt(5/3)
    std = math.sqrt(5 / 3)
    expected = [(x - 2.5) / (std + 1e-6) for x in (1, 2, 3, 4)]
    np.testing.assert_allclose(grpo_advantages(np.array([1.0, 2.0, 3.0, 4.0])), expected, rtol=1e-12)


def test_mean_baseline_by_hand() -> None:
    np.testing.assert_allclose(mean_advantages(np.array([1.0, 2.0, 6.0])), [-2.0, -1.0, 3.0])


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_constant_rewards_give_zero_advantages(objective: str) -> None:
    rewards = np.full(6, 0.37)
    advantages, _ = group_advantages(rewards, objective)
    # not exactly 0: the entropic estimate is 1/(1 + 1e-12) - 1, and GRPO divides the rounding
    # error of r - mean(r) (~1e-17) by std + 1e-6; such groups are dropped by is_informative anyway
    np.testing.assert_allclose(advantages, 0.0, atol=1e-9)
    assert not is_informative(rewards)


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_single_rollout_group_gives_zero_advantage(objective: str) -> None:
    advantages, beta = group_advantages(np.array([0.9]), objective)
    np.testing.assert_array_equal(advantages, [0.0])
    assert not is_informative(np.array([0.9]))
    if objective == "entropic-adaptive":
        assert beta == 0.0


def test_group_advantages_reports_the_beta_it_used() -> None:
    rewards = np.array([0.0, 0.2, 0.9, 0.4])
    advantages, beta = group_advantages(rewards, "entropic", beta=2.0)
    assert beta == 2.0
    np.testing.assert_allclose(advantages, naive_entropic(rewards.tolist(), 2.0), rtol=1e-10)
    _, adaptive = group_advantages(rewards, "entropic-adaptive")
    assert adaptive == adaptive_beta(rewards)
    assert group_advantages(rewards, "mean")[1] is None
    assert group_advantages(rewards, "grpo")[1] is None
    assert is_informative(rewards)


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="finite"):
        entropic_advantages(np.array([0.0, np.nan]), 1.0)
    with pytest.raises(ValueError, match="finite"):
        group_advantages(np.array([0.0, np.inf]), "mean")
    with pytest.raises(ValueError, match="1-D"):
        grpo_advantages(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="1-D"):
        adaptive_beta(np.array([]))
    with pytest.raises(ValueError, match="beta"):
        entropic_advantages(np.array([0.0, 1.0]), -1.0)
    with pytest.raises(ValueError, match="unknown objective"):
        group_advantages(np.array([0.0, 1.0]), "max")  # type: ignore[arg-type]
