"""The memory pre-flight (arithmetic in the refusal), its parameter count against a real model,
and the GPU check script's CPU dry run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ttd_agent.policy.memory import GIB, PRESETS, Architecture, estimate, preflight, table
from ttd_agent.policy.settings import LLMSettings

ROOT = Path(__file__).resolve().parents[1]


def test_parameter_count_matches_a_model_built_from_the_config():
    torch = pytest.importorskip("torch")
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(hidden_size=64, intermediate_size=160, num_hidden_layers=3, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=1000, tie_word_embeddings=False)
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    assert Architecture.from_config(config).params() == sum(p.numel() for p in model.parameters())
    assert 7.5e9 < PRESETS["Qwen/Qwen2.5-Coder-7B-Instruct"].params() < 7.7e9  # Qwen2.5-7B: 7.62B


def test_preflight_refuses_with_the_arithmetic_and_accepts_what_fits():
    pytest.importorskip("torch")
    model = "Qwen/Qwen2.5-Coder-7B-Instruct"
    kwargs = dict(sampler="vllm", lora_rank=32, full_finetune=False, max_new_tokens=16384, sequences=512,
                  device="cuda")
    plan = preflight(model, LLMSettings(gpu_memory_gib=80), **kwargs)
    assert plan is not None and plan.fits and plan.peak < 80 * GIB
    with pytest.raises(ValueError) as refused:
        preflight(model, LLMSettings(gpu_memory_gib=80, gradient_checkpointing=False), **kwargs)
    message = str(refused.value)
    assert "does not fit" in message and "activations (18432 tokens)" in message and "--gradient-checkpointing" in message
    with pytest.raises(ValueError, match="cannot hold its weights"):
        preflight(model, LLMSettings(gpu_memory_gib=80, gpu_memory_utilization=0.15), **kwargs)
    assert preflight(model, LLMSettings(), **{**kwargs, "device": "cpu"}) is None  # nothing to plan on a CPU


def test_sleeping_engine_and_checkpointing_lower_the_update_peak():
    arch = PRESETS["Qwen/Qwen2.5-Coder-7B-Instruct"]
    plans = {(ckpt, sleep): estimate(arch, LLMSettings(gradient_checkpointing=ckpt, sleep=sleep), sampler="vllm",
                                     lora_rank=32, full_finetune=False, max_new_tokens=16384, gpu_bytes=80 * GIB)
             for ckpt in (False, True) for sleep in (False, True)}
    update = {key: sum(plan.update.values()) for key, plan in plans.items()}
    assert update[True, True] < update[True, False] and update[True, True] < update[False, True]
    assert "| Qwen/Qwen2.5-1.5B-Instruct | 1.54B |" in table()


@pytest.mark.slow
def test_gpu_check_script_dry_run_on_cpu():
    pytest.importorskip("peft")
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_llm_check.py"), "--dry-run"],
                            capture_output=True, text=True, timeout=300, cwd=ROOT)
    lines = [line for line in result.stdout.splitlines() if line.startswith("gpu_llm_check:")]
    assert result.returncode == 0 and len(lines) == 1 and lines[0].startswith("gpu_llm_check: ok"), result.stdout
    import torch

    if not torch.cuda.is_available():
        result = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_llm_check.py")],
                                capture_output=True, text=True, timeout=120, cwd=ROOT)
        assert result.returncode != 0 and "no CUDA device" in result.stdout


def test_attention_is_chosen_per_family_and_eager_scores_are_counted():
    transformers = pytest.importorskip("transformers")
    from ttd_agent.policy.memory import attention_for, choose_attention

    assert choose_attention(transformers.LlamaForCausalLM, "cuda").implementation == "sdpa"
    assert choose_attention(transformers.GptOssForCausalLM, "cuda").implementation == "flex_attention"
    assert choose_attention(transformers.GptOssForCausalLM, "cpu").implementation == "eager"
    with pytest.raises(ValueError, match="GptOssForCausalLM does not support --attention sdpa"):
        choose_attention(transformers.GptOssForCausalLM, "cuda", "sdpa")
    arch = PRESETS["openai/gpt-oss-20b"]
    assert attention_for(arch, LLMSettings()).implementation == "flex_attention"
    kwargs = dict(sampler="vllm", lora_rank=32, full_finetune=False, max_new_tokens=16384, gpu_bytes=80 * GIB)
    flex = estimate(arch, LLMSettings(), **kwargs)
    assert sum(flex.update.values()) < 60 * GIB and flex.update["attention (flex_attention)"] == 0
    assert "attention: flex_attention" in flex.explain() and "MXFP4 experts dequantised to bf16" in flex.explain()
    eager = estimate(arch, LLMSettings(attention="eager"), **kwargs)
    scores = arch.heads * 18432 * 18433 * 2  # one (heads, L, L + 1) bf16 tensor: ~40 GiB at 18k tokens
    assert scores > 40 * GIB and eager.update["attention (eager)"] == 5 * scores
    assert sum(eager.update.values()) > 200 * GIB
    # SDPA with a padded micro-batch of several sequences: their dense boolean mask
    qwen = estimate(PRESETS["Qwen/Qwen2.5-1.5B-Instruct"], LLMSettings(max_model_len=4096), **kwargs)
    assert qwen.update["attention (sdpa)"] == 4 * 4096 * 4096


def test_mxfp4_weights_cost_bf16_for_training_but_vllm_holds_them_as_stored():
    arch = PRESETS["openai/gpt-oss-20b"]
    assert 12 * GIB < arch.checkpoint_bytes() < 14 * GIB  # gpt-oss-20b's checkpoint: ~13 GB
    assert 3.0 < arch.params() * 2 / arch.checkpoint_bytes() < 3.2
    assert Architecture.from_config({**vars(arch), "hidden_size": arch.hidden, "num_hidden_layers": arch.layers,
                                     "num_attention_heads": arch.heads, "intermediate_size": arch.intermediate,
                                     "vocab_size": arch.vocab, "quantization_config": {"quant_method": "mxfp4"}}).mxfp4
