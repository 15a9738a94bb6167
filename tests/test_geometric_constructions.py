"""The exactly checked geometric problems (min/max distance, Heilbronn, kissing, circles in a
rectangle): the exact scores against float references and the published values, the slack that a
float check with a tolerance would give away, certificates (records, ties, tampering), hostile
returns, and the env contract through the real sandbox with each problem's initial program."""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import replace
from fractions import Fraction
from importlib import resources
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from scipy.spatial import ConvexHull
from scipy.spatial.distance import pdist

import ttd_envs  # noqa: F401 - registers the ids
from ttd_envs import certificates
from ttd_envs.core.construction_problem import load_construction
from ttd_envs.core.exact import convex_hull_area, float_down, float_up
from ttd_envs.core.program_problem import InvalidConstruction
from ttd_envs.problems.circles_in_rectangle import CirclePackingRectangle
from ttd_envs.problems.heilbronn import Heilbronn
from ttd_envs.problems.kissing_number import KissingNumber
from ttd_envs.problems.min_max_distance import MinMaxDistance
from ttd_envs.records import load_records, parse_table
from ttd_envs.verify import EXIT_INVALID
from ttd_envs.verify import main as verify_main
from timing import within

RNG = np.random.default_rng(0)
MATH_DATA = Path(str(resources.files("ttd_envs.data.math")))
SHIPPED = [  # (env id, kwargs, file, score as the env page documents it)
    ("ttd/MinMaxDistance-v0", {}, "minmax_2d_16_together.json", 12.889229907717517),
    ("ttd/MinMaxDistance-v0", {"n": 14, "d": 3}, "minmax_3d_14_alphaevolve.json", 4.1658497672256525),
    ("ttd/Heilbronn-v0", {}, "heilbronn_triangle_11_alphaevolve.json", 0.03652988988003006),
    ("ttd/Heilbronn-v0", {"region": "convex"}, "heilbronn_convex_13_alphaevolve.json", 0.030936889034895616),
    ("ttd/Heilbronn-v0", {"region": "convex", "n": 14}, "heilbronn_convex_14_together.json", 0.02783558051755369),
    ("ttd/KissingNumber-v0", {}, "kissing_11_604_einsteinarena.json", 604.0),
    ("ttd/CirclePackingRectangle-v0", {}, "circles_rectangle_21_alphaevolve.json", 2.3658323759108106),
]
PROBLEMS = {"ttd/MinMaxDistance-v0": MinMaxDistance, "ttd/Heilbronn-v0": Heilbronn,
            "ttd/KissingNumber-v0": KissingNumber, "ttd/CirclePackingRectangle-v0": CirclePackingRectangle}


def score_or_error(problem, value) -> float | str:
    try:
        return problem.check(value)[1]
    except InvalidConstruction as exc:
        return str(exc)


# -- exact scores against float references -------------------------------------------------------
def test_min_max_ratio_matches_pdist_on_random_points():
    problem = MinMaxDistance(n=9, d=3)
    for _ in range(50):
        points = RNG.normal(size=(9, 3))
        d = pdist(points)
        assert problem.check(points)[1] == pytest.approx((d.max() / d.min()) ** 2, rel=1e-12)


def test_convex_heilbronn_matches_scipy_hull_and_a_triple_loop():
    problem = Heilbronn(region="convex", n=8)
    for _ in range(30):
        points = RNG.random((8, 2))
        areas = [abs((b - a)[0] * (c - a)[1] - (b - a)[1] * (c - a)[0]) / 2
                 for a, b, c in itertools.combinations(points, 3)]
        expected = min(areas) / ConvexHull(points).volume
        assert problem.check(points)[1] == pytest.approx(expected, rel=1e-9)


def test_exact_hull_area_of_a_square_with_inner_and_collinear_points():
    square = [(Fraction(0), Fraction(0)), (Fraction(1), Fraction(0)), (Fraction(1), Fraction(1)),
              (Fraction(0), Fraction(1)), (Fraction(1, 2), Fraction(0)), (Fraction(1, 3), Fraction(1, 2))]
    assert convex_hull_area(square) == 1


def test_rounding_helpers_bound_the_exact_value():
    third = Fraction(1, 3)
    assert Fraction(float_down(third)) <= third <= Fraction(float_up(third))
    assert float_up(Fraction(1, 2)) == float_down(Fraction(1, 2)) == 0.5


