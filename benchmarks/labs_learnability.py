"""Can the embedded flip policy learn which flips improve a LABS state? A supervised upper bound.

    python -m benchmarks.labs_learnability [--n 32] [--states 100000] [--epochs 3] [--temperature 20]
                                           [--lr 3e-3] [--d-model 64] [--layers 2]
                                           [--network flip-policy|mlp] [--width 512] [--tasks ...]
                                           [--write]

An annealing walk around an oracle that names an improving flip on a share p of its proposals
beats tabu search at equal evaluations (`benchmarks/labs_oracle.py --search anneal`). A learned
proposal would have to do the same. The test-time update sees one reward per sample; this script
gives the same network far more. For each training state, drawn from annealing walks at a fixed
temperature, it gets the exact energy change of every one of the N flips: N evaluations' worth of
labels per state. The first flip the policy writes (embedded `write="flips"`: a pointer over the
prompt, the trainer's default size) is trained by cross-entropy towards softmax(-ΔE / 8). The
script then reports, on held-out states of other walks, the probability the policy puts on
improving flips. The uniform proposal's share and the target's share frame it. A control task
trains the same way on a local rule (flip a position equal to its right neighbour). It shows
that the training does learn when the map is simple. `--network mlp` trains a plain MLP on the
signs instead, to tell the map's difficulty from the transformer's.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numba
import numpy as np
import torch
import torch.nn.functional as F

from benchmarks._report import markdown_table, write_section
from ttd_agent.classic_search import _apply_flip, _flip_energy, metropolis, random_start
from ttd_agent.policy.embedded import EmbeddedConfig, EmbeddedPolicy, encode
from ttd_envs.problems.labs import LABS

TARGET_TEMPERATURE = 8.0
"""τ of the target softmax(-ΔE / τ): energy changes at N = 32 are tens, so it favours the best flips."""
BATCH = 256
TASKS = ["LABS: improving flips", "local rule"]


@numba.njit(cache=True)
def walk_states(n: int, count: int, seed: int, temperature: float, every: int = 7,
                restart: int = 4096) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - compiled
    """`count` states of Metropolis walks at a fixed temperature (one kept every `every` proposals,
    a new random start every `restart`), and the energy change of each of their N flips."""
    np.random.seed(seed)
    s = np.empty(n, dtype=np.int64)
    c = np.zeros(n, dtype=np.int64)
    states = np.empty((count, n), dtype=np.int64)
    changes = np.empty((count, n), dtype=np.int64)
    energy, kept, proposals = 0, 0, 0
    while kept < count:
        if proposals % restart == 0:
            energy = random_start(s, c)
        i = np.random.randint(n)
        proposed = _flip_energy(s, c, i)
        if metropolis(energy, proposed, temperature):
            _apply_flip(s, c, i)
            energy = proposed
        proposals += 1
        if proposals % every == 0:
            states[kept] = s
            for j in range(n):
                changes[kept, j] = _flip_energy(s, c, j) - energy
            kept += 1
    return states, changes


def local_rule_changes(states: np.ndarray) -> np.ndarray:
    """The control task as energy changes: -10 where a position equals its right neighbour, else 0."""
    changes = np.zeros_like(states)
    changes[:, :-1] = np.where(states[:, :-1] == states[:, 1:], -10, 0)
    return changes


def prompt_ids(states: np.ndarray) -> torch.Tensor:
    return torch.tensor([encode("".join("+" if v > 0 else "-" for v in row)) for row in states], dtype=torch.long)


def first_flip_logp(policy: EmbeddedPolicy, ids: torch.Tensor) -> torch.Tensor:
    """(B, N) log-probabilities of the first position the flip policy would write."""
    nothing_written = torch.zeros((ids.shape[0], 0), dtype=torch.long)
    return policy._flip_log_dist(policy.model, ids, nothing_written, 1.0)[:, 0, :ids.shape[1]]


def network(args: argparse.Namespace) -> tuple[list[torch.nn.Parameter], Callable[[np.ndarray], torch.Tensor],
                                               Callable[[torch.Tensor], torch.Tensor]]:
    """(parameters, states -> inputs, inputs -> (B, N) log-probabilities of the first flip) of a
    fresh network: the embedded flip policy, or with `--network mlp` a plain MLP on the signs."""
    torch.manual_seed(0)
    if args.network == "mlp":
        mlp = torch.nn.Sequential(torch.nn.Linear(args.n, args.width), torch.nn.ReLU(),
                                  torch.nn.Linear(args.width, args.width), torch.nn.ReLU(),
                                  torch.nn.Linear(args.width, args.n))
        return (list(mlp.parameters()), lambda states: torch.tensor(states, dtype=torch.float32),
                lambda signs: F.log_softmax(mlp(signs), -1))
    spec = LABS(n=args.n).defaults.embedded
    policy = EmbeddedPolicy(EmbeddedConfig.from_spec(spec, write="flips", d_model=args.d_model,
                                                     n_layer=args.layers, lr=args.lr))
    return list(policy.model.parameters()), prompt_ids, lambda ids: first_flip_logp(policy, ids)


def mass_on_good(logp: torch.Tensor, good: torch.Tensor) -> float:
    """Mean probability that a first flip drawn from `logp` is one of the `good` positions."""
    probs = logp.detach().exp()
    return float(((probs / probs.sum(-1, keepdim=True)) * good).sum(-1).mean())


def learn(task: str, args: argparse.Namespace, checkpoints: list[int]) -> list[object]:
    """Train a fresh network on one task; its table row."""
    states, changes = walk_states(args.n, args.states, 1, args.temperature)
    held_states, held_changes = walk_states(args.n, 4000, 2, args.temperature)
    if task == TASKS[1]:
        changes, held_changes = local_rule_changes(states), local_rule_changes(held_states)
    parameters, inputs_of, logp_of = network(args)
    inputs, held_inputs = inputs_of(states), inputs_of(held_states)
    good = torch.tensor(held_changes < 0, dtype=torch.float32)
    target = F.softmax(torch.tensor(-changes / TARGET_TEMPERATURE, dtype=torch.float32), -1)
    held_target = F.softmax(torch.tensor(-held_changes / TARGET_TEMPERATURE, dtype=torch.float32), -1)

    def held_out() -> float:
        with torch.no_grad():
            return mass_on_good(logp_of(held_inputs), good)

    optimizer = torch.optim.Adam(parameters, lr=args.lr)
    readings, seen, started = [held_out()], 0, time.perf_counter()
    for _ in range(args.epochs):
        order = torch.randperm(len(inputs))
        for start in range(0, len(inputs), BATCH):
            batch = order[start:start + BATCH]
            loss = -(target[batch] * logp_of(inputs[batch])).sum(-1).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            seen += len(batch)
            if len(readings) <= len(checkpoints) and seen >= checkpoints[len(readings) - 1]:
                readings.append(held_out())
                print(f"{task}: {seen:,} states, P(good flip) {readings[-1]:.3f}", flush=True)
    uniform, ceiling = float(good.mean()), float((held_target * good).sum(-1).mean())
    return [task, f"{uniform:.3f}", f"{ceiling:.3f}", *(f"{r:.3f}" for r in readings),
            f"{time.perf_counter() - started:.0f}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--states", type=int, default=100_000, help="training states (each labelled for all N flips)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--temperature", type=float, default=20.0, help="of the walks the states come from")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--network", choices=["flip-policy", "mlp"], default="flip-policy",
                        help="the embedded flip policy (--d-model, --layers), or a plain MLP on the signs (--width)")
    parser.add_argument("--width", type=int, default=512, help="--network mlp: the width of its two hidden layers")
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=TASKS)
    parser.add_argument("--write", action="store_true", help="write the table into docs/results.md")
    args = parser.parse_args()
    torch.set_num_threads(1)
    total = args.states * args.epochs
    checkpoints = [c for c in (10_000, 30_000, 100_000, 300_000, 1_000_000) if c < total] + [total]
    rows = [learn(task, args, checkpoints) for task in args.tasks]
    header = ["task", "uniform proposal", "target", "untrained", *(f"after {c:,} states" for c in checkpoints),
              "train s"]
    if args.network == "mlp":
        described, options = f"an MLP of two hidden layers of {args.width}", f"--network mlp --width {args.width}"
    else:
        described = f"the embedded flip policy, d_model {args.d_model}, {args.layers} layers"
        options = f"--d-model {args.d_model} --layers {args.layers}"
    tasks = "" if args.tasks == TASKS else " --tasks " + " ".join(f'"{t}"' for t in args.tasks)
    text = (f"N = {args.n}, walk states at T = {args.temperature:g}, {args.states:,} training states x "
            f"{args.epochs} epochs, {described}, Adam lr {args.lr:g}, batch {BATCH}; P(good flip) on 4,000 "
            f"held-out states.\n`python -m benchmarks.labs_learnability --states {args.states} --epochs "
            f"{args.epochs} --temperature {args.temperature:g} --lr {args.lr:g} {options}{tasks} --write`\n\n"
            + markdown_table(header, rows))
    print(text)
    if args.write:
        from benchmarks.labs_ablation import DOCS
        write_section("labs_learnability", text, doc=DOCS / "results.md")


if __name__ == "__main__":
    main()
