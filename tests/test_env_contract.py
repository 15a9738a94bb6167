"""The env contract for outside RL code: what any Gymnasium user may rely on, on every ttd id."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import ttd_envs  # noqa: F401 - registers the ids
from ttd_envs.core.text import CHARSET, clean_output, unencodable
from ttd_envs.problems.erdos import normalised_samples
from ttd_envs.core.program_problem import InvalidConstruction

EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "examples" / "golomb.py"
PLUS = "+" * 32


@pytest.fixture(scope="module")
def golomb():
    """The docs' program-answer example: a real sandboxed PythonProgramProblem that runs in ms."""
    spec = importlib.util.spec_from_file_location("golomb_contract", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    env = ttd_envs.DiscoveryEnv(module.GolombRuler())
    env.reset(seed=0)
    yield env
    env.problem.close()


def program(body: str) -> str:
    return f"```python\n{body}\ndef ruler():\n    return [0, 1, 4, 13, 28, 33, 47, 54, 64, 70, 72]\n```"


@pytest.mark.parametrize("action", [b"+-+-", None, 42, ["+"] * 32])
def test_a_non_string_action_is_a_zero_reward_step_that_says_so(action):
    env = gym.make("ttd/LABS-v0")
    env.reset(seed=0)
    _, reward, terminated, _, info = env.step(action)
    assert reward == 0.0 and terminated and not info["valid"]
    assert info["error"] == f"the answer must be text (str), got {type(action).__name__}"


def test_the_spaces_accept_what_the_env_accepts_and_print_short():
    env = gym.make("ttd/LABS-v0")
    for text in ("é∂漢字 answer", "", "\x00control", PLUS):
        assert env.action_space.contains(text)
    assert not env.action_space.contains(b"bytes") and not env.action_space.contains(None)
    assert len(repr(env.action_space)) < 100 and len(repr(env.observation_space)) < 100
    assert set(env.action_space.sample()) <= set(CHARSET)
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)


def test_labs_info_has_the_same_keys_on_reset_valid_and_invalid_steps():
    env = gym.make("ttd/LABS-v0")
    _, reset_info = env.reset(seed=0)
    _, _, _, _, valid = env.step(PLUS)
    env.reset(seed=0)
    _, _, _, _, invalid = env.step("not a sequence")
    assert valid["valid"] and not invalid["valid"]
    assert set(reset_info) == set(valid) == set(invalid)
    assert invalid["energy"] is None and valid["energy"] == valid["score"]


def test_math_answer_info_has_the_same_keys_with_and_without_an_answer():
    env = gym.make("ttd/MathAnswer-v0", dataset="aime24", question=0)
    env.reset(seed=0)
    _, _, _, _, answered = env.step("so \\boxed{7}")
    env.reset(seed=0)
    _, _, _, _, unanswered = env.step("no final answer")
    assert set(answered) == set(unanswered) and unanswered["correct"] is None and answered["correct"] is False


def test_program_info_has_the_same_keys_with_and_without_a_run(golomb):
    _, _, _, _, ran = golomb.step(program(""))
    golomb.reset(seed=0)
    _, _, _, _, no_block = golomb.step("no code here")
    assert ran["valid"] and not no_block["valid"]
    assert set(ran) == set(no_block) and no_block["sandbox"] is None and ran["sandbox"] is not None


def test_initial_states_are_scored_or_not_the_same_way_everywhere():
    """An unscored initial state has reward None and score None in every env (not 0.0 in some)."""
    rng = np.random.default_rng(0)
    for env_id, kwargs in [("ttd/AHC039-v0", {}), ("ttd/CirclePacking26-v0", {"initial": "empty"}),
                           ("ttd/ErdosOverlap-v0", {"initial": "empty"}), ("ttd/LABS-v0", {}),
                           ("ttd/ErdosOverlap-v0", {"initial": "random"})]:
        problem = ttd_envs.make_problem(env_id, **kwargs)
        state = problem.initial_state(rng)
        getattr(problem, "close", lambda: None)()
        assert (state.reward is None) == (state.score is None), (env_id, kwargs, state.reward, state.score)


def test_make_vec_scores_every_action_of_every_step():
    """Gymnasium's default autoreset would spend every other step on a reset (reward 0)."""
    single = gym.make("ttd/LABS-v0")
    single.reset(seed=0)
    expected = single.step(PLUS)[1]
    envs = gym.make_vec("ttd/LABS-v0", num_envs=3)
    envs.reset(seed=0)
    rewards = np.array([envs.step((PLUS,) * 3)[1] for _ in range(4)])
    envs.close()
    assert rewards.shape == (4, 3) and np.all(rewards == expected) and expected > 0


def test_make_vec_asynchronous_keeps_the_same_autoreset():
    envs = gym.make_vec("ttd/LABS-v0", num_envs=2, asynchronous=True)
    try:
        envs.reset(seed=0)
        rewards = [envs.step((PLUS, PLUS))[1] for _ in range(2)]
    finally:
        envs.close()
    assert np.all(np.array(rewards) > 0)


def test_make_on_the_vector_only_id_says_to_use_make_vec():
    with pytest.raises(ValueError, match=r"make_vec\('ttd/MathVote-v0'"):
        gym.make("ttd/MathVote-v0")


def test_control_characters_and_raw_bytes_do_not_reach_info_stdout(golomb):
    noisy = 'import sys\nsys.stdout.buffer.write(b"\\xff\\xfe \\x1b[31mred\\x00\\r\\x07 done\\n")\nsys.stdout.flush()'
    _, _, _, _, info = golomb.step(program(noisy))
    assert info["valid"] and "red" in info["stdout"] and "done" in info["stdout"]
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f]", info["stdout"])
    assert clean_output("a\tb\nc\x1b[0m\ud800é") == "a\tb\nc?[0m?é"


def test_a_lone_surrogate_in_the_code_is_named(golomb):
    _, reward, _, _, info = golomb.step(program('note = "\ud800"'))
    assert reward == 0 and "lone surrogate character U+D800 at line 1" in info["error"]
    assert "sys.exit" not in info["error"]
    assert unencodable("fine é") is None


def test_erdos_rescaling_message_shows_the_value_that_is_above_one():
    with pytest.raises(InvalidConstruction) as caught:
        normalised_samples([1.0, 0.4999999999, 0.0], max_points=10)
    message = str(caught.value)
    assert "1 > 1" not in message and "above 1 by 6.67e-11" in message
