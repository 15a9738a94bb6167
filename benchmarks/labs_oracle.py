"""A ceiling study for TTT on LABS: how good must the proposal be for a search to beat tabu search?

    python -m benchmarks.labs_oracle [--n 32] [--budget 100000] [--seeds 100 101 102 103]
                                     [--p 0 0.1 0.3 0.6] [--puct-c 1] [--groups 8] [--group-size 16]
                                     [--children 2] [--improving-only] [--choose best|improving]
                                     [--search puct|anneal] [--t-start T] [--t-end T] [--cache DIR]

The proposal in place of the policy is an oracle, for this study only (never a configuration
anyone runs): for each sample, with probability p it flips the best single position of the state
shown (the one-flip neighbour of lowest energy, ties broken at random; found by scoring all N
neighbours *outside* the budget; with `--choose improving`, a random improving flip instead),
otherwise it flips 1 + Poisson(1) uniformly chosen positions (the benchmark's `UniformFlips`, same
random stream: p = 0 is exactly "PUCT reuse, uniform random flips" of `benchmarks.labs_ablation`).
Every sample the search scores costs one evaluation, as in `benchmarks.labs_ablation`; the
oracle's own scan is free. The search is the trainer's, run with `update=False` (the buffer, PUCT
selection and insertion are unchanged), so the result says what the search around a proposal of
quality p can reach, which bounds what a learned proposal of that quality could.

`--search anneal` puts the same oracle inside a different search: the restarted simulated annealing
of `ttd_agent.classic_search` (one scored flip per move, worse moves taken with the Metropolis
probability), the shape of search a policy that proposes one flip at a time would run instead of
PUCT reuse. p = 0 there is the plain annealer with uniform proposals.

Knobs of the PUCT search that are ours to change: `--puct-c`, the step shape (`--groups` x
`--group-size`), `--children` (children kept per parent) and `--improving-only` (a child enters the
buffer only if it beats its parent, so worse states are never expanded). Each run also records the
share of samples that beat their start (`improving`), the measure a learned policy is read by.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numba
import numpy as np

from benchmarks.labs_ablation import (
    SWITCH,
    RunResult,
    UniformFlips,
    answer_sample,
    classic,
)
from ttd_agent.classic_search import _flip_energy, simulated_annealing
from ttd_agent.policy.base import Sample
from ttd_agent.puct import StateBuffer, reward_of
from ttd_agent.trainer import DiscoveryConfig, DiscoveryTrainer
from ttd_envs.core.state import State
from ttd_envs.problems.labs import (
    energies,
    energy,
    reference_energy,
    string_to_sequence,
)


class OracleFlips(UniformFlips):
    """With probability p an oracle flip of the state shown, else 1 + Poisson(1) uniform flips.

    `choose` "best": the best single flip (every oracle sample of a group is then the same child);
    "improving": a uniformly drawn flip among those that lower the energy, the best one when none
    does (the oracle samples of a group then differ, as a sampled policy's would).
    """

    kind = "oracle-flips"

    def __init__(self, p: float, seed: int, choose: str = "best") -> None:
        if choose not in ("best", "improving"):
            raise ValueError(f"choose must be 'best' or 'improving', got {choose!r}")
        super().__init__(seed)  # the uniform flips' own stream: p = 0 repeats `UniformFlips` exactly
        self.p = p
        self.choose = choose
        self.coin = np.random.default_rng([seed, 3])
        """The oracle's own draws (which samples take the best flip, ties)."""
        self.samples = 0
        self.improving = 0
        self.oracle_moves = 0

    def flip_energies(self, seq: np.ndarray) -> np.ndarray:
        """The energy of each one-flip neighbour (the oracle's scan, not charged to the budget)."""
        neighbours = np.repeat(seq[None, :], len(seq), axis=0)
        neighbours[np.arange(len(seq)), np.arange(len(seq))] *= -1
        return energies(neighbours)

    def oracle_flip(self, best: int, found: np.ndarray, start_energy: int) -> int:
        """The position an oracle sample flips: `best` (the group's best flip), or with `choose`
        "improving" a random improving one when there is one."""
        improving = np.flatnonzero(found < start_energy)
        if self.choose == "improving" and len(improving):
            return int(improving[self.coin.integers(len(improving))])
        return best

    def sample(self, prompts: list[str], n: int, *, temperature: float, max_new_tokens: int) -> list[list[Sample]]:
        groups = []
        for prompt in prompts:
            seq = string_to_sequence(prompt)
            found, start_energy = self.flip_energies(seq), energy(seq)
            ties = np.flatnonzero(found == found.min())
            best = int(ties[self.coin.integers(len(ties))])
            group = []
            for _ in range(n):
                text = list(prompt)
                if self.p > 0 and self.coin.random() < self.p:
                    i = self.oracle_flip(best, found, start_energy)
                    text[i] = SWITCH[text[i]]
                    self.oracle_moves += 1
                    self.improving += found[i] < start_energy
                else:
                    self.flip_uniformly(text)
                    self.improving += energy(string_to_sequence("".join(text))) < start_energy
                self.samples += 1
                group.append(answer_sample(prompt, "".join(text)))
            groups.append(group)
        return groups


@numba.njit(cache=True)
def _oracle_position(s: np.ndarray, c: np.ndarray, energy: int, p: float, improving: bool) -> int:  # pragma: no cover
    """With probability p the best flip of s (or, `improving`, a uniformly drawn improving one when
    there is one), found by scoring every neighbour outside the budget; else a uniform position."""
    n = s.shape[0]
    if p <= 0 or np.random.random() >= p:  # p = 0 draws exactly what `uniform_position` draws
        return np.random.randint(n)
    best, best_energy, ties, pick, count = -1, 1 << 62, 0, -1, 0
    for i in range(n):  # reservoir sampling: uniform over the best flips, and over the improving ones
        found = _flip_energy(s, c, i)
        if found < best_energy:
            best, best_energy, ties = i, found, 1
        elif found == best_energy:
            ties += 1
            if np.random.randint(ties) == 0:
                best = i
        if found < energy:
            count += 1
            if np.random.randint(count) == 0:
                pick = i
    return pick if improving and pick >= 0 else best


@numba.njit(cache=True)
def best_flip_oracle(s: np.ndarray, c: np.ndarray, energy: int, p: float) -> int:  # pragma: no cover
    return _oracle_position(s, c, energy, p, False)


@numba.njit(cache=True)
def improving_flip_oracle(s: np.ndarray, c: np.ndarray, energy: int, p: float) -> int:  # pragma: no cover
    return _oracle_position(s, c, energy, p, True)


WALK_ORACLES = {"best": best_flip_oracle, "improving": improving_flip_oracle}


def run_walk_oracle(n: int, budget: int, seed: int, p: float, choose: str = "best", t_start: float | None = None,
                    t_end: float | None = None) -> RunResult:
    """Simulated annealing around the oracle proposal of quality p (temperatures: the classic
    module's defaults where None)."""
    return classic(lambda n, budget, seed: simulated_annealing(n, budget, seed, t_start=t_start, t_end=t_end,
                                                               propose=WALK_ORACLES[choose], knob=p))(n, budget, seed)


class ImprovingOnlyBuffer(StateBuffer):
    """The trainer's buffer, except that a child enters only if it beats its parent."""

    def _insert_children(self, parent: State, ranked: list[State]) -> list[State]:
        return super()._insert_children(parent, [c for c in ranked if reward_of(c) > reward_of(parent)])


def run_oracle(n: int, budget: int, seed: int, p: float, puct_c: float = 1.0, groups: int = 8, group_size: int = 16,
               children: int = 2, improving_only: bool = False, choose: str = "best") -> tuple[RunResult, float]:
    """One search run of at least `budget` samples; (result, share of samples that beat their start)."""
    steps = math.ceil(budget / (groups * group_size))
    proposal = OracleFlips(p, seed, choose)
    with tempfile.TemporaryDirectory() as tmp:
        config = DiscoveryConfig(env="ttd/LABS-v0", env_kwargs={"n": n}, steps=steps, seed=seed, update=False,
                                 groups_per_step=groups, group_size=group_size, puct_c=puct_c,
                                 children_per_parent=children, run_dir=str(Path(tmp) / "run"),
                                 plot_every=10**9, checkpoint_every=10**9)
        started = time.perf_counter()
        trainer = DiscoveryTrainer(config, policy=proposal)
        if improving_only:
            trainer.buffer = ImprovingOnlyBuffer.from_dict(trainer.buffer.to_dict())
        best = trainer.run()
        seconds = time.perf_counter() - started
    curve = [(samples + groups, round(n * n / (2 * reward))) for samples, reward in trainer.best_curve]
    result = RunResult(int(best.score), curve, steps * groups * group_size + groups, seconds)
    return result, proposal.improving / max(proposal.samples, 1)


def key(args: argparse.Namespace, p: float, seed: int) -> str:
    if args.search == "anneal":
        return f"walk-oracle-n{args.n}-b{args.budget}-p{p}-{args.choose}-t{args.t_start}-{args.t_end}-s{seed}"
    return (f"oracle-n{args.n}-b{args.budget}-p{p}-c{args.puct_c}-g{args.groups}x{args.group_size}"
            f"-k{args.children}{'-imp' if args.improving_only else ''}"
            f"{'' if args.choose == 'best' else '-' + args.choose}-s{seed}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--budget", type=int, default=100_000)
    parser.add_argument("--read-at", type=int, nargs="+", default=[5120, 100_000])
    parser.add_argument("--seeds", type=int, nargs="+", default=[100, 101, 102, 103])
    parser.add_argument("--p", type=float, nargs="+", default=[0.0, 0.1, 0.3, 0.6])
    parser.add_argument("--puct-c", type=float, default=1.0)
    parser.add_argument("--groups", type=int, default=8)
    parser.add_argument("--group-size", type=int, default=16)
    parser.add_argument("--children", type=int, default=2)
    parser.add_argument("--improving-only", action="store_true")
    parser.add_argument("--choose", choices=["best", "improving"], default="best",
                        help="the oracle's flip: the best one, or a random improving one (see OracleFlips)")
    parser.add_argument("--search", choices=["puct", "anneal"], default="puct",
                        help="the search around the oracle: the trainer's PUCT reuse, or simulated annealing")
    parser.add_argument("--t-start", type=float, help="--search anneal: the walk's first temperature")
    parser.add_argument("--t-end", type=float, help="--search anneal: the walk's last temperature")
    parser.add_argument("--cache", type=Path)
    args = parser.parse_args(argv)
    optimum, _ = reference_energy(args.n)
    for p in args.p:
        found: dict[int, list[int | None]] = {b: [] for b in args.read_at}
        shares, seconds = [], []
        for seed in args.seeds:
            path = None if args.cache is None else args.cache / f"{key(args, p, seed)}.json"
            if path is not None and path.exists():
                data = json.loads(path.read_text())
                result = RunResult(data["best_energy"], [tuple(x) for x in data["curve"]], data["evaluations"],
                                   data["seconds"])
                share = data["improving"]
            elif args.search == "anneal":
                result = run_walk_oracle(args.n, args.budget, seed, p, args.choose, args.t_start, args.t_end)
                share = math.nan
            else:
                result, share = run_oracle(args.n, args.budget, seed, p, args.puct_c, args.groups, args.group_size,
                                           args.children, args.improving_only, args.choose)
            if path is not None and not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps({**result.__dict__, "improving": share}))
            for b in args.read_at:
                found[b].append(result.best_at(b))
            shares.append(share)
            seconds.append(result.seconds)
        cells = []
        for b in args.read_at:
            values = [v for v in found[b] if v is not None]
            cells.append(f"{b}: {np.mean(values):.1f} ({' / '.join(map(str, found[b]))})" if values else f"{b}: -")
        search = (f"anneal T {args.t_start or 'default'} -> {args.t_end or 'default'}" if args.search == "anneal" else
                  f"c={args.puct_c} {args.groups}x{args.group_size} children={args.children} "
                  f"improving_only={args.improving_only}")
        optimal = sum(v == optimum for v in found[max(args.read_at)])
        print(f"{args.choose} p={p} {search} | {' | '.join(cells)} | E* on {optimal}/{len(args.seeds)} | improving share "
              f"{'-' if args.search == 'anneal' else f'{np.mean(shares):.3f}'} | {np.mean(seconds):.0f} s/run",
              flush=True)


if __name__ == "__main__":
    main()
