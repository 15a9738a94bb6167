"""`ttd-agent`: train on one env (TTT-Discover or TTRL), list the envs, show a run's best state.

    ttd-agent train --env ttd/LABS-v0                       # embedded policy, env defaults
    ttd-agent train --env my_module:MyProblem --model tiny --steps 2   # plumbing check on a CPU
    ttd-agent train --env ttd/ErdosOverlap-v0 --model Qwen/Qwen2.5-Coder-7B-Instruct
    ttd-agent train --env ttd/MathVote-v0 --method ttrl --model PATH --env-arg dataset=aime24
    ttd-agent train --config run.toml                       # flags from a TOML file
    ttd-agent train --run-dir runs/x --resume               # continue after a kill
    ttd-agent envs
    ttd-agent best runs/x

Every error is one line that names the flag or file and what to do (`--debug` shows the
traceback). Output has no colour codes when it is not a terminal.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import shlex
import sys
import textwrap
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from ttd_agent.policy import settings as llm_settings
from ttd_envs.core.arguments import OneLineParser, env_arg

console = Console()

FLAG_FIELDS = {"env_arg": "env_kwargs", "no_update": "update", "no_edit_prior": "edit_prior"}
"""Flags whose DiscoveryConfig field has another name (all others share the flag's name)."""
NOT_CONFIG = frozenset({"command", "config", "resume", "method", "debug", "votes", "keep", "questions_per_step",
                        "episodes", "eval_every"})
"""Train flags that are not DiscoveryConfig fields (TTRL's own flags, and how the CLI runs)."""


class _HelpFormatter(argparse.HelpFormatter):
    """Appends the default to a flag's help when there is one worth showing."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default not in (None, False, [], argparse.SUPPRESS) and "default" not in text:
            text += " (default: %(default)s)"
        return text


_Parser = OneLineParser


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ttd-agent", description="Test-time RL on ttd discovery problems.")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="run TTT-Discover (or TTRL with --method ttrl) on one env",
                           formatter_class=_HelpFormatter,
                           usage="%(prog)s --env ID [options]\n       %(prog)s --run-dir DIR --resume [options]",
                           description="Train on one env. A flag with no default shown takes the env's own "
                                       "(its TrainerDefaults); see docs/trainer.md.")
    parser.train_parser = train  # type: ignore[attr-defined]  # --config fills its defaults
    train.add_argument("--config", metavar="FILE.toml",
                       help="read flags from a TOML file (group-size = 4, env-arg = {n = 40}); "
                            "flags on the command line override it")
    train.add_argument("--env", help="env id (see `ttd-agent envs`), FILE.py:ProblemClass, or "
                                     "module:ProblemClass importable from the current directory or PYTHONPATH")
    train.add_argument("--env-arg", action="append", type=env_arg, default=[], metavar="KEY=VALUE",
                       help="a make() kwarg of the env, e.g. n=40 or initial=record (repeatable)")
    train.add_argument("--method", choices=("discover", "ttrl"), default="discover",
                       help="TTT-Discover on one problem, or TTRL on a question set")
    train.add_argument("--model", help="causal LM directory or hub id (HF + LoRA); 'embedded' for the "
                                       "built-in policy of data-answer envs; 'tiny' for a random tiny LM "
                                       "(a plumbing check on a CPU that finds nothing); default: the env's kind")
    train.add_argument("--steps", type=int, help="training steps (default: the env's)")
    train.add_argument("--groups-per-step", type=int, help="start states per step, B (default: the env's)")
    train.add_argument("--group-size", type=int, help="samples per start state, G (default: the env's)")
    train.add_argument("--lr", type=float, help="learning rate (default: 1e-3 embedded, 4e-5 LLM)")
    train.add_argument("--lora-rank", type=int, default=32, help="LoRA rank")
    train.add_argument("--lora-alpha", type=float, help="LoRA alpha (default: 32)")
    train.add_argument("--lora-target-modules", nargs="+", help="module names to adapt (default: all linear layers)")
    train.add_argument("--full-finetune", action="store_true", help="HF backend: train all weights, no LoRA")
    train.add_argument("--temperature", type=float, help="sampling temperature (default: the env's, 1.0)")
    train.add_argument("--max-new-tokens", type=int, help="answer length cap in tokens (default: the env's)")
    train.add_argument("--objective", choices=("entropic-adaptive", "entropic", "mean", "grpo"),
                       default="entropic-adaptive", help="how a group's rewards become advantages")
    train.add_argument("--beta", type=float, default=2.0, help="β of --objective entropic")
    train.add_argument("--reuse", choices=("puct", "greedy", "none"), default="puct",
                       help="how start states are picked from the buffer")
    train.add_argument("--puct-c", type=float, default=1.0, help="exploration constant of PUCT")
    train.add_argument("--kl-coef", type=float, help="λ of the KL penalty to the base policy (default 0; TTRL 0.001)")
    train.add_argument("--clip-eps", type=float, help="PPO ratio clip (default off; TTRL 0.2)")
    train.add_argument("--no-update", action="store_true",
                       help="never update the policy: best-of-N from the frozen model at the same budget")
    train.add_argument("--no-edit-prior", action="store_true",
                       help="embedded policy on an edit env (LABS): skip the few-second imitation of near-copies")
    train.add_argument("--eval-workers", type=int, default=2, help="answers evaluated in parallel")
    train.add_argument("--executor", choices=("thread", "process", "ray"), default="thread",
                       help="where evaluations run: local threads, local processes, or a Ray cluster")
    train.add_argument("--ray-address", metavar="ADDRESS",
                       help="--executor ray: 'auto' (the cluster this node belongs to), HEAD_IP:6379, or unset "
                            "for $RAY_ADDRESS, else a new local cluster (see docs/distributed.md)")
    train.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    train.add_argument("--sampler", choices=("hf", "vllm", "openai"), default="hf",
                       help="LLM sampling: own loop, vLLM on this GPU, or an OpenAI-compatible --base-url "
                            "(see docs/llm.md)")
    train.add_argument("--sink", dest="sinks", action="append", choices=("tensorboard", "wandb"), default=[],
                       help="also write metrics to TensorBoard or W&B (offline), beside metrics.jsonl (repeatable)")
    train.add_argument("--seed", type=int, default=0, help="seed of the policy, the sampler and the buffer")
    train.add_argument("--run-dir", default=None,
                       help="where the run is written (default: runs/<name>-seed<seed>, e.g. runs/LABS-v0-seed0; "
                            "<name> is the id after 'ttd/' or the class name, then each --env-arg, e.g. "
                            "runs/LABS-v0-n40-seed0; TTRL: runs/ttrl-<dataset>-seed<seed>)")
    train.add_argument("--resume", action="store_true",
                       help="continue the run in --run-dir from its last checkpoint; flags that would change "
                            "what it learns are refused")
    ttrl = train.add_argument_group("TTRL (--method ttrl)")
    ttrl.add_argument("--votes", type=int, help="N samples per question for the majority vote (64)")
    ttrl.add_argument("--keep", type=int, help="M of the N trained on (32)")
    ttrl.add_argument("--questions-per-step", type=int, help="B questions per step (8; 32 for MATH-500)")
    ttrl.add_argument("--episodes", type=int, help="passes over the question set (80 AIME, 30 AMC, 10 MATH)")
    ttrl.add_argument("--eval-every", type=int, help="evaluate avg@k and maj@N on true labels every k steps")

    llm_settings.add_arguments(train)  # --micro-batch-tokens, --renderer, --base-url, ... (docs/llm.md)
    for action in train._actions:  # short metavars keep --help inside 80 columns
        if action.metavar is None and action.type in (int, float):
            action.metavar = "N" if action.type is int else "X"

    sub.add_parser("envs", help="list the env ids with their record to beat")
    best = sub.add_parser("best", help="print the best state of a run: score, code, construction")
    best.add_argument("run_dir", help="a run directory (what `ttd-agent train` wrote; its path is printed at the start)")
    add_view_parser(sub)
    for command in sub.choices.values():  # `train ... --debug` as well as `--debug train ...`
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                             help="show the full traceback of an error")
    return parser


def parse(argv: list[str] | None) -> tuple[argparse.Namespace, set[str]]:
    """The arguments (defaults < --config file < command line) and the train flags the user gave."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command != "train":
        return args, set()
    bare = build_parser()
    for action in bare.train_parser._actions:  # type: ignore[attr-defined]
        action.default = argparse.SUPPRESS
    given = set(vars(bare.parse_args(argv))) - {"command", "debug"}
    if args.config:
        from ttd_agent.runconfig import load_toml

        actions = {a.dest: a for a in parser.train_parser._actions if a.dest not in ("help", "config", "debug")}  # type: ignore[attr-defined]
        flags = load_toml(args.config, actions)
        for name, value in flags.items():
            _check_toml_value(args.config, actions[name], value)
        parser.train_parser.set_defaults(**flags)  # type: ignore[attr-defined]
        args = parser.parse_args(argv)
        given |= set(flags)
    return args, given


def _check_toml_value(path: str, action: argparse.Action, value: Any) -> None:
    """What argparse checks on the command line, for a value that came from the TOML file."""
    name = action.dest.replace("_", "-")
    if action.choices is not None and value not in action.choices:
        raise ValueError(f"--config {path}: {name} = {value!r} is not one of {', '.join(map(str, action.choices))}")
    expected = {int: (int,), float: (int, float)}.get(action.type, ())  # type: ignore[arg-type]
    is_flag = isinstance(action, argparse._StoreTrueAction)
    if (expected and (isinstance(value, bool) or not isinstance(value, expected))) or \
            (is_flag and not isinstance(value, bool)):
        kind = "true or false" if is_flag else "a number"
        raise ValueError(f"--config {path}: {name} must be {kind}, got {value!r}")


# -- train ----------------------------------------------------------------------------------------
def _progress() -> Progress:
    """One line that fits an 80-column terminal, "new best" included (rich shrinks the bar and cuts
    the times short when a line is too wide): step, bar, status, time left."""
    return Progress(TextColumn("[bold]step"), MofNCompleteColumn(), BarColumn(bar_width=10),
                    TextColumn("{task.fields[status]}"), TextColumn("ETA"), TimeRemainingColumn(),
                    console=console)


def default_run_dir(env: str, seed: int, env_kwargs: dict[str, Any] | None = None) -> str:
    """runs/<name>[-<key><value>...]-seed<seed>: the id after 'ttd/' (or the class of a module:Class
    env), then each --env-arg, so runs of one env with other options never share a directory."""
    name = env.rsplit(":", 1)[-1] if ":" in env and not env.startswith("ttd/") else env.split("/")[-1]
    options = "".join(f"-{key}{_path_safe(value)}" for key, value in sorted((env_kwargs or {}).items()))
    return f"runs/{name}{options}-seed{seed}"


def _path_safe(value: Any) -> str:
    """An option value as part of a directory name: letters, digits, '.', '_' and '-' only."""
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in text)[:40]


