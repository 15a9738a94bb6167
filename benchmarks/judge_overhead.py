"""C++ judge overhead: judge time minus the programs' own CPU time, over 150 AHC039 tests.

The program is our rectangle baseline plus a spin that burns a fixed amount of CPU time
(`std::clock`), so its cost is known. Overhead = (judge wall time x workers - sum of program CPU
seconds) / sum of program CPU seconds, with the binary already cached (compile excluded). The naive
reference runs the same binary with plain `subprocess.run` (no namespaces, no private uid, no
limits) and the same checker, in the same run. A second table compares the Numba polygon scorer
with a plain-Python one on the statement's sample.

    python -m benchmarks.judge_overhead [--tests 150] [--spin 0.25]
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time

import numpy as np

from benchmarks._report import markdown_table, write_section
from ttd_envs.problems.ahc import ahc039
from ttd_envs.problems.ahc.common import data_dir


def spinning_source(spin_s: float) -> str:
    """The baseline with a CPU-time spin of `spin_s` seconds added before it exits."""
    base = (data_dir("solutions") / "ahc039_rectangle.cpp").read_text()
    spin = f"    while (std::clock() < (std::clock_t)({spin_s} * CLOCKS_PER_SEC)) {{}}\n    return 0;\n}}\n"
    return base[:base.rstrip().rfind("return 0;")] + spin.lstrip()


def naive_run(problem: ahc039.AHC039, binary: str) -> tuple[float, float]:
    """Same tests, plain subprocess, same checker: (wall s, program CPU s from the OS)."""
    started = time.perf_counter()
    cpu = 0.0
    for test in problem.tests():
        before = _children_cpu()
        with open(test.input, "rb") as stdin:
            out = subprocess.run([binary], stdin=stdin, capture_output=True, check=True).stdout
        cpu += _children_cpu() - before
        problem.check(test, out)
    return time.perf_counter() - started, cpu


def _children_cpu() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def naive_inside(xs: np.ndarray, ys: np.ndarray, px: np.ndarray, py: np.ndarray) -> np.ndarray:
    """Plain-Python version of ahc039.inside_mask (same rule), the reference for the speed ratio."""
    m, out = len(xs), []
    for x, y in zip(px.tolist(), py.tolist()):
        on, crossings = False, 0
        for i in range(m):
            k = (i + 1) % m
            if xs[i] == xs[k]:
                on |= x == xs[i] and min(ys[i], ys[k]) <= y <= max(ys[i], ys[k])
            else:
                lo, hi = min(xs[i], xs[k]), max(xs[i], xs[k])
                on |= y == ys[i] and lo <= x <= hi
                crossings += ys[i] > y and lo <= x < hi
        out.append(on or crossings % 2 == 1)
    return np.array(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tests", type=int, default=150)
    parser.add_argument("--spin", type=float, default=0.25, help="CPU seconds each run burns")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as cache:
        for label, source in (("baseline (~10 ms CPU)", (data_dir("solutions") / "ahc039_rectangle.cpp").read_text()),
                              (f"baseline + {args.spin:g} s CPU spin", spinning_source(args.spin))):
            problem = ahc039.AHC039(num_tests=args.tests, workers=1, cache_dir=cache)
            binary = problem.judge.compile(source).binary
            problem.judge_source(source)  # warm: numba, page cache, checker inputs
            for workers in (1, 2):
                problem.workers = workers
                report = problem.judge_source(source)
                assert report.accepted, report.describe_failure()
                cpu = sum(r.cpu_s for r in report.results)
                overhead = report.elapsed_s * workers - cpu
                rows.append([label, "sandbox judge", workers, f"{report.elapsed_s:.2f}", f"{cpu:.2f}",
                             f"{1000 * overhead / len(report.results):.1f}", f"{100 * overhead / cpu:.1f}%"])
            wall, cpu = naive_run(problem, str(binary))
            rows.append([label, "naive: subprocess.run, no sandbox", 1, f"{wall:.2f}", f"{cpu:.2f}",
                         f"{1000 * (wall - cpu) / args.tests:.1f}", f"{100 * (wall - cpu) / cpu:.1f}%"])
            problem.close()
    table = markdown_table(["program", "runner", "workers", "judge wall s", "program CPU s",
                            "overhead ms/test", "overhead / CPU"], rows)

    points, n = ahc039.parse_fish((data_dir("ahc039") / "inputs" / "0000.txt").read_bytes())
    xs, ys = ahc039.parse_polygons((data_dir("ahc039") / "example_output.txt").read_bytes())
    ahc039.inside_mask(xs, ys, points[:, 0], points[:, 1])
    timings = []
    for name, fn in (("numba inside_mask", ahc039.inside_mask), ("plain Python", naive_inside)):
        started = time.perf_counter()
        result = fn(xs, ys, points[:, 0], points[:, 1])
        timings.append((name, time.perf_counter() - started, result))
    assert (timings[0][2] == timings[1][2]).all()
    scorer = markdown_table(["point-in-polygon, 10,000 fish, sample polygon", "seconds", "speed-up"],
                            [[name, f"{t:.5f}", f"{timings[1][1] / t:.0f}x"] for name, t, _ in timings])
    text = (f"{args.tests} AHC039 tests, binary cached. Overhead = judge wall x workers - program CPU "
            "(sandbox start, namespaces, piping, the Python checker).\n\n" + table + "\n\n" + scorer)
    write_section("judge_overhead", text)
    print(text)


if __name__ == "__main__":
    main()
