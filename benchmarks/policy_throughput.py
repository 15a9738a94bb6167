"""Embedded policy throughput on CPU at a LABS-like shape: 128 samples of 32 tokens, 32-char prompts.

Sampling: one `sample` call (KV cache, batched) for 1 prompt x 128 and for 16 prompts x 8; update:
one AdamW step on those 128 samples, plain and with PPO clip + k3 KL (one more forward for the
reference). Median of `--repeats` timed runs after a warm-up, for each torch thread count.

    python -m benchmarks.policy_throughput [--repeats 7] [--threads 1 2]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from benchmarks._report import machine_line, markdown_table, write_section
from ttd_agent.policy.base import LossConfig, TrainItem
from ttd_agent.policy.embedded import EmbeddedConfig, EmbeddedPolicy

SAMPLES, LENGTH, PROMPT = 128, 32, 32


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def measure(threads: int, repeats: int) -> list[list[object]]:
    torch.set_num_threads(threads)
    policy = EmbeddedPolicy(EmbeddedConfig(alphabet="+-", length=LENGTH))
    prompts_1 = ["+-" * (PROMPT // 2)]
    prompts_16 = [("+-" * PROMPT)[i:i + PROMPT] for i in range(16)]
    rows = []
    for label, prompts in (("sample 1 prompt x 128", prompts_1), ("sample 16 prompts x 8", prompts_16)):
        n = SAMPLES // len(prompts)
        s = timed(lambda prompts=prompts, n=n: policy.sample(prompts, n, temperature=1.0, max_new_tokens=LENGTH),
                  repeats)
        rows.append([threads, label, f"{s * 1e3:.0f} ms", f"{SAMPLES / s:,.0f}", f"{SAMPLES * LENGTH / s:,.0f}"])
    samples = [x for g in policy.sample(prompts_16, SAMPLES // 16, temperature=1.0, max_new_tokens=LENGTH) for x in g]
    items = [TrainItem(x, 1.0 if i % 2 else -1.0) for i, x in enumerate(samples)]
    for label, loss in (("update (seq-sum)", LossConfig()),
                        ("update (PPO clip + k3 KL)", LossConfig(clip_eps=0.2, kl_coef=1e-3, kl_mode="k3",
                                                                 aggregation="token-mean"))):
        s = timed(lambda loss=loss: policy.update(items, loss), repeats)
        rows.append([threads, label, f"{s * 1e3:.0f} ms", f"{SAMPLES / s:,.0f}", f"{SAMPLES * LENGTH / s:,.0f}"])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--write", action="store_true", help="also write the table into docs/benchmarks.md")
    args = parser.parse_args()
    config = EmbeddedConfig()
    rows = [row for threads in args.threads for row in measure(threads, args.repeats)]
    text = (f"Embedded policy (d_model={config.d_model}, {config.n_layer} layers, {config.n_head} heads), "
            f"{SAMPLES} samples x {LENGTH} tokens, {PROMPT}-char prompts; median of {args.repeats}; torch "
            f"{torch.__version__}.\n\n" + markdown_table(["threads", "call", "time", "samples/s", "tokens/s"], rows))
    print(f"Measured on: {machine_line()}\n\n{text}")
    if args.write:
        write_section("policy_throughput", text)


if __name__ == "__main__":
    main()
