"""The experiment: does test-time training find better LABS sequences than search at equal evaluations?

    python -m benchmarks.labs_ablation [--n 32] [--budgets 5128 100000] [--policy-budget 5120]
                                       [--seeds 0 1 2 3 4] [--cache DIR] [--write]

Every configuration is charged the same way: one evaluation per scored sequence (a policy
sample, a random draw, a start of a local search, each neighbour of a scan of N flips).

Embedded-policy configurations (steps x groups x group size samples, `--policy-budget` in all):
  TTT                 adaptive entropic objective + PUCT reuse (the method, the env's defaults)
  best-of-N           the untrained policy sampled at the initial states (no update, no reuse)
  mean, no reuse      mean-baseline policy gradient from the initial states only
  entropic, no reuse  adaptive entropic objective from the initial states only
  PUCT reuse, no update  the buffer search alone with the frozen prior
  TTT, flip policy    the policy writes the positions to switch (embedded write="flips"), and an
                      answer that reproduces a buffer state trains as unchanged (reward 0)
  PUCT reuse, no update, flip policy  its buffer search alone
No policy: PUCT reuse with uniform random flips (the buffer search of TTT with a parameter-free
proposal, cheap enough to run to the largest budget); classic search (`ttd_agent.classic_search`):
steepest-descent hill climbing, tabu search and simulated annealing (one scored flip per move), all
with random restarts; uniform random search.

A policy run also pays for its initial states (8), and its improvements are counted at the end of
their step, so it is read at the last step that fits a budget. Each run is read at every budget
from its best-so-far curve (a run is deterministic given its
seed, so its first B evaluations are exactly a run of budget B). A policy configuration run to
`--policy-budget` has no entry at larger budgets. With `--cache DIR` every finished run is kept
as JSON and reused, so seeds can be run by separate processes and gathered by a last call. With
--write the tables go to docs/results.md and the best-so-far plot to docs/results_labs.png.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy import stats

from benchmarks._report import markdown_table, write_section
from ttd_agent.classic_search import (
    default_annealing_rules,
    default_tabu_rules,
    hill_climb,
    simulated_annealing,
    tabu_search,
)
from ttd_agent.plots import _pyplot, _save
from ttd_agent.policy.base import Sample
from ttd_agent.trainer import DiscoveryConfig, DiscoveryTrainer
from ttd_envs.problems.labs import LABS, energies, reference_energy

DOCS = Path(__file__).resolve().parents[1] / "docs"
TTT = "TTT (entropic-adaptive + PUCT)"
REUSE_ONLY = "PUCT reuse, no update"
TTT_FLIPS = "TTT, flip policy"
REUSE_ONLY_FLIPS = "PUCT reuse, no update, flip policy"
FLIPS: dict[str, object] = {"embedded": {"write": "flips"}}
POLICY_CONFIGS: dict[str, dict[str, object]] = {
    TTT: {},
    "best-of-N (untrained policy)": {"update": False, "reuse": "none"},
    "mean baseline, no reuse": {"objective": "mean", "reuse": "none"},
    "entropic-adaptive, no reuse": {"objective": "entropic-adaptive", "reuse": "none"},
    REUSE_ONLY: {"update": False},
    TTT_FLIPS: {**FLIPS, "known_is_unchanged": True},
    REUSE_ONLY_FLIPS: {**FLIPS, "update": False},
}
LONG_POLICY_CONFIGS = [TTT, REUSE_ONLY, TTT_FLIPS, REUSE_ONLY_FLIPS]
UNIFORM_FLIPS = "PUCT reuse, uniform random flips (no policy)"
HILL_CLIMBING = "hill climbing (steepest descent, restarts)"
TABU = "tabu search (restarts)"
ANNEALING = "simulated annealing (restarts)"
RANDOM = "uniform random search"


@dataclass
class RunResult:
    best_energy: int
    curve: list[tuple[int, int]]
    """(evaluations so far, best energy so far) at each improvement."""
    evaluations: int
    seconds: float

    def best_at(self, budget: int) -> int | None:
        """Best energy within the first `budget` evaluations; None if the run was shorter."""
        if budget > self.evaluations:
            return None
        return min((e for s, e in self.curve if s <= budget), default=None)


SWITCH = {"+": "-", "-": "+"}


def answer_sample(prompt: str, text: str) -> Sample:
    """A proposal's answer as the trainer's `Sample` (no tokens: nothing is trained on it)."""
    return Sample(prompt=prompt, text=text, prompt_ids=[], completion_ids=[], logprobs=np.zeros(0, dtype=np.float32))


class UniformFlips:
    """A proposal without parameters in place of the policy: switch 1 + Poisson(1) positions of the
    state shown, uniformly at random. Run with `update=False`, it is the buffer search alone."""

    kind = "uniform-flips"

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng([seed, 2])
        self.temperature = 1.0

    def flip_uniformly(self, text: list[str]) -> None:
        """Switch 1 + Poisson(1) distinct positions of `text`, in place."""
        for i in self.rng.choice(len(text), size=min(len(text), 1 + self.rng.poisson(1.0)), replace=False):
            text[i] = SWITCH[text[i]]

    def sample(self, prompts: list[str], n: int, *, temperature: float, max_new_tokens: int) -> list[list[Sample]]:
        groups = []
        for prompt in prompts:
            group = []
            for _ in range(n):
                text = list(prompt)
                self.flip_uniformly(text)
                group.append(answer_sample(prompt, "".join(text)))
            groups.append(group)
        return groups

    def update(self, items: object, loss: object) -> dict[str, float]:
        raise RuntimeError(f"the {self.kind} proposal has nothing to train: run it with update=False")

    def save(self, directory: Path) -> None:
        """Nothing to save: the proposal has no parameters."""


def run_policy(n: int, budget: int, seed: int, overrides: dict[str, object], uniform: bool = False) -> RunResult:
    """One training run of at least `budget` samples in a throw-away run directory (`uniform`: with
    `UniformFlips` in place of the embedded policy)."""
    defaults = LABS(n).defaults
    per_step = defaults.groups_per_step * defaults.group_size
    steps = math.ceil(budget / per_step)
    with tempfile.TemporaryDirectory() as tmp:
        config = DiscoveryConfig(env="ttd/LABS-v0", env_kwargs={"n": n}, steps=steps, seed=seed,
                                 run_dir=str(Path(tmp) / "run"), plot_every=10**9, checkpoint_every=10**9,
                                 **overrides)
        started = time.perf_counter()
        trainer = DiscoveryTrainer(config, policy=UniformFlips(seed) if uniform else None)
        best = trainer.run()
        seconds = time.perf_counter() - started
    # the initial states are scored too: they count as the first evaluations
    curve = [(samples + defaults.groups_per_step, round(n * n / (2 * reward)))
             for samples, reward in trainer.best_curve]
    return RunResult(int(best.score), curve, steps * per_step + defaults.groups_per_step, seconds)


def random_search(n: int, budget: int, seed: int, chunk: int = 4096) -> RunResult:
    """Uniform random ±1 sequences, scored in batches; the floor every method must clear."""
    rng = np.random.default_rng(seed)
    started, best, curve, seen = time.perf_counter(), math.inf, [], 0
    while seen < budget:
        batch = rng.choice(np.array([-1, 1], dtype=np.int8), size=(min(chunk, budget - seen), n))
        running = np.minimum.accumulate(energies(batch))
        for i in np.flatnonzero(running < best):
            if running[i] < best:
                best = int(running[i])
                curve.append((seen + int(i) + 1, best))
        seen += len(batch)
    return RunResult(int(best), curve, budget, time.perf_counter() - started)


def classic(search: Callable[..., object]) -> Callable[[int, int, int], RunResult]:
    def run(n: int, budget: int, seed: int) -> RunResult:
        started = time.perf_counter()
        result = search(n, budget, seed)
        return RunResult(result.best_energy, result.curve, budget, time.perf_counter() - started)
    return run


SEARCHES: dict[str, Callable[[int, int, int], RunResult]] = {
    HILL_CLIMBING: classic(hill_climb), TABU: classic(tabu_search), ANNEALING: classic(simulated_annealing),
    RANDOM: random_search,
}


def cached(cache: Path | None, key: str, make: Callable[[], RunResult]) -> RunResult:
    """`make()`, or the result a previous call stored under `key` in the `cache` folder."""
    path = None if cache is None else cache / f"{key}.json"
    if path is not None and path.exists():
        data = json.loads(path.read_text())
        return RunResult(data["best_energy"], [tuple(p) for p in data["curve"]], data["evaluations"], data["seconds"])
    result = make()
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(result)))
    return result


def slug(label: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in label.lower()).strip("-")


def budget_table(results: dict[str, list[RunResult]], budget: int, optimum: int) -> str:
    rows = []
    for label, runs in results.items():
        found = [r.best_at(budget) for r in runs]
        if any(f is None for f in found):
            rows.append([label, "not run", "", "", ""])
            continue
        values = np.array(found, dtype=float)
        spread = values.std(ddof=1) if len(values) > 1 else 0.0
        rows.append([label, f"{values.mean():.1f} ± {spread:.1f}", " / ".join(str(int(e)) for e in values),
                     f"{int((values == optimum).sum())}/{len(values)}", f"{np.mean([r.seconds for r in runs]):.1f} s"])
    return markdown_table(["configuration", "best energy (mean ± sd)", "per seed", f"seeds at E* = {optimum}",
                           "time per run (whole run)"], rows)


def paired_comparison(results: dict[str, list[RunResult]], a: str, b: str, budget: int) -> str | None:
    """One line: a against b on the same seeds (wins, mean difference, one-sided paired t-test)."""
    if a not in results or b not in results:
        return None
    x = [r.best_at(budget) for r in results[a]]
    y = [r.best_at(budget) for r in results[b]]
    if any(v is None for v in x + y) or len(x) < 2:
        return None
    x_arr, y_arr = np.array(x, dtype=float), np.array(y, dtype=float)
    diff = x_arr - y_arr
    lower, ties = int((diff < 0).sum()), int((diff == 0).sum())
    p = float(stats.ttest_rel(x_arr, y_arr, alternative="less").pvalue) if diff.std() > 0 else float("nan")
    spread = max(x_arr.std(ddof=1), y_arr.std(ddof=1))
    return (f"{a} vs {b} at {budget:,}: lower on {lower}/{len(x)} seeds ({ties} ties), mean difference "
            f"{diff.mean():+.1f} (seed spread, the larger sd of the two: {spread:.1f}), one-sided paired "
            f"t-test p = {p:.3g}")


def plot(results: dict[str, list[RunResult]], budgets: list[int], n: int, optimum: int, path: Path) -> None:
    """Mean best energy vs evaluations (log scale) for every configuration, up to its own budget."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    palette = plt.get_cmap("tab20").colors
    for index, (label, runs) in enumerate(results.items()):
        reach = min(max(budgets), min(r.evaluations for r in runs))
        grid = np.unique(np.geomspace(16, reach, 200).astype(int))
        mean = [np.mean([r.best_at(int(x)) if r.best_at(int(x)) is not None else np.nan for r in runs]) for x in grid]
        ax.step(grid, mean, where="post", label=label, linestyle="-" if label in POLICY_CONFIGS else "--",
                color=palette[(2 * index) % 20 + (2 * index) // 20])
    ax.axhline(optimum, color="black", linestyle=":", linewidth=1, label=f"optimum E* = {optimum}")
    for budget in budgets:
        ax.axvline(budget, color="grey", linewidth=0.5)
    ax.set_xscale("log")
    ax.set_xlabel("evaluations (scored sequences)")
    ax.set_ylabel("best energy so far (lower is better)")
    ax.set_title(f"LABS N = {n}: mean best energy over {len(next(iter(results.values())))} seeds")
    ax.legend(fontsize=7)
    _save(plt, fig, path)


def chosen_configs(args: argparse.Namespace) -> str:
    """The --configs and --long-policy-configs options of a run that did not take the defaults."""
    text = ""
    if args.configs is not None:
        text += " --configs " + " ".join(f'"{label}"' for label in args.configs)
    if args.long_policy_configs != LONG_POLICY_CONFIGS:
        text += " --long-policy-configs " + " ".join(f'"{label}"' for label in args.long_policy_configs)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--budgets", type=int, nargs="+", default=[5128, 100_000],
                        help="evaluations to compare at (5,128: the 40 x 8 x 16 samples of a default run plus its "
                             "8 scored initial states)")
    parser.add_argument("--policy-budget", type=int, default=5120, help="samples per embedded-policy run")
    parser.add_argument("--long-policy-configs", nargs="*", default=LONG_POLICY_CONFIGS,
                        help="policy configurations run to the largest budget (default: TTT and reuse without "
                             "update, with either policy; 2-6 minutes a run on one thread)")
    parser.add_argument("--configs", nargs="*", default=None, help="policy configurations to run (default all)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--cache", type=Path, help="folder keeping each finished run as JSON")
    parser.add_argument("--write", action="store_true", help="write docs/results.md and docs/results_labs.png")
    args = parser.parse_args()
    optimum, _ = reference_energy(args.n)
    longest = max(args.budgets)
    results: dict[str, list[RunResult]] = {}
    for label, overrides in POLICY_CONFIGS.items():
        if args.configs is not None and label not in args.configs:
            continue
        budget = longest if label in args.long_policy_configs else args.policy_budget
        results[label] = [cached(args.cache, f"{slug(label)}-n{args.n}-b{budget}-s{seed}",
                                 lambda seed=seed: run_policy(args.n, budget, seed, overrides))
                          for seed in args.seeds]
        print(f"{label:40s} best energies {[r.best_energy for r in results[label]]}", flush=True)
    results[UNIFORM_FLIPS] = [cached(args.cache, f"{slug(UNIFORM_FLIPS)}-n{args.n}-b{longest}-s{seed}",
                                     lambda seed=seed: run_policy(args.n, longest, seed, {"update": False}, True))
                              for seed in args.seeds]
    for label, search in SEARCHES.items():
        results[label] = [cached(args.cache, f"{slug(label)}-n{args.n}-b{longest}-s{seed}",
                                 lambda seed=seed: search(args.n, longest, seed)) for seed in args.seeds]

    walk, low, high = default_tabu_rules(args.n)
    moves, t_start, t_end = default_annealing_rules(args.n)
    sections = []
    for budget in args.budgets:
        lines = [f"**{budget:,} evaluations**", "", budget_table(results, budget, optimum), ""]
        for ours, other in ((TTT, HILL_CLIMBING), (TTT, TABU), (TTT, ANNEALING), (TTT, REUSE_ONLY),
                            (TTT_FLIPS, HILL_CLIMBING), (TTT_FLIPS, TABU), (TTT_FLIPS, REUSE_ONLY_FLIPS)):
            line = paired_comparison(results, ours, other, budget)
            if line:
                lines.append(f"- {line}")
        sections.append("\n".join(lines))
    text = (f"LABS N = {args.n} (optimum E* = {optimum}), seeds {args.seeds}. Tabu: walks of {walk} moves "
            f"from a random restart, tenure uniform in [{low}, {high}] moves, aspiration on the walk's best. "
            f"Annealing: walks of {moves:,} proposals, T from {t_start:g} to {t_end:g} (geometric).\n"
            f"`python -m benchmarks.labs_ablation --n {args.n} --budgets {' '.join(map(str, args.budgets))} "
            f"--policy-budget {args.policy_budget} --seeds {' '.join(map(str, args.seeds))}{chosen_configs(args)} "
            f"--write`\n\n"
            + "\n\n".join(sections))
    print(text)
    if args.write:
        plot(results, args.budgets, args.n, optimum, DOCS / f"results_labs{'' if args.n == 32 else f'_n{args.n}'}.png")
        name = "labs_ablation" if args.n == 32 else f"labs_ablation_n{args.n}"
        figure = f"results_labs{'' if args.n == 32 else f'_n{args.n}'}.png"
        write_section(name, f"{text}\n\n![best energy vs evaluations]({figure})", doc=DOCS / "results.md")


if __name__ == "__main__":
    main()
