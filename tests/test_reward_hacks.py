"""Reward a program did not earn: one test per hack found in the audit of every problem, each
now worth 0 (or, where the hack is bounded by design, held to its bound)."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator

import numpy as np
import pytest
import scipy.sparse as sp

from ttd_envs.answers import AnswerJudge, secret_points
from ttd_envs.core.program_problem import InvalidConstruction
from ttd_envs.core.state import State
from ttd_envs.problems.circle_packing import CirclePacking26, check_packing, load_circles
from ttd_envs.problems.erdos import ErdosOverlap


def fenced(code: str) -> str:
    return f"```python\n{textwrap.dedent(code)}\n```"


# -- denoising: the held-out half of the split ---------------------------------------------------
@pytest.fixture(scope="module")
def denoising() -> Iterator[object]:
    pytest.importorskip("scanpy")
    from ttd_envs.problems.denoising import Denoising

    problem = Denoising(dataset="synthetic-unit", cpus=1, budget_s=60)
    yield problem
    problem.close()


REBUILD_BY_IMPORT = """
    def denoise(X, **kwargs):
        from ttd_envs.problems.denoising.datasets import load_split
        return load_split("synthetic-unit", 0).test.toarray().astype(float)
"""

REBUILD_FROM_SOURCE = """
    import sys, types
    def denoise(X, **kwargs):
        root = list(sys.modules["ttd_envs"].__path__)[0]
        module = types.ModuleType("stolen")
        sys.modules["stolen"] = module
        exec(open(root + "/problems/denoising/datasets.py").read(), module.__dict__)
        return module.load_split("synthetic-unit", 0).test.toarray().astype(float)
"""


@pytest.mark.parametrize("code", [REBUILD_BY_IMPORT, REBUILD_FROM_SOURCE], ids=["import", "source"])
def test_denoising_program_cannot_rebuild_the_held_out_split(denoising, code: str) -> None:
    """The recorded hack: rebuild the MCV split from the package's own dataset module and return
    the test half (mse_norm 1.0 against a record of 0.43). The sandbox's view no longer holds the
    package, and the zygote imported nothing that could rebuild the split."""
    evaluation = denoising.evaluate(fenced(code), State(is_initial=True))
    assert evaluation.reward == 0.0 and not evaluation.valid, evaluation.details
    assert "ttd_envs" in evaluation.error


REBUILD_FROM_SCANPY = """
    import numpy as np
    import scanpy as sc
    import scipy.sparse as sp

    def denoise(X, **kwargs):
        adata = sc.datasets.pbmc68k_reduced()
        logged = adata.raw.X
        logged = logged.toarray() if sp.issparse(logged) else np.asarray(logged)
        totals = adata.obs["n_counts"].to_numpy(dtype=np.float64)
        full = np.rint(np.expm1(logged.astype(np.float64)) * totals[:, None] / 1e4)
        full = full[:, full.sum(axis=0) > 0]
        full = full[full.sum(axis=1) >= 2]
        columns, k = [], 0
        for j in range(full.shape[1]):
            if k < X.shape[1] and np.all(full[:, j] >= X[:, k]) and X[:, k].sum() >= 0.5 * full[:, j].sum():
                columns.append(j)
                k += 1
        return full[:, columns] - X
