"""Item 1 of issue 14: scoring completion tokens does not materialise (tokens × vocabulary) logits.

A tiny Llama with Qwen2.5's 152k vocabulary is updated on 256 and then 1,280 completion tokens
in a fresh process (gradient checkpointing off, the worse case); the growth of its peak RSS per extra token must stay under a stated bound. Before
the chunked path this cost was 1.78 MiB per token (two float32 B×T×V tensors kept for the
backward pass); now it is one hidden vector per layer and a few scalars.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

MIB_PER_TOKEN_BOUND = 0.1
"""Peak growth per completion token allowed (the old full-logits path: 1.78 MiB)."""

SCRIPT = textwrap.dedent('''
    import json, resource, sys
    import numpy as np, torch
    from transformers import AutoModelForCausalLM
    from ttd_agent.policy.base import LossConfig, Sample, TrainItem
    from ttd_agent.policy.hf import HFPolicy
    from ttd_agent.policy.tiny import build_tiny_causal_lm

    torch.set_num_threads(1)
    path = build_tiny_causal_lm(sys.argv[1])
    model = AutoModelForCausalLM.from_pretrained(path)
    model.resize_token_embeddings(152064, mean_resizing=False)
    model.save_pretrained(path)
    policy = HFPolicy(str(path), lora_rank=4, micro_batch_tokens=1 << 20, logit_chunk_tokens=128,
                      gradient_checkpointing=sys.argv[2] == "1")
    rng = np.random.default_rng(0)

    def items(sequences, length):
        out = []
        for i in range(sequences):
            ids = rng.integers(0, 152064, size=length).tolist()
            sample = Sample(prompt="p", text="", prompt_ids=[1, 5, 7], completion_ids=ids,
                            logprobs=np.full(length, -12.0, dtype=np.float32))
            out.append(TrainItem(sample, 1.0 if i % 2 else -1.0))
        return out

    def peak_mib():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    policy.update(items(2, 64), LossConfig())  # warm up: optimizer state, kernels
    policy.update(items(2, 128), LossConfig())
    small = peak_mib()
    stats = policy.update(items(2, 640), LossConfig())
    large = peak_mib()
    print(json.dumps({"small": small, "large": large, "tokens": 2 * 512, "loss": stats["loss"]}))
''')


@pytest.mark.slow
def test_update_memory_per_token_is_bounded_with_a_152k_vocabulary(tmp_path):
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "lm"), "0"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    per_token = (measured["large"] - measured["small"]) / measured["tokens"]
    assert per_token < MIB_PER_TOKEN_BOUND, measured
    assert measured["loss"] == measured["loss"]  # a finite update ran
