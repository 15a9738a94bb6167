"""ttd/UncertaintyInequality-v0: the exact C4 bound against an independent sympy reference (AlphaEvolve's
own method), root isolation that no close pair or repeated root fools, the published constructions
reproduced, hostile returns refused with a reason, and the env contract through the real sandbox."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from fractions import Fraction

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import ttd_envs  # noqa: F401 - registers the ids
from benchmarks.uncertainty_exact import sympy_reference_bound
from ttd_envs import certificates
from ttd_envs.core.program_problem import InvalidConstruction
from ttd_envs.core.exact import dyadic_integers
from ttd_envs.problems.uncertainty_inequality import (
    CONSTRUCTIONS,
    INITIAL_PROGRAM,
    UncertaintyInequality,
    hermite_score,
    hermite_t_polynomials,
    laguerre_cofactor,
    laguerre_score,
    largest_positive_root,
    load_construction,
    odd_multiplicity_part,
)
from ttd_envs.records import load_records
from ttd_envs.verify import main as verify_main
from program_steps import assert_refused

ENV_ID = "ttd/UncertaintyInequality-v0"
AE_6 = load_construction("alphaevolve_6")[1]


def _times_linear(p: list[int], r: Fraction) -> list[int]:
    """p(x) * (den x - num)."""
    out = [0] * (len(p) + 1)
    for i, a in enumerate(p):
        out[i + 1] += a * r.denominator
        out[i] -= a * r.numerator
    return out


def _polynomial(roots: list[Fraction]) -> list[int]:
    p = [1]
    for r in roots:
        p = _times_linear(p, Fraction(r))
    return p


# -- root isolation ----------------------------------------------------------------------------------
@pytest.mark.parametrize("roots,largest_sign_change", [
    ([Fraction(1), Fraction(1000), Fraction(1000) + Fraction(1, 10 ** 9)], Fraction(1000) + Fraction(1, 10 ** 9)),
    ([Fraction(2), Fraction(5), Fraction(5)], Fraction(2)),  # a double root beyond is no sign change
    ([Fraction(2), Fraction(5), Fraction(5), Fraction(5)], Fraction(5)),  # a triple root is
    ([Fraction(1)] * 2 + [Fraction(3)] + [Fraction(4)] * 3 + [Fraction(6)] * 4, Fraction(4)),  # Yun's split
    ([Fraction(3, 2)], Fraction(3, 2)),  # a dyadic root comes back exactly
    ([Fraction(-7), Fraction(1, 3)], Fraction(1, 3)),
    ([Fraction(1, 10 ** 6), Fraction(-4)], Fraction(1, 10 ** 6)),
])
def test_the_last_sign_change_is_found_whatever_sits_near_it(roots, largest_sign_change):
    """Two sign changes 1e-9 apart cancel inside any grid cell; the isolation still finds the later one."""
    low, high = largest_positive_root(odd_multiplicity_part(_polynomial(roots)))
    assert low <= largest_sign_change <= high and high - low <= largest_sign_change * Fraction(1, 2 ** 119)


def test_a_polynomial_without_a_positive_sign_change_is_refused():
    with pytest.raises(ValueError, match="no positive root"):
        largest_positive_root(odd_multiplicity_part(_polynomial([Fraction(-1), Fraction(-2)])))
    with pytest.raises(ValueError, match="no positive root"):  # (x - 3)^2: touches 0, never changes sign
        largest_positive_root(odd_multiplicity_part(_polynomial([Fraction(3), Fraction(3)])))


def test_the_hermite_basis_is_physicists_hermite_in_t():
    h = hermite_t_polynomials(3)
    assert h[1] == [12, -48, 16]  # H_4(y) = 16 y^4 - 48 y^2 + 12
    assert h[2] == [1680, -13440, 13440, -3584, 256]  # H_8


# -- against an independent reference ------------------------------------------------------------------
def test_laguerre_bound_matches_alphaevolves_sympy_method():
    sympy = pytest.importorskip("sympy")
    reference = sympy_reference_bound(AE_6)
    problem = UncertaintyInequality()
    bound = problem.exact_score({"roots": AE_6})
    assert sympy.Rational(bound.lower.numerator, bound.lower.denominator) <= reference <= \
        sympy.Rational(bound.upper.numerator, bound.upper.denominator)
    assert abs(float(bound.lower) - float(reference)) < 1e-15
    assert problem.score_construction({"roots": AE_6}) == 0.3282706174313453


def test_laguerre_cofactor_gives_g_with_the_prescribed_roots_and_the_admissible_sign():
    """g = t prod (t - z)^2 q with q(0) > 0, so g'(0) > 0; the far sign of g is negative for the record
    roots, so f = -g(2 pi x^2) e^{-pi x^2} is the admissible function, and f(0) = 0 <= 0."""
    z = np.array(AE_6)
    mantissas, exponent = dyadic_integers(z)
    shift = -exponent - 1  # u = 2^(shift+1) t turns each z into its mantissa
    q = laguerre_cofactor(mantissas, shift)
    assert q[0] > 0 and q[-1] < 0
    t = np.linspace(0.5, 2.5, 9)
    q_t = np.polynomial.Polynomial([float(Fraction(c) * 2 ** ((shift + 1) * i) / q[0]) for i, c in enumerate(q)])
    g = t * np.prod([(t - zi) ** 2 for zi in z], axis=0) * q_t(t)
    r = 2 * math.pi * 0.3282706174313453
    assert np.all(g[t < r - 1e-3] > 0) and np.all(g[t > r + 1e-3] < 0)  # the last sign change, in floats


def test_hermite_bounds_reproduce_the_published_values():
    assert hermite_score([-113 / 100, 1 / 25, 1 / 3240]) == 0.35229556248234006  # GOS 2017's "0.3523"
    assert hermite_score([0.3292519302257546, -0.01158510802599293, -8.921606035407065e-05]) == 0.35209910442252773
    assert hermite_score([2.0, -4.0]) == hermite_score([1.0, -2.0])  # a common factor moves no root


@pytest.mark.parametrize("name", sorted(CONSTRUCTIONS))
def test_verify_prints_each_documented_score(name, capsys):
    route, file = CONSTRUCTIONS[name]
    entry = next(e for e in load_records("UncertaintyInequality").entries
                 if e.construction_file and e.construction_file.endswith(file))
    assert verify_main([ENV_ID, str(entry.path())]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == repr(entry.value)


def test_the_record_certificate_rechecks_and_a_forgery_does_not(tmp_path, capsys):
    entry = load_records("UncertaintyInequality").best(verified=True)
    assert entry.who == "Together AI" and entry.value == 0.3188545891623888
    out = tmp_path / "certificate.json"
    assert verify_main([ENV_ID, str(entry.path()), "--certify", str(out)]) == 0
    certificate = json.loads(out.read_text())
    assert certificate["verdict"] == "tie" and certificate["score"]["error_bound"] < 1e-35
    capsys.readouterr()
    assert verify_main([ENV_ID, str(out)]) == 0 and "certificate holds" in capsys.readouterr().out
    moved = certificate["construction"]["roots"][:-1] + [141.1]
    holds, report = certificates.recheck(dict(certificate, construction={"roots": moved}), UncertaintyInequality())
    assert not holds and "does not hold" in report


def test_a_planted_older_record_is_beaten_and_the_certificate_says_so(monkeypatch):
    real = load_records("UncertaintyInequality")
    planted = replace(real, entries=tuple(replace(e, value=max(e.value, 0.3189)) for e in real.entries))
    monkeypatch.setattr(certificates, "load_records", lambda _: planted)
    data = {"roots": load_construction("together_13")[1]}
    certificate = certificates.certify(ENV_ID, UncertaintyInequality(), data)
    assert certificate["verdict"] == "record" and 4e-5 < certificate["gain_over_record"] < 5e-5


# -- hostile returns -------------------------------------------------------------------------------------
@pytest.mark.parametrize("values,message", [
    ([3.0, float("nan")], "NaN or inf"),
    ([3.0, float("inf")], "NaN or inf"),
    ([[3.0, 5.0], [6.0, 7.0]], "flat list"),
    ([[3.0, 5.0], [6.0]], "numeric array"),
    ([], "between 1 and 16"),
    (list(np.linspace(1, 100, 17)), "between 1 and 16"),
    ([3.0, 0.0], "must be positive"),
    ([3.0, -0.0], "must be positive"),
    ([3.0, -2.5], "must be positive"),
    ([3.0, 1e-5], r"lie in \[0.001, 300\]"),
    ([3.0, 301.0], r"lie in \[0.001, 300\]"),
    ([3.0, 5.0, 3.0], "distinct"),
    ([True, False], "booleans"),
    ([3.0, 5j], "complex"),
    (["3", "5"], "real numbers"),
    (None, "real numbers"),
    ({"roots": [3.0]}, "real numbers"),
])
def test_hostile_roots_are_refused_with_a_reason(values, message):
    with pytest.raises(InvalidConstruction, match=message):
        UncertaintyInequality().check(values)


@pytest.mark.parametrize("values,message", [
    ([0.0, 0.0, -0.0], "all zero"),
    ([1.0, float("nan")], "NaN or inf"),
    ([1.0, 1e100, 2.0 ** 201], "between 2\\^-200 and 2\\^200"),
    ([1.0, 1e-70], "between 2\\^-200 and 2\\^200"),
    (list(range(1, 14)), "between 1 and 12"),
    ([[1.0], [2.0]], "flat list"),
])
def test_hostile_hermite_coefficients_are_refused_with_a_reason(values, message):
    with pytest.raises(InvalidConstruction, match=message):
        UncertaintyInequality(route="hermite").check(values)


def test_files_need_exactly_one_route_key_and_bad_kwargs_fail_at_make_time():
    problem = UncertaintyInequality()
    for data in ({}, {"roots": AE_6, "coefficients": [1.0]}, [3.0, 5.0], {"sequence": AE_6}):
        with pytest.raises(InvalidConstruction, match='either a "roots" or a "coefficients"'):
            problem.score_construction(data)
    with pytest.raises(ValueError, match="route must be"):
        gym.make(ENV_ID, route="fourier")
    with pytest.raises(ValueError, match="initial for route .hermite. must be one of"):
        gym.make(ENV_ID, route="hermite", initial="together_13")
    with pytest.raises(ValueError, match="max_roots"):
        gym.make(ENV_ID, max_roots=25)
    with pytest.raises(InvalidConstruction, match="between 1 and 4"):
        UncertaintyInequality(max_roots=4).check(AE_6)


# -- the env -------------------------------------------------------------------------------------------------
def test_check_env_passes_and_the_prompts_name_the_record_and_the_route():
    for route, entry, initial in (("laguerre", "propose_roots", "alphaevolve_6"),
                                  ("hermite", "propose_coefficients", "record")):
        env = gym.make(ENV_ID, route=route, initial=initial)
        try:
            check_env(env.unwrapped, skip_render_check=True)
            prompt, _ = env.reset(seed=0)
            assert entry in prompt and "0.3188545892" in prompt and "Together AI" in prompt
        finally:
            env.close()
    state = UncertaintyInequality(initial="record").initial_state(np.random.default_rng(0))
    assert state.score == 0.3188545891623888 and math.isclose(state.reward, 1 / state.score)


def test_initial_program_steps_to_a_valid_reward_and_hostile_programs_score_zero():
    env = gym.make(ENV_ID, budget_s=3.0, timeout_s=6.0)
    try:
        env.reset(seed=0)
        _, reward, terminated, _, info = env.step(INITIAL_PROGRAM)
        assert info["valid"], info["error"]
        assert terminated and 0.3 < info["score"] < 0.39 and reward == 1 / info["score"] and info["elapsed_s"] < 6
        hostile = {
            "return [3.0, float('nan')]": "NaN",
            "return [5.0, 5.0]": "distinct",
            "return [-3.0, 5.0]": "positive",
            "return {'roots': [3.0]}": "real numbers",
            "return np.linspace(1.0, 100.0, 10**6)": "output limit exceeded",  # killed before it is read
            "import time\n    time.sleep(60)": "",
        }
        assert_refused(env, "propose_roots", hostile)
    finally:
        env.close()


def test_a_hermite_program_scores_through_the_sandbox():
    env = gym.make(ENV_ID, route="hermite", budget_s=4.0, timeout_s=15.0)
    try:
        env.reset(seed=0)
        program = ("```python\ndef propose_coefficients(**kwargs):\n    c = [0.3292519302257546, -0.01158510802599293, "
                   "-8.921606035407065e-05]\n    print(evaluate_bound(c))\n    return c\n```")
        _, reward, _, _, info = env.step(program)
        assert info["valid"], info["error"]
        assert info["score"] == 0.35209910442252773 and "0.352099104422" in info["stdout"]
    finally:
        env.close()


def test_the_tiny_models_example_answers_are_valid():
    for route in ("laguerre", "hermite"):
        problem = UncertaintyInequality(route=route, budget_s=3.0, timeout_s=8.0)
        try:
            evaluation = problem.evaluate(problem.example_answer(), problem.initial_state(np.random.default_rng(0)))
            assert evaluation.valid and 0.3 < evaluation.score < 0.4, (route, evaluation.error)
        finally:
            problem.close()


def test_laguerre_score_is_what_programs_get():
    assert laguerre_score(list(reversed(AE_6))) == 0.3282706174313453  # order does not matter