def _discovery_fields(args: argparse.Namespace) -> dict[str, Any]:
    """DiscoveryConfig fields from the train flags (None = the env's default)."""
    fields: dict[str, Any] = {}
    for name, value in vars(args).items():
        if name in NOT_CONFIG or name == "ray_address" or name in llm_settings.FIELDS:
            continue
        fields[FLAG_FIELDS.get(name, name)] = value
    fields["llm"] = llm_settings.LLMSettings.from_dict(llm_settings.from_args(args)).changed()
    fields["env_kwargs"] = dict(args.env_arg)
    fields["update"], fields["edit_prior"] = not args.no_update, not args.no_edit_prior
    fields["kl_coef"] = args.kl_coef or 0.0
    return fields


def _make_trainer(args: argparse.Namespace, given: set[str]) -> Any:
    from ttd_agent.trainer import DiscoveryConfig, DiscoveryTrainer

    fields = _discovery_fields(args)
    if args.resume:
        if not args.run_dir and not args.env:
            raise ValueError("--resume needs --run-dir (the run to continue)")
        fields["run_dir"] = args.run_dir or default_run_dir(args.env, args.seed, fields["env_kwargs"])
        changes = {FLAG_FIELDS.get(flag, flag): fields[FLAG_FIELDS.get(flag, flag)] for flag in given
                   if flag not in NOT_CONFIG and FLAG_FIELDS.get(flag, flag) in fields and flag != "run_dir"}
        changes.pop("llm", None)
        if given & llm_settings.FIELDS:  # checked setting by setting against the saved run
            changes["llm"] = llm_settings.from_args(args, only=given)
        config = DiscoveryConfig(env=args.env or "", run_dir=fields["run_dir"])
        return DiscoveryTrainer(config, resume=True, changes=changes)
    if not args.env:
        raise ValueError("--env is required (see `ttd-agent envs`), or --resume with --run-dir")
    fields["run_dir"] = args.run_dir or default_run_dir(args.env, args.seed, fields["env_kwargs"])
    return DiscoveryTrainer(DiscoveryConfig(**fields))