def test_kissing_check_agrees_with_float_cosines_away_from_the_boundary():
    problem = KissingNumber(d=4)
    for _ in range(40):
        vectors = RNG.integers(-5, 6, size=(int(RNG.integers(2, 12)), 4))
        vectors = vectors[np.abs(vectors).sum(axis=1) > 0]
        unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        cos = (unit @ unit.T)[np.triu_indices(len(vectors), 1)]
        if np.any(np.abs(cos - 0.5) < 1e-9):
            continue  # the float reference cannot decide touching pairs
        expected_valid = bool(np.all(cos < 0.5))
        assert isinstance(score_or_error(problem, vectors), float) == expected_valid


# -- records and shipped constructions -----------------------------------------------------------
@pytest.mark.parametrize("env_id,kwargs,filename,score", SHIPPED)
def test_shipped_constructions_score_as_documented_and_verify_prints_it(env_id, kwargs, filename, score, capsys,
                                                                         tmp_path):
    problem = PROBLEMS[env_id](initial="record", **kwargs)
    assert problem.initial_state(RNG).score == score
    path = MATH_DATA / filename
    args = [env_id, str(path)] + [f"--env-arg={k}={v}" for k, v in kwargs.items()]
    assert verify_main(args) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == repr(score)


def test_records_are_only_claimed_in_their_own_direction():
    assert not MinMaxDistance().record.higher_is_better and Heilbronn().record.higher_is_better


def test_record_to_beat_is_the_best_verified_value_and_names_a_better_claim():
    kissing = KissingNumber().record  # the 604 file in Z[sqrt 2] passes the exact check; AlphaEvolve's 593 is earlier
    assert kissing.score == 604 and kissing.holder.startswith("EinsteinArena agents") and "better claim" not in kissing.holder
    assert MinMaxDistance().record.score == 12.889229907717517  # Together AI's, verified; Berthold's 12.88924 is worse
    assert "better claim" not in MinMaxDistance().record.holder
    assert MinMaxDistance(n=14, d=3).record.score == 4.1658497672256525
    rectangle = CirclePackingRectangle().record  # Together AI's higher sum overlaps exactly: a claim, not the bar
    assert rectangle.score == 2.3658323759108106 and "AlphaEvolve" in rectangle.holder
    assert "better claim without a verified construction: 2.365832376 (Together AI, 2026-04" in rectangle.holder
    assert Heilbronn(region="convex", n=14).record.score == 0.02783558051755369  # Together AI's, verified
    assert MinMaxDistance(n=20).record is None and KissingNumber(d=5).record is None


@pytest.mark.parametrize("claim,bar", [(1.0 + 1e-15, 1.0), (1.0 + 1e-9, 1.0)])
def test_an_unverified_claim_does_not_raise_the_bar(claim, bar):
    common = {"who": "x", "when": "2026", "source": "y", "construction_public": True, "note": ""}
    table = parse_table({"direction": "max", "tie_tolerance": 1e-12, "entries": [
        {**common, "value": 1.0, "verified": True,
         "construction_file": "ttd_envs/data/math/heilbronn_triangle_11_alphaevolve.json"},
        {**common, "value": claim, "verified": False, "construction_file": None}]}, "test")
    assert table.record().score == bar


@pytest.mark.parametrize("name,problem_class", [(p.name, p) for p in PROBLEMS.values()])
def test_every_verified_record_entry_is_its_shipped_file_scored_by_our_verifier(name, problem_class):
    table = load_records(name)
    verified = [e for e in table.entries if e.verified]
    assert verified
    for entry in verified:
        problem = problem_class(**entry.instance)
        assert problem.score_construction(json.loads(entry.path().read_text())) == entry.value, entry


# -- certificates ----------------------------------------------------------------------------------
FORGED_CONSTRUCTION = {  # what verify says of a certificate whose construction was edited after certifying
    "ttd/MinMaxDistance-v0": "coincide", "ttd/Heilbronn-v0": "does not hold",
    "ttd/KissingNumber-v0": "less than 60 degrees apart", "ttd/CirclePackingRectangle-v0": "overlap"}


def plant_record(monkeypatch, problem, value: float) -> float:
    """Make `value` the record of the problem's instance in the table certificates read (the real
    table is untouched); returns the table's tie tolerance."""
    real = load_records(problem.name)
    planted = replace(real, entries=tuple(replace(e, value=value) if e.instance == problem.record_instance else e
                                          for e in real.entries))
    monkeypatch.setattr(certificates, "load_records", lambda _: planted)
    return real.tie_tolerance


