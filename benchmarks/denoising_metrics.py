"""Time the denoising metrics (MSE + Poisson of one prediction) against the straightforward
scanpy + sklearn computation OpenProblems runs, on synthetic-pbmc, in one run.

    python -m benchmarks.denoising_metrics
"""

from __future__ import annotations

import time

import numpy as np

from benchmarks._report import markdown_table, write_section
from ttd_envs.problems.denoising.datasets import load_split
from ttd_envs.problems.denoising.metrics import DenoisingMetrics, reference_metrics


def best_of(repeats: int, fn, *args) -> tuple[float, object]:  # noqa: ANN001 - any callable
    times, value = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        value = fn(*args)
        times.append(time.perf_counter() - start)
    return min(times), value


def main() -> None:
    # import what the reference uses first, so its timing holds the computation, not the imports
    import anndata  # noqa: F401
    import scanpy  # noqa: F401
    import sklearn.metrics  # noqa: F401

    split = load_split("synthetic-pbmc")
    prediction = split.train * np.random.default_rng(0).random(split.shape)
    start = time.perf_counter()
    metrics = DenoisingMetrics(split.train, split.test)
    setup_s = time.perf_counter() - start
    metrics.raw(prediction)  # compile or load the numba cache outside the timing
    fast_s, fast = best_of(5, metrics.raw, prediction)
    reference_s, reference = best_of(1, reference_metrics, prediction, split.train, split.test)
    difference = max(abs(a - b) / abs(b) for a, b in zip(fast, reference, strict=True))
    n, g = split.shape
    rows = [
        ["scanpy normalize_total + log1p, sklearn MSE, numpy Poisson (reference, 1 run)", f"{reference_s * 1e3:.0f}",
         "1.0x"],
        ["ttd fused numba pass over the prediction (best of 5)", f"{fast_s * 1e3:.1f}", f"{reference_s / fast_s:.1f}x"],
        ["ttd one-off setup per split (log-normalised test, controls)", f"{setup_s * 1e3:.0f}", "-"],
    ]
    table = markdown_table(["MSE + Poisson of one prediction", "ms", "speed-up"], rows)
    text = (f"synthetic-pbmc after the MCV split: {n} cells x {g} genes, {split.test.nnz} test non-zeros.\n\n"
            f"{table}\n\nLargest relative difference between the two (MSE, Poisson) pairs: {difference:.1e}.")
    print(text)
    write_section("denoising_metrics", text)


if __name__ == "__main__":
    main()
