"""GPU check: one sample + update of the HF LoRA backend in bf16, at a small real model's shape.

    python3 scripts/gpu_hf_check.py             # CUDA: a random Llama with SmolLM2-360M's layer shapes
    python3 scripts/gpu_hf_check.py --dry-run   # any CPU: a narrow model, same code path

32 layers, width 960, 15 heads, 5 KV heads (SmolLM2-360M), with a 320-token vocabulary so the
build stays fast; nothing is downloaded. One summary line `gpu_hf_check: ...`; non-zero on failure.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

SMOLLM2_360M = dict(hidden_size=960, num_hidden_layers=32, num_attention_heads=15, num_key_value_heads=5,
                    intermediate_size=2560)
NARROW = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, intermediate_size=128)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="on a CPU, a narrow model in float32")
    args = parser.parse_args()
    import torch

    from ttd_agent.policy.base import LossConfig, TrainItem
    from ttd_agent.policy.hf import HFPolicy
    from ttd_agent.policy.tiny import build_tiny_causal_lm

    device = "cpu" if args.dry_run else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        print("gpu_hf_check: FAIL no CUDA device visible to torch (use --dry-run on a CPU)")
        return 1
    with tempfile.TemporaryDirectory() as directory:
        path = build_tiny_causal_lm(Path(directory), **(NARROW if args.dry_run else SMOLLM2_360M))
        started = time.perf_counter()
        policy = HFPolicy(str(path), lora_rank=16, device=device, seed=0)
        if device == "cuda" and policy.dtype != torch.bfloat16:
            print(f"gpu_hf_check: FAIL the policy chose {policy.dtype} on a GPU, bf16 expected")
            return 1
        before = {k: v.detach().clone() for k, v in policy.model.named_parameters() if "lora_B" in k}
        groups = policy.sample(["Write a kernel.", "Sum 1..n."], 4, temperature=1.0, max_new_tokens=64)
        samples = [s for group in groups for s in group]
        stats = policy.update([TrainItem(s, float(i % 2) - 0.5) for i, s in enumerate(samples)], LossConfig())
        moved = [k for k, v in policy.model.named_parameters() if k in before and not torch.equal(v, before[k])]
        finite = all(math.isfinite(float(v)) for v in stats.values())
        peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan")
        ok = bool(moved) and finite
        print(f"gpu_hf_check: {'ok' if ok else 'FAIL'} {len(samples)} samples + 1 update in "
              f"{time.perf_counter() - started:.1f} s on {device} ({policy.dtype}), peak {peak:.1f} GiB, "
              f"{len(moved)} LoRA tensors moved, finite stats {finite}, attention {policy.attention.implementation}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
