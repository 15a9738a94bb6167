"""Judge your own C++ program on an AHC env, as the env would:

    python -m ttd_envs.judge ttd/AHC039-v0 solution.cpp [--tests 20] [--workers 2] [--seeds 0,5,7]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from ttd_envs.core.arguments import OneLineParser
from ttd_envs.core.judge import Verdict
from ttd_envs.registration import ENVS, make_problem

_COLOURS = {Verdict.AC: "green", Verdict.SKIPPED: "dim"}


CPP_ENVS = tuple(entry.env_id for entry in ENVS if entry.env_id.startswith("ttd/AHC"))
"""The envs whose answers are C++ programs judged on test inputs."""


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m ttd_envs.judge", description=__doc__.splitlines()[0])
    parser.add_argument("env_id", help=" or ".join(CPP_ENVS))
    parser.add_argument("source", type=Path, help="the C++ file to judge")
    parser.add_argument("--tests", type=int, default=150, help="judge seeds 0..N-1 (default 150)")
    parser.add_argument("--seeds", help="comma-separated seeds instead of --tests")
    parser.add_argument("--workers", type=int, default=None, help="tests in parallel (default: CPU count)")
    parser.add_argument("--cache-dir", default=None, help="where compiled binaries are cached")
    parser.add_argument("--keep-going", action="store_true", help="run every test even after a failure")
    args = parser.parse_args(argv)
    console = Console()
    if not args.source.is_file():
        parser.error(f"no such file: {args.source}")
    if args.env_id not in CPP_ENVS:
        parser.error(f"{args.env_id} is not a C++ problem: this judges {' or '.join(CPP_ENVS)} "
                     f"(python -m ttd_envs.verify scores a construction file)")
    try:
        seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else None
    except ValueError:
        parser.error(f"--seeds takes comma-separated integers, got {args.seeds!r}")
    if args.tests < 1 and seeds is None:
        parser.error(f"--tests must be >= 1, got {args.tests}")
    if args.workers is not None and args.workers < 1:
        parser.error(f"--workers must be >= 1, got {args.workers}")
    problem = make_problem(args.env_id, num_tests=args.tests, seeds=seeds, workers=args.workers,
                           cache_dir=args.cache_dir, stop_early=not args.keep_going)
    report = problem.judge_source(args.source.read_text())
    if report.compile_error is not None:
        console.print(f"[red]{report.compile_error}[/red]")
        return 1
    table = Table(title=f"{args.env_id}: {args.source.name}")
    for column in ("seed", "verdict", "score", "CPU s", "wall s", "peak RSS MiB", "message"):
        table.add_column(column, justify="left" if column in ("seed", "message") else "right")
    for r in report.results:
        colour = _COLOURS.get(r.verdict, "red")
        table.add_row(r.name, f"[{colour}]{r.verdict.value}[/{colour}]", "" if r.score is None else f"{r.score:.0f}",
                      f"{r.cpu_s:.3f}", f"{r.wall_s:.3f}", f"{r.max_rss_bytes / 2**20:.0f}", r.message)
    console.print(table)
    counts = ", ".join(f"{k} {v}" for k, v in sorted(report.counts.items()))
    console.print(f"verdicts: {counts}")
    console.print(f"total {report.total:.0f}, mean per test {report.mean:.2f}, "
                  f"reward {problem.reward_for(report.mean) if report.accepted else 0.0:.4f}"
                  f" (compile {'cached' if report.cached else f'{report.compile_s:.1f} s'}, judged in {report.elapsed_s:.1f} s)")
    contest = problem.contest_info(report)
    if contest:
        console.print(f"equivalent AtCoder placement (scaled to 150 tests): total {contest['contest_total_150']:.0f}, "
                      f"rank {contest['contest_rank']:g}, performance {contest['contest_performance']:.0f}")
    return 0 if report.accepted else 1


if __name__ == "__main__":
    sys.exit(main())
