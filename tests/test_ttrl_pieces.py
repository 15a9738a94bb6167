"""The pure TTRL pieces, checked against hand computations."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from ttd_agent.ttrl import (arithmetic_questions, avg_at_k, group_metrics, group_outcome, keep_indices, maj_at_n,
                            mean_metrics, mean_token_entropy, reward_accuracy)
from ttd_envs.answers import AnswerJudge
from ttd_envs.problems.mathvote import make_vote_env


@pytest.fixture(scope="module")
def judge():
    j = AnswerJudge()
    yield j
    j.close()


def test_keep_first_m_and_random_m():
    assert keep_indices(8, 3).tolist() == [0, 1, 2]
    picked = keep_indices(8, 3, "random", np.random.default_rng(0))
    assert len(set(picked.tolist())) == 3 and picked.tolist() == sorted(picked.tolist())
    assert keep_indices(8, 3, "random", np.random.default_rng(0)).tolist() == picked.tolist()
    with pytest.raises(ValueError, match="keep must be"):
        keep_indices(4, 5)
    with pytest.raises(ValueError, match="needs an rng"):
        keep_indices(4, 2, "random")


def test_group_outcome_and_metrics_by_hand(judge):
    """N=6 answers 5, 5.0, 7, None, 05, 7 with true answer 7.
    Bins: {5: 3 (indices 0, 1, 4), 7: 2}; label "5"; ratio 3/6; rewards 1 1 0 0 1 0.
    Keep M=4 (first): kept rewards 1 1 0 0. True rewards 0 0 1 0 0 1.
    reward accuracy over N: agreement at index 3 only -> 1/6; over kept: index 3 -> 1/4.
    ground-truth ratio 2/6, kept 1/4; pass@N = pass@M = 1; label accuracy 0; answer rate 5/6."""
    answers = ["5", "5.0", "7", None, "05", "7"]
    outcome = group_outcome(answers, judge, keep=4)
    assert outcome.vote.label == "5" and outcome.kept.tolist() == [0, 1, 2, 3]
    assert outcome.rewards.tolist() == [1, 1, 0, 0]
    m = group_metrics(outcome, "7", judge, answers)
    expected = {"majority_reward": 3 / 6, "post_majority_reward": 2 / 4, "majority_ratio": 3 / 6,
                "answer_rate": 5 / 6, "label_accuracy": 0.0, "reward_accuracy": 1 / 6, "post_reward_accuracy": 1 / 4,
                "ground_truth_ratio": 2 / 6, "post_ground_truth_ratio": 1 / 4, "pass_at_n": 1.0, "pass_at_m": 1.0}
    assert m == pytest.approx(expected)
    unlabelled = group_metrics(outcome, None, judge, answers)
    assert set(unlabelled) == {"majority_reward", "post_majority_reward", "majority_ratio", "answer_rate"}


def test_group_metrics_equal_the_envs_info(judge):
    """The same fixed answers through ttd/MathVote-v0 give the same rewards and metrics."""
    responses = ["\\boxed{025}", "\\boxed{7}", "\\boxed{25}", "nothing", "\\boxed{7}", "\\boxed{7.0}"]
    env = make_vote_env(n_votes=6, dataset="aime24")
    env.reset(seed=0, options={"question": 1})  # true answer 025
    _, rewards, _, _, info = env.step(responses)
    env.close()
    answers = info["answer"].tolist()
    m = group_metrics(group_outcome(answers, judge), "025", judge, answers)
    assert rewards.tolist() == [0, 1, 0, 0, 1, 1]
    assert m["majority_reward"] == pytest.approx(rewards.mean())
    assert m["majority_ratio"] == pytest.approx(info["majority_ratio"][0]) == pytest.approx(0.5)
    assert m["label_accuracy"] == float(info["metric_label_correct"][0]) == 0.0
    assert m["reward_accuracy"] == pytest.approx(info["metric_reward_correct"].mean()) == pytest.approx(1 / 6)


def test_avg_at_k_maj_at_n_and_reward_accuracy(judge):
    assert avg_at_k(np.array([[1, 0, 1, 1], [0, 0, 0, 1]])) == pytest.approx(4 / 8)
    groups = [["3", "3", "4"], ["1/2", "0.5", "2"], [None, None, None], ["9", "8", "8"]]
    truths = ["3", "\\frac{1}{2}", "1", "9"]
    assert maj_at_n(groups, truths, judge) == pytest.approx(2 / 4)
    assert reward_accuracy(np.array([1, 0, 1, 0]), np.array([1, 1, 1, 0])) == pytest.approx(3 / 4)
    with pytest.raises(ValueError):
        avg_at_k(np.array([1, 0]))
    with pytest.raises(ValueError):
        maj_at_n(groups, truths[:2], judge)


def test_token_entropy():
    uniform = np.zeros((2, 3, 5))
    assert mean_token_entropy(uniform) == pytest.approx(math.log(5))
    peaked = np.array([[[100.0, 0.0, 0.0], [0.0, 0.0, 0.0]]])  # entropy ~0 and log 3
    assert mean_token_entropy(peaked) == pytest.approx(math.log(3) / 2, abs=1e-6)
    assert mean_token_entropy(peaked, mask=np.array([[0, 1]])) == pytest.approx(math.log(3))


def test_mean_metrics_skips_missing():
    assert mean_metrics([{"a": 1.0, "b": 0.0}, {"a": 0.0}]) == {"a": 0.5, "b": 0.0}


def test_arithmetic_questions_are_correct_deterministic_and_loadable(tmp_path):
    records = arithmetic_questions(50, seed=3)
    assert records == arithmetic_questions(50, seed=3) and records != arithmetic_questions(50, seed=4)
    for r in records:
        a, op, b = r["prompt"].removeprefix("What is ").removesuffix("?").split(" ")
        value = {"+": int(a) + int(b), "-": int(a) - int(b), "*": int(a) * int(b)}[op]
        assert r["answer"] == str(value)
    path = tmp_path / "arith.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records))
    env = make_vote_env(n_votes=2, dataset=str(path))
    env.reset(seed=0)
    _, rewards, _, _, info = env.step([f"\\boxed{{{records[0]['answer']}}}"] * 2)
    assert rewards.tolist() == [1, 1] and info["metric_label_correct"].all()
    env.close()
    with pytest.raises(ValueError):
        arithmetic_questions(3, ops="/")