def train_discovery(args: argparse.Namespace, given: set[str]) -> int:
    if args.ray_address:  # where the cluster is today: Ray reads it; not part of the run's config
        os.environ["RAY_ADDRESS"] = args.ray_address
    trainer = _make_trainer(args, given)
    cfg = trainer.config
    run = escape(str(trainer.run_dir.path))
    if args.resume and trainer.step >= cfg.steps:
        trainer.close()
        console.print(f"nothing to do: {run} is at step {trainer.step} of {cfg.steps}; pass --steps N with N > "
                      f"{trainer.step} to train further (`ttd-agent best {run}` shows its best state)",
                      highlight=False, soft_wrap=True)
        return 0
    if args.resume:
        console.print(f"resuming {run} from step {trainer.step} of {cfg.steps}" if trainer.step else
                      f"resuming {run}: it has no checkpoint yet, so it starts again from step 0",
                      highlight=False)
    console.print(f"[bold]{escape(cfg.env)}[/] with {escape(str(cfg.model))}: {cfg.steps} steps x "
                  f"{cfg.groups_per_step} groups x {cfg.group_size} samples", highlight=False)
    console.print(f"objective {cfg.objective}, reuse {cfg.reuse}; run dir {escape(str(trainer.run_dir.path))}",
                  highlight=False)
    with _progress() as progress:
        task = progress.add_task("train", total=cfg.steps, completed=trainer.step, status="")

        def on_step(result: Any) -> None:
            progress.update(task, completed=result.row["step"], status=step_status(result.row, result.improved))

        best = trainer.run(on_step)
    print_summary(trainer, best)
    return 0


