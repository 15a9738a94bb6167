"""verl: our estimator comes back from verl's registry and equals ttd_agent.objective on the same
groups; compute_score scores through verl's own custom-reward loading path; the vote manager and
the parquet rows work with verl's own DataProto and RLHFDataset.

Not run: a PPO step (`verl.trainer.main_ppo` needs Ray workers with FSDP/Megatron and a vLLM or
SGLang rollout server on a GPU)."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest

pytest.importorskip("verl", reason="needs verl (scripts/test.sh installs it: verl --no-deps plus the verl extra)")

import torch  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402
from verl import DataProto  # noqa: E402
from verl.trainer.ppo.core_algos import get_adv_estimator_fn  # noqa: E402
from verl.trainer.ppo.ray_trainer import compute_advantage  # noqa: E402
from verl.trainer.ppo.reward import load_reward_manager  # noqa: E402

from ttd_agent.integrations.verl import ESTIMATOR, VOTE_MANAGER, compute_ttd_entropic_advantage  # noqa: E402
from ttd_agent.objective import group_advantages  # noqa: E402
from ttd_agent.policy.tiny import build_tiny_causal_lm  # noqa: E402
from ttd_envs.integrations import common  # noqa: E402
from ttd_envs.integrations.verl import compute_score, verl_rows, write_parquet  # noqa: E402


def test_registry_returns_our_estimator_and_it_matches_the_objective():
    assert get_adv_estimator_fn(ESTIMATOR) is compute_ttd_entropic_advantage
    rng = np.random.default_rng(0)
    groups = [rng.normal(size=6), np.array([0.0, 0.0, 1.0, 0.0]), np.array([2.0, 2.0, 2.0]), rng.uniform(size=5)]
    index = np.array([f"g{g}" for g, rewards in enumerate(groups) for _ in rewards], dtype=object)
    order = rng.permutation(len(index))  # verl does not keep a group's responses together
    flat = np.concatenate(groups)[order]
    length = 7
    mask = torch.ones(len(flat), length)
    mask[:, 5:] = torch.as_tensor(rng.integers(0, 2, size=(len(flat), 2)), dtype=torch.float32)
    token_rewards = torch.zeros(len(flat), length, dtype=torch.float64)
    token_rewards[:, 4] = torch.as_tensor(flat)  # the outcome reward sits on one token
    data = DataProto.from_dict(tensors={"token_level_rewards": token_rewards, "response_mask": mask},
                               non_tensors={"uid": index[order]})
    data = compute_advantage(data, adv_estimator=ESTIMATOR)  # the trainer's own call (v1 delegates to it)
    advantages, returns = data.batch["advantages"], data.batch["returns"]
    expected = np.concatenate([group_advantages(g, "entropic-adaptive")[0] for g in groups])[order]
    np.testing.assert_allclose(advantages[:, 0].numpy(), expected, rtol=1e-12, atol=1e-12)
    assert torch.equal(advantages, returns)
    assert torch.equal(advantages, advantages[:, :1] * mask)  # one scalar per response, on its tokens only


@pytest.mark.slow
def test_plain_import_verl_registers_the_estimator_through_the_entry_point():
    import subprocess
    import sys

    code = ("import sys; from verl.trainer.ppo.core_algos import get_adv_estimator_fn as get; "
            f"get({ESTIMATOR!r}); print('ttd_agent' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "True", out.stderr[-2000:]


def _batch(tokenizer, rows, responses, uids=None):
    prompts = torch.full((len(responses), 3), tokenizer.pad_token_id)
    encoded = [tokenizer(r, add_special_tokens=False)["input_ids"] for r in responses]
    width = max(len(e) for e in encoded) + 2
    response_ids = torch.full((len(responses), width), tokenizer.pad_token_id)
    mask = torch.zeros(len(responses), 3 + width, dtype=torch.long)
    mask[:, :3] = 1
    for i, ids in enumerate(encoded):
        response_ids[i, :len(ids)] = torch.as_tensor(ids)
        mask[i, 3:3 + len(ids)] = 1
    non_tensors = {"data_source": np.array([r["data_source"] for r in rows], dtype=object),
                   "reward_model": np.array([r["reward_model"] for r in rows], dtype=object),
                   "extra_info": np.array([r["extra_info"] for r in rows], dtype=object)}
    if uids is not None:
        non_tensors["uid"] = np.array(uids, dtype=object)
    return DataProto.from_dict(tensors={"prompts": prompts, "responses": response_ids, "attention_mask": mask},
                               non_tensors=non_tensors)


def _config(manager: str, custom: bool, n: int = 4):
    return OmegaConf.create({
        "actor_rollout_ref": {"rollout": {"n": n}},
        "reward": {"reward_manager": {"source": "register", "name": manager},
                   "custom_reward_function": {"path": "pkg://ttd_envs.integrations.verl" if custom else None,
                                              "name": "compute_score", "reward_kwargs": {}}},
    })


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(build_tiny_causal_lm(tmp_path_factory.mktemp("tiny-lm")))


def test_compute_score_through_verls_custom_reward_loading(tokenizer):
    rows = verl_rows("ttd/LABS-v0", 2, env_kwargs={"n": 8})
    responses = ["+++--+-+", "++"]
    manager = load_reward_manager(_config("naive", custom=True), tokenizer)
    batch = _batch(tokenizer, rows, responses)

    async def score():
        return [await manager.run_single(batch[i:i + 1]) for i in range(len(batch))]

    results = manager.loop.run_until_complete(score())  # the loop verl's reward worker runs it on
    expected = common.evaluate("ttd/LABS-v0", rows[0]["extra_info"]["env_kwargs"], rows[0]["extra_info"]["state"],
                               responses[0]).reward
    assert results[0]["reward_score"] == pytest.approx(expected) and expected > 0
    assert results[0]["reward_extra_info"]["valid"] == 1.0
    assert results[1]["reward_score"] == 0.0 and results[1]["reward_extra_info"]["valid"] == 0.0
    with pytest.raises(ValueError, match="ttd_majority_vote"):
        compute_score("ttd/MathVote-v0", "\\boxed{1}", "", {})


def test_majority_vote_manager_scores_whole_groups(tokenizer):
    rows = verl_rows("ttd/MathVote-v0", 2, env_kwargs={"dataset": "aime24"})
    responses = ["\\boxed{3}", "\\boxed{4}", "\\boxed{3}", "nothing", "\\boxed{8}", "\\boxed{9}", "\\boxed{9}", "\\boxed{9}"]
    uids = ["a", "a", "a", "a", "b", "b", "b", "b"]
    batch = _batch(tokenizer, [rows[0]] * 4 + [rows[1]] * 4, responses, uids)
    manager = load_reward_manager(_config(VOTE_MANAGER, custom=False), tokenizer)

    async def score():  # the reward loop scores one response per task, all at once
        return await asyncio.gather(*(manager.run_single(batch[i:i + 1]) for i in reversed(range(len(batch)))))

    results = list(reversed(manager.loop.run_until_complete(score())))
    assert [r["reward_score"] for r in results] == [1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 1.0, 1.0]
    assert results[0]["reward_extra_info"]["majority_ratio"] == 0.5


def test_parquet_rows_load_in_verls_dataset(tmp_path, tokenizer):
    from verl.utils.dataset.rl_dataset import RLHFDataset

    path = write_parquet(tmp_path / "erdos.parquet", "ttd/ErdosOverlap-v0", 2, env_kwargs={"initial": "record"})
    dataset = RLHFDataset(data_files=[str(path)], tokenizer=tokenizer,
                          config=OmegaConf.create({"max_prompt_length": 100_000, "filter_overlong_prompts": False}))
    item = dataset[1]
    assert item["data_source"] == "ttd/ErdosOverlap-v0"
    assert item["raw_prompt"][0]["role"] == "user" and "C5" in item["raw_prompt"][0]["content"]
    state = common.parse_state(item["extra_info"]["state"])
    assert state.score == pytest.approx(0.38087031058621895, abs=1e-12)  # initial="record": Together AI's n = 600
    assert json.loads(item["extra_info"]["env_kwargs"]) == {"initial": "record"}
