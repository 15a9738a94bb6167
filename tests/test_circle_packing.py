"""ttd/CirclePacking26-v0 and 32-v0: the vectorised validity check vs a direct pairwise loop, the
shipped records, the tolerance policy, the env contract through the real sandbox, invalid packings."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from ttd_envs.core.program_problem import InvalidConstruction
from ttd_envs.problems.circle_packing import (
    CirclePacking26,
    CirclePacking32,
    check_packing,
    load_circles,
)


def direct_packing_score(centers: np.ndarray, radii: np.ndarray, tol: float = 1e-12) -> float | None:
    """The definition, O(n^2) Python loops: sum of radii if valid, None otherwise."""
    n = len(radii)
    for i in range(n):
        x, y = centers[i]
        r = radii[i]
        if not (r >= 0 and x - r >= -tol and x + r <= 1 + tol and y - r >= -tol and y + r <= 1 + tol):
            return None
        for j in range(i + 1, n):
            if math.dist(centers[i], centers[j]) < r + radii[j] - tol:
                return None
    return float(sum(radii))


def fast_packing_score(centers: np.ndarray, radii: np.ndarray, tol: float = 1e-12) -> float | None:
    try:
        check_packing(centers, radii, tol)
    except InvalidConstruction:
        return None
    return float(np.sum(radii))


def test_vectorised_check_agrees_with_the_direct_loop_on_random_packings():
    rng = np.random.default_rng(0)
    verdicts = []
    for trial in range(400):
        n = int(rng.integers(1, 40))
        centers = rng.random((n, 2))
        radii = rng.random(n) * rng.choice([0.01, 0.05, 0.2])
        fast, direct = fast_packing_score(centers, radii), direct_packing_score(centers, radii)
        assert (fast is None) == (direct is None), trial
        if fast is not None:
            assert fast == pytest.approx(direct, rel=1e-12, abs=0)
        verdicts.append(fast is not None)
    assert 40 < sum(verdicts) < 360  # both valid and invalid packings were exercised


@pytest.mark.parametrize("cls,expected", [(CirclePacking26, 2.6359773947542573), (CirclePacking32, 2.93957249964032)])
def test_shipped_records_score_as_listed(cls, expected):
    circles = load_circles(cls.record_file)
    assert circles.shape == (cls.n, 3)
    state = cls(initial="record").initial_state(np.random.default_rng(0))
    assert abs(state.score - expected) < 1e-12 and state.reward == state.score
    assert abs(direct_packing_score(circles[:, :2], circles[:, 2]) - expected) < 1e-12
    verified = {26: 2.6359830849210715, 32: 2.9395727712101474}  # SimpleTES's packings, better than the starts
    assert cls.record.score == verified[cls.n] and cls.record.higher_is_better and "SimpleTES" in cls.record.holder


def test_tolerance_policy_on_the_shipped_packings():
    """The n = 26 record is valid even at zero tolerance; the n = 32 one crosses a wall by ~9e-16."""
    cp26 = load_circles(CirclePacking26.record_file)
    cp32 = load_circles(CirclePacking32.record_file)
    check_packing(cp26[:, :2], cp26[:, 2], tol=0.0)
    with pytest.raises(InvalidConstruction, match="sticks out of the unit square by 9.16e-16"):
        check_packing(cp32[:, :2], cp32[:, 2], tol=0.0)
    assert CirclePacking32(tolerance=1e-12).score_construction({"circles": cp32.tolist()}) == 2.93957249964032


TWO = np.array([[0.25, 0.25], [0.75, 0.75]])


@pytest.mark.parametrize("value,message", [
    ((np.array([[0.3, 0.5], [0.7, 0.5]]), np.full(2, 0.25), 0.5), "circles 0 and 1 overlap by 0.1"),
    ((TWO, np.array([0.3, 0.25]), 0.55), "circle 0 (x=0.25, y=0.25, r=0.3) sticks out of the unit square by 0.05"),
    ((TWO, np.array([0.1, -0.01]), 0.09), "circle 1 has a negative radius -0.01"),
    ((TWO, np.array([0.1, np.nan]), 0.1), "radii must be finite; found nan at index 1"),
    ((np.array([[0.25, np.inf], [0.75, 0.75]]), np.array([0.1, 0.1]), 0.2), "centers must be finite; found inf at index 0"),
    ((TWO, np.array([0.1, 0.1, 0.1]), 0.3), "radii must have shape (2,), got (3,)"),
    ((TWO[:1], np.array([0.1]), 0.1), "expected 2 circles: centers must have shape (2, 2), got (1, 2)"),
    ((TWO, np.array([True, True]), 2), "radii must hold real numbers; got booleans"),
    ((TWO, ["0.1", "0.1"], 0.2), "radii must hold real numbers"),
    ((TWO + 0j, np.array([0.1, 0.1]), 0.2), "got complex numbers"),
    ((TWO, np.array([0.1, 0.1])), "must return a tuple (centers, radii, sum_radii); got a tuple of length 2"),
    ({"centers": TWO}, "got a dict"),
])
def test_invalid_packings_have_specific_messages(value, message):
    problem = CirclePacking26()
    problem.n = 2
    with pytest.raises(InvalidConstruction) as caught:
        problem.check(value)
    assert message in str(caught.value)


def test_reported_sum_is_ignored():
    problem = CirclePacking26()
    problem.n = 2
    construction, score = problem.check((TWO, np.array([0.25, 0.25]), 99.0))
    assert score == 0.5 and construction.shape == (2, 3)


@pytest.mark.parametrize("env_id", ["ttd/CirclePacking26-v0", "ttd/CirclePacking32-v0"])
def test_check_env_passes(env_id):
    env = gym.make(env_id)
    try:
        check_env(env.unwrapped, skip_render_check=True)
    finally:
        env.unwrapped.problem.close()


def program(body: str) -> str:
    return f"<strategy>reuse the best packing</strategy>\n```python\n{body}\n```\n"


@pytest.mark.parametrize("env_id,expected", [("ttd/CirclePacking26-v0", 2.6359773947542573),
                                             ("ttd/CirclePacking32-v0", 2.93957249964032)])
def test_record_program_through_the_sandbox(env_id, expected):
    env = gym.make(env_id, initial="record", budget_s=10, timeout_s=30)
    try:
        obs, _ = env.reset(seed=0)
        assert "initial_circles" in obs
        code = ("def run_packing():\n"
                "    c = initial_circles\n"
                "    return c[:, :2], c[:, 2], float(c[:, 2].sum())")
        _, reward, _, _, info = env.step(program(code))
        assert info["valid"], info["error"]
        assert info["score"] == expected and reward == expected
        env.reset(seed=0)
        grow = ("def run_packing():\n"
                "    c = initial_circles.copy()\n"
                "    c[0, 2] += 1e-3\n"
                "    return c[:, :2], c[:, 2], 3.0")
        _, reward, _, _, info = env.step(program(grow))
        assert reward == 0.0 and not info["valid"]
        assert "overlap" in info["error"] or "sticks out" in info["error"]
    finally:
        env.unwrapped.problem.close()


def test_empty_start_program_builds_a_valid_grid():
    env = gym.make("ttd/CirclePacking26-v0", budget_s=10, timeout_s=30)
    try:
        obs, _ = env.reset(seed=0)
        assert "no packing yet" in obs and "run_packing()" in obs
        code = ("def run_packing():\n"
                "    xs = (np.arange(26) % 6 + 0.5) / 6\n"
                "    ys = (np.arange(26) // 6 + 0.5) / 6\n"
                "    radii = np.full(26, 1 / 12)\n"
                "    return np.column_stack([xs, ys]), radii, radii.sum()")
        _, reward, _, _, info = env.step(program(code))
        assert info["valid"], info["error"]
        assert info["score"] == pytest.approx(26 / 12, rel=1e-15) and reward == info["score"]
        assert "Σ r = 2.1666666667" in env.unwrapped.problem.prompt(info["state"])
        wrong_count = code.replace("26", "25")
        env.reset(seed=0)
        _, reward, _, _, info = env.step(program(wrong_count))
        assert reward == 0.0 and "expected 26 circles" in info["error"]
    finally:
        env.unwrapped.problem.close()
