"""AHC039 / AHC058: scorers against the spec's numbers and every Wrong-Answer rule, generators
against the shipped inputs, the envs end to end with our baseline C++ programs."""

from __future__ import annotations

import math
import pickle
import re

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from ttd_envs.core.judge import WrongAnswer
from ttd_envs.problems.ahc import ahc039, ahc058
from ttd_envs.problems.ahc.common import data_dir

SOLUTIONS = data_dir("solutions")
FISH0 = ahc039.parse_fish((data_dir("ahc039") / "inputs" / "0000.txt").read_bytes())
FACTORY0 = ahc058.parse_factory((data_dir("ahc058") / "inputs" / "0000.txt").read_bytes())


def polygon(*vertices: tuple[int, int]) -> bytes:
    return (f"{len(vertices)}\n" + "\n".join(f"{x} {y}" for x, y in vertices) + "\n").encode()


def score039(output: bytes) -> int:
    return ahc039.polygon_score(*FISH0, output)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("cpp-cache"))


# -- AHC039 judge --------------------------------------------------------------------------------
def test_statement_sample_scores_1739_on_input_0000() -> None:
    assert score039((data_dir("ahc039") / "example_output.txt").read_bytes()) == 1739


def test_empty_output_and_full_square_score_1() -> None:
    assert score039(b"") == 1 and score039(b" \n\n") == 1
    assert score039(polygon((0, 0), (0, 100000), (100000, 100000), (100000, 0))) == 1


@pytest.mark.parametrize(("output", "reason"), [
    (polygon((0, 0), (0, 0), (0, 10), (10, 10), (10, 0)), "zero length"),
    (polygon((0, 0), (0, 10), (10, 20), (10, 0)), "neither horizontal nor vertical"),
    (polygon((0, 0), (0, 10), (0, 5), (10, 5), (10, 0)), "fold back"),
    (polygon((0, 0), (0, 10), (5, 10), (5, 0), (10, 0), (10, 10), (5, 10), (5, 0)), "touch or cross"),
    (polygon((0, 0), (0, 10), (10, 10), (10, 5), (0, 5), (0, 2), (20, 2), (20, 0)), "touch or cross"),
    (polygon((0, 0), (100000, 0), (100000, 100000), (50001, 100000), (50001, 1), (49999, 1), (49999, 100000),
             (0, 100000)), "exceeds 400000"),
    (b"3\n0 0\n0 10\n10 10\n", "vertex count"),
    (b"1001\n" + b"0 0\n" * 1001, "vertex count"),
    (polygon((0, 0), (0, 100001), (10, 100001), (10, 0)), "out of range"),
    (polygon((0, 0), (0, -1), (10, -1), (10, 0)), "out of range"),
    (b"4\n0 0\n0 10\n10 10\n", "unexpected end"),
    (b"4\n0 0\n0 1.0\n10 10\n10 0\n", "parse error"),
    (b"4\n0 0\n0 0x1\n10 10\n10 0\n", "parse error"),
    (b"4\n0 0\n0 1_0\n10 10\n10 0\n", "parse error"),
    (b"four\n", "parse error"),
    (polygon((0, 0), (0, 10), (10, 10), (10, 0)) + b"3\n", "vertex count"),
])
def test_every_wrong_answer_rule(output: bytes, reason: str) -> None:
    with pytest.raises(WrongAnswer, match=reason):
        score039(output)


def test_only_the_last_polygon_is_scored_and_plus_signs_parse() -> None:
    diagonal = polygon((0, 0), (0, 10), (10, 20), (10, 0))  # well-formed but geometrically invalid: ignored
    square = polygon((20000, 20000), (20000, 80000), (80000, 80000), (80000, 20000))
    assert score039(diagonal + square) == score039(square)
    assert score039(square.replace(b"20000 20000", b"+20000 +20000")) == score039(square)
    perimeter_400000 = polygon((0, 0), (0, 100000), (100000, 100000), (100000, 0))
    assert score039(perimeter_400000) == 1