def step_status(row: dict[str, Any], improved: bool) -> str:
    """The progress line of one step; a run with no valid answer yet says so."""
    best = "no valid answer yet" if row.get("best_reward") is None else f"best {row['best_reward']:.5g}"
    return (f"{best} mean {row['reward_mean']:.4g} valid {row['valid_fraction']:.0%}"
            + (" [green]new best[/]" if improved else ""))


def _rollout_outcomes(trainer: Any, top: int = 2) -> tuple[int, list[tuple[str, int]]]:
    """How many rollouts were valid, and the most common errors of the others."""
    rollouts = trainer.run_dir.read(trainer.run_dir.rollouts_file)
    errors = Counter(" ".join((row.get("error") or "no message").split())[:120]
                     for row in rollouts if not row.get("valid"))
    return sum(1 for row in rollouts if row.get("valid")), errors.most_common(top)


def print_summary(trainer: Any, best: Any) -> None:
    """What the run found, in the problem's metric beside the reward the plots show."""
    from ttd_envs.core.problem import record_reward

    problem, run = trainer.problem, trainer.run_dir.path
    found = best is not None and best.reward is not None and not best.is_initial
    table = Table(title=f"{escape(trainer.config.env)}: after {trainer.samples:,} samples", show_header=False,
                  title_justify="left")
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    if not found:
        valid, errors = _rollout_outcomes(trainer)
        table.add_row("result", "no answer beat the initial state" if valid else
                      f"no valid answer in {trainer.samples:,} samples")
        for error, count in errors:
            table.add_row(f"error x{count}", escape(error))
    if best is not None and best.reward is not None:
        label = "best reward" if found else "initial reward"
        table.add_row(label, f"{best.reward:.10g} (the plots show this)")
    if best is not None and best.score is not None:
        table.add_row("its score", f"{best.score:.10g} (the problem's own metric)")
    if problem.record is not None:
        table.add_row("record (score)", escape(problem.record.describe()))
        if (target := record_reward(problem)) is not None:
            table.add_row("record (reward)", f"{target:.10g} (the line in best_so_far.png)")
        if found and best.score is not None:
            gap = best.score - problem.record.score
            beaten = gap > 0 if problem.record.higher_is_better else gap < 0
            verdict, certificate = write_certificate(trainer, best) if beaten else (None, "")
            table.add_row("gap to record", f"{gap:+.6g}" + (
                "  [green]a tie with the record (within the table's tie tolerance)[/]" if verdict == "tie" else
                "  [bold green]record beaten[/]" if beaten else "  [green]record matched[/]" if gap == 0 else ""))
            if beaten:
                table.add_row("certificate", escape(certificate))
    if found and isinstance(best.construction, str) and len(best.construction) <= 200:
        table.add_row("construction", escape(best.construction))
    from ttd_agent.classic_search import same_budget_rows  # classic search at the run's budget (LABS)

    for name, value in same_budget_rows(problem, trainer.samples, trainer.initial_states, trainer.config.seed):
        table.add_row(name, escape(value))
    from ttd_agent.policy.base import usage_summary  # tokens, and a server's retried and failed requests

    for name, value in usage_summary(trainer.run_dir.read(trainer.run_dir.metrics_file)):
        table.add_row(name, value)
    table.add_row("run dir", escape(str(run)))
    table.add_row("best state", escape(f"ttd-agent best {run}"))
    table.add_row("plots", escape(str(run / "plots")))
    console.print(table)


