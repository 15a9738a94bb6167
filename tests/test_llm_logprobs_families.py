"""The hf policy's log-probs equal the model's own forward for every supported family: tiny random
models of Gemma 2 (final-logit soft-cap), Cohere (logit_scale), Granite (logits_scaling), Qwen 3,
Llama and gpt-oss (attention sinks, experts), built from a config on the CPU. The post-head
transforms are set far from 1 and the head's weights enlarged, so a skipped transform shows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("peft")

from ttd_agent.policy.base import Sample  # noqa: E402
from ttd_agent.policy.hf import HFPolicy  # noqa: E402
from ttd_agent.policy.logprobs import OutputHead, PostHead, check_output_head, output_head, post_head  # noqa: E402
from ttd_agent.policy.tiny import build_tiny_causal_lm  # noqa: E402

SHAPE = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
             head_dim=8, max_position_embeddings=256, tie_word_embeddings=False)
FAMILIES = {
    "gemma2": ("Gemma2Config", dict(final_logit_softcapping=3.0, query_pre_attn_scalar=8, sliding_window=16)),
    "cohere": ("CohereConfig", dict(logit_scale=4.0)),
    "granite": ("GraniteConfig", dict(logits_scaling=0.25)),
    "qwen3": ("Qwen3Config", {}),
    "llama": ("LlamaConfig", {}),
    "gpt_oss": ("GptOssConfig", dict(num_local_experts=4, num_experts_per_tok=2, intermediate_size=32,
                                     sliding_window=16)),
}


def build_family(directory: Path, family: str) -> Path:
    """The tiny tokenizer beside a random model of `family` (lm_head weights × 20: logits of a few
    units, where soft-capping and scaling matter)."""
    build_tiny_causal_lm(directory)
    tokenizer = transformers.AutoTokenizer.from_pretrained(directory)
    config_name, extra = FAMILIES[family]
    config = getattr(transformers, config_name)(**{**SHAPE, **extra}, vocab_size=len(tokenizer),
                                                bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                                pad_token_id=tokenizer.pad_token_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        model = transformers.AutoModelForCausalLM.from_config(config)
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(20.0)
    model.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family_policy(request, tmp_path_factory):
    path = build_family(tmp_path_factory.mktemp(request.param), request.param)
    return request.param, HFPolicy(str(path), lora_rank=4, device="cpu", seed=0)


def own_forward_logprobs(policy: HFPolicy, sample: Sample, temperature: float) -> np.ndarray:
    """log softmax(model(ids).logits / T) at the completion tokens: the reference."""
    ids = torch.tensor([sample.prompt_ids + sample.completion_ids])
    with torch.no_grad():
        logits = policy.model(input_ids=ids).logits[0].float()
    logp = torch.log_softmax(logits / temperature, dim=-1)
    P, C = len(sample.prompt_ids), len(sample.completion_ids)
    return logp[P - 1:P + C - 1].gather(-1, torch.tensor(sample.completion_ids)[:, None]).squeeze(-1).numpy()


def test_logprobs_equal_the_models_own_forward(family_policy):
    family, policy = family_policy
    rng = np.random.default_rng(0)
    vocab = len(policy.tokenizer)
    samples = [Sample(prompt="p", text="", prompt_ids=rng.integers(10, vocab, size=p).tolist(),
                      completion_ids=rng.integers(10, vocab, size=c).tolist(), logprobs=np.zeros(c))
               for p, c in ((5, 7), (9, 3), (4, 11))]
    for temperature in (1.0, 0.7):
        ours = policy.logprobs(samples, temperature=temperature)
        for sample, logp in zip(samples, ours, strict=True):
            expected = own_forward_logprobs(policy, sample, temperature)
            np.testing.assert_allclose(logp, expected, atol=2e-4, err_msg=f"{family} at T={temperature}")
    assert policy.attention.implementation in ("sdpa", "eager")
    if family == "gpt_oss":  # no SDPA path in transformers: eager on a CPU, FlexAttention on a GPU
        assert policy.attention.implementation == "eager" and "FlexAttention" in policy.attention.reason


def test_post_head_reads_each_familys_transform(family_policy):
    family, policy = family_policy
    post = post_head(policy._causal_lm(policy.model))
    expected = {"gemma2": PostHead(softcap=3.0), "cohere": PostHead(scale=4.0), "granite": PostHead(scale=4.0)}
    assert post == expected.get(family, PostHead())


def test_a_head_without_the_familys_transform_is_refused(tmp_path):
    """What today's bare lm_head would have trained on: refused at load, with the size of the gap."""
    model = transformers.AutoModelForCausalLM.from_pretrained(build_family(tmp_path, "granite"))
    ids = torch.arange(10, 26)[None]
    assert check_output_head(model, output_head(model), ids) < 1e-5
    with pytest.raises(ValueError, match="granite: logits through the output head .* differ from the model's own"):
        check_output_head(model, OutputHead(model.get_output_embeddings(), PostHead()), ids)
