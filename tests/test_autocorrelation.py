"""ttd/AutocorrelationAC1-v0 and AC2-v0: exact scorers vs the direct formulas, shipped records, the
env contract through the real sandbox, and every kind of invalid construction."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from ttd_envs.core.program_problem import InvalidConstruction
from ttd_envs.problems.autocorrelation import (
    AC1_CONSTRUCTIONS,
    AC2_CONSTRUCTIONS,
    AutocorrelationAC1,
    AutocorrelationAC2,
    ac1_bound,
    ac2_bound,
    heights,
)


def direct_ac1(a: np.ndarray) -> float:
    """The definition, O(n^2): 2n max_k (a*a)_k / (sum a)^2 with the direct convolution."""
    a = np.asarray(a, dtype=np.float64)
    c = np.convolve(a, a)
    return float(2 * a.size * np.max(c) / np.sum(a) ** 2)


def direct_ac2(a: np.ndarray) -> float:
    """The definition, O(n^2): piecewise-linear L2^2 interval by interval on the [-1/2, 1/2] grid,
    L1 = sum|c| / (M + 1), Linf = max|c|, as in the reference verifier."""
    a = np.asarray(a, dtype=np.float64)
    c = np.convolve(a, a)
    m = c.size
    y = np.concatenate(([0.0], c, [0.0]))
    widths = np.diff(np.linspace(-0.5, 0.5, m + 2))
    l2_squared = np.sum(widths / 3.0 * (y[:-1] ** 2 + y[:-1] * y[1:] + y[1:] ** 2))
    return float(l2_squared / ((np.sum(np.abs(c)) / (m + 1)) * np.max(np.abs(c))))


RANDOM_INPUTS = [
    ("uniform", lambda rng, n: rng.random(n)),
    ("sparse", lambda rng, n: rng.random(n) * (rng.random(n) < 0.2) + (np.arange(n) == 0)),
    ("integers", lambda rng, n: rng.integers(0, 7, n) + (np.arange(n) == n - 1)),
]


@pytest.mark.parametrize("n", [1, 2, 3, 64, 1000, 4097, 30_000])
@pytest.mark.parametrize("kind,draw", RANDOM_INPUTS, ids=[k for k, _ in RANDOM_INPUTS])
def test_fft_scorers_match_direct_formulas(n, kind, draw):
    rng = np.random.default_rng(n)
    a = draw(rng, n)
    assert ac1_bound(heights(a)) == pytest.approx(direct_ac1(a), rel=1e-12, abs=0)
    assert ac2_bound(heights(a)) == pytest.approx(direct_ac2(a), rel=1e-12, abs=0)


@pytest.mark.parametrize("scale", [1e-300, 1e-200, 1e200, 1e300])
def test_scorers_are_scale_invariant_where_the_direct_formula_overflows(scale):
    a = np.random.default_rng(1).random(5000)
    assert ac1_bound(heights(a * scale)) == pytest.approx(direct_ac1(a), rel=1e-12, abs=0)
    assert ac2_bound(heights(a * scale)) == pytest.approx(direct_ac2(a), rel=1e-12, abs=0)


def test_constant_sequences_give_the_known_values():
    for n in (1, 10, 6520):
        a = np.full(n, 0.227)
        assert ac1_bound(a) == pytest.approx(2.0, rel=1e-13)
        assert ac2_bound(a) == pytest.approx(2.0 / 3.0, rel=1e-13)


@pytest.mark.parametrize("name", AC1_CONSTRUCTIONS)
def test_ac1_shipped_constructions_score_as_listed(name):
    entry = AC1_CONSTRUCTIONS[name]
    a = entry.load()
    assert abs(ac1_bound(heights(a)) - entry.score) < 1e-12
    assert abs(direct_ac1(a) - entry.score) < 1e-12


@pytest.mark.parametrize("name", AC2_CONSTRUCTIONS)
def test_ac2_shipped_constructions_score_as_listed(name):
    entry = AC2_CONSTRUCTIONS[name]
    a = entry.load()
    assert abs(ac2_bound(heights(a)) - entry.score) < 1e-12
    assert abs(direct_ac2(a) - entry.score) < 1e-12


def test_records_are_the_listed_numbers():
    assert AutocorrelationAC1.record.score == 1.5028628587053108 and not AutocorrelationAC1.record.higher_is_better
    # the record to beat is the best verified entry; ImprovEvolve's 0.96258 has no public construction
    assert AutocorrelationAC2.record.score == 0.9612055422690102 and AutocorrelationAC2.record.higher_is_better
    assert "better claim without a verified construction: 0.96272" in AutocorrelationAC2.record.holder
    assert AC2_CONSTRUCTIONS[AutocorrelationAC2.record_name].score == 0.9612055422690102  # the shipped start
    assert AC1_CONSTRUCTIONS["ttt_discover"].load().size == 30_000
    assert AC2_CONSTRUCTIONS["ttt_discover"].score == 0.9591797711482716


@pytest.mark.parametrize("value,message", [
    ([0.5, -0.1, 0.3], "non-negative; found -0.1 at index 1"),
    ([], "empty"),
    (np.zeros(0), "empty"),
    (np.ones(100_001), "too long: at most 100000"),
    ([0.5, float("nan"), 1.0], "finite; found nan at index 1"),
    (np.array([1.0, np.inf]), "finite; found inf at index 1"),
    ([0.0, 0.0, 0.0], "all heights are zero"),
    ([1.0, True, 0.5], "not booleans"),
    (np.ones(5, dtype=bool), "not booleans"),
    (np.ones(5, dtype=complex), "complex"),
    (["0.5", "1"], "real numbers"),
    ([1.0, None], "real numbers"),
    (np.ones((3, 4)), "1-D sequence; got shape (3, 4)"),
    (([1.0, 2.0], 1.5), "not a flat sequence"),
    ({"sequence": [1.0]}, "got a dict"),
    (1.5, "got a float"),
])
def test_invalid_heights_have_specific_messages(value, message):
    with pytest.raises(InvalidConstruction, match=None) as caught:
        heights(value)
    assert message in str(caught.value)


@pytest.mark.parametrize("value", [[1, 2, 3], np.arange(1, 5, dtype=np.int64), np.ones(7, dtype=np.float32),
                                   np.ones(3, dtype=np.uint8), (0.5, 0.25), [np.float32(0.5), 1.0]])
def test_any_real_numeric_sequence_is_accepted(value):
    a = heights(value)
    assert a.dtype == np.float64 and a.ndim == 1
    assert ac1_bound(a) == pytest.approx(direct_ac1(a), rel=1e-12)


def test_initial_states():
    rng = np.random.default_rng(7)
    random = AutocorrelationAC1().initial_state(rng)
    assert 1000 <= random.construction.size < 8000 and random.score == pytest.approx(2.0, rel=1e-12)
    assert random.reward == 1.0 / random.score
    ac2 = AutocorrelationAC2().initial_state(np.random.default_rng(7))
    np.testing.assert_array_equal(ac2.construction, random.construction)
    assert ac2.score == pytest.approx(2.0 / 3.0, rel=1e-12) and ac2.reward == ac2.score
    assert AutocorrelationAC1(initial="empty").initial_state(rng).construction is None
    named = AutocorrelationAC1(initial="prev_human").initial_state(rng)
    assert named.construction.size == 208 and abs(named.score - 1.5097201507458793) < 1e-12
    with pytest.raises(ValueError, match="initial must be one of"):
        AutocorrelationAC2(initial="prev_human")


def test_prompts_state_formula_contract_budget_and_state():
    ac1 = AutocorrelationAC1(initial="record", budget_s=60)
    text = ac1.prompt(ac1.initial_state(np.random.default_rng(0)))
    for needle in ("2n · max_k c_k / (Σ a)²", "propose_candidate(seed=42, budget_s=60", "height_sequence_1",
                   "length 30000", "1.5028628587", "evaluate_sequence"):
        assert needle in text
    ac2 = AutocorrelationAC2(initial="empty")
    text = ac2.prompt(ac2.initial_state(np.random.default_rng(0)))
    assert "construct_function(" in text and "L2² / (L1 · L∞)" in text and "not defined" in text


def program(body: str) -> str:
    return f"My answer.\n```python\n{body}\n```\n"


@pytest.mark.parametrize("env_id", ["ttd/AutocorrelationAC1-v0", "ttd/AutocorrelationAC2-v0"])
def test_check_env_passes(env_id):
    env = gym.make(env_id)
    try:
        check_env(env.unwrapped, skip_render_check=True)
    finally:
        env.unwrapped.problem.close()


@pytest.fixture(scope="module")
def ac1_env():
    env = gym.make("ttd/AutocorrelationAC1-v0", initial="record", budget_s=10, timeout_s=30)
    yield env
    env.unwrapped.problem.close()


def test_ac1_record_program_scores_the_record(ac1_env):
    ac1_env.reset(seed=0)
    code = ("def propose_candidate(seed=42, budget_s=10, **kwargs):\n"
            "    print('claimed', evaluate_sequence(height_sequence_1))\n"
            "    return height_sequence_1.tolist()")
    obs, reward, terminated, _, info = ac1_env.step(program(code))
    assert info["valid"], info["error"]
    assert abs(info["score"] - 1.5028628587053108) < 1e-12
    assert reward == 1.0 / info["score"]
    assert "claimed 1.50286285870531" in info["stdout"]
    assert terminated and info["state"].construction.size == 30_000
    assert "length 30000" in obs


def test_ac1_program_that_lies_about_its_score_gets_the_recomputed_one(ac1_env):
    ac1_env.reset(seed=0)
    code = ("def propose_candidate(seed=42, budget_s=10, **kwargs):\n"
            "    print('C = 1.0')\n"
            "    return np.ones(2000)")
    _, reward, _, _, info = ac1_env.step(program(code))
    assert info["valid"] and info["score"] == pytest.approx(2.0, rel=1e-12) and reward == 1.0 / info["score"]


@pytest.mark.parametrize("returned,message", [
    ("-height_sequence_1", "non-negative"),
    ("[]", "empty"),
    ("np.ones(100_001)", "too long"),
    ("np.where(np.arange(2000) == 3, np.nan, 1.0)", "finite; found nan at index 3"),
    ("{'heights': [1.0]}", "got a dict"),
    ("[True, False, True]", "not booleans"),
    ("np.ones(10) + 1j", "complex"),
])
def test_ac1_invalid_programs_get_zero_reward_and_a_reason(ac1_env, returned, message):
    ac1_env.reset(seed=0)
    code = f"def propose_candidate(seed=42, budget_s=10, **kwargs):\n    return {returned}"
    _, reward, _, _, info = ac1_env.step(program(code))
    assert reward == 0.0 and not info["valid"] and info["state"] is None
    assert message in info["error"]


def test_ac1_missing_code_block_is_a_failure(ac1_env):
    ac1_env.reset(seed=0)
    _, reward, _, _, info = ac1_env.step("I would use an LP, but here is no code.")
    assert reward == 0.0 and "code block" in info["error"]


@pytest.mark.parametrize("initial,expected", [("record", 0.9612055422690102), ("alphaevolve", 0.9610210777840243),
                                              ("ttt_discover", 0.9591797711482716)])
def test_ac2_shipped_construction_program_through_the_sandbox(initial, expected):
    env = gym.make("ttd/AutocorrelationAC2-v0", initial=initial, budget_s=10, timeout_s=30)
    try:
        env.reset(seed=0)
        code = ("def construct_function(seed=42, budget_s=10, **kwargs):\n"
                "    return height_sequence_1")
        _, reward, _, _, info = env.step(program(code))
        assert info["valid"], info["error"]
        assert abs(info["score"] - expected) < 1e-12 and reward == info["score"]
        env.reset(seed=0)
        bad = "def construct_function(seed=42, budget_s=10, **kwargs):\n    return [0.0] * 1000"
        _, reward, _, _, info = env.step(program(bad))
        assert reward == 0.0 and "all heights are zero" in info["error"]
    finally:
        env.unwrapped.problem.close()
