"""Renderers of reasoning-model families and the two-phase completion, with tokenizers built in
code (the tiny BPE plus each family's special tokens and a chat template written as a string)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from transformers import AutoModelForCausalLM, AutoTokenizer

from ttd_agent.policy.base import LossConfig, TrainItem
from ttd_agent.policy.hf import HFPolicy
from ttd_agent.policy.renderers import Completion, Renderer, complete, sample_seeds
from ttd_agent.policy.tiny import build_tiny_causal_lm

QWEN3_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and not enable_thinking %}<think>\n\n</think>\n\n{% else %}<think>\n{% endif %}"
    "{% endif %}")
HARMONY_TEMPLATE = (
    "<|start|>system<|message|>Knowledge cutoff: 2024-06\nCurrent date: {{ strftime_now('%Y-%m-%d') }}\n\n"
    "Reasoning: {{ reasoning_effort | default('medium') }}<|end|>"
    "{% for m in messages %}<|start|>{{ m['role'] }}<|message|>{{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|start|>assistant{% endif %}")
FAMILY_TOKENS = {
    "qwen3": (["<|im_start|>", "<|im_end|>", "<think>", "</think>"], QWEN3_TEMPLATE),
    "gpt-oss": (["<|start|>", "<|end|>", "<|message|>", "<|channel|>", "<|return|>", "<|call|>"], HARMONY_TEMPLATE),
}


def family_model(directory, family):
    """The tiny LM with `family`'s special tokens and chat template (embeddings resized)."""
    path = build_tiny_causal_lm(directory)
    tokens, template = FAMILY_TOKENS[family]
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.add_special_tokens({"additional_special_tokens": tokens})
    tokenizer.chat_template = template
    tokenizer.save_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    model.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def qwen3(tmp_path_factory):
    return family_model(tmp_path_factory.mktemp("qwen3"), "qwen3")


@pytest.fixture(scope="module")
def harmony(tmp_path_factory):
    return family_model(tmp_path_factory.mktemp("harmony"), "gpt-oss")


def ids(tokenizer, text):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_families_are_detected_and_the_date_is_fixed(qwen3, harmony):
    tok = AutoTokenizer.from_pretrained(harmony)
    renderer = Renderer(tok)
    assert renderer.family == "gpt-oss" and Renderer(AutoTokenizer.from_pretrained(qwen3)).family == "qwen3"
    text = tok.decode(renderer.prompt_ids("improve it"))
    assert "Current date: 2026-01-01" in text and "Reasoning: medium" in text
    assert renderer.prompt_ids("improve it") == Renderer(tok).prompt_ids("improve it")  # resume renders the same
    other = tok.decode(Renderer(tok, date="2025-03-04", reasoning_effort="high").prompt_ids("improve it"))
    assert "Current date: 2025-03-04" in other and "Reasoning: high" in other
    assert {tok.convert_tokens_to_ids("<|return|>"), tok.convert_tokens_to_ids("<|call|>")} <= set(renderer.stop_ids)


def test_qwen3_thinking_flag_and_answer_after_think(qwen3):
    tok = AutoTokenizer.from_pretrained(qwen3)
    thinking, plain = Renderer(tok, thinking=True), Renderer(tok, thinking=False)
    assert tok.decode(thinking.prompt_ids("q")).endswith("<|im_start|>assistant\n<think>\n")
    assert tok.decode(plain.prompt_ids("q")).endswith("</think>\n\n")
    assert thinking.opened == "<think>" and plain.opened == ""
    draft = "try ```python\nx = 1\n``` hmm"
    done = ids(tok, f"{draft}</think>\n\n```python\nx = 2\n```") + [tok.convert_tokens_to_ids("<|im_end|>")]
    assert thinking.answer(done) == "```python\nx = 2\n```"
    assert thinking.answer(ids(tok, draft)) == "" and thinking.still_thinking(ids(tok, draft))
    assert not thinking.still_thinking(done) and plain.answer(ids(tok, "just this")) == "just this"


