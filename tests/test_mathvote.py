"""ttd/MathVote-v0 (vector env over the N votes) and ttd/MathAnswer-v0 (true-label single answer)."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import ttd_envs  # noqa: F401  (registers the ids)
from ttd_envs.problems.mathvote import MathAnswer, MathVoteEnv, load_questions, make_vote_env
from timing import within


@pytest.fixture
def vote_env():
    env = make_vote_env(n_votes=6, dataset="aime24")
    yield env
    env.close()


# --- MathVote-v0 ------------------------------------------------------------------------------

def test_spaces_and_reset_follow_the_vector_env_contract(vote_env):
    assert isinstance(vote_env, gym.vector.VectorEnv) and vote_env.num_envs == 6
    obs, info = vote_env.reset(seed=0)
    assert vote_env.observation_space.contains(obs) and len(obs) == 6 and len(set(obs)) == 1
    assert obs[0].endswith("\\boxed{}.") and obs[0].startswith(vote_env.questions[0].prompt[:50])
    assert set(info) == {"question_index", "_question_index", "question_id", "_question_id"}
    assert vote_env.action_space.contains(vote_env.action_space.sample())


def test_reset_with_a_seed_is_deterministic():
    a, b = make_vote_env(n_votes=3, dataset="amc", shuffle=True), make_vote_env(n_votes=3, dataset="amc", shuffle=True)
    seq_a = [a.reset(seed=7)[1]["question_index"][0]] + [a.reset()[1]["question_index"][0] for _ in range(5)]
    seq_b = [b.reset(seed=7)[1]["question_index"][0]] + [b.reset()[1]["question_index"][0] for _ in range(5)]
    assert seq_a == seq_b and len(set(seq_a)) == 6
    a.close(), b.close()


def test_questions_in_order_and_wrap_around():
    env = make_vote_env(n_votes=2, dataset="aime24")
    assert env.reset(seed=0)[1]["question_index"][0] == 0
    seen = []
    for _ in range(32):
        obs, _, term, trunc, info = env.step(["\\boxed{1}", "\\boxed{2}"])
        seen.append(info["question_index"][0])
        assert term.all() and not trunc.any()
    assert seen[:30] == list(range(30)) and seen[30:] == [0, 1]  # info names the question just scored
    env.close()


def test_step_rewards_and_metrics_equal_a_hand_computation(vote_env):
    """Question 1 of AIME 2024 has the true answer 025. Fixed responses, counted by hand:
    answers 025, 25, 25.0, 7, 7, none -> bins {25: 3, 7: 2}, pseudo-label 025 (first of the 25 bin),
    ratio 3/6, rewards 1 1 1 0 0 0, true rewards 1 1 1 0 0 0, label correct, reward accuracy 1."""
    vote_env.reset(seed=0, options={"question": 1})
    responses = ["... \\boxed{025}", "\\boxed{25}", "so \\boxed{25.0}.", "\\boxed{7}", "\\boxed{7}", "I give up"]
    _, rewards, _, _, info = vote_env.step(responses)
    assert rewards.dtype == np.float64 and rewards.tolist() == [1, 1, 1, 0, 0, 0]
    assert info["pseudo_label"][0] == "025" and info["majority_ratio"][0] == pytest.approx(0.5)
    assert info["answer"].tolist() == ["025", "25", "25.0", "7", "7", None]
    assert info["metric_true_reward"].tolist() == [1, 1, 1, 0, 0, 0]
    assert info["metric_label_correct"].all() and info["metric_reward_correct"].all()


def test_wrong_consensus_is_rewarded_and_the_metrics_show_it(vote_env):
    """Votes 7,7,7,25,none,none: the label 7 is wrong; rewards 1 1 1 0 0 0; true rewards 0 0 0 1 0 0;
    reward accuracy = 2/6 (the two missing answers get 0 under both); label accuracy 0."""
    vote_env.reset(options={"question": 1})
    _, rewards, _, _, info = vote_env.step(["\\boxed{7}"] * 3 + ["\\boxed{25}", "", "\\boxed{}"])
    assert rewards.tolist() == [1, 1, 1, 0, 0, 0]
    assert info["metric_true_reward"].tolist() == [0, 0, 0, 1, 0, 0]
    assert not info["metric_label_correct"].any()
    assert info["metric_reward_correct"].mean() == pytest.approx(2 / 6)


def test_no_answers_at_all(vote_env):
    vote_env.reset(seed=0)
    _, rewards, _, _, info = vote_env.step(["no box"] * 6)
    assert rewards.tolist() == [0.0] * 6 and info["pseudo_label"][0] is None and info["majority_ratio"][0] == 0


def test_hostile_responses_never_raise_and_stay_within_the_time_limit(vote_env):
    import time
    vote_env.reset(seed=0)
    hostile = ["\\boxed{9^{9^{9^{9}}}}", "\\boxed{" * 10000, "\x00\xff" * 1000, "\\boxed{__import__('os')}",
               "x" * 300_000, "\\boxed{(2^{100000})^{100000}}"]
    started = time.perf_counter()
    _, rewards, _, _, info = vote_env.step(hostile)
    within(time.perf_counter() - started, 2 * vote_env.judge.timeout_s + 3.0,
           "6 hostile answers, two of them cut at the judge's time limit (+ worker restarts)")
    assert np.isfinite(rewards).all() and info["answer"][1] is None


def test_wrong_number_of_actions_is_a_usage_error(vote_env):
    vote_env.reset(seed=0)
    with pytest.raises(ValueError, match="expects 6 responses"):
        vote_env.step(["\\boxed{1}"] * 5)
    with pytest.raises(ValueError, match="one string"):
        vote_env.step("\\boxed{1}")


def test_make_vec_through_a_vector_entry_point():
    """The Gymnasium way to build a custom vector env: `gym.make_vec` with a vector entry point."""
    gym.register(id="ttd-test/MathVote-v0", vector_entry_point="ttd_envs.problems.mathvote:make_vote_env")
    try:
        env = gym.make_vec("ttd-test/MathVote-v0", num_envs=4, dataset="math500")
        assert isinstance(env, MathVoteEnv) and env.num_envs == 4 and len(env.questions) == 500
        obs, _ = env.reset(seed=1)
        assert len(obs) == 4
        env.close()
        with pytest.raises(ValueError, match="disagree"):
            make_vote_env(num_envs=4, n_votes=8)
    finally:
        del gym.registry["ttd-test/MathVote-v0"]


# --- datasets ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name, count, source", [("aime24", 30, "aime"), ("amc", 83, "amc"), ("math500", 500, "math")])
def test_shipped_sets(name, count, source):
    questions = load_questions(name)
    assert len(questions) == count and all(q.source == source and q.answer for q in questions)


def test_user_json_and_jsonl_files(tmp_path):
    records = [{"prompt": "What is 2+3?", "answer": "5", "id": "a"}, {"prompt": "What is 1/2+1/2?", "answer": 1}]
    (tmp_path / "q.json").write_text(json.dumps(records))
    (tmp_path / "q.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    for path in (tmp_path / "q.json", tmp_path / "q.jsonl"):
        env = make_vote_env(n_votes=2, dataset=str(path))
        env.reset(seed=0)
        _, rewards, _, _, info = env.step(["\\boxed{5}", "\\boxed{5.0}"])
        assert rewards.tolist() == [1, 1] and info["metric_label_correct"].all() and info["question_id"][0] == "a"
        env.close()


def test_unlabelled_file_has_no_metric_keys_and_mathanswer_refuses_it(tmp_path):
    path = tmp_path / "u.jsonl"
    path.write_text(json.dumps({"prompt": "Guess a number."}) + "\n")
    env = make_vote_env(n_votes=2, dataset=str(path))
    env.reset(seed=0)
    *_, info = env.step(["\\boxed{3}", "\\boxed{4}"])
    assert info["pseudo_label"][0] == "3" and not any(k.startswith("metric_") for k in info)
    env.close()
    with pytest.raises(ValueError, match="no 'answer'"):
        MathAnswer(dataset=str(path))


@pytest.mark.parametrize("content, message", [
    ("not json", "not valid JSON"), ("[]", "non-empty array"), ('[{"answer": "1"}]', "needs a non-empty string field"),
    ('[{"prompt": "q", "answer": [1]}]', "use a string"),
])
def test_bad_user_files_say_what_is_wrong(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        load_questions(str(path))


def test_unknown_dataset_name():
    with pytest.raises(FileNotFoundError, match="aime24, amc, math500"):
        load_questions("aime25")


# --- MathAnswer-v0 ----------------------------------------------------------------------------

@pytest.mark.parametrize("dataset", ["aime24", "amc", "math500"])
def test_check_env_passes(dataset):
    env = gym.make("ttd/MathAnswer-v0", dataset=dataset)
    check_env(env.unwrapped, skip_render_check=True)
    env.close()


def test_true_label_reward_and_reset_from_a_state():
    env = gym.make("ttd/MathAnswer-v0", dataset="amc", question=0)  # true answer 142.0
    obs, info = env.reset(seed=0)
    _, reward, terminated, _, info = env.step("The answer is \\boxed{142}.")
    assert reward == 1.0 and terminated and info["valid"] and info["correct"]
    state = info["state"]
    obs2, _ = env.reset(options={"state": state.to_dict()})
    assert obs2 == obs  # the question travels in the state
    _, reward, *_ = env.step("\\boxed{141}")
    assert reward == 0.0


@pytest.mark.parametrize("action", ["no box here", "\\boxed{", "\\boxed{}", "", "\x00" * 50])
def test_missing_answer_is_an_invalid_zero_step_with_a_message(action):
    env = gym.make("ttd/MathAnswer-v0", dataset="aime24", question=3)
    env.reset(seed=0)
    _, reward, _, _, info = env.step(action)
    assert reward == 0.0 and not info["valid"] and "\\boxed" in info["error"]


def test_bad_configuration_raises_at_make_time():
    with pytest.raises(ValueError, match="question must be an index"):
        gym.make("ttd/MathAnswer-v0", dataset="aime24", question=30)
    with pytest.raises(ValueError, match="n_votes"):
        MathVoteEnv(n_votes=0)
