"""Erdős C5 scorer vs the direct formula and an FFT floor; sandbox start-up vs a fresh interpreter.

Run: python -m benchmarks.erdos_and_sandbox   (writes its section of docs/benchmarks.md)
"""

from __future__ import annotations

import subprocess
import sys
import time

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
    for label, preload in (("sandbox, zygote preloads numpy", ("numpy",)),
                           ("sandbox, zygote preloads numpy + scipy (math envs)",
                            ("numpy", "scipy", "scipy.signal", "scipy.optimize"))):
        with Sandbox(preload=preload) as box:
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


def main() -> None:
    scorer = scorer_rows()
    sandbox = sandbox_rows()
    text = (
        "C5 scorer (`ttd_envs.problems.erdos.c5_bound`, one real FFT round trip plus prefix sums) against the "
        "direct `np.correlate` formula and against a bare numpy rfft+irfft at the same padded length. "
        "Best of several runs (one run for the direct formula at 10^5).\n\n"
        + markdown_table(["n", "np.correlate (ms)", "c5_bound (ms)", "rfft round trip (ms)",
                          "speed-up vs direct", "c5_bound / round trip"], scorer)
        + "\n\nSandbox overhead: a full `run_python` of a trivial numpy program (namespaces, private uid, "
          "tmpfs, result decoding) vs starting a fresh interpreter that imports numpy. "
          "Targets: p50 ≤ 20 ms and ≥ 10× less than a fresh interpreter.\n\n"
        + markdown_table(["what", "p50 (ms)", "p95 (ms)", "vs fresh"], sandbox)
    )
    print(text)
    write_section("erdos_sandbox", text)


if __name__ == "__main__":
    main()