def shifted(score: float, amount: float, problem) -> float:
    """`score` made worse by `amount` in the problem's direction (a record the score beats by that much)."""
    return score - amount if problem.higher_is_better else score + amount


@pytest.mark.parametrize("env_id,kwargs,filename,score", SHIPPED)
def test_a_planted_record_gets_a_certificate_that_verify_rechecks_and_a_tampered_one_is_refused(
        env_id, kwargs, filename, score, monkeypatch, tmp_path, capsys):
    problem = PROBLEMS[env_id](**kwargs)
    plant_record(monkeypatch, problem, shifted(score, 1e-6 * score, problem))  # beaten by 1e-6 relative
    out, args = tmp_path / "certificate.json", [f"--env-arg={k}={v}" for k, v in kwargs.items()]
    assert verify_main([env_id, str(MATH_DATA / filename), *args, "--certify", str(out)]) == 0
    certificate = json.loads(out.read_text())
    assert certificate["verdict"] == "record" and certificate["env_kwargs"] == kwargs
    assert certificate["instance"] == problem.record_instance
    stated = certificate["score"]
    never_flatters = (Fraction(score) <= Fraction(stated["upper"]) if problem.higher_is_better  # the float score
                      else Fraction(score) >= Fraction(stated["lower"]))
    assert never_flatters
    assert stated["exact"] == (env_id != "ttd/Heilbronn-v0" or kwargs.get("region") == "convex")
    assert stated["error_bound"] < 1e-38 and stated["float"] == pytest.approx(score, rel=1e-15)
    capsys.readouterr()
    assert verify_main([env_id, str(out)]) == 0  # the certificate carries its kwargs
    printed = " ".join(capsys.readouterr().out.split())
    assert "certificate holds" in printed and "verdict today: record" in printed and printed.endswith(repr(score))
    better = Fraction(stated["upper" if problem.higher_is_better else "lower"]) * (1 + (1 if problem.higher_is_better
                                                                                      else -1) * Fraction(1, 10**6))
    forged_score = dict(certificate, score=dict(stated, lower=str(float(better)), upper=str(float(better))))
    forged_construction = json.loads(json.dumps(certificate))
    rows = forged_construction["construction"][problem.key]
    rows[1] = rows[0]  # a repeated point, vector or circle: the count is the same, the score is not
    for name, forged, expected in (("score", forged_score, "does not hold"),
                                   ("construction", forged_construction, FORGED_CONSTRUCTION[env_id])):
        (tmp_path / f"{name}.json").write_text(json.dumps(forged))
        assert verify_main([env_id, str(tmp_path / f"{name}.json")]) == EXIT_INVALID, name
        assert expected in capsys.readouterr().err, name


@pytest.mark.parametrize("env_id,kwargs,filename,score", SHIPPED)
def test_a_gain_within_the_tie_tolerance_is_a_tie_not_a_record(env_id, kwargs, filename, score, monkeypatch):
    """The construction beats the planted record as a float, by half the table's tie tolerance
    (kissing: tolerance 0, so only an equal count is a tie): a tie."""
    problem = PROBLEMS[env_id](**kwargs)
    tolerance = plant_record(monkeypatch, problem, score)
    planted = shifted(score, tolerance / 2, problem)
    plant_record(monkeypatch, problem, planted)
    assert planted == score or load_records(problem.name).better(score, planted)
    construction, float_score = problem.check(load_construction(MATH_DATA / filename, problem.key))
    certificate = certificates.certify_state(env_id, problem, construction, kwargs)  # the trainer's path
    assert certificate["verdict"] == "tie" and float_score == score
    assert abs(certificate["gain_over_record"]) <= tolerance
    holds, report = certificates.recheck(json.loads(json.dumps(certificate)), problem)
    assert holds and "verdict today: tie" in report


