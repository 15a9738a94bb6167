"""`ttd-agent`: train on one env (TTT-Discover or TTRL), list the envs, show a run's best state.

    ttd-agent train --env ttd/LABS-v0                       # embedded policy, env defaults
    ttd-agent train --env ttd/ErdosOverlap-v0 --model Qwen/Qwen2.5-Coder-7B-Instruct
    ttd-agent train --env ttd/MathVote-v0 --method ttrl --model PATH --env-arg dataset=aime24
    ttd-agent train --run-dir runs/x --resume               # continue after a kill
    ttd-agent envs
    ttd-agent best runs/x
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

console = Console()


def _env_arg(text: str) -> tuple[str, Any]:
    """KEY=VALUE with VALUE read as JSON when it parses (numbers, true, lists), else a string."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--env-arg takes KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ttd-agent", description="Test-time RL on ttd discovery problems.")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="run TTT-Discover (or TTRL with --method ttrl) on one env")
    train.add_argument("--env", help="env id, e.g. ttd/LABS-v0 (see `ttd-agent envs`)")
    train.add_argument("--env-arg", action="append", type=_env_arg, default=[], metavar="KEY=VALUE",
                       help="a make() kwarg of the env, e.g. n=40 or initial=record (repeatable)")
    train.add_argument("--method", choices=("discover", "ttrl"), default="discover")
    train.add_argument("--model", help="causal LM path or hub id (HF + LoRA), or 'embedded'; default: the env's kind")
    train.add_argument("--steps", type=int)
    train.add_argument("--groups-per-step", type=int, help="start states per step (B)")
    train.add_argument("--group-size", type=int, help="samples per start state (G)")
    train.add_argument("--lr", type=float)
    train.add_argument("--lora-rank", type=int, default=32)
    train.add_argument("--lora-alpha", type=float)
    train.add_argument("--lora-target-modules", nargs="+", help="module names to adapt (default: all linear layers)")
    train.add_argument("--full-finetune", action="store_true", help="HF backend: train all weights, no LoRA")
    train.add_argument("--temperature", type=float)
    train.add_argument("--max-new-tokens", type=int)
    train.add_argument("--objective", choices=("entropic-adaptive", "entropic", "mean", "grpo"),
                       default="entropic-adaptive")
    train.add_argument("--beta", type=float, default=2.0, help="β of --objective entropic")
    train.add_argument("--reuse", choices=("puct", "greedy", "none"), default="puct")
    train.add_argument("--puct-c", type=float, default=1.0)
    train.add_argument("--kl-coef", type=float, help="λ of the KL penalty to the base policy (default 0; TTRL 0.001)")
    train.add_argument("--clip-eps", type=float, help="PPO ratio clip (default off; TTRL 0.2)")
    train.add_argument("--no-update", action="store_true",
                       help="never update the policy: best-of-N from the frozen model at the same budget")
    train.add_argument("--no-edit-prior", action="store_true",
                       help="embedded policy on an edit env (LABS): skip the few-second imitation of near-copies")
    train.add_argument("--eval-workers", type=int, default=2)
    train.add_argument("--executor", choices=("thread", "process", "ray"), default="thread",
                       help="where evaluations run: local threads, local processes, or a Ray cluster")
    train.add_argument("--ray-address", metavar="ADDRESS",
                       help="--executor ray: 'auto' (the cluster this node belongs to), HEAD_IP:6379, or unset "
                            "for $RAY_ADDRESS, else a new local cluster (see docs/distributed.md)")
    train.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    train.add_argument("--sampler", choices=("hf", "vllm"), default="hf", help="sample with vLLM on a GPU")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--run-dir", default=None, help="where the run is written (default runs/<env>-<seed>)")
    train.add_argument("--resume", action="store_true", help="continue the run in --run-dir from its last checkpoint")
    ttrl = train.add_argument_group("TTRL (--method ttrl)")
    ttrl.add_argument("--votes", type=int, help="N samples per question for the majority vote (64)")
    ttrl.add_argument("--keep", type=int, help="M of the N trained on (32)")
    ttrl.add_argument("--questions-per-step", type=int, help="B questions per step (8; 32 for MATH-500)")
    ttrl.add_argument("--episodes", type=int, help="passes over the question set (80 AIME, 30 AMC, 10 MATH)")
    ttrl.add_argument("--eval-every", type=int, help="evaluate avg@k and maj@N on true labels every k steps")

    sub.add_parser("envs", help="list the env ids with their record to beat")
    best = sub.add_parser("best", help="print the best state of a run: score, code, construction")
    best.add_argument("run_dir")
    return parser


# -- train ----------------------------------------------------------------------------------------
def _progress() -> Progress:
    return Progress(TextColumn("[bold]step"), MofNCompleteColumn(), BarColumn(), TextColumn("{task.fields[status]}"),
                    TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=console)