def write_certificate(trainer: Any, best: Any) -> tuple[str | None, str]:
    """Certify a best state that beats the record as a float (ttd_envs.certificates): (its verdict
    from the exact score, or None when it cannot be certified; the summary's line about it)."""
    from ttd_envs import certificates

    try:
        certificate = certificates.certify_state(trainer.config.env, trainer.problem, best.construction,
                                                 trainer.config.env_kwargs)
    except (certificates.CertificateError, ValueError, KeyError) as exc:
        return None, f"none: {exc}"
    path = certificates.write(certificate, trainer.run_dir.path / "certificate.json")
    return certificate["verdict"], (
        f"{certificate['verdict']} (score in [{certificate['score']['lower']}, {certificate['score']['upper']}], "
        f"tie tolerance {certificate['tie_tolerance']:g}); {path}; re-check: python -m ttd_envs.verify "
        f"{trainer.config.env} {path}")


TTRL_RESUME_FLAGS = frozenset({"steps", "run_dir", "resume", "method", "config"})
"""What `--resume` of a TTRL run takes from the command line; the rest comes from its config.json."""


def train_ttrl(args: argparse.Namespace, given: set[str]) -> int:
    from ttd_agent.ttrl_trainer import cli_main

    refused = sorted(given - TTRL_RESUME_FLAGS) if args.resume else []
    if refused:
        flags = ", ".join("--" + name.replace("_", "-") for name in refused)
        raise ValueError(f"--resume of a TTRL run continues its saved configuration and takes only --steps; "
                         f"drop {flags}, or start a new run in another --run-dir")
    return cli_main(args, console, _progress)


# -- envs and best ----------------------------------------------------------------------------------
def list_envs() -> int:
    """One entry per id: the id and who can attempt it, then the summary and the record, indented."""
    from ttd_envs.registration import ENVS, describe_entry

    def wrapped(text: str) -> str:
        return escape(textwrap.fill(text, width=console.width, initial_indent="    ", subsequent_indent="      "))

    for entry in ENVS:
        info = describe_entry(entry)
        console.print(f"[bold]{entry.env_id}[/]  (policy: {info['policy']})", highlight=False)
        console.print(wrapped(info["summary"]), highlight=False)
        console.print(wrapped(f"record: {info['record']}"), highlight=False)
    console.print(textwrap.fill("policy llm: answers are programs, pass --model (or --model tiny for a "
                                "plumbing check); embedded: the built-in policy trains on a CPU; vote: "
                                "TTRL, with --method ttrl.", width=console.width), highlight=False)
    return 0


