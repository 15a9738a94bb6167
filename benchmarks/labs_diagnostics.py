"""What the policy writes during a LABS run, step by step: the evidence behind docs/results.md.

    python -m benchmarks.labs_diagnostics [--seed 100] [--steps 40] [--no-update] [--flips] [--known]

Per step, over all answers: characters changed from the start state, share of exact copies of
the start, share that beat the start's energy, share that repeat another answer of their group,
and the mean summed entropy of an answer (nats), beside the best energy so far.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ttd_agent.trainer import DiscoveryConfig, DiscoveryTrainer
from ttd_envs.problems.labs import energy, string_to_sequence


def answer_stats(prompts: list[str], groups: list[list[Any]]) -> dict[str, float]:
    """The per-step numbers of the module docstring for one batch of groups."""
    changed, better, repeats, entropy = [], [], [], []
    for prompt, group in zip(prompts, groups):
        start = energy(string_to_sequence(prompt))
        texts = [s.text for s in group]
        repeats.append(1 - len(set(texts)) / len(texts))
        for s in group:
            changed.append(sum(a != b for a, b in zip(prompt, s.text)))
            better.append(energy(string_to_sequence(s.text)) < start)
            entropy.append(float(np.sum(s.entropy)) if s.entropy is not None else np.nan)
    flips = np.array(changed)
    return {"changed": float(flips.mean()), "copies": float((flips == 0).mean()), "better": float(np.mean(better)),
            "repeats": float(np.mean(repeats)), "entropy": float(np.mean(entropy))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--seed", type=int, default=100)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--every", type=int, default=4, help="print every k-th step (and the last)")
    parser.add_argument("--no-update", action="store_true", help="PUCT reuse with the frozen prior")
    parser.add_argument("--flips", action="store_true", help="the embedded policy writes flips (write='flips')")
    parser.add_argument("--known", action="store_true", help="answers that reproduce a buffer state train as unchanged")
    args = parser.parse_args()
    overrides: dict[str, Any] = {"update": not args.no_update, "known_is_unchanged": args.known}
    if args.flips:
        overrides["embedded"] = {"write": "flips"}
    steps: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        trainer = DiscoveryTrainer(DiscoveryConfig(env="ttd/LABS-v0", env_kwargs={"n": args.n}, steps=args.steps,
                                                   seed=args.seed, run_dir=str(Path(tmp) / "run"), plot_every=10**9,
                                                   checkpoint_every=10**9, **overrides))
        sample = trainer.policy.sample

        def recording_sample(prompts: list[str], n: int, **kwargs: Any) -> list[list[Any]]:
            groups = sample(prompts, n, **kwargs)
            steps.append(answer_stats(prompts, groups))
            return groups

        trainer.policy.sample = recording_sample  # type: ignore[method-assign]
        rows: list[dict[str, Any]] = []
        best = trainer.run(on_step=lambda result: rows.append(result.row))
    print(f"{overrides}  seed {args.seed}: best energy {int(best.score)}")
    for i, (row, stats) in enumerate(zip(rows, steps)):
        if i % args.every == 0 or i == len(rows) - 1:
            print(f"step {i:3d}  changed {stats['changed']:.2f}  copies {stats['copies']:.2f}  "
                  f"better than start {stats['better']:.3f}  repeats in group {stats['repeats']:.2f}  "
                  f"answer entropy {stats['entropy']:.2f}  best {round(args.n**2 / (2 * row['best_reward']))}")


if __name__ == "__main__":
    main()