def _discovery_config(args: argparse.Namespace) -> Any:
    from ttd_agent.trainer import DiscoveryConfig

    run_dir = args.run_dir or f"runs/{args.env.split('/')[-1]}-seed{args.seed}"
    return DiscoveryConfig(
        env=args.env, env_kwargs=dict(args.env_arg), model=args.model, steps=args.steps,
        groups_per_step=args.groups_per_step, group_size=args.group_size, lr=args.lr, temperature=args.temperature,
        max_new_tokens=args.max_new_tokens, objective=args.objective, beta=args.beta, reuse=args.reuse,
        puct_c=args.puct_c, kl_coef=args.kl_coef or 0.0, clip_eps=args.clip_eps, update=not args.no_update,
        lora_rank=args.lora_rank, lora_alpha=args.lora_alpha, lora_target_modules=args.lora_target_modules,
        full_finetune=args.full_finetune,
        device=args.device, sampler=args.sampler, eval_workers=args.eval_workers, executor=args.executor,
        edit_prior=not args.no_edit_prior,
        seed=args.seed, run_dir=run_dir)


def train_discovery(args: argparse.Namespace) -> int:
    from ttd_agent.trainer import DiscoveryConfig, DiscoveryTrainer

    if args.ray_address:  # where the cluster is today: Ray reads it; not part of the run's config
        os.environ["RAY_ADDRESS"] = args.ray_address

    if args.resume:
        if not args.run_dir:
            raise ValueError("--resume needs --run-dir (the run to continue)")
        config = DiscoveryConfig(env=args.env or "", run_dir=args.run_dir, steps=args.steps)
    else:
        if not args.env:
            raise ValueError("--env is required (see `ttd-agent envs`)")
        config = _discovery_config(args)
    trainer = DiscoveryTrainer(config, resume=args.resume)
    cfg = trainer.config
    console.print(f"[bold]{cfg.env}[/] with {cfg.model}: {cfg.steps} steps x {cfg.groups_per_step} groups x "
                  f"{cfg.group_size} samples, objective {cfg.objective}, reuse {cfg.reuse} -> {trainer.run_dir.path}")
    with _progress() as progress:
        task = progress.add_task("train", total=cfg.steps, completed=trainer.step, status="")

        def on_step(result: Any) -> None:
            row = result.row
            progress.update(task, completed=row["step"], status=(
                f"best {row['best_reward']:.5g}  mean {row['reward_mean']:.4g}  valid {row['valid_fraction']:.0%}"
                + ("  [green]new best[/]" if result.improved else "")))

        best = trainer.run(on_step)
    _print_summary(trainer, best)
    return 0


def _print_summary(trainer: Any, best: Any) -> None:
    problem, run = trainer.problem, trainer.run_dir.path
    table = Table(title=f"{trainer.config.env}: best state after {trainer.samples} samples", show_header=False)
    table.add_row("reward", f"{best.reward:.10g}")
    table.add_row("score (the problem's own metric)", f"{best.score:.10g}" if best.score is not None else "-")
    if problem.record is not None:
        table.add_row("record to beat", problem.record.describe())
        if best.score is not None:
            gap = best.score - problem.record.score
            beaten = gap < 0 if not problem.record.higher_is_better else gap > 0
            table.add_row("gap to the record", f"{gap:+.6g}" + ("  [bold green]record beaten[/]" if beaten else
                                                             "  [green]record matched[/]" if gap == 0 else ""))
    if isinstance(best.construction, str) and len(best.construction) <= 200:
        table.add_row("construction", best.construction)
    table.add_row("run dir", str(run))
    table.add_row("best state", str(run / "best.json"))
    table.add_row("plots", f"{run / 'plots' / 'reward_distribution.png'}, {run / 'plots' / 'best_so_far.png'}")
    console.print(table)


def train_ttrl(args: argparse.Namespace) -> int:
    from ttd_agent.ttrl_trainer import cli_main

    return cli_main(args, console, _progress)


# -- envs and best ----------------------------------------------------------------------------------
def list_envs() -> int:
    from ttd_envs.registration import ENVS, load_target

    table = Table(title="ttd environments")
    for column in ("id", "problem", "record to beat", "policy"):
        table.add_column(column)
    for entry in ENVS:
        target = load_target(entry.target)
        summary = getattr(target, "summary", None) or (target.__doc__ or "").strip().splitlines()[0]
        record = getattr(target, "record", None)
        defaults = getattr(target, "defaults", None)
        table.add_row(entry.env_id, summary, record.describe() if record is not None else "per instance",
                      getattr(defaults, "model_kind", "llm"))
    console.print(table)
    return 0


def show_best(run_dir: str) -> int:
    path = Path(run_dir) / "best.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: is {run_dir} a ttd-agent run directory?")
    best = json.loads(path.read_text())
    state = best["state"]
    console.print(f"[bold]{best['env']}[/]: best after {best['samples']} samples (step {best['step']})")
    console.print(f"reward {state['reward']!r}   score {state['score']!r}   state id {state['id']}")
    if state.get("code"):
        console.print("code:")
        console.print(state["code"], markup=False, highlight=False)
    construction = state.get("construction")
    if construction is not None:
        text = json.dumps(construction)
        console.print("construction:", text if len(text) <= 2000 else text[:2000] + f" ... ({len(text)} chars)",
                      markup=False, highlight=False)
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    if os.getcwd() not in sys.path:  # like `python -m`: --env package.module:Class from the current directory
        sys.path.insert(0, os.getcwd())
    try:
        if args.command == "envs":
            return list_envs()
        if args.command == "best":
            return show_best(args.run_dir)
        if args.method == "ttrl":
            return train_ttrl(args)
        return train_discovery(args)
    except (ValueError, KeyError, FileNotFoundError, FileExistsError, ImportError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc  # str(KeyError) adds quotes
        console.print(f"[red]error:[/] {escape(str(message))}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
