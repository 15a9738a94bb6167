"""GPU check: gpt-oss trains at long length with the attention the trainer chooses for it.

    python3 scripts/gpu_attention_check.py             # CUDA: FlexAttention, 1 x 16k tokens, 64 heads
    python3 scripts/gpu_attention_check.py --dry-run   # any CPU: eager, 1 x 128 tokens, same code path

transformers has no SDPA path for gpt-oss (attention sinks), so eager attention would hold
heads × L × L scores (32 GiB per tensor at 16k tokens with gpt-oss-20b's 64 heads); the trainer
picks FlexAttention on a GPU. A random gpt-oss with the real head layout (64 query heads, 8 KV
heads of 64, sliding and full layers, experts) but only 2 narrow layers runs one LoRA update of
one 16k-token sequence through the `hf` policy; the line reports the peak beside the eager scores
it avoided and the pre-flight's update estimate. Non-zero when the peak is not well below them.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

SHAPE = dict(hidden_size=256, intermediate_size=256, num_hidden_layers=2, num_attention_heads=64,
             num_key_value_heads=8, head_dim=64, num_local_experts=4, num_experts_per_tok=2, sliding_window=128,
             max_position_embeddings=32768, tie_word_embeddings=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="on a CPU: eager attention, 128 tokens")
    parser.add_argument("--tokens", type=int, default=16384, help="completion tokens of the one sequence")
    args = parser.parse_args()
    import numpy as np
    import torch
    import transformers

    from ttd_agent.policy.base import LossConfig, Sample, TrainItem
    from ttd_agent.policy.hf import HFPolicy
    from ttd_agent.policy.memory import GIB, Architecture, estimate
    from ttd_agent.policy.settings import LLMSettings
    from ttd_agent.policy.tiny import build_tiny_causal_lm

    device = "cpu" if args.dry_run else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        print("gpu_attention_check: FAIL no CUDA device visible to torch (use --dry-run on a CPU)")
        return 1
    tokens = 128 if args.dry_run else args.tokens
    settings = LLMSettings(gradient_checkpointing=True, micro_batch_size=1, micro_batch_tokens=tokens + 64,
                           dtype="float32" if args.dry_run else "bfloat16")
    with tempfile.TemporaryDirectory(prefix="ttd-gpu-attention-") as directory:
        build_tiny_causal_lm(Path(directory))
        tokenizer = transformers.AutoTokenizer.from_pretrained(directory)
        config = transformers.GptOssConfig(**SHAPE, vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                                           eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
        transformers.AutoModelForCausalLM.from_config(config).save_pretrained(directory)
        policy = HFPolicy(directory, lora_rank=16, device=device, settings=settings)
        rng = np.random.default_rng(0)
        vocab = len(tokenizer)
        sample = Sample(prompt="", text="", prompt_ids=rng.integers(3, vocab, size=64).tolist(),
                        completion_ids=rng.integers(3, vocab, size=tokens).tolist(),
                        logprobs=np.full(tokens, -math.log(vocab), dtype=np.float32))
        if device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        started = time.perf_counter()
        stats = policy.update([TrainItem(sample, 1.0)], LossConfig())
        elapsed = time.perf_counter() - started
        implementation = policy.attention.implementation
    arch = Architecture.from_config(config, "gpt-oss (2 narrow layers)")
    length = tokens + 64
    eager_scores = arch.heads * length * (length + 1) * (4 if args.dry_run else 2)
    plan = estimate(arch, settings, sampler="hf", lora_rank=16, full_finetune=False, max_new_tokens=tokens,
                    gpu_bytes=80 * GIB, prompt_tokens=64, attention=policy.attention)
    finite = math.isfinite(stats["loss"])
    line = (f"attention {implementation}, 1 x {length} tokens, update {elapsed:.1f} s, loss finite {finite}; "
            f"one eager score tensor would be {eager_scores / GIB:.2f} GiB; pre-flight update "
            f"{sum(plan.update.values()) / GIB:.2f} GiB")
    if args.dry_run:
        ok = finite and implementation == "eager"
        print(f"gpu_attention_check: {'ok' if ok else 'FAIL'} (dry run) {line}")
        return 0 if ok else 1
    peak = torch.cuda.max_memory_allocated()
    ok = finite and implementation == "flex_attention" and peak < eager_scores / 4
    print(f"gpu_attention_check: {'ok' if ok else 'FAIL'} {line}; peak {peak / GIB:.2f} GiB")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