def show_best(run_dir: str) -> int:
    """The best state of a discovery run. The program and construction are written raw, never
    wrapped, so they can be copied or redirected (`best_code.txt` holds the same program)."""
    from ttd_agent.rundir import RunDir

    run = RunDir(run_dir)
    best = run.best()
    if best is None:
        if run.config_file.exists() and "dataset" in run.config() and "votes" in run.config():
            raise ValueError(f"{run_dir} is a TTRL run: it keeps no best state; its accuracy is in "
                             f"{run.metrics_file} and {run.plots}")
        raise FileNotFoundError(f"{run.best_file} does not exist: is {run_dir} a ttd-agent run directory?")
    state = best["state"]
    console.print(f"[bold]{escape(str(best['env']))}[/]: best after {best['samples']} samples (step {best['step']})",
                  highlight=False)
    if state.get("reward") is None:
        console.print("no valid answer yet: this is the initial state", highlight=False)
    elif state.get("is_initial"):
        console.print("nothing has beaten the initial state yet: this is it", highlight=False)
    console.print(f"reward {state.get('reward')!r}   score {state.get('score')!r}   state id {state.get('id')}",
                  highlight=False)
    if state.get("code"):
        code_file = run.path / "best_code.txt"
        where = f" (also in {code_file})" if code_file.exists() else ""
        console.print(f"code{escape(where)}:", highlight=False, soft_wrap=True)
        _raw(state["code"])
    construction = state.get("construction")
    if construction is not None:
        text = construction if isinstance(construction, str) else json.dumps(construction)  # a LABS sequence unquoted
        console.print("construction:", highlight=False)
        _raw(text if len(text) <= 2000 else text[:2000] + f" ... ({len(text)} chars; all in {run.best_file})")
    return 0


# -- view (ttd_agent/view/) -----------------------------------------------------------------------
def add_view_parser(sub: Any) -> None:
    view = sub.add_parser("view", help="a live page of a run: its search tree, programs, steps and cost",
                          formatter_class=_HelpFormatter)
    view.add_argument("run_dir", help="a run directory, finished or still training (what `ttd-agent train` wrote)")
    view.add_argument("--port", type=int, default=8000, metavar="N", help="port on 127.0.0.1; 0 picks a free one")
    view.add_argument("--html", metavar="FILE", help="write the page as one self-contained file instead of serving it")
    for flag, what in (("--usd-per-m-input", "US$ per million input tokens"),
                       ("--usd-per-m-output", "US$ per million output tokens"), ("--usd-per-gpu-hour", "US$ per GPU-hour")):
        view.add_argument(flag, type=float, metavar="X", help=f"{what}, for the cost section")


