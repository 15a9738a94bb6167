"""AC1, AC2 and circle-packing scorers against the direct O(n^2) references of the tests, in one run.

Run from the repository root: `python -m benchmarks.math_scorers`. Fast = the env's own scoring
path (validation + FFT bound, or the vectorised packing check); direct = np.convolve plus the
textbook formulas, or the pairwise Python loop. Writes section `math_scorers` of docs/benchmarks.md.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import numpy as np

from benchmarks._report import markdown_table, write_section
from tests.test_autocorrelation import direct_ac1, direct_ac2
from tests.test_circle_packing import direct_packing_score, fast_packing_score
from ttd_envs.problems.autocorrelation import ac1_score, ac2_score
from ttd_envs.problems.circle_packing import CirclePacking26, CirclePacking32, load_circles

SIZES = (1_000, 30_000, 100_000)
TARGET_SPEEDUP_AT_1E5 = 300.0


def best_time(fn: Callable[[], object], min_total_s: float = 0.3, max_reps: int = 200) -> float:
    """Best wall time of repeated calls (at least one), stopping after `min_total_s` in total."""
    times: list[float] = []
    while not times or (len(times) < max_reps and sum(times) < min_total_s):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def paired_times(fast: Callable[[], object], direct: Callable[[], object], rounds: int) -> tuple[float, float]:
    """Best times of both, measured in alternating rounds so that both see the same machine load."""
    t_fast, t_direct = [], []
    for _ in range(rounds):
        t_direct.append(best_time(direct, max_reps=1 if rounds > 1 else 200))
        t_fast.append(best_time(fast))
    return min(t_fast), min(t_direct)


def fmt_s(seconds: float) -> str:
    return f"{seconds * 1e3:.3f} ms" if seconds < 1 else f"{seconds:.2f} s"


def main() -> None:
    load_before = os.getloadavg()[0]
    rng = np.random.default_rng(0)
    rows: list[list[object]] = []
    speedups: dict[str, float] = {}
    for name, fast, direct in (("AC1", ac1_score, direct_ac1), ("AC2", ac2_score, direct_ac2)):
        for n in SIZES:
            a = rng.random(n)
            t_fast, t_direct = paired_times(lambda: fast(a), lambda: direct(a), rounds=3 if n > 10_000 else 1)
            rel = abs(fast(a) - direct(a)) / abs(direct(a))
            speedups[f"{name} {n}"] = t_direct / t_fast
            rows.append([name, f"{n:,}", fmt_s(t_direct), fmt_s(t_fast), f"{t_direct / t_fast:,.0f}×", f"{rel:.1e}"])
            print(rows[-1], flush=True)
    for cls in (CirclePacking26, CirclePacking32):
        circles = load_circles(cls.record_file)
        centers, radii = circles[:, :2], circles[:, 2]
        t_fast, t_direct = paired_times(lambda: fast_packing_score(centers, radii),
                                        lambda: direct_packing_score(centers, radii), rounds=1)
        rel = abs(fast_packing_score(centers, radii) - direct_packing_score(centers, radii)) / cls.record.score
        rows.append([f"CP{cls.n} validity + Σr", f"{cls.n} circles", fmt_s(t_direct), fmt_s(t_fast),
                     f"{t_direct / t_fast:,.1f}×", f"{rel:.1e}"])
        print(rows[-1], flush=True)
    table = markdown_table(["scorer", "n", "direct O(n²) reference", "ours", "speed-up", "relative |Δscore|"], rows)
    worst = min(speedups[f"{p} {SIZES[-1]}"] for p in ("AC1", "AC2"))
    verdict = "met" if worst >= TARGET_SPEEDUP_AT_1E5 else "NOT met"
    notes = (f"Random heights in [0, 1). Times are the best of repeated calls; above n = 10,000 the "
             f"direct reference runs once in each of 3 rounds, alternating with the FFT scorer, so both see the "
             f"same load. Ours includes validation. Target ≥ {TARGET_SPEEDUP_AT_1E5:.0f}× at n = 100,000: "
             f"{verdict} (worst {worst:,.0f}×). Circle packing has fixed n, so its row compares the vectorised "
             "check with the pairwise Python loop on the shipped records; at n ≤ 32 both are far below a "
             f"millisecond. 1-minute load average {load_before:.1f} before the run, {os.getloadavg()[0]:.1f} after: "
             "on a shared machine the direct reference's time swings widely with load (at n = 100,000 we saw 1.2 s "
             "to 18 s across runs, so the speed-up ranged from about 150× to 1,800×); the FFT side stays at "
             "5–10 ms.")
    print(table)
    print(notes)
    write_section("math_scorers", table + "\n\n" + notes)


if __name__ == "__main__":
    main()
