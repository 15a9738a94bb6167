"""ttd/SumsDifferences-v0: exact counts of |U+U| and |U-U|, theta enclosed rigorously, AlphaEvolve's
sets reproduced, hostile returns refused with a reason, and the env contract through the real sandbox."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import ttd_envs  # noqa: F401 - registers the ids
from ttd_envs import certificates
from ttd_envs.core.program_problem import InvalidConstruction
from ttd_envs.problems.sums_differences import (
    INITIAL_PROGRAM,
    SumsDifferences,
    integer_set,
    load_set,
    sums_and_differences,
    theta,
    theta_interval,
)
from ttd_envs.records import load_records
from ttd_envs.verify import main as verify_main
from program_steps import assert_refused
from timing import within

RNG = np.random.default_rng(0)


def brute_force(u: np.ndarray) -> tuple[int, int]:
    return np.unique(np.add.outer(u, u)).size, np.unique(np.subtract.outer(u, u)).size


@pytest.mark.parametrize("size,span", [(2, 1), (5, 10), (40, 200), (300, 5_000), (200, 3 << 21)])
def test_counts_match_a_brute_force_count(size, span):
    """The last case spans several counting windows, so runs cross window edges."""
    for _ in range(5):
        u = integer_set(RNG.choice(span + 1, size=size, replace=False))
        assert sums_and_differences(u) == brute_force(u)


def test_theta_is_enclosed_by_an_80_digit_reference():
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 80
    u = integer_set(load_set("alphaevolve_2003"))
    sums, differences = sums_and_differences(u)
    assert (sums, differences, int(u[-1])) == (93_803, 807_667, 1_040_200)  # the spec's counts
    bound = theta_interval(sums, differences, int(u[-1]))
    reference = 1 + mpmath.log(mpmath.mpf(differences) / sums) / mpmath.log(2 * int(u[-1]) + 1)
    low, high = (mpmath.mpf(q.numerator) / q.denominator for q in (bound.lower, bound.upper))
    assert low <= reference <= high and high - low < mpmath.mpf("1e-55")


def test_alphaevolve_record_set_gives_the_spec_counts_and_theta():
    u = integer_set(load_set("alphaevolve_54265"))
    assert u.size == 54_265 and int(u[-1]) == 814_210_134
    assert sums_and_differences(u) == (17_331_529, 499_045_203)
    problem = SumsDifferences(initial="record")
    assert problem.initial_state(RNG).score == 1.158417281556896 == problem.record.score


def test_translation_duplicates_and_order_do_not_change_theta():
    base = [0, 1, 3, 7, 12, 20, 30, 44]
    shuffled = RNG.permutation(base).tolist()
    assert theta(base) == theta([v - 1000 for v in shuffled] + [-1000, -993]) == theta(np.array(base, dtype=np.uint16))
    assert theta(np.array(base, dtype=np.float64)) == theta(base)  # whole floats below 2^53 are the integers meant


def test_an_arithmetic_progression_scores_exactly_one():
    # U = {0..n-1}: |U+U| = |U-U| = 2n-1, so ln(D/S) = 0 and theta = 1 (the interval contains 1)
    bound = theta_interval(*sums_and_differences(integer_set(list(range(10)))), 9)
    assert bound.lower <= 1 <= bound.upper


@pytest.mark.parametrize("values,message", [
    ([0, 1, float("nan")], "NaN or inf"),
    ([0, 1, float("inf")], "NaN or inf"),
    ([0, 1.5, 3], "whole numbers"),
    ([0, 2.0 ** 60], "whole numbers below 2"),
    ([0, 2 ** 70], "too large"),
    ([-(2 ** 70), 0], "too large"),
    (np.array([0, 2 ** 63], dtype=np.uint64), "too large"),
    ([0, 1_000_000_001], "above max_value"),
    ([True, False, True], "not booleans"),
    ([0, 1j], "complex"),
    (["0", "1"], "elements of type"),
    ([[0, 1], [2, 3]], "1-D"),
    ([[0, 1], [2]], "flat sequence"),
    ([5, 5, 5], "at least 2 distinct"),
    (np.arange(60_001), "at most max_size"),
    ("0 1 2", "1-D list or numpy array"),
    ({"set": [0, 1]}, "1-D list or numpy array"),
    (None, "1-D list or numpy array"),
])
def test_hostile_returns_are_refused_with_a_reason(values, message):
    with pytest.raises(InvalidConstruction, match=message):
        SumsDifferences().check(values)


def test_the_instance_limits_apply_and_bad_kwargs_fail_at_make_time():
    with pytest.raises(InvalidConstruction, match="max_value = 100"):
        SumsDifferences(max_value=100).check([0, 101])
    with pytest.raises(ValueError, match="initial must be one of"):
        gym.make("ttd/SumsDifferences-v0", initial="best")
    with pytest.raises(ValueError, match="max_size"):
        gym.make("ttd/SumsDifferences-v0", max_size=10 ** 9)


def test_verify_prints_the_documented_score_and_certificates_recheck(tmp_path, capsys):
    entry = next(e for e in load_records("SumsDifferences").entries if e.verified and "2003" in e.note)
    out = tmp_path / "certificate.json"
    assert verify_main(["ttd/SumsDifferences-v0", str(entry.path()), "--certify", str(out)]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == repr(entry.value) == "1.1479888965092757"
    certificate = json.loads(out.read_text())
    assert certificate["verdict"] == "below the record" and not certificate["score"]["exact"]
    assert certificate["score"]["error_bound"] < 1e-55
    assert verify_main(["ttd/SumsDifferences-v0", str(out)]) == 0
    assert "certificate holds" in capsys.readouterr().out
    forged = dict(certificate, construction={"set": certificate["construction"]["set"][:-1]})
    holds, report = certificates.recheck(forged, SumsDifferences())
    assert not holds and "does not hold" in report


def test_check_env_passes_and_the_prompt_names_the_record():
    env = gym.make("ttd/SumsDifferences-v0")
    try:
        check_env(env.unwrapped, skip_render_check=True)
        prompt, _ = env.reset(seed=0)
        assert "1.158417282" in prompt and "construct_set" in prompt and "AlphaEvolve" in prompt
    finally:
        env.close()


def test_initial_program_steps_to_a_valid_reward_and_hostile_programs_score_zero():
    env = gym.make("ttd/SumsDifferences-v0", budget_s=4.0, timeout_s=15.0)
    try:
        env.reset(seed=0)
        _, reward, terminated, _, info = env.step(INITIAL_PROGRAM)
        assert info["valid"], info["error"]
        assert terminated and 0.8 < reward == info["score"] < 1.25
        within(info["elapsed_s"], 15, "the initial program, with a 15 s timeout")
        hostile = {
            "return [0, 1, float('nan')]": "NaN",
            "return np.arange(2) * 10**12": "above max_value",
            "return [0, 2**80]": "",
            "import time\n    time.sleep(60)": "",
        }
        assert_refused(env, "construct_set", hostile)
    finally:
        env.close()