def view_run(args: argparse.Namespace) -> int:
    """Serve the run's page until Ctrl-C (first line: its address), or write it with --html."""
    import socket

    from ttd_agent.view.page import build_page, plotly_js
    from ttd_agent.view.payload import Prices, RunView
    from ttd_agent.view.reader import RunFiles
    from ttd_agent.view.server import ViewServer

    view = RunView(RunFiles(args.run_dir), Prices(args.usd_per_m_input, args.usd_per_m_output, args.usd_per_gpu_hour),
                   draw_inline=bool(args.html))  # an export waits for a program's drawing (AHC) to be made
    if args.html:
        try:
            view.refresh()
            Path(args.html).write_text(build_page(view.payload()), encoding="utf-8")
        finally:
            view.close()
        console.print(f"wrote {escape(args.html)} (self-contained: opens without a network)", highlight=False)
        return 0
    plotly_js()  # fails now, in one line, when Plotly is missing
    server = ViewServer(view, args.port)
    port = server.server_address[1]
    print(server.url, flush=True)
    console.print(f"from another machine: ssh -L {port}:127.0.0.1:{port} {socket.gethostname()}, then open "
                  f"http://127.0.0.1:{port}/ there; Ctrl-C stops", highlight=False, soft_wrap=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
        view.close()
    return 0


def _raw(text: str) -> None:
    """Text written as it is: no wrapping at the terminal width, no markup, no colour."""
    console.file.write(text if text.endswith("\n") else text + "\n")
    console.file.flush()


# -- errors ----------------------------------------------------------------------------------------
def _run_path(args: argparse.Namespace) -> Path | None:
    """The run directory a train command writes (None where the CLI cannot tell before it starts)."""
    if args.command != "train":
        return None
    if args.run_dir:
        return Path(args.run_dir)
    if args.method == "ttrl":
        from ttd_agent.ttrl_trainer import default_run_dir as ttrl_run_dir

        return Path(ttrl_run_dir(dict(args.env_arg).get("dataset", "aime24"), args.seed))
    return Path(default_run_dir(args.env, args.seed, dict(args.env_arg))) if args.env else None


def interrupt_advice(run_path: Path | None, method: str = "discover") -> str:
    """What to do after Ctrl-C, true at any moment: before the run directory holds a run, rerun
    the command as it was; after, resume it (and here is the best found so far)."""
    from ttd_agent.rundir import RunDir

    if run_path is None or not (run_path / "config.json").exists():
        return "interrupted during set-up, before anything was saved: rerun the same command (without --resume)"
    ttrl = " --method ttrl" if method == "ttrl" else ""
    resume = f"ttd-agent train{ttrl} --run-dir {shlex.quote(str(run_path))} --resume"
    if method == "ttrl":  # a TTRL run keeps no best state; its accuracy is in metrics.jsonl
        return f"interrupted: continue with: {resume}"
    try:
        best = RunDir(run_path).best()
    except (OSError, ValueError):
        best = None
    state = (best or {}).get("state") or {}
    if state.get("reward") is None:
        found = "no valid answer yet"
    else:
        score = f", score {state['score']:.10g}" if state.get("score") is not None else ""
        found = f"best so far: reward {state['reward']:.10g}{score} (ttd-agent best {shlex.quote(str(run_path))})"
    return f"interrupted: {found}; continue with: {resume}"


def error_line(error: BaseException) -> str:
    """One line that says what was wrong and what to do."""
    if isinstance(error, OSError) and not isinstance(error, (FileNotFoundError, FileExistsError)) \
            and error.errno is not None:
        where = f"{error.filename}: " if error.filename else ""
        if error.errno == errno.ENOSPC:
            return f"{where}the disk is full; free some space (or pass another --run-dir) and continue with --resume"
        if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return f"{where}cannot write there ({error.strerror}); pass a writable --run-dir"
        return f"{where}{error.strerror}"
    message = error.args[0] if isinstance(error, KeyError) and error.args else error  # str(KeyError) adds quotes
    text = " ".join(str(message).split())
    if isinstance(error, (ValueError, KeyError, OSError, ImportError, TypeError)):
        return text or type(error).__name__
    return f"{type(error).__name__}: {text} (an unexpected error: rerun with --debug and report the traceback)"


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")  # their deprecations, not ours
    logging.getLogger("huggingface_hub").setLevel(logging.ERROR)  # retries and fallbacks: our error says it once
    debug = "--debug" in (sys.argv[1:] if argv is None else argv)
    if os.getcwd() not in sys.path:  # like `python -m`: --env package.module:Class from the current directory
        sys.path.insert(0, os.getcwd())
    run_path, method = None, "discover"
    try:
        args, given = parse(argv)
        run_path, method = _run_path(args), getattr(args, "method", "discover")
        if args.command == "envs":
            return list_envs()
        if args.command == "best":
            return show_best(args.run_dir)
        if args.command == "view":
            return view_run(args)
        if args.method == "ttrl":
            return train_ttrl(args, given)
        return train_discovery(args, given)
    except KeyboardInterrupt:
        console.print(escape(interrupt_advice(run_path, method)), highlight=False, soft_wrap=True)
        return 130
    except Exception as error:  # noqa: BLE001 - the CLI turns every error into one line
        if debug:
            raise
        console.print(f"[red]error:[/] {escape(error_line(error))}", highlight=False, soft_wrap=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())
