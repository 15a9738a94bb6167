"""vLLM sampling with the policy's LoRA adapter (GPU only: skipped without CUDA or vllm).

Runs on a tiny random Llama from `build_tiny_causal_lm` with a head size of 64 (vLLM's attention
kernels need a standard head size), in bfloat16 on both sides.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("vLLM sampling needs a CUDA GPU; none is visible here", allow_module_level=True)
pytest.importorskip("vllm", reason="the vllm extra is not installed (pip install 'ttd[vllm]')")

from ttd_agent.policy.base import LossConfig, TrainItem
from ttd_agent.policy.hf import HFPolicy
from ttd_agent.policy.tiny import build_tiny_causal_lm

pytestmark = pytest.mark.gpu
PROMPTS = ["Improve x = 1.", "Write a short program."]
VLLM = {"gpu_memory_utilization": 0.25, "enforce_eager": True, "max_model_len": 512, "dtype": "bfloat16"}


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    path = build_tiny_causal_lm(tmp_path_factory.mktemp("tiny-lm"), hidden_size=256, intermediate_size=512,
                                num_attention_heads=4, num_key_value_heads=2)
    return HFPolicy(str(path), lora_rank=8, lr=5e-2, dtype="bfloat16", sampler="vllm", vllm_kwargs=VLLM,
                    logprobs="sampler")


def flat(groups):
    return [s for g in groups for s in g]


def test_vllm_samples_have_the_policy_format(policy):
    groups = policy.sample(PROMPTS, 4, temperature=1.0, max_new_tokens=16)
    assert [len(g) for g in groups] == [4, 4]
    for prompt, group in zip(PROMPTS, groups, strict=True):
        for s in group:
            assert s.prompt == prompt and s.prompt_ids == policy.render(prompt)
            assert 1 <= len(s.completion_ids) <= 16 and s.logprobs.shape == (len(s.completion_ids),)
            assert np.all(s.logprobs <= 0)
            if s.finished:  # stopped at EOS, which stays in the ids so its log-prob is trained
                assert s.completion_ids[-1] in policy.eos_ids


def test_vllm_logprobs_match_the_trainer_before_and_after_an_update(policy):
    """The processed (temperature-scaled) vLLM log-probs agree with the HF forward, first with the
    base model and then with the adapter saved after an update (so vLLM really loaded it)."""
    samples = flat(policy.sample(PROMPTS, 8, temperature=0.7, max_new_tokens=16))
    if policy.engine.processed:
        gap = np.mean([np.abs(a - s.logprobs).mean() for a, s in zip(policy.logprobs(samples), samples, strict=True)])
        assert gap < 0.05

    for _ in range(3):
        policy.update([TrainItem(s, float(i % 2) - 0.5) for i, s in enumerate(samples)], LossConfig())
    after = flat(policy.sample(PROMPTS, 8, temperature=0.7, max_new_tokens=16))
    with_adapter = policy.logprobs(after)
    without = policy.reference_logprobs(after)
    if policy.engine.processed:
        gap_adapter = np.mean([np.abs(a - s.logprobs).mean() for a, s in zip(with_adapter, after, strict=True)])
        gap_base = np.mean([np.abs(a - s.logprobs).mean() for a, s in zip(without, after, strict=True)])
        assert gap_adapter < 0.05 and gap_adapter < gap_base


def test_recompute_mode_makes_the_update_exactly_on_policy(policy):
    policy.settings.logprobs = "recompute"
    try:
        samples = flat(policy.sample(PROMPTS, 4, temperature=1.0, max_new_tokens=8))
        assert all(s.entropy is not None for s in samples)
        stats = policy.update([TrainItem(s, 1.0) for s in samples], LossConfig(clip_eps=0.2))
        assert abs(stats["ratio_max"] - 1) < 1e-2
    finally:
        policy.settings.logprobs = "sampler"