def test_kissing_certificates_keep_z_sqrt2_pairs_and_big_integers_exact():
    """A state's construction goes into a certificate as the exact integers it was checked as: pairs
    [a, b] stay pairs, integers past int64 stay Python ints (no instance of d = 2 has a record)."""
    problem = KissingNumber(d=2)
    surd = [[[2, 0], [0, 0]], [[0, 0], [2, 0]], [[-2, 0], [0, 0]], [[0, 0], [-2, 0]]]  # (±2, 0), (0, ±2·1)
    big = [[3 ** 50, 0], [0, 3 ** 50], [-(3 ** 50), 0]]
    for vectors, count in ((surd, 4), (big, 3)):
        construction, score = problem.check(vectors)
        certificate = json.loads(json.dumps(certificates.certify_state("ttd/KissingNumber-v0", problem, construction,
                                                                       {"d": 2})))
        assert certificate["construction"]["vectors"] == vectors and score == count
        assert Fraction(certificate["score"]["lower"]) == count and certificate["score"]["exact"]
        assert certificate["verdict"] == "no record to compare"
        assert certificates.recheck(certificate, problem)[0]


# -- what a tolerant float check would give away ---------------------------------------------------
def test_heilbronn_triangle_rejects_a_point_outside_by_1e_minus_18():
    points = np.array(load_construction(MATH_DATA / "heilbronn_triangle_11_alphaevolve.json", "points"))
    points[8] = [0.3612735110422483, 0.6257440765539699]  # AlphaEvolve's published point, 9.2e-18 outside
    x, y = points[8]
    assert y <= np.sqrt(3) * x  # a float check passes it
    assert "outside the triangle" in score_or_error(Heilbronn(), points)


def test_circles_in_rectangle_refuse_any_slack_on_the_perimeter_and_on_overlaps():
    circles = np.array(load_construction(MATH_DATA / "circles_rectangle_21_alphaevolve.json", "circles"))
    problem = CirclePackingRectangle()
    grown = circles * (1 + 1e-13)  # a scaled packing: perimeter just above 4
    assert "width + height" in score_or_error(problem, grown)
    bumped = circles.copy()
    bumped[0, 2] += 1e-9
    assert "overlap" in score_or_error(problem, bumped) or "width + height" in score_or_error(problem, bumped)
    touching = np.array([[0.25, 0.25, 0.25], [0.75, 0.25, 0.25]])  # W + H = 1.5, touching is allowed
    assert CirclePackingRectangle(n=2).check(touching)[1] == 0.5


def test_kissing_rejects_a_pair_at_cos_just_above_one_half():
    # cos(x, y) = 1/2 + 1e-13 or so: integers with 4<x,y>^2 = |x|^2|y|^2 + small
    big = 10 ** 9
    x, y = [2 * big, 0, 0], [big, int(big * math.sqrt(3)) - 1, 0]  # angle a hair under 60 degrees
    assert "less than 60 degrees" in score_or_error(KissingNumber(d=3), [x, y])
    closer = [[2, 0, 0], [1, 1, 1]]  # cos = 2 / (2 sqrt 3) = 0.577 > 1/2
    assert "less than 60 degrees" in score_or_error(KissingNumber(d=3), closer)
    exactly_sixty = [[1, 1, 0], [1, 0, 1], [0, 1, 1], [1, -1, 0]]  # every cos is 1/2, 0 or -1/2
    assert KissingNumber(d=3).check(exactly_sixty)[1] == 4.0


def test_kissing_accepts_z_sqrt2_pairs_and_checks_them_exactly():
    # (1, 0) and (1/2)(1, sqrt(3)) are not in Z[sqrt2]; use (1,1) and (1+sqrt2... ) built from pairs [a, b]
    x = [[2, 0], [0, 0]]  # 2
    y = [[1, 0], [0, 1]]  # (1, sqrt 2): cos = 1/sqrt(3) > 1/2
    z = [[0, 0], [2, 0]]  # (0, 2): orthogonal to x
    assert "less than 60 degrees" in score_or_error(KissingNumber(d=2), [x, y])
    assert KissingNumber(d=2).check([x, z])[1] == 2.0
    assert "integers" in score_or_error(KissingNumber(d=2), [[[0.5, 0], [0, 0]], z])


