"""The experiment: does test-time training find better LABS sequences than sampling the same policy?

    python -m benchmarks.labs_ablation [--n 32] [--steps 40] [--seeds 0 1 2] [--write]

Four configurations, equal sample budgets (steps x groups x group size), the embedded policy:
  TTT                 adaptive entropic objective + PUCT reuse (the method)
  best-of-N           the untrained policy sampled the same number of times (no update, no reuse)
  mean, no reuse      mean-baseline policy gradient from the initial state only
  entropic, no reuse  adaptive entropic objective from the initial state only
plus PUCT reuse without updates (what the buffer search alone does with the frozen prior) and, for scale, uniform random search over all 2^N sequences with the same budget (no policy).
The embedded policy starts from its edit prior (near-copies of the state it is shown; see
`teach_edit_prior`), so best-of-N samples near-copies of the initial state.
Reports the best energy found (mean ± sd over seeds; lower is better, E* is the proven optimum),
the merit factor, and the samples each run needed to reach a threshold energy. With --write the
table goes to docs/results.md and the best-so-far plot to docs/results_labs.png.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks._report import markdown_table, write_section
from ttd_agent.plots import plot_best_so_far
from ttd_agent.trainer import DiscoveryConfig, DiscoveryTrainer
from ttd_envs.problems.labs import energies, reference_energy

DOCS = Path(__file__).resolve().parents[1] / "docs"
CONFIGS: dict[str, dict[str, object]] = {
    "TTT (entropic-adaptive + PUCT)": {"objective": "entropic-adaptive", "reuse": "puct"},
    "best-of-N (untrained policy)": {"update": False, "reuse": "none"},
    "mean baseline, no reuse": {"objective": "mean", "reuse": "none"},
    "entropic-adaptive, no reuse": {"objective": "entropic-adaptive", "reuse": "none"},
    "PUCT reuse, no update": {"update": False, "reuse": "puct"},
}


@dataclass
class RunResult:
    best_energy: int
    curve: list[tuple[int, int]]
    """(samples so far, best energy so far) at each improvement."""
    seconds: float


def run_one(n: int, steps: int, seed: int, overrides: dict[str, object], groups: int, group_size: int) -> RunResult:
    """One training run in a throw-away run directory; energies are recomputed from rewards exactly."""
    with tempfile.TemporaryDirectory() as tmp:
        config = DiscoveryConfig(env="ttd/LABS-v0", env_kwargs={"n": n}, steps=steps, groups_per_step=groups,
                                 group_size=group_size, seed=seed, run_dir=str(Path(tmp) / "run"), plot_every=10**9,
                                 **overrides)
        started = time.perf_counter()
        trainer = DiscoveryTrainer(config)
        best = trainer.run()
        seconds = time.perf_counter() - started
    curve = [(samples, round(n * n / (2 * reward))) for samples, reward in trainer.best_curve]
    return RunResult(best_energy=int(best.score), curve=curve, seconds=seconds)


def random_search(n: int, budget: int, seed: int, chunk: int = 4096) -> RunResult:
    """Uniform random ±1 sequences, scored in batches; the floor every method must clear."""
    rng = np.random.default_rng(seed)
    started, best, curve, seen = time.perf_counter(), None, [], 0
    while seen < budget:
        batch = rng.choice(np.array([-1, 1], dtype=np.int8), size=(min(chunk, budget - seen), n))
        found = energies(batch)
        running = np.minimum.accumulate(found)
        for i in np.flatnonzero(running < (best if best is not None else np.inf)):
            if best is None or running[i] < best:
                best = int(running[i])
                curve.append((seen + int(i) + 1, best))
        seen += len(batch)
    return RunResult(best_energy=int(best), curve=curve, seconds=time.perf_counter() - started)


def samples_to_reach(curve: list[tuple[int, int]], threshold: int) -> int | None:
    return next((samples for samples, energy in curve if energy <= threshold), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--groups", type=int, default=8)
    parser.add_argument("--group-size", type=int, default=16)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threshold", type=int,
                        help="energy to reach (default: what uniform random search reaches with 10^5 samples at N = 32, 120)")
    parser.add_argument("--write", action="store_true", help="write docs/results.md and docs/results_labs.png")
    args = parser.parse_args()
    optimum, _ = reference_energy(args.n)
    threshold = args.threshold or 120
    budget = args.steps * args.groups * args.group_size
    results: dict[str, list[RunResult]] = {}
    for label, overrides in CONFIGS.items():
        results[label] = [run_one(args.n, args.steps, seed, overrides, args.groups, args.group_size) for seed in args.seeds]
        found = [r.best_energy for r in results[label]]
        print(f"{label:34s} best energies {found}  ({sum(r.seconds for r in results[label]):.0f} s)", flush=True)
    results["uniform random search (no policy)"] = [random_search(args.n, budget, seed) for seed in args.seeds]

    rows = []
    for label, runs in results.items():
        found = np.array([r.best_energy for r in runs], dtype=float)
        reached = [samples_to_reach(r.curve, threshold) for r in runs]
        hit = [s for s in reached if s is not None]
        rows.append([
            label, f"{found.mean():.1f} ± {found.std(ddof=1) if len(runs) > 1 else 0:.1f}",
            " / ".join(str(int(e)) for e in found),
            f"{np.mean([args.n**2 / (2 * e) for e in found]):.3f}",
            f"{len(hit)}/{len(runs)}", f"{int(np.median(hit)):,}" if hit else "not reached",
            f"{np.mean([r.seconds for r in runs]):.0f} s",
        ])
    table = markdown_table(["configuration", "best energy (mean ± sd)", "per seed", "merit factor (mean)",
                            f"seeds reaching E ≤ {threshold}", "median samples to reach it", "time per run"], rows)
    print(table)
    if args.write:
        curves = {}
        grid = np.arange(args.groups * args.group_size, budget + 1, args.groups * args.group_size)
        for label, runs in results.items():
            per_seed = [[min((e for s, e in r.curve if s <= x), default=np.nan) for x in grid] for r in runs]
            curves[label] = (grid.tolist(), np.nanmean(np.array(per_seed, dtype=float), axis=0).tolist())
        plot_best_so_far(curves, DOCS / "results_labs.png", f"LABS N = {args.n}: best energy vs samples "
                         f"(mean of {len(args.seeds)} seeds)", ylabel="best energy so far (lower is better)",
                         target=optimum, target_label=f"optimum E* = {optimum}")
        text = (f"LABS N = {args.n} (optimum E* = {optimum}), embedded policy, {args.steps} steps x {args.groups} groups x "
                f"{args.group_size} samples = {budget:,} samples per run, seeds {args.seeds}. "
                f"`python -m benchmarks.labs_ablation --n {args.n} --steps {args.steps} --seeds "
                f"{' '.join(map(str, args.seeds))} --write`\n\n{table}\n\n![best energy vs samples](results_labs.png)")
        write_section("labs_ablation", text, doc=DOCS / "results.md")


if __name__ == "__main__":
    main()
