"""The transformers + peft backend on a tiny random Llama built in code (CPU, no download)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

from ttd_agent.policy import make_policy
from ttd_agent.policy.base import LossConfig, Policy, TrainItem
from ttd_agent.policy.hf import HFPolicy
from ttd_agent.policy.tiny import build_tiny_causal_lm

PROMPTS = ["Improve x = 1.", "A longer prompt: make the sum of squares small, please."]


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: one thread is as fast, and immune to a busy machine
    yield str(build_tiny_causal_lm(tmp_path_factory.mktemp("tiny-lm")))
    torch.set_num_threads(threads)


def flat(groups):
    return [s for g in groups for s in g]


def test_sample_shapes_and_chat_template(tiny_lm):
    policy = make_policy("hf", model=tiny_lm, lora_rank=4, seed=0)
    assert isinstance(policy, HFPolicy) and isinstance(policy, Policy) and policy.kind == "llm"
    groups = policy.sample(PROMPTS, 3, temperature=1.0, max_new_tokens=7)
    assert [len(g) for g in groups] == [3, 3]
    tok = policy.tokenizer
    for prompt, group in zip(PROMPTS, groups, strict=True):
        for s in group:
            assert s.prompt == prompt and s.prompt_ids == policy.render(prompt)
            assert s.prompt_ids[0] == tok.bos_token_id and tok.convert_tokens_to_ids("<|user|>") in s.prompt_ids
            assert tok.decode(s.prompt_ids).endswith("<|assistant|>\n")
            assert 1 <= len(s.completion_ids) <= 7 and s.logprobs.shape == (len(s.completion_ids),)
            assert np.all(s.logprobs <= 0) and np.all(s.entropy >= 0)
            assert s.finished == (s.completion_ids[-1] in policy.eos_ids)
    raw = HFPolicy(tiny_lm, lora_rank=4, renderer="plain")
    assert raw.render("abc") == raw.tokenizer("abc")["input_ids"]


def test_on_policy_logprobs_and_ratio_one(tiny_lm):
    policy = HFPolicy(tiny_lm, lora_rank=4, seed=1, micro_batch_size=3)
    samples = flat(policy.sample(PROMPTS, 4, temperature=0.8, max_new_tokens=9))
    for s, lp in zip(samples, policy.logprobs(samples), strict=True):
        np.testing.assert_allclose(lp, s.logprobs, atol=1e-4)
    stats = policy.update([TrainItem(s, 1.0) for s in samples], LossConfig(clip_eps=0.2, kl_coef=0.1, kl_mode="k3"))
    assert abs(stats["ratio_max"] - 1) < 1e-4 and stats["ratio_mean"] == pytest.approx(1.0, abs=1e-4)
    assert stats["kl"] == pytest.approx(0.0, abs=1e-6)  # adapter disabled = base = policy before any step
    assert stats["tokens"] == sum(len(s.completion_ids) for s in samples) and stats["grad_norm"] > 0


def test_update_trains_only_the_adapter_and_the_reference_stays_the_base(tiny_lm):
    policy = HFPolicy(tiny_lm, lora_rank=4, lr=1e-2, seed=2)
    before = {k: v.detach().clone() for k, v in policy.model.named_parameters()}
    samples = flat(policy.sample(PROMPTS, 4, temperature=1.0, max_new_tokens=6))
    base_logp = policy.logprobs(samples)
    for _ in range(2):
        policy.update([TrainItem(s, float(i % 2) - 0.5) for i, s in enumerate(samples)], LossConfig())
    after = dict(policy.model.named_parameters())
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all("lora_" in k for k in changed)
    assert any("lora_B" in k for k in changed)
    moved = policy.logprobs(samples)
    assert max(np.abs(a - b).max() for a, b in zip(moved, base_logp, strict=True)) > 1e-3
    for a, b in zip(policy.reference_logprobs(samples), base_logp, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_eos_ends_a_completion_and_stays_in_its_ids(tiny_lm):
    policy = HFPolicy(tiny_lm, lora_rank=4, seed=3)
    policy.eos_ids = list(range(0, len(policy.tokenizer), 2))  # half the vocabulary ends a completion
    heard = []
    samples = flat(policy.sample(PROMPTS, 8, temperature=1.0, max_new_tokens=3,
                                 on_sample=lambda i, j, s: heard.append((len(s.completion_ids), s.finished))))
    assert sorted(heard) == sorted((len(s.completion_ids), s.finished) for s in samples)
    assert [n for n, _ in heard] == sorted(n for n, _ in heard)  # each reported the step it ended
    finished = [s for s in samples if s.finished]
    assert finished and len(finished) < len(samples)
    for s in samples:
        ends = [i for i, t in enumerate(s.completion_ids) if t in policy.eos_ids]
        assert ends == ([len(s.completion_ids) - 1] if s.finished else [])
        assert s.finished or len(s.completion_ids) == 3
        assert s.text == policy.tokenizer.decode(s.completion_ids[:-1] if s.finished else s.completion_ids,
                                                 skip_special_tokens=True)
    for s, lp in zip(samples, policy.logprobs(samples), strict=True):
        np.testing.assert_allclose(lp, s.logprobs, atol=1e-4)


def test_greedy_and_determinism(tiny_lm):
    a = HFPolicy(tiny_lm, lora_rank=4, seed=5)
    b = HFPolicy(tiny_lm, lora_rank=4, seed=5)
    assert [s.completion_ids for s in flat(a.sample(PROMPTS, 2, temperature=1.0, max_new_tokens=5))] == \
           [s.completion_ids for s in flat(b.sample(PROMPTS, 2, temperature=1.0, max_new_tokens=5))]
    g1, g2 = a.sample(PROMPTS[:1], 2, temperature=0.0, max_new_tokens=5)[0]
    assert g1.completion_ids == g2.completion_ids and np.all(g1.logprobs == 0)


def test_save_load_restores_the_adapter_exactly(tiny_lm, tmp_path):
    policy = HFPolicy(tiny_lm, lora_rank=4, lr=1e-2, seed=4)
    samples = flat(policy.sample(PROMPTS, 3, temperature=0.9, max_new_tokens=5))
    policy.update([TrainItem(s, float(i % 3) - 1) for i, s in enumerate(samples)], LossConfig())
    policy.save(tmp_path / "ckpt")
    restored = HFPolicy(tiny_lm, lora_rank=4, lr=1e-2, seed=99)
    restored.load(tmp_path / "ckpt")
    theirs = dict(restored.model.named_parameters())
    for name, p in policy.model.named_parameters():
        assert torch.equal(p, theirs[name]), name
    assert restored.temperature == 0.9 and restored.version == 1
    for p in (policy, restored):  # the optimizer state and the RNG came back too
        p.update([TrainItem(s, 1.0) for s in samples], LossConfig())
    a = flat(policy.sample(PROMPTS, 2, temperature=0.9, max_new_tokens=5))
    b = flat(restored.sample(PROMPTS, 2, temperature=0.9, max_new_tokens=5))
    assert [s.completion_ids for s in a] == [s.completion_ids for s in b]
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(x.logprobs, y.logprobs, atol=1e-6)


def test_full_finetune_keeps_a_frozen_reference(tiny_lm):
    policy = HFPolicy(tiny_lm, full_finetune=True, lr=1e-3, seed=6)
    samples = flat(policy.sample(PROMPTS, 2, temperature=1.0, max_new_tokens=4))
    loss = LossConfig(kl_coef=0.1)
    assert policy.update([TrainItem(s, 1.0) for s in samples], loss)["kl"] == pytest.approx(0.0, abs=1e-6)
    assert abs(policy.update([TrainItem(s, 1.0) for s in samples], loss)["kl"]) > 1e-6
    with pytest.raises(ValueError, match="full_finetune"):
        HFPolicy(tiny_lm, full_finetune=True, sampler="vllm")
