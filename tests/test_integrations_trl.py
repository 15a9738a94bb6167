"""TRL: GRPOTrainer trains 2 steps on CPU with a tiny random model and a ttd reward; the contracts hold."""

from __future__ import annotations

import pytest

trl = pytest.importorskip("trl", reason="needs the trl extra: pip install -e '.[trl]'")

from ttd_agent.policy.tiny import build_tiny_causal_lm  # noqa: E402
from ttd_envs.integrations import common  # noqa: E402
from ttd_envs.integrations.trl import TtdToolEnv, build_dataset, reward_function  # noqa: E402


def test_reward_scores_each_completion_against_its_own_start_state():
    rows = common.start_rows("ttd/LABS-v0", 2, env_kwargs={"n": 8})
    other = {"prompt": "unrelated task", "env_id": None, "env_kwargs": None, "state": None}
    batch = [rows[0], rows[1], other]
    completions = ["+++--+-+", "not a sequence", "whatever"]
    rewards = reward_function()(prompts=[r["prompt"] for r in batch], completions=completions,
                                **{c: [r[c] for r in batch] for c in ("env_id", "env_kwargs", "state")})
    expected = common.evaluate("ttd/LABS-v0", rows[0]["env_kwargs"], rows[0]["state"], "+++--+-+").reward
    assert rewards == [pytest.approx(expected), 0.0, None]
    assert expected > 0


def test_majority_vote_rows_are_scored_as_groups():
    rows = common.start_rows("ttd/MathVote-v0", 2, env_kwargs={"dataset": "aime24"})
    batch = [rows[0]] * 3 + [rows[1]] * 3
    completions = ["\\boxed{1}", "\\boxed{2}", "\\boxed{1}", "\\boxed{5}", "\\boxed{6}", "\\boxed{6}"]
    chats = [[{"role": "assistant", "content": c}] for c in completions]  # conversational completions
    rewards = reward_function()(prompts=[r["prompt"] for r in batch], completions=chats,
                                **{c: [r[c] for r in batch] for c in ("env_id", "env_kwargs", "state")})
    assert rewards == [1.0, 0.0, 1.0, 0.0, 1.0, 1.0]


def test_environment_object_contract():
    (row,) = common.start_rows("ttd/LABS-v0", 1, env_kwargs={"n": 8, "initial": "all-plus"})
    env = TtdToolEnv()
    assert env.reset(**row) is None
    assert env.submit("+-").startswith("invalid:")
    assert env.get_reward() == 0.0
    assert env.submit("+++--+-+").startswith("valid:")
    assert env.get_reward() == pytest.approx(common.evaluate("ttd/LABS-v0", row["env_kwargs"], row["state"],
                                                             "+++--+-+").reward)


@pytest.mark.slow
def test_grpo_trainer_runs_two_steps_on_cpu(tmp_path):
    from transformers import AutoTokenizer

    model_dir = build_tiny_causal_lm(tmp_path / "tiny-lm")
    tokenizer = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
    calls = []
    ttd_reward = reward_function("ttd_labs")

    def recording_reward(prompts, completions, **columns):
        rewards = ttd_reward(prompts, completions, **columns)
        calls.append((len(completions), columns["state"], rewards))
        return rewards

    recording_reward.__name__ = "ttd_labs"
    args = trl.GRPOConfig(output_dir=str(tmp_path / "out"), use_cpu=True, max_steps=2, per_device_train_batch_size=4,
                          num_generations=4, max_completion_length=12, learning_rate=1e-3, logging_steps=1,
                          report_to="none", save_strategy="no", seed=0, dataloader_num_workers=0)
    trainer = trl.GRPOTrainer(model=str(model_dir), reward_funcs=recording_reward, processing_class=tokenizer,
                              train_dataset=build_dataset("ttd/LABS-v0", count=8, env_kwargs={"n": 8}), args=args)
    before = {k: v.clone() for k, v in trainer.model.named_parameters()}
    trainer.train()
    assert trainer.state.global_step == 2
    assert len(calls) >= 2 and all(n == 4 and len(states) == 4 and len(r) == 4 for n, states, r in calls)
    assert all(isinstance(r, float) for _, _, rewards in calls for r in rewards)
    logged = [entry for entry in trainer.state.log_history if "rewards/ttd_labs/mean" in entry]
    assert len(logged) == 2
    changed = any(not (p == before[k]).all() for k, p in trainer.model.named_parameters())
    assert changed or all(r == rewards[0] for _, _, rewards in calls for r in rewards)


@pytest.mark.slow
def test_grpo_trainer_takes_the_env_object_as_environment_factory(tmp_path):
    """TRL builds the `submit` tool from its signature and docstring, resets one env per rollout
    from its row, and logs `get_reward` as a reward. (The tiny model never calls the tool.)"""
    from transformers import AutoTokenizer
    from trl.chat_template_utils import add_response_schema, qwen2_5_chat_template

    model_dir = build_tiny_causal_lm(tmp_path / "tiny-lm")
    tokenizer = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
    tokenizer.chat_template = qwen2_5_chat_template  # a template TRL can parse tool calls from
    tokenizer = add_response_schema(tokenizer)
    resets = []

    class RecordingEnv(TtdToolEnv):
        def reset(self, **row):
            resets.append(row["state"])
            return super().reset(**row)

    args = trl.GRPOConfig(output_dir=str(tmp_path / "out"), use_cpu=True, max_steps=1, per_device_train_batch_size=4,
                          num_generations=4, max_completion_length=8, report_to="none", save_strategy="no", seed=0)
    dataset = build_dataset("ttd/LABS-v0", count=4, env_kwargs={"n": 8}, conversational=True)
    trainer = trl.GRPOTrainer(model=str(model_dir), processing_class=tokenizer, environment_factory=RecordingEnv,
                              train_dataset=dataset, args=args)
    assert [tool.__name__ for tool in trainer.tools] == ["submit"]
    trainer.train()
    assert len(resets) == 4 and set(resets) <= set(dataset["state"])
    assert any("rewards/RecordingEnv/mean" in entry for entry in trainer.state.log_history)
