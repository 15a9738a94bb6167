"""What Ray costs on one machine: evaluations per second through the Ray executor vs the local
thread executor on the same 2 cores, and the AHC judge's 150 tests fanned out vs judged here.

A local Ray cluster of two 1-CPU nodes (two raylets, like two machines) is started by the script.
Both executors get 2 workers and are warmed up first (actors placed, sandboxes started), so the
tables measure steady-state dispatch, not start-up; the start-up is reported on its own. Each
workload alternates local and Ray rounds so both see the same load.

    python -m benchmarks.ray_overhead [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from benchmarks._report import markdown_table, write_section
from ttd_agent.executor import Executor
from ttd_agent.ray_executor import judge_across_cluster
from ttd_envs.core.state import State
from ttd_envs.registration import make_problem


def packing_program(work_s: float) -> str:
    """A valid circle packing that first burns `work_s` seconds of CPU (0: returns at once)."""
    return ("```python\nimport time\nimport numpy as np\n\ndef run_packing():\n"
            f"    end = time.process_time() + {work_s}\n"
            "    while time.process_time() < end:\n        pass\n"
            "    xs, ys = (np.arange(6) + 0.5) / 6, (np.arange(5) + 0.5) / 5\n"
            "    centers = np.array([(x, y) for y in ys for x in xs])[:26]\n"
            "    return centers, np.full(26, 1 / 12), 26 / 12\n```")


def labs_answers(count: int, n: int = 32) -> list[str]:
    rng = np.random.default_rng(0)
    return ["".join(rng.choice(["+", "-"], n)) for _ in range(count)]


def timed(run: Callable[[], object]) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def side_by_side(make: Callable[[str], object], jobs: list[tuple[str, State]], rounds: int) -> dict[str, float]:
    """Median wall seconds of evaluating `jobs` with each executor kind, rounds interleaved."""
    executors = {kind: make(kind) for kind in ("thread", "ray")}
    try:
        start_up = {kind: timed(lambda e=e: e.evaluate(jobs[:4])) for kind, e in executors.items()}  # warm
        times: dict[str, list[float]] = {kind: [] for kind in executors}
        for _ in range(rounds):
            for kind, executor in executors.items():
                results = []
                times[kind].append(timed(lambda e=executor: results.extend(e.evaluate(jobs))))
                assert all(r.valid for r in results), [r.error for r in results if not r.valid][:1]
    finally:
        for executor in executors.values():
            executor.close()
    return {**{kind: statistics.median(t) for kind, t in times.items()},
            **{f"start_{kind}": s for kind, s in start_up.items()}}


def evaluation_rows(rounds: int) -> list[list[object]]:
    labs = make_problem("ttd/LABS-v0", n=32)
    packing = make_problem("ttd/CirclePacking26-v0", budget_s=5, timeout_s=20)
    workloads = [
        ("LABS answer (no sandbox, ~20 µs)", labs, [(a, State()) for a in labs_answers(400)]),
        ("cheap program (sandboxed, returns at once)", packing, [(packing_program(0.0), State())] * 40),
        ("0.2 s program (sandboxed, 0.2 s CPU)", packing, [(packing_program(0.2), State())] * 20),
    ]
    rows = []
    for name, problem, jobs in workloads:
        t = side_by_side(lambda kind, p=problem: Executor(p, 2, 60.0, kind=kind), jobs, rounds)
        extra_ms = (t["ray"] - t["thread"]) / len(jobs) * 2 * 1e3  # per evaluation, per worker
        rows.append([name, len(jobs), f"{len(jobs) / t['thread']:.1f}", f"{len(jobs) / t['ray']:.1f}",
                     f"{t['thread'] / t['ray']:.2f}", f"{extra_ms:+.1f}",
                     f"{t['start_ray']:.1f}"])
    packing.close()
    return rows


def judge_rows(rounds: int, tests: int) -> list[list[object]]:
    problem = make_problem("ttd/AHC039-v0", num_tests=tests, workers=2)
    source = (Path(__file__).resolve().parents[1] / "ttd_envs/data/ahc/solutions/ahc039_rectangle.cpp").read_text()
    problem.judge_source(source)  # compile (cached) and start the local sandbox
    judge_across_cluster(problem, source)  # place the test tasks, start their sandboxes
    times: dict[str, list[float]] = {"local": [], "ray": []}
    for _ in range(rounds):
        local = problem.judge_source(source)
        times["local"].append(local.elapsed_s)
        spread = judge_across_cluster(problem, source)
        times["ray"].append(spread.elapsed_s)
        assert [r.score for r in spread.results] == [r.score for r in local.results]
    problem.close()
    local_s, ray_s = statistics.median(times["local"]), statistics.median(times["ray"])
    return [[f"AHC039 rectangle baseline, {tests} tests", f"{local_s:.2f}", f"{ray_s:.2f}", f"{local_s / ray_s:.2f}",
             f"{(ray_s - local_s) / tests * 2 * 1e3:+.1f}"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tests", type=int, default=150)
    parser.add_argument("--no-write", dest="write", action="store_false", help="print only; leave docs/ alone")
    args = parser.parse_args()
    import ray
    from ray.cluster_utils import Cluster

    load_before = os.getloadavg()[0]
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1}, connect=True)
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    try:
        evaluations = evaluation_rows(args.rounds)
        judging = judge_rows(args.rounds, args.tests)
    finally:
        ray.shutdown()
        cluster.shutdown()
    load_after = os.getloadavg()[0]
    text = "\n\n".join([
        markdown_table(["workload", "jobs", "local evals/s", "Ray evals/s", "Ray / local throughput",
                        "Ray extra ms per evaluation", "Ray start-up s"], evaluations),
        markdown_table(["judging", "local s", "Ray s", "Ray / local speed", "Ray extra ms per test"], judging),
        f"Two workers on each side; a local Ray cluster of two 1-CPU nodes on the same 2 cores; medians of "
        f"{args.rounds} interleaved rounds after a warm-up. \"Extra ms per evaluation\" is the wall-time "
        f"difference per job times the 2 workers: what each evaluation costs a worker on top of the local "
        f"executor. Start-up: the first 4 evaluations, actors placed and sandboxes started. 1-minute load "
        f"average {load_before:.1f} before, {load_after:.1f} after.",
    ])
    print(text)
    if args.write:
        write_section("ray_overhead", text)


if __name__ == "__main__":
    main()