"""


@pytest.mark.slow
def test_denoising_program_cannot_rebuild_pbmc68k_from_scanpy() -> None:
    """Any split of public data is undone by test = full - train: this one scored 1.0 by reading
    the counts that scanpy itself ships."""
    pytest.importorskip("scanpy")
    from ttd_envs.problems.denoising import Denoising

    problem = Denoising(dataset="pbmc68k-reduced", cpus=1, budget_s=60)
    try:
        evaluation = problem.evaluate(fenced(REBUILD_FROM_SCANPY), State(is_initial=True))
    finally:
        problem.close()
    assert evaluation.reward == 0.0 and not evaluation.valid, evaluation.details


def test_denoising_zygote_preloads_nothing_that_can_regenerate_data(denoising) -> None:
    """Modules the zygote imported are inherited by every program: none of them may be the dataset
    generator, the split, the problem or the package data."""
    code = """
        import sys
        import numpy as np
        def denoise(X, **kwargs):
            loaded = sorted(m for m in sys.modules if m.startswith(("ttd_envs.problems", "ttd_envs.data")))
            assert not loaded, f"preloaded: {loaded}"
            return X
    """
    evaluation = denoising.evaluate(fenced(code), State(is_initial=True))
    assert "preloaded" not in (evaluation.error or ""), evaluation.error
    assert not any(m.startswith(("ttd_envs.problems", "ttd_envs.data")) for m in denoising.preload)


def test_denoising_split_with_an_inverted_poisson_gate_is_refused_at_load() -> None:
    """Where perfect denoising has a higher Poisson loss than no denoising, the gate accepts noise and
    rejects near-perfect answers; such a split is refused with the reason."""
    pytest.importorskip("scanpy")
    from ttd_envs.problems.denoising.metrics import DenoisingMetrics
    from ttd_envs.problems.denoising.problem import refuse_inverted_gate

    train = np.array([[1, 20], [1, 20]])
    test = sp.csr_matrix(np.array([[2, 4], [2, 4]]))
    controls = DenoisingMetrics(train, test).controls
    assert controls.poisson_perfect > controls.poisson_none  # the crafted split is inverted
    with pytest.raises(ValueError, match="Poisson gate would reward the wrong answers"):
        refuse_inverted_gate(controls, "crafted")



def test_deep_dense_counts_are_refused_at_make_time(tmp_path) -> None:
    """Deep, dense counts (bulk-like: no zeros) invert the gate: the metric scales a prediction by
    sum(T)/sum(X), so the perfect test-scale prediction loses to the train counts."""
    pytest.importorskip("scanpy")
    import anndata

    from ttd_envs.problems.denoising import Denoising

    counts = np.random.default_rng(0).poisson(40.0, size=(30, 40)).astype(np.float32)
    path = tmp_path / "deep.h5ad"
    anndata.AnnData(X=counts).write_h5ad(path)
    with pytest.raises(ValueError, match="Poisson gate would reward the wrong answers"):
        Denoising(dataset=str(path), initial="empty")


# -- MathAnswer / MathVote: answers forged for predictable evaluation points ---------------------
def _vanishing_factor(points: tuple[complex, ...]) -> str:
    """(x - p1)(x - p2) at the points the judge substitutes for x (the formula of `_evaluate_source`)."""
    factors = []
    for k, point in enumerate(points):
        z = point * (1 + 0.0137 * ord("x") + 0.11 * k)
        factors.append(f"(x-({round(z.real, 10)}+{round(z.imag, 10)}*I))")
    return "*".join(factors)


def test_symbolic_answer_cannot_forge_a_numeric_label() -> None:
    """With the evaluation points that used to be constants in answers.py, 7 + (x - p1)(x - p2)
    took the value 7 at both points and was judged equal to the label 7."""
    old_constants = (0.5772156649 + 0.1234j, 1.3247179572 - 0.2718j)
    judge = AnswerJudge()
    try:
        assert judge.equivalent("7", "7")
        assert not judge.equivalent("7", "7+" + _vanishing_factor(old_constants))
        # Even an answer built from the judge's own secret points is not a number.
        own = tuple(complex(*p) for p in judge._worker.points)
        assert not judge.equivalent("7", "7+" + _vanishing_factor(own))
        # A symbolic label cannot be forged without the secret: fresh points differ per judge.
        assert not judge.equivalent("x+1", "x+1+" + _vanishing_factor(old_constants))
        assert secret_points() != secret_points()
    finally:
        judge.close()


# -- Erdős: a sum small enough to overflow the rescaling -----------------------------------------
def test_erdos_rescaling_that_overflows_is_invalid() -> None:
    """h = [5e-324, 0, ...]: rescaling to sum n/2 multiplies by inf; the NaN/inf samples used to
    reach the scorer and fail only by luck (C5 = nan is not > 0)."""
    problem = ErdosOverlap(initial="empty")
    h = np.zeros(600)
    h[0] = 5e-324
    with pytest.raises(InvalidConstruction, match="too little to rescale"):
        problem.check((h, 0.5, 600))


# -- circle packing: the tolerance cannot buy a record -------------------------------------------
def test_circle_packing_tolerance_gain_is_bounded() -> None:
    """Inflating every radius of the record until each constraint is violated by up to the 1e-12
    tolerance is accepted, and gains less than n * tol = 2.6e-11: below the 1e-10 digits at which
    records are compared and shown, so the tolerance cannot produce a new record."""
    problem = CirclePacking26()
    circles = load_circles(problem.record_file)
    centers, radii = circles[:, :2], circles[:, 2]
    inflated = radii + 0.5 * problem.tolerance
    check_packing(centers, inflated, problem.tolerance)
    _, score = problem.check((centers, inflated, None))
    _, shipped = problem.check((centers, radii, None))
    gain = score - shipped
    assert 0 < gain < problem.n * problem.tolerance
    assert f"{score:.10f}" == f"{shipped:.10f}"
    with pytest.raises(InvalidConstruction):
        problem.check((centers, radii + 2 * problem.tolerance, None))
