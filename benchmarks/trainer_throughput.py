"""Training throughput of the embedded policy on CPU: a real ttd/LABS-v0 run, timed per phase.

    python -m benchmarks.trainer_throughput [--n 32] [--steps 10] [--write]

One run of `--steps` steps at the LABS defaults (8 groups x 16 samples); reports samples/s and the
step time split into sampling, evaluation (parse + exact energy), update and the rest (buffer,
checkpoint, logs), as medians over the steps after the first. `--write` updates the
`trainer_throughput` section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from benchmarks._report import markdown_table, write_section
from ttd_agent.trainer import DiscoveryConfig, DiscoveryTrainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        trainer = DiscoveryTrainer(DiscoveryConfig(env="ttd/LABS-v0", env_kwargs={"n": args.n}, steps=args.steps,
                                                   run_dir=str(Path(tmp) / "run"), plot_every=10**9))
        setup = time.perf_counter() - started
        rows: list[dict] = []
        stamps = [time.perf_counter()]

        def on_step(result: object) -> None:
            rows.append(result.row)
            stamps.append(time.perf_counter())

        trainer.run(on_step)
    walls = [b - a for a, b in zip(stamps, stamps[1:])]  # callback to callback: includes checkpoint and logs
    for row, wall in zip(rows, walls):
        row["wall_s"] = wall
    steady = rows[1:] or rows
    per = {key: statistics.median(r[key] for r in steady)
           for key in ("time_sample_s", "time_eval_s", "time_update_s", "wall_s")}
    samples = rows[-1]["samples"] // len(rows)
    rest = per["wall_s"] - per["time_sample_s"] - per["time_eval_s"] - per["time_update_s"]
    table = markdown_table(
        ["phase", "median per step", "share of the step"],
        [[name, f"{seconds * 1000:.0f} ms", f"{seconds / per['wall_s']:.0%}"] for name, seconds in (
            ("sampling (KV cache, batched)", per["time_sample_s"]), ("evaluation (parse + energy)", per["time_eval_s"]),
            ("policy update (one AdamW step)", per["time_update_s"]),
            ("buffer, logs, checkpoint (policy + buffer, atomic)", rest), ("whole step", per["wall_s"]))])
    text = (f"ttd/LABS-v0, N = {args.n}, embedded policy (d_model 64, 2 layers), {samples} samples per step "
            f"(8 groups x 16), {args.steps} steps, torch threads {args.threads}; medians over steps 2..{args.steps}.\n\n"
            f"{table}\n\nThroughput: **{samples / per['wall_s']:.0f} samples/s** end to end "
            f"({samples / per['time_sample_s']:.0f} samples/s sampling alone). One-off set-up (policy, edit prior, "
            f"env): {setup:.1f} s.")
    print(text)
    if args.write:
        write_section("trainer_throughput", text)


if __name__ == "__main__":
    main()