def _skyline(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    columns = int(rng.integers(1, 30))
    xs = np.sort(rng.choice(np.arange(0, 60), size=columns + 1, replace=False))
    heights = [int(rng.integers(2, 40))]
    while len(heights) < columns:
        h = int(rng.integers(2, 40))
        if h != heights[-1]:
            heights.append(h)
    base = int(rng.integers(0, 2))
    vertices = [(int(xs[0]), base)]
    for k, h in enumerate(heights):
        vertices += [(int(xs[k]), h), (int(xs[k + 1]), h)]
    vertices.append((int(xs[-1]), base))
    array = np.array(vertices, dtype=np.int64)
    return np.ascontiguousarray(array[:, 0]), np.ascontiguousarray(array[:, 1]), xs, np.array(heights), base


def test_inside_matches_a_naive_closed_region_test_on_random_skylines() -> None:
    """A skyline polygon's closed region is the union of closed columns [x_k, x_k+1] x [base, h_k]."""
    rng = np.random.default_rng(5)
    px, py = (a.ravel().astype(np.int64) for a in np.meshgrid(np.arange(-1, 62), np.arange(-1, 42)))
    for _ in range(60):
        xs, ys, cuts, heights, base = _skyline(rng)
        assert ahc039.polygon_violation(xs, ys)[0] == 0
        naive = np.zeros(px.size, dtype=bool)
        for k, h in enumerate(heights):
            naive |= (cuts[k] <= px) & (px <= cuts[k + 1]) & (base <= py) & (py <= h)
        np.testing.assert_array_equal(ahc039.inside_mask(xs, ys, px, py), naive)


def test_contest_rank_and_performance_match_the_spec_key_points() -> None:
    assert ahc039.contest_rank(567_062) == 1 and ahc039.contest_performance(1) == 3390
    assert ahc039.contest_rank(558_026) == 2 and ahc039.contest_performance(2) == 3140
    assert ahc039.contest_rank(150) == 640 and ahc039.contest_performance(640) == 639
    assert ahc039.contest_rank(0) == 683 and ahc039.contest_performance(683) == 265


def test_ahc039_generator_matches_the_shipped_distribution() -> None:
    shipped = np.concatenate([ahc039.parse_fish((data_dir("ahc039") / "inputs" / f"{s:04d}.txt").read_bytes())[0]
                              for s in range(12)])
    made = []
    for seed in range(1000, 1012):
        points, n = ahc039.parse_fish(ahc039.generate(seed).encode())
        assert n == 5000 and points.shape == (10000, 2) and len({tuple(p) for p in points}) == 10000
        assert points.min() >= 0 and points.max() <= 100000
        made.append(points)
    generated = np.concatenate(made)
    assert abs(generated.mean() - shipped.mean()) < 2500 and abs(generated.std() - shipped.std()) < 2000
    outside = [float(((p < 20000) | (p > 80000)).mean()) for p in (generated, shipped)]
    assert abs(outside[0] - outside[1]) < 0.03


# -- AHC058 judge --------------------------------------------------------------------------------
def test_do_nothing_scores_0_and_log_rounding() -> None:
    assert ahc058.factory_score(FACTORY0, b"-1\n" * 500) == 0
    assert ahc058.apple_score(2) == 100000 and ahc058.apple_score(3) == 158496  # 158496.25
    assert ahc058.apple_score(500) == round(100000 * math.log2(500))


def test_hand_computed_production_order() -> None:
    """B[0] produces before level 1 raises it: 10-1+1 = 10; 10-1+1 = 10, B0 -> 2; 10+2 = 12."""
    tiny = ahc058.Factory(n=1, levels=2, turns=3, apples=10, a=(1,), c=((1,), (1,)))
    assert ahc058.simulate(tiny, [(0, 0), (1, 0), None]) == 12
    assert ahc058.factory_score(FACTORY0, b"0 0\n" + b"-1\n" * 499) == round(100000 * math.log2(500))


def test_comments_blank_lines_crlf_and_trailing_garbage() -> None:
    plan = b"# plan\r\n\r\n  0 0 \r\n" + b"-1\r\n" * 499 + b"garbage after the last turn 9 9 9\n"
    assert ahc058.factory_score(FACTORY0, plan) == round(100000 * math.log2(500))


@pytest.mark.parametrize(("output", "reason"), [
    (b"-1\n" * 499, "too few actions"),
    (b"-1 0\n" + b"-1\n" * 499, "too many tokens"),
    (b"0 0 0\n" + b"-1\n" * 499, "too many tokens"),
    (b"4 0\n" + b"-1\n" * 499, "level 4"),
    (b"-2\n" + b"-1\n" * 499, "level -2"),
    (b"0 10\n" + b"-1\n" * 499, "machine ID 10"),
    (b"0\n" + b"-1\n" * 499, "followed by a machine ID"),
    (b"0 x\n" + b"-1\n" * 499, "parse error"),
    (b"1.0 0\n" + b"-1\n" * 499, "parse error"),
    (b"3 9\n" + b"-1\n" * 499, "costs"),
])
def test_every_ahc058_wrong_answer_rule(output: bytes, reason: str) -> None:
    with pytest.raises(WrongAnswer, match=reason):
        ahc058.factory_score(FACTORY0, output)


def test_ahc058_generator_invariants_and_distribution() -> None:
    def offsets(factory: ahc058.Factory) -> np.ndarray:
        a, c = np.array(factory.a, dtype=float), np.array(factory.c, dtype=float)
        return np.log10(c / (a * 500.0 ** np.arange(4)[:, None])).ravel()[1:]

    made = [ahc058.parse_factory(ahc058.generate(seed).encode()) for seed in range(1000, 1040)]
    shipped = [ahc058.parse_factory((data_dir("ahc058") / "inputs" / f"{s:04d}.txt").read_bytes())
               for s in range(40)]
    for f in made:
        assert (f.n, f.levels, f.turns, f.apples) == (10, 4, 500, 1) and f.a[0] == 1 and f.c[0][0] == 1
        assert list(f.a) == sorted(f.a) and 1 <= min(f.a) and max(f.a) <= 100 and max(map(max, f.c)) <= 1.25e12
    u_made, u_shipped = np.concatenate([offsets(f) for f in made]), np.concatenate([offsets(f) for f in shipped])
    assert -0.05 < u_made.min() and u_made.max() < 2.05
    assert abs(u_made.mean() - u_shipped.mean()) < 0.1 and abs(u_made.std() - u_shipped.std()) < 0.1
    log_a = [np.log10(np.array(f.a[1:])).mean() for f in made], [np.log10(np.array(f.a[1:])).mean() for f in shipped]
    assert abs(np.mean(log_a[0]) - np.mean(log_a[1])) < 0.15


# -- envs ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("env_id", ["ttd/AHC039-v0", "ttd/AHC058-v0"])
def test_check_env_passes(env_id: str, cache: str) -> None:
    env = gym.make(env_id, num_tests=2, workers=1, cache_dir=cache)
    check_env(env.unwrapped, skip_render_check=True)
    obs, info = env.reset(seed=0)
    assert "No previous attempt has been made." in obs and "```cpp" in obs and "2 s of CPU time" in obs
    _, reward, _, _, info = env.step("no code here")
    assert reward == 0.0 and not info["valid"] and "```cpp" in info["error"]


def test_bad_configuration_raises_at_make_time() -> None:
    with pytest.raises(ValueError, match="num_tests"):
        gym.make("ttd/AHC039-v0", num_tests=0)
    with pytest.raises(ValueError, match="seeds"):
        gym.make("ttd/AHC058-v0", seeds=[1, 1])


@pytest.mark.parametrize(("env_id", "solution", "scale"), [
    ("ttd/AHC039-v0", "ahc039_rectangle.cpp", 1500.0),
    ("ttd/AHC058-v0", "ahc058_greedy.cpp", 3_000_000.0),
])
def test_baseline_is_accepted_and_rewarded(env_id: str, solution: str, scale: float, cache: str) -> None:
    env = gym.make(env_id, seeds=[0, 7, 151], workers=2, cache_dir=cache)  # 151: a generated input
    env.reset(seed=0)
    code = (SOLUTIONS / solution).read_text()
    obs, reward, _, _, info = env.step(f"Here it is.\n```cpp\n{code}```\n")
    assert info["valid"] and info["error"] is None, info["error"]
    assert info["ahc"]["verdicts"] == {"AC": 3} and info["ahc"]["tests"] == 3
    assert reward == pytest.approx(info["score"] / scale) and info["score"] == pytest.approx(info["ahc"]["total"] / 3)
    assert info["state"].code.strip() == code.strip() and code.strip()[:40] in obs
    assert "Its mean per-test score" in obs
    if env_id == "ttd/AHC039-v0":
        assert 1 <= info["ahc"]["contest_rank"] <= 683 and 265 <= info["ahc"]["contest_performance"] <= 3390


def test_deliberately_wrong_programs_get_wa_with_the_rule(cache: str) -> None:
    diagonal = '#include <cstdio>\nint main(){ std::puts("4\\n0 0\\n0 10\\n10 20\\n10 0"); }\n'
    env = gym.make("ttd/AHC039-v0", seeds=[0, 1], workers=2, cache_dir=cache)
    env.reset(seed=0)
    _, reward, _, _, info = env.step(f"```cpp\n{diagonal}```")
    assert reward == 0.0 and not info["valid"] and "WA" in info["ahc"]["verdicts"]
    assert "neither horizontal nor vertical" in info["error"]
    short = '#include <cstdio>\nint main(){ for (int t = 0; t < 499; t++) std::puts("-1"); }\n'
    env = gym.make("ttd/AHC058-v0", seeds=[0], cache_dir=cache)
    env.reset(seed=0)
    _, reward, _, _, info = env.step(f"```cpp\n{short}```")
    assert reward == 0.0 and "too few actions" in info["error"]


def test_problem_pickles_without_its_sandbox(cache: str) -> None:
    problem = ahc058.AHC058(seeds=[3], cache_dir=cache)
    _ = problem.judge
    clone = pickle.loads(pickle.dumps(problem))
    assert clone._judge is None and clone.seeds == [3]
    report = clone.judge_source((SOLUTIONS / "ahc058_greedy.cpp").read_text())
    assert report.accepted
    clone.close()
    problem.close()


@pytest.mark.slow
@pytest.mark.parametrize(("problem_cls", "solution", "expected_total"), [
    (ahc039.AHC039, "ahc039_rectangle.cpp", 290_632),
    (ahc058.AHC058, "ahc058_greedy.cpp", 299_271_478),
])
def test_baseline_on_all_150_inputs(problem_cls, solution: str, expected_total: int, cache: str) -> None:
    """Every test AC; the judge's score equals the one the program computes for itself (stderr)."""
    problem = problem_cls(cache_dir=cache, workers=2)
    report = problem.judge_source((SOLUTIONS / solution).read_text())
    problem.close()
    assert report.counts == {"AC": 150}
    for result in report.results:
        assert result.score == int(re.search(r"score (\d+)", result.stderr_tail).group(1)), result.name
    assert report.total == expected_total