# -- hostile and malformed returns -----------------------------------------------------------------
@pytest.mark.parametrize("problem,value,message", [
    (MinMaxDistance(), np.full((16, 2), np.nan), "finite"),
    (MinMaxDistance(), np.zeros((15, 2)), "shape"),
    (MinMaxDistance(), np.zeros((16, 2)), "coincide"),
    (MinMaxDistance(), [[1 + 0j, 0]] * 16, "real numbers"),
    (MinMaxDistance(), "points", "real numbers"),
    (Heilbronn(), np.full((11, 2), np.inf), "finite"),
    (Heilbronn(), np.full((11, 2), 2.0), "outside the triangle"),
    (Heilbronn(), [[True, False]] * 11, "real numbers"),
    (Heilbronn(region="convex"), np.column_stack([np.arange(13.0), 2 * np.arange(13.0)]), "one line"),
    (KissingNumber(), np.zeros((3, 11), dtype=int), "zero"),
    (KissingNumber(), np.eye(11)[:, :10], "shape"),
    (KissingNumber(), np.vstack([np.eye(11), np.eye(11)[:1]]), "less than 60 degrees"),
    (KissingNumber(), [[float("nan")] * 11], "finite"),
    (KissingNumber(), [["a"] * 11], "no booleans, complex or strings"),
    (CirclePackingRectangle(), np.zeros((21, 3)), "positive"),
    (CirclePackingRectangle(), np.full((21, 3), np.nan), "finite"),
    (CirclePackingRectangle(), np.ones((20, 3)), "shape"),
])
def test_malformed_returns_are_invalid_with_a_clear_message(problem, value, message):
    assert message in score_or_error(problem, value)


def test_near_duplicate_points_are_valid_but_score_what_they_earn():
    points = Heilbronn(region="convex", n=5).initial_program()  # a regular pentagon program, not run here
    assert "construct_points" in points
    pentagon = np.column_stack([np.cos(2 * np.pi * np.arange(5) / 5), np.sin(2 * np.pi * np.arange(5) / 5)])
    squeezed = np.vstack([pentagon[:4], pentagon[3] + 1e-13])
    assert Heilbronn(region="convex", n=5).check(squeezed)[1] < 1e-12
    close = RNG.random((16, 2))
    close[1] = close[0] + 1e-14
    assert MinMaxDistance().check(close)[1] > 1e25


def test_bad_kwargs_fail_at_make_time():
    with pytest.raises(ValueError, match="region"):
        gym.make("ttd/Heilbronn-v0", region="square")
    with pytest.raises(ValueError, match="ships no construction"):
        gym.make("ttd/MinMaxDistance-v0", n=20, initial="record")
    with pytest.raises(TypeError, match="radius"):
        gym.make("ttd/CirclePackingRectangle-v0", radius=3)


# -- the env contract and the initial programs through the real sandbox -------------------------------
ENV_CASES = [("ttd/MinMaxDistance-v0", {}), ("ttd/MinMaxDistance-v0", {"n": 14, "d": 3}),
             ("ttd/Heilbronn-v0", {}), ("ttd/Heilbronn-v0", {"region": "convex", "n": 14}),
             ("ttd/KissingNumber-v0", {}), ("ttd/CirclePackingRectangle-v0", {})]


@pytest.mark.parametrize("env_id,kwargs", ENV_CASES)
def test_initial_program_steps_to_a_valid_reward_and_check_env_passes(env_id, kwargs):
    env = gym.make(env_id, budget_s=20.0, **kwargs)
    try:
        check_env(env.unwrapped, skip_render_check=True)
        env.reset(seed=0)
        _, reward, terminated, _, info = env.step(env.unwrapped.problem.initial_program())
        assert info["valid"], info["error"]
        assert reward > 0 and terminated
        within(info["elapsed_s"], 20, f"{env_id}'s initial program, with a 20 s budget")
        hostile = "```python\ndef " + env.unwrapped.problem.entry + "():\n    return float('nan')\n```"
        _, reward, _, _, info = env.step(hostile)
        assert reward == 0.0 and not info["valid"] and info["error"]
    finally:
        env.close()


def test_record_state_reaches_the_program_as_a_global():
    env = gym.make("ttd/KissingNumber-v0", initial="record", budget_s=20.0)
    try:
        env.reset(seed=0)
        answer = "```python\ndef construct_vectors():\n    return initial_vectors[:-1]\n```"
        _, reward, _, _, info = env.step(answer)
        assert info["valid"] and reward == 603.0  # the Z[sqrt 2] record less one vector, as (N, d, 2) pairs
    finally:
        env.close()


def test_shipped_files_name_their_source():
    """Every shipped file (the SHIPPED rows and every verified table entry) names who published it."""
    holders = {e.path().name: e.who for p in PROBLEMS.values() for e in load_records(p.name).entries if e.verified}
    assert {filename for _, _, filename, _ in SHIPPED} <= holders.keys()
    for filename, who in holders.items():
        data = json.loads((MATH_DATA / filename).read_text())
        assert who in data["source"], (filename, who)
