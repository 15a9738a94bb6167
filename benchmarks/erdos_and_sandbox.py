"""Erdős C5 scorer vs the direct formula and an FFT floor; sandbox start-up vs a fresh interpreter.

Run: python -m benchmarks.erdos_and_sandbox   (writes its section of docs/benchmarks.md)
     python -m benchmarks.erdos_and_sandbox --before /tmp/old   (only the sandbox's before/after:
     /tmp/old is an older checkout, e.g. `git worktree add /tmp/old <commit>`; both run in
     alternating batches, each in its own process, so they share the machine's load)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from scipy.fft import next_fast_len

from benchmarks._report import markdown_table, write_section
from ttd_envs.core.sandbox import Sandbox
from ttd_envs.problems.erdos import c5_bound


def best_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def direct_c5(h: np.ndarray) -> float:
    return float(np.max(np.correlate(h, 1.0 - h, "full")) * 2.0 / h.size)


def fft_round_trip(h: np.ndarray) -> np.ndarray:
    """The practical floor: one numpy rfft + irfft at the padded length a linear correlation needs."""
    size = next_fast_len(2 * h.size - 1, real=True)
    return np.fft.irfft(np.fft.rfft(h, size), size)


def scorer_rows() -> list[list[object]]:
    rng = np.random.default_rng(0)
    rows = []
    for n in (1_000, 10_000, 100_000):
        h = rng.random(n)
        assert abs(c5_bound(h) - direct_c5(h)) <= 1e-12 * direct_c5(h)
        fast = best_time(lambda: c5_bound(h), 50)
        floor = best_time(lambda: fft_round_trip(h), 50)
        direct = best_time(lambda: direct_c5(h), 1 if n == 100_000 else 5)
        rows.append([f"{n:,}", f"{direct * 1e3:.2f}", f"{fast * 1e3:.3f}", f"{floor * 1e3:.3f}",
                     f"{direct / fast:,.0f}×", f"{fast / floor:.2f}×"])
    return rows


def sandbox_rows(runs: int = 200) -> list[list[object]]:
    program = "def run():\n    return np.arange(3) * 2.0\n"
    fresh = []
    for _ in range(30):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import numpy"], check=True)
        fresh.append(time.perf_counter() - started)
    fresh_p50, fresh_p95 = np.percentile(fresh, [50, 95])
    rows = [["fresh `python -c \"import numpy\"`", f"{fresh_p50 * 1e3:.1f}", f"{fresh_p95 * 1e3:.1f}", "1×"]]
    for label, preload, cgroups in (
            ("sandbox, zygote preloads numpy", ("numpy",), None),
            ("sandbox, numpy, init accounting instead of cgroups", ("numpy",), False),
            ("sandbox, zygote preloads numpy + scipy (math envs)", ("numpy", "scipy", "scipy.signal", "scipy.optimize"),
             None)):
        with Sandbox(preload=preload, cgroups=cgroups) as box:
            box.run_python(program, "run")
            times = []
            for _ in range(runs):
                started = time.perf_counter()
                result = box.run_python(program, "run")
                times.append(time.perf_counter() - started)
                assert result.ok
        p50, p95 = np.percentile(times, [50, 95])
        rows.append([label, f"{p50 * 1e3:.1f}", f"{p95 * 1e3:.1f}", f"{fresh_p50 / p50:.1f}× less"])
    return rows


_TIMED_RUNS = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
from ttd_envs.core.sandbox import Sandbox
program = "def run():\n    return np.arange(3) * 2.0\n"
with Sandbox(preload=("numpy",), **json.loads(sys.argv[2])) as box:
    for _ in range(5):
        box.run_python(program, "run")
    times = []
    for _ in range(int(sys.argv[3])):
        started = time.perf_counter()
        assert box.run_python(program, "run").ok
        times.append(time.perf_counter() - started)
print(json.dumps(times))
"""


def before_after_rows(before: str, rounds: int = 6, runs: int = 40) -> list[list[object]]:
    """p50/p95 of a trivial run for an older checkout and this one, in alternating batches."""
    here = str(Path(__file__).resolve().parents[1])
    variants = {"before (`" + before + "`)": (before, {}), "after, cgroups": (here, {}),
                "after, init accounting (as without root)": (here, {"cgroups": False})}
    times: dict[str, list[float]] = {label: [] for label in variants}
    for _ in range(rounds):
        for label, (root, kwargs) in variants.items():
            out = subprocess.run([sys.executable, "-c", _TIMED_RUNS, root, json.dumps(kwargs), str(runs)], cwd="/",
                                 capture_output=True, text=True, check=True, env={**os.environ, "PYTHONPATH": root})
            times[label] += json.loads(out.stdout)
    base = float(np.percentile(times[next(iter(variants))], 50))
    rows = []
    for label, values in times.items():
        p50, p95 = np.percentile(values, [50, 95])
        rows.append([label, f"{p50 * 1e3:.1f}", f"{p95 * 1e3:.1f}", f"{p50 / base:.2f}×"])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", help="an older checkout to measure the sandbox against, side by side")
    args = parser.parse_args()
    if args.before:
        load = os.getloadavg()[0]
        rows = before_after_rows(args.before)
        text = (f"Sandbox overhead before and after issue 11 (closed view, whole-run cgroups or init accounting, "
                f"seccomp, no capabilities): a trivial numpy `run_python`, 6 alternating batches of 40 runs each, "
                f"each variant in its own process. Load average when started: {load:.1f} (other jobs shared "
                "the machine; compare the ratios).\n\n"
                + markdown_table(["sandbox", "p50 (ms)", "p95 (ms)", "p50 vs before"], rows))
        print(text)
        write_section("sandbox_before_after", text)
        return
    scorer = scorer_rows()
    sandbox = sandbox_rows()
    text = (
        "C5 scorer (`ttd_envs.problems.erdos.c5_bound`, one real FFT round trip plus prefix sums) against the "
        "direct `np.correlate` formula and against a bare numpy rfft+irfft at the same padded length. "
        "Best of several runs (one run for the direct formula at 10^5).\n\n"
        + markdown_table(["n", "np.correlate (ms)", "c5_bound (ms)", "rfft round trip (ms)",
                          "speed-up vs direct", "c5_bound / round trip"], scorer)
        + "\n\nSandbox overhead: a full `run_python` of a trivial numpy program (namespaces, closed view, "
          "whole-run limits, seccomp, result decoding) vs starting a fresh interpreter that imports numpy. "
          "Targets: p50 ≤ 20 ms and ≥ 10× less than a fresh interpreter.\n\n"
        + markdown_table(["what", "p50 (ms)", "p95 (ms)", "vs fresh"], sandbox)
    )
    print(text)
    write_section("erdos_sandbox", text)


if __name__ == "__main__":
    main()
