"""The decisions the vLLM sampler takes before it starts an engine, as pure functions (vLLM is not
installed here): the LoRA rank vLLM accepts, the version gate for processed log-probs, the
allocator setting sleep mode cannot work with, the pre-flight's allowance for a sleeping engine,
and the two-GPU `vllm serve` command of docs/llm.md."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from ttd_agent.policy.memory import CUDA_GRAPH_POOL, ENGINE_CONTEXT, GIB, PRESETS, estimate, sleeping_engine_bytes
from ttd_agent.policy.settings import LLMSettings
from ttd_agent.policy.vllm_sampler import (VLLM_LORA_RANKS, clear_expandable_segments, engine_args,
                                           processed_logprobs_supported, vllm_max_lora_rank,
                                           without_expandable_segments)

ROOT = Path(__file__).resolve().parents[1]
FIELDS = {"model", "enable_lora", "max_lora_rank", "seed", "gpu_memory_utilization", "enforce_eager",
          "tensor_parallel_size", "enable_prefix_caching", "enable_sleep_mode", "logprobs_mode"}


def test_max_lora_rank_is_rounded_up_to_a_value_vllm_accepts():
    assert [vllm_max_lora_rank(r) for r in (1, 2, 8, 9, 16, 24, 32, 33, 100, 200, 300, 321, 512)] == \
        [1, 8, 8, 16, 16, 32, 32, 64, 128, 256, 320, 512, 512]
    for rank in range(1, 513):
        assert vllm_max_lora_rank(rank) in VLLM_LORA_RANKS and vllm_max_lora_rank(rank) >= rank
    with pytest.raises(ValueError, match="above the largest vLLM serves"):
        vllm_max_lora_rank(513)
    with pytest.raises(ValueError, match=">= 1"):
        vllm_max_lora_rank(0)
    assert engine_args("m", LLMSettings(), max_lora_rank=24, seed=0, fields=FIELDS, version="0.11.0")[
        "max_lora_rank"] == 32


def test_processed_logprobs_only_from_vllm_0_10_2():
    assert not processed_logprobs_supported("0.9.2", FIELDS - {"logprobs_mode"})
    for version in ("0.10.0", "0.10.1", "0.10.1.1", "0.10.0rc2"):  # accept the field, exclude temperature
        assert not processed_logprobs_supported(version, FIELDS), version
    for version in ("0.10.2", "0.10.2rc1", "0.11.0", "0.23.1rc1.dev1279+gdcfebf93f", "1.0.0"):
        assert processed_logprobs_supported(version, FIELDS), version
    assert not processed_logprobs_supported("0.11.0", FIELDS - {"logprobs_mode"})
    assert not processed_logprobs_supported("unknown", FIELDS)
    old = engine_args("m", LLMSettings(), max_lora_rank=32, seed=0, fields=FIELDS, version="0.10.1")
    new = engine_args("m", LLMSettings(), max_lora_rank=32, seed=0, fields=FIELDS, version="0.10.2")
    assert "logprobs_mode" not in old and new["logprobs_mode"] == "processed_logprobs"


def test_expandable_segments_is_dropped_before_a_sleeping_engine_starts():
    assert without_expandable_segments("expandable_segments:True,max_split_size_mb:128") == "max_split_size_mb:128"
    assert without_expandable_segments("max_split_size_mb:64, expandable_segments : True") == "max_split_size_mb:64"
    environ = {"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True", "PYTORCH_ALLOC_CONF":
               "garbage_collection_threshold:0.8,expandable_segments:True", "OTHER": "x"}
    assert clear_expandable_segments(environ) == ["PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_ALLOC_CONF"]
    assert environ == {"PYTORCH_ALLOC_CONF": "garbage_collection_threshold:0.8", "OTHER": "x"}
    untouched = {"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:False"}
    assert clear_expandable_segments(untouched) == [] and untouched == {"PYTORCH_CUDA_ALLOC_CONF":
                                                                        "expandable_segments:False"}
    in_process = {"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True", "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
    with pytest.raises(ValueError, match="runs the engine in this process.*--sleep false"):
        clear_expandable_segments(in_process)


def test_sleeping_engine_allowance_counts_its_context_and_cuda_graphs():
    assert sleeping_engine_bytes(LLMSettings()) == ENGINE_CONTEXT + CUDA_GRAPH_POOL == 3 * GIB
    assert sleeping_engine_bytes(LLMSettings(enforce_eager=True)) == ENGINE_CONTEXT == 1.5 * GIB
    plan = estimate(PRESETS["Qwen/Qwen3-8B"], LLMSettings(), sampler="vllm", lora_rank=32, full_finetune=False,
                    max_new_tokens=8192, gpu_bytes=80 * GIB)
    assert plan.update["vLLM asleep"] == 3 * GIB


def test_two_gpu_vllm_serve_command_asks_for_processed_logprobs_and_an_allowed_rank():
    text = (ROOT / "docs" / "llm.md").read_text()
    commands = [" ".join(m.split()) for m in re.findall(r"vllm serve (?:[^\n]*\\\n)*[^\n]*", text)]
    assert commands, "docs/llm.md has no vllm serve command"
    for command in commands:
        words = shlex.split(command.replace("\\", " "))
        assert words[words.index("--logprobs-mode") + 1] == "processed_logprobs", command
        assert int(words[words.index("--max-lora-rank") + 1]) in VLLM_LORA_RANKS, command
