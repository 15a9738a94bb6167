"""What judging from outside the program's process costs per timed kernel call, on the CPU path
(Triton's interpreter, TriMul N = 32), before and after, measured in one run: the in-process
harness of an earlier commit (`--before`, checked out into a temporary worktree) and the judge
of this tree, each in its own interpreter on the same program. Per timed call: the program's
own clock around its call, the time the reward is computed from (the old harness's clock, or the
judge's from `go` to the digest's arrival minus the calibrated digest cost), and the
evaluation's wall time (from two plans that differ only in their number of repetitions), each
the median of three rounds.

    python -m benchmarks.kernel_judge_cost [--reps 10] [--before cbfa20e] [--no-write]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BEFORE = "cbfa20e"  # the last commit whose harness checked and timed inside the program's process
ROUNDS = 3  # each quantity is the median of this many rounds: one load spike moves a single round

SELF_TIMED = '''
_honest = custom_kernel
def custom_kernel(data):
    started = time.perf_counter_ns()
    out = _honest(data)
    print("call_ns", time.perf_counter_ns() - started)
    return out
'''


def evaluate(problem, program: str, reps: int) -> tuple[float, dict, list[int]]:
    """One plan of `reps` timed calls on TriMul's first case: (wall s, benchmark row, program's call ns)."""
    from ttd_envs.problems.kernels.problem import HarnessPlan
    from ttd_envs.problems.kernels.timing import TimingRule
    spec = problem.plan().tests[0]
    rule = TimingRule(max_reps=reps, min_reps=reps, warmup_s=0.0, warmup_max_reps=1)
    started = time.perf_counter()
    result = problem.run_plan(program, HarnessPlan(tests=[], benchmarks=[spec], rule=rule, device="cpu"))
    wall = time.perf_counter() - started
    if result.value["error"]:
        raise RuntimeError(result.value["error"])
    calls = [int(line.split()[1]) for line in result.stdout.splitlines() if line.startswith("call_ns")]
    return wall, result.value["benchmarks"][0], calls[-reps:]


def measure(reps: int) -> dict[str, float]:
    """This interpreter's ttd_envs (whichever tree PYTHONPATH names), in ms per timed call."""
    sys.path.insert(0, str(ROOT / "tests"))
    from kernel_programs import HONEST
    from ttd_envs.problems.kernels.trimul import TriMul
    program = HONEST + SELF_TIMED
    problem = TriMul(timing=False)
    rounds = []
    try:
        evaluate(problem, program, 1)  # the zygote and the interpreter's caches
        for _ in range(ROUNDS):
            short_wall, _, _ = evaluate(problem, program, 1)
            long_wall, row, calls = evaluate(problem, program, 1 + reps)
            rounds.append({"program_ms": statistics.mean(calls) / 1e6, "timed_ms": row["mean_ns"] / 1e6,
                           "digest_ms": row.get("overhead_ns", 0) / 1e6,
                           "wall_ms": (long_wall - short_wall) / reps * 1e3})
    finally:
        problem.close()
    return {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}


def measure_tree(tree: Path, reps: int) -> dict[str, float]:
    """`measure` in a fresh interpreter that imports ttd_envs from `tree`."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--measure", "--reps", str(reps)],
                         env=env, cwd=tempfile.gettempdir(), capture_output=True, text=True, check=True)
    return json.loads(out.stdout.splitlines()[-1])


def before_and_after(revision: str, reps: int) -> tuple[dict[str, float], dict[str, float]]:
    with tempfile.TemporaryDirectory() as scratch:
        old_tree = Path(scratch) / "before"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(old_tree), revision],
                       check=True)
        try:
            before = measure_tree(old_tree, reps)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old_tree)], check=True)
    return before, measure_tree(ROOT, reps)


def report(before: dict[str, float], after: dict[str, float], revision: str, reps: int) -> str:
    from benchmarks._report import markdown_table

    def cells(row: dict[str, float], key: str) -> list[str]:
        return [f"{row[key]:.2f}", f"{row[key] / row['program_ms']:.2f}"]

    table = markdown_table(
        ["per timed call (TriMul N = 32, CPU, interpreter)", f"before ({revision}) ms", "÷ own",
         "after ms", "÷ own"],
        [["program's own clock around custom_kernel", *cells(before, "program_ms"), *cells(after, "program_ms")],
         ["time the reward is computed from (before: the harness in the program's process; after: the judge, "
          "go → digest answer, minus its digest cost)", *cells(before, "timed_ms"), *cells(after, "timed_ms")],
         ["judge's digest cost, subtracted", "—", "—", *cells(after, "digest_ms")],
         ["evaluation wall time per timed call", *cells(before, "wall_ms"), *cells(after, "wall_ms")]])
    return (table + f"\n\nOne run; each value the median of {ROUNDS} rounds of {reps} extra timed calls; load average {os.getloadavg()[0]:.1f} "
            f"(shared machine: compare the ratios). Wall time per timed call, after ÷ before: "
            f"{after['wall_ms'] / before['wall_ms']:.2f}. The judge's time exceeds the program's own by the "
            "socket round trips and the part of the digest its calibration does not cancel; the wall time adds "
            "the judge's own reference and inputs, which the old harness computed in the sandbox.")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--before", default=BEFORE, help="the commit to compare against (default %(default)s)")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)  # one side, as JSON
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.reps)))
        return
    sys.path.insert(0, str(ROOT))
    from benchmarks._report import write_section
    before, after = before_and_after(args.before, args.reps)
    text = report(before, after, args.before, args.reps)
    print(text)
    if not args.no_write:
        write_section("kernel_judge_cost", "## Kernel judge cost per call (`python -m benchmarks.kernel_judge_cost`)\n\n"
                      + text)


if __name__ == "__main__":
    main()
