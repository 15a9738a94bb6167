"""What judging from outside the program's process costs per timed kernel call, on the CPU path
(Triton's interpreter, TriMul N = 32): the program's own clock around its call (what the old
in-process harness timed) against the judge's time for the same calls (from `go` to the digest's
arrival, minus the calibrated digest cost), and the evaluation's wall time per timed call (the
judge's reference, the harness's inputs, the digest, the round trips), from two plans that differ
only in their number of repetitions, measured in one run.

    python -m benchmarks.kernel_judge_cost [--reps 10] [--no-write]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

from benchmarks._report import markdown_table, write_section
from ttd_envs.problems.kernels.problem import HarnessPlan
from ttd_envs.problems.kernels.timing import TimingRule
from ttd_envs.problems.kernels.trimul import TriMul

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
from kernel_programs import HONEST  # noqa: E402

SELF_TIMED = HONEST + '''
_honest = custom_kernel
def custom_kernel(data):
    started = time.perf_counter_ns()
    out = _honest(data)
    print("call_ns", time.perf_counter_ns() - started)
    return out
'''


def evaluate(problem: TriMul, reps: int) -> tuple[float, dict, list[int]]:
    spec = problem.plan().tests[0]
    rule = TimingRule(max_reps=reps, min_reps=reps, warmup_s=0.0, warmup_max_reps=1)
    started = time.perf_counter()
    result = problem.run_plan(SELF_TIMED, HarnessPlan(tests=[], benchmarks=[spec], rule=rule, device="cpu"))
    wall = time.perf_counter() - started
    report = result.value
    if report["error"]:
        raise RuntimeError(report["error"])
    calls = [int(line.split()[1]) for line in result.stdout.splitlines() if line.startswith("call_ns")]
    return wall, report, calls[-reps:]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    problem = TriMul(timing=False)
    try:
        evaluate(problem, 1)  # the zygote and the interpreter's caches
        short_wall, _, _ = evaluate(problem, 1)
        long_wall, report, calls = evaluate(problem, 1 + args.reps)
    finally:
        problem.close()
    row = report["benchmarks"][0]
    program_ms = statistics.mean(calls) / 1e6
    judged_ms = row["mean_ns"] / 1e6
    per_call_ms = (long_wall - short_wall) / args.reps * 1e3
    load = os.getloadavg()[0]
    table = markdown_table(
        ["per timed call (TriMul N = 32, CPU, interpreter)", "ms", "÷ program's own time"],
        [["program's own clock around custom_kernel (what the in-process harness timed)", f"{program_ms:.2f}", "1.00"],
         ["judge's time (go → digest answer, minus its digest cost)", f"{judged_ms:.2f}",
          f"{judged_ms / program_ms:.2f}"],
         ["judge's digest cost, subtracted", f"{row['overhead_ns'] / 1e6:.2f}", f"{row['overhead_ns'] / 1e6 / program_ms:.2f}"],
         ["evaluation wall time per timed call", f"{per_call_ms:.2f}", f"{per_call_ms / program_ms:.2f}"]])
    text = (table + f"\n\n{args.reps} extra timed calls; load average {load:.1f} (shared machine: compare the ratios). "
            "The judge's time exceeds the program's own by the socket round trips and the part of the digest the "
            "calibration does not cancel; the wall time adds the judge's reference and the harness's inputs.")
    print(text)
    if not args.no_write:
        write_section("kernel_judge_cost", "## Kernel judge cost per call (`python -m benchmarks.kernel_judge_cost`)\n\n"
                      + text)


if __name__ == "__main__":
    main()