def test_gpt_oss_answer_is_the_final_channel_only(harmony):
    tok = AutoTokenizer.from_pretrained(harmony)
    renderer = Renderer(tok)
    analysis = "<|channel|>analysis<|message|>draft ```python\nbad()\n```<|end|>"
    final = "<|start|>assistant<|channel|>final<|message|>```python\ngood()\n```<|return|>"
    assert renderer.answer(ids(tok, analysis + final)) == "```python\ngood()\n```"
    assert renderer.answer(ids(tok, analysis)) == "" and renderer.still_thinking(ids(tok, analysis))
    assert not renderer.still_thinking(ids(tok, analysis + final))


def test_two_phase_completion_with_a_scripted_engine(harmony):
    """Phase one runs out while thinking; the forced switch to the final channel is appended, the
    engine continues from it, and the forced tokens carry loss mask 0 and log-prob 0."""
    tok = AutoTokenizer.from_pretrained(harmony)
    renderer = Renderer(tok)
    thinking = ids(tok, "<|channel|>analysis<|message|>still going")
    answered = ids(tok, "<|channel|>analysis<|message|>ok<|end|><|start|>assistant<|channel|>final<|message|>A")
    tail = ids(tok, "B")
    calls = []

    def engine(rows, temperature, max_new, seeds, on_row):
        calls.append((rows, max_new, seeds))
        for k, row in enumerate(rows):
            out = (thinking if k == 0 else answered) if len(calls) == 1 else tail
            on_row(k, Completion(ids=list(out), logprobs=np.full(len(out), -0.5, dtype=np.float32),
                                 finished=len(calls) > 1 or k == 1))

    done = {}
    prompt = renderer.prompt_ids("q")
    complete(engine, renderer, [prompt, prompt], temperature=1.0, max_new_tokens=99, seeds=[1, 2],
             thinking_budget=5, answer_budget=7, on_row=lambda k, c: done.__setitem__(k, c))
    assert calls[0][1] == 5 and calls[1][1] == 7 and len(calls[1][0]) == 1  # only the cut row continues
    assert calls[1][0][0] == prompt + thinking + renderer.forced_ids and calls[1][2] != [1]
    merged = done[0]
    forced = len(renderer.forced_ids)
    assert merged.ids == thinking + renderer.forced_ids + tail and merged.finished
    np.testing.assert_array_equal(merged.loss_mask, [1] * len(thinking) + [0] * forced + [1] * len(tail))
    assert np.all(merged.logprobs[len(thinking):len(thinking) + forced] == 0)
    assert done[1].loss_mask is None and renderer.answer(merged.ids) == "B"
    assert "out of thinking time" in tok.decode(renderer.forced_ids)


def test_two_phase_on_the_hf_sampler_trains_only_the_models_tokens(qwen3):
    policy = HFPolicy(qwen3, lora_rank=4, lr=1e-2, seed=0, thinking_budget=4, answer_budget=3)
    samples = [s for g in policy.sample(["q", "r"], 3, temperature=1.0, max_new_tokens=50) for s in g]
    forced = policy.renderer.forced_ids
    cut = [s for s in samples if s.loss_mask is not None]
    assert cut, "a random model does not close its thinking within 4 tokens"
    for s in cut:
        head = 4
        assert s.completion_ids[head:head + len(forced)] == forced and len(s.completion_ids) <= 4 + len(forced) + 3
        assert s.loss_mask[head:head + len(forced)].sum() == 0 and s.loss_mask.sum() == len(s.completion_ids) - len(forced)
        assert np.all(s.logprobs[head:head + len(forced)] == 0)
    for s, own in zip(samples, policy.logprobs(samples), strict=True):  # trained tokens are on-policy
        mask = s.loss_mask if s.loss_mask is not None else np.ones(len(own))
        np.testing.assert_allclose(own * mask, s.logprobs * mask, atol=1e-4)
    stats = policy.update([TrainItem(s, 1.0 if i % 2 else -1.0) for i, s in enumerate(samples)], LossConfig())
    assert stats["tokens"] == sum(float(s.loss_mask.sum()) if s.loss_mask is not None else len(s.completion_ids)
                                  for s in samples)
    assert abs(stats["ratio_max"] - 1) < 1e-3


def test_sample_seeds_are_distinct_and_reproducible():
    a = sample_seeds(0, 0, 64)
    assert len(set(a + sample_seeds(0, 1, 64) + sample_seeds(0, 0, 64, phase=1))) == 192
    assert a == sample_seeds(0, 0, 64) and a != sample_seeds(1, 0, 64)
