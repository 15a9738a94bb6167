"""ttd/LABS-v0: the compiled energy vs a naive reference, the shipped optimum table, exhaustive
search for small N, the symmetries of E, the env contract, the strict parse rule and its messages."""

from __future__ import annotations

import itertools
import pickle

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import ttd_envs  # noqa: F401 - registers the ttd/ ids
from ttd_envs.core.parsing import last_fenced_block
from ttd_envs.core.problem import Problem
from ttd_envs.core.state import State
from ttd_envs.core.text import sanitize
from ttd_envs.problems.labs import (
    LABS,
    MAX_ANSWER_CHARS,
    energies,
    energy,
    load_table,
    merit_factor,
    reference_energy,
    sequence_to_string,
    string_to_sequence,
)


def naive_energy(seq) -> int:
    """The definition with Python ints: E = sum_{k=1}^{N-1} (sum_{i=0}^{N-1-k} s_i s_{i+k})^2."""
    s = [int(v) for v in seq]
    n = len(s)
    return sum(sum(s[i] * s[i + k] for i in range(n - k)) ** 2 for k in range(1, n))


def random_sequence(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.choice(np.array([-1, 1], dtype=np.int8), size=n)


OPTIMA = {int(n): entry for n, entry in load_table()["optima"].items()}
BEST_KNOWN = {int(n): entry for n, entry in load_table()["best_known"].items()}


# -- the scorer -------------------------------------------------------------------------------

def test_energy_agrees_with_the_naive_reference_on_random_sequences():
    rng = np.random.default_rng(0)
    for trial in range(300):
        n = int(rng.integers(1, 130))
        s = random_sequence(rng, n)
        assert energy(s) == naive_energy(s), (trial, n)
        assert energy(s.astype(np.int64)) == energy(s.astype(np.float64)) == energy(s.tolist())


def test_batched_energies_equal_the_single_energy():
    rng = np.random.default_rng(1)
    for n in (3, 17, 32, 64, 200):
        batch = rng.choice(np.array([-1, 1], dtype=np.int8), size=(50, n))
        out = energies(batch)
        assert out.dtype == np.int64 and out.shape == (50,)
        assert out.tolist() == [energy(row) for row in batch]
    assert energies(np.zeros((0, 8), dtype=np.int8)).shape == (0,)


def test_every_shipped_sequence_reproduces_its_energy():
    assert sorted(OPTIMA) == list(range(3, 67))
    for table in (OPTIMA, BEST_KNOWN):
        for n, entry in table.items():
            s = string_to_sequence(entry["sequence"])
            assert len(s) == n
            assert energy(s) == naive_energy(s) == entry["energy"], n
            assert merit_factor(n, entry["energy"]) == pytest.approx(entry["merit_factor"], rel=1e-12)
    batch_n = 40
    assert energies(string_to_sequence(OPTIMA[batch_n]["sequence"])[None, :])[0] == OPTIMA[batch_n]["energy"]


def test_exhaustive_search_finds_the_table_minimum_up_to_16():
    for n in range(3, 17):
        every = np.array(list(itertools.product((1, -1), repeat=n)), dtype=np.int8)
        assert energies(every).min() == OPTIMA[n]["energy"], n


def test_energy_is_invariant_under_reversal_negation_and_alternate_negation():
    rng = np.random.default_rng(2)
    for _ in range(100):
        s = random_sequence(rng, int(rng.integers(3, 100)))
        alternate = s * np.where(np.arange(len(s)) % 2 == 0, 1, -1).astype(np.int8)
        assert energy(s) == energy(s[::-1]) == energy(-s) == energy(alternate)


def test_mean_energy_of_all_sequences_is_n_times_n_minus_1_over_2():
    n = 12
    every = np.array(list(itertools.product((1, -1), repeat=n)), dtype=np.int8)
    assert energies(every).mean() == n * (n - 1) / 2


@pytest.mark.parametrize("bad", [np.array([1, 0, -1]), np.array([1, 0, -1], dtype=np.int8), np.array([[1, -1]]),
                                 np.array(["+", "-"]), [1, 2, -1], [1, 257, -1], np.array([1.0, 1.5])])
def test_energy_refuses_anything_but_a_1d_plus_minus_one_array(bad):
    with pytest.raises(ValueError, match="must"):
        energy(bad)


@pytest.mark.parametrize("bad", [np.array([[1, 0, -1]], dtype=np.int8), np.array([1, -1], dtype=np.int8),
                                 np.array([[1, 257]]), np.full((2, 2, 2), 1, dtype=np.int8)])
def test_energies_refuses_anything_but_a_2d_plus_minus_one_array(bad):
    with pytest.raises(ValueError, match="must"):
        energies(bad)


def test_energy_accepts_non_contiguous_and_other_dtypes():
    s = np.array([1, -1, 1, 1, -1, -1, 1, -1, 1], dtype=np.int8)
    assert energy(s[::2]) == naive_energy(s[::2]) and energy(s[::-1]) == energy(s)
    batch = np.stack([s, -s, s[::-1]]).astype(np.int32)
    assert energies(batch).tolist() == energies(batch[:, ::-1]).tolist() == [energy(s)] * 3


def test_string_round_trip():
    s = np.array([1, -1, -1, 1, 1], dtype=np.int8)
    assert sequence_to_string(s) == "+--++"
    assert string_to_sequence("+--++").tolist() == s.tolist()
    with pytest.raises(ValueError, match="position 3"):
        string_to_sequence("+-x")


# -- records, defaults, configuration ----------------------------------------------------------

def test_records_and_defaults_follow_n():
    p = LABS()
    assert isinstance(p, Problem) and p.name == "LABS" and p.summary
    assert p.n == 32 and p.record.score == 64 and not p.record.higher_is_better
    assert "proven" in p.record.holder
    d = p.defaults
    assert d.model_kind == "embedded" and d.max_new_tokens == 32 and d.eval_timeout_s == 5.0
    assert d.embedded.alphabet == "+-" and d.embedded.length == 32
    assert LABS(n=67).record.score == 241 and reference_energy(67) == (241, False)
    assert "not proven" in LABS(n=67).record.holder
    assert LABS(n=68).record is None and reference_energy(68) == (None, None)
    assert LABS(n=13).defaults.embedded.length == 13
    assert LABS(n=np.int64(40)).n == 40


@pytest.mark.parametrize("kwargs,error,match", [
    ({"n": 2}, ValueError, "3..256"), ({"n": 1}, ValueError, "3..256"), ({"n": 0}, ValueError, "3..256"),
    ({"n": 257}, ValueError, "3..256"), ({"n": 32.0}, TypeError, "integer"), ({"n": "32"}, TypeError, "integer"),
    ({"n": True}, TypeError, "integer"), ({"initial": "record"}, ValueError, "initial"),
])
def test_bad_configuration_raises_at_construction(kwargs, error, match):
    with pytest.raises(error, match=match):
        LABS(**kwargs)


def test_initial_states():
    p = LABS(n=20)
    a, b = p.initial_state(np.random.default_rng(5)), p.initial_state(np.random.default_rng(5))
    assert a.construction == b.construction and len(a.construction) == 20 and a.is_initial
    assert a.score == naive_energy(string_to_sequence(a.construction)) and a.code is None
    assert a.reward == pytest.approx(20**2 / (2 * a.score))
    plus = LABS(n=20, initial="all-plus").initial_state(np.random.default_rng(0))
    assert plus.construction == "+" * 20 and plus.score == sum((20 - k) ** 2 for k in range(1, 20))


def test_problem_pickles():
    p = pickle.loads(pickle.dumps(LABS(n=24)))
    assert p.n == 24 and p.evaluate(OPTIMA[24]["sequence"], State()).score == 36


# -- the env ----------------------------------------------------------------------------------

def test_make_and_check_env():
    env = gym.make("ttd/LABS-v0")
    check_env(env.unwrapped)
    obs, info = env.reset(seed=0)
    assert "N = 32" in obs and info["state"].construction in obs and info["valid"]
    env.close()


@pytest.mark.parametrize("n", [3, 13, 32, 66])
def test_step_with_the_optimal_sequence(n):
    env = gym.make("ttd/LABS-v0", n=n)
    env.reset(seed=0)
    e_star = OPTIMA[n]["energy"]
    _, reward, terminated, truncated, info = env.step(OPTIMA[n]["sequence"])
    assert reward == n * n / (2 * e_star) and info["valid"] and info["error"] is None
    assert info["score"] == e_star and info["is_optimal"] and info["gap_to_optimum"] == 0
    assert info["optimal_energy"] == e_star and info["merit_factor"] == reward
    assert info["state"].construction == OPTIMA[n]["sequence"] and terminated and not truncated


def test_step_at_a_best_known_length_is_not_called_optimal():
    p = LABS(n=67)
    ev = p.evaluate(BEST_KNOWN[67]["sequence"], State())
    assert ev.valid and ev.score == 241 and not ev.details["is_optimal"]
    assert ev.details["reaches_reference"] and ev.details["optimum_proven"] is False
    worse = p.evaluate("+" * 67, State())
    assert worse.details["gap_to_optimum"] == worse.score - 241 > 0


def test_accepted_forms_of_an_answer():
    p, seq = LABS(n=13), OPTIMA[13]["sequence"]
    accepted = [
        seq, f"  \n{seq}\n\n", f"Reasoning...\n```\n{seq}\n```",
        f"```text\n+++\n```\nthen better:\n  ```text\n  {seq}  \n  ```\n",
        f"```\n{seq}\n```\n```python\n  {seq}\n```",  # the last closed block wins, whatever its tag
    ]
    for answer in accepted:
        ev = p.evaluate(answer, State())
        assert ev.valid and ev.score == 6 and ev.construction == seq, answer
    assert last_fenced_block("```\nabc\n") is None


@pytest.mark.parametrize("answer,message", [
    ("+" * 31, "expected 32 characters of '+'/'-', got 31 in the answer"),
    ("+" * 33, "expected 32 characters of '+'/'-', got 33"),
    ("```\n" + "+" * 31 + "\n```", "got 31 in the last fenced block"),
    ("+" * 10 + "x" + "+" * 21, "the answer has 'x' at position 11"),
    ("+" * 16 + " " + "+" * 16, "whitespace ' ' at position 17"),
    ("+" * 16 + "\n" + "+" * 16, "a line break at position 17"),
    ("+" * 31 + "−", "'−' (U+2212; write the ASCII hyphen-minus '-')"),
    ("+1-1" * 8, "'1' at position 2"),
    ("The answer is " + "+" * 32, "'T' at position 1: only '+' and '-' are allowed, exactly 32 of them; it also has"),
    ("```\n" + "+" * 32, "its ``` block is not closed"),
    ("", "the answer is empty: expected 32 characters"),
    ("  \n\t ", "the answer is empty"),
    ("```\n\n```", "the last fenced block is empty"),
    ("+" * 10_000_000, "the answer has 10,000,000 characters; at most 400,000 are read"),
])
def test_malformed_answers_get_zero_reward_and_a_specific_message(answer, message):
    env = gym.make("ttd/LABS-v0")
    env.reset(seed=0)
    _, reward, _, _, info = env.step(answer)
    assert reward == 0.0 and not info["valid"] and info["state"] is None and info["score"] is None
    assert message in info["error"], info["error"]


@pytest.mark.parametrize("answer", [None, 123, b"+" * 32, ["+"] * 32, 3.5])
def test_non_text_answers_do_not_raise(answer):
    ev = LABS().evaluate(answer, State())
    assert ev.reward == 0.0 and not ev.valid
    assert ev.error == f"the answer must be text (str), got {type(answer).__name__}"


def test_answer_limit_is_the_action_space_limit():
    assert MAX_ANSWER_CHARS == gym.make("ttd/LABS-v0").unwrapped.action_space.max_length


def test_hostile_fences_are_parsed_in_linear_time():
    # Many opening fences and no closing one: a backtracking regex would take quadratic time.
    ev = LABS().evaluate("```x\n" * 80_000, State())
    assert not ev.valid and "not closed" in ev.error


def test_reset_from_a_state_and_the_prompts():
    env = gym.make("ttd/LABS-v0", n=20)
    problem = env.unwrapped.problem
    start = State(construction="+" * 20, score=2470.0, reward=merit_factor(20, 2470))
    for given in (start, start.to_dict()):
        obs, info = env.reset(options={"state": given})
        assert info["state"].construction == "+" * 20 and "+" * 20 in obs and "E = 2470" in obs
    assert problem.compact_prompt(info["state"]) == "+" * 20
    _, _, _, _, info = env.step(OPTIMA[20]["sequence"])
    child = info["state"]
    assert child.parent_score == 2470.0 and child.score == 26
    assert problem.compact_prompt(child) == OPTIMA[20]["sequence"]
    prompt = problem.prompt(child)
    assert "its parent: E = 2470" in prompt and "E = 26," in prompt and "proven" in prompt
    assert sanitize(prompt) == prompt
    assert problem.compact_prompt(State()) == ""
    assert "no sequence yet" in problem.prompt(State())


def test_prompt_states_the_target_but_never_an_optimal_sequence():
    for n in (32, 67, 150):
        p = LABS(n=n)
        text = p.prompt(p.initial_state(np.random.default_rng(0)))
        assert sanitize(text) == text and f"exactly {n} characters" in text and "C_k²" in text
        ref = reference_energy(n)[0]
        if ref is not None:
            assert f"E = {ref}" in text
        entry = OPTIMA.get(n) or BEST_KNOWN.get(n)
        assert entry is None or entry["sequence"] not in text


def test_large_n_evaluates():
    p = LABS(n=256)
    rng = np.random.default_rng(3)
    s = random_sequence(rng, 256)
    ev = p.evaluate(sequence_to_string(s), p.initial_state(rng))
    assert ev.valid and ev.score == naive_energy(s) and ev.details["optimal_energy"] is None
    assert ev.details["gap_to_optimum"] is None and ev.details["is_optimal"] is False
