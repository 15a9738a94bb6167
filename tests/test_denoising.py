"""ttd/Denoising-v0: datasets, MCV split, metrics against the scanpy/sklearn computation, the
Poisson gate, hostile outputs, the MAGIC initial program and the env contract."""

from __future__ import annotations

import pickle
import subprocess
import sys
import textwrap

import gymnasium as gym
import numpy as np
import pytest
import scipy.sparse as sp
from gymnasium.utils.env_checker import check_env

pytest.importorskip("scanpy")
from threadpoolctl import threadpool_limits  # noqa: E402 - installed with scikit-learn, a scanpy dependency

import ttd_envs  # noqa: E402,F401 - registers the ids
from ttd_envs.core.state import State  # noqa: E402
from ttd_envs.data.denoising.magic_denoise import denoise as magic  # noqa: E402
from ttd_envs.problems.denoising import Denoising  # noqa: E402
from ttd_envs.problems.denoising.datasets import (  # noqa: E402
    SYNTHETIC,
    as_integer_counts,
    load_split,
    mcv_split,
    pbmc68k_reduced_counts,
    synthetic_counts,
)
from ttd_envs.problems.denoising.metrics import DenoisingMetrics, reference_metrics  # noqa: E402
from ttd_envs.problems.denoising.problem import magic_source, reference_key, shipped_references  # noqa: E402
from ttd_envs.problems.denoising.reference import measure  # noqa: E402
from timing import within  # noqa: E402


def fenced(code: str) -> str:
    return f"Here is my program.\n```python\n{textwrap.dedent(code)}\n```\n"


@pytest.fixture(scope="module")
def unit() -> Denoising:
    problem = Denoising(dataset="synthetic-unit", cpus=1, budget_s=60)
    yield problem
    problem.close()


# -- data -------------------------------------------------------------------------------------
def test_mcv_split_thins_each_count_binomially() -> None:
    counts = np.random.default_rng(3).poisson(5.0, (200, 50))
    counts[:, 7] = 0
    train, test = mcv_split(counts, seed=0)
    assert train.shape == test.shape == (200, 49)  # the gene with no train molecule is dropped
    kept = np.delete(counts, 7, axis=1)
    assert np.array_equal(train + test, kept) and train.min() >= 0 and test.min() >= 0
    assert abs(train.sum() / kept.sum() - 0.9) < 0.01
    assert np.array_equal(train, np.delete(np.random.RandomState(0).binomial(counts, 0.9), 7, axis=1))
    again, _ = mcv_split(counts, seed=0)
    other, _ = mcv_split(counts, seed=1)
    assert np.array_equal(train, again) and not np.array_equal(train, other)


def test_synthetic_generator_is_seeded_and_has_ground_truth() -> None:
    config = SYNTHETIC["synthetic-unit"]
    counts, mu = synthetic_counts(config, seed=0)
    again, _ = synthetic_counts(config, seed=0)
    assert counts.shape == mu.shape == (500, 2000) and np.array_equal(counts, again)
    assert not np.array_equal(counts, synthetic_counts(config, seed=1)[0])
    assert np.median(mu.sum(axis=1)) == pytest.approx(800, rel=0.1)
    assert abs(counts.sum() / mu.sum() - 1.0) < 0.01


def test_pbmc68k_counts_are_recovered_from_scanpy_wheel() -> None:
    counts = pbmc68k_reduced_counts()
    assert counts.shape == (700, 765) and counts.dtype == np.int64
    assert 600 < np.median(counts.sum(axis=1)) < 700 and counts.max() == 259
    assert 0.6 < np.mean(counts == 0) < 0.7


def test_non_integer_counts_are_refused() -> None:
    with pytest.raises(ValueError, match="non-integer"):
        as_integer_counts(np.array([[0.5, 1.0], [2.0, 3.0]]), "X")
    with pytest.raises(ValueError, match="non-negative"):
        as_integer_counts(np.array([[-1.0, 1.0]]), "X")


def test_h5ad_datasets(tmp_path) -> None:
    import anndata

    counts, _ = synthetic_counts(SYNTHETIC["synthetic-unit"], seed=4)
    counts = counts[:120, :400]
    tech = np.array(["a", "b"] * 60)
    adata = anndata.AnnData(X=np.log1p(counts).astype(np.float32), layers={"counts": sp.csr_matrix(counts)})
    adata.obs["tech"] = tech
    path = tmp_path / "toy.h5ad"
    adata.write_h5ad(path)
    problem = Denoising(dataset=str(path), layer="counts", subset={"tech": "a"}, initial="empty")
    assert problem.shape[0] == 60
    train, _ = mcv_split(counts[tech == "a"][:, counts[tech == "a"].sum(axis=0) > 0], seed=0)
    assert np.array_equal(problem.split.train, train)
    with pytest.raises(ValueError, match="non-integer"):
        Denoising(dataset=str(path))
    with pytest.raises(KeyError, match="layers"):
        Denoising(dataset=str(path), layer="spliced")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Denoising(dataset=str(tmp_path / "missing.h5ad"))
    with pytest.raises(ValueError, match="unknown dataset"):
        Denoising(dataset="pbmc-1k")
    with pytest.raises(ValueError, match="built-in"):
        Denoising(dataset="synthetic-unit", layer="counts")


# -- metrics ----------------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore:Some cells have zero counts")
@pytest.mark.parametrize("dataset", ["synthetic-unit", "pbmc68k-reduced"])
def test_metrics_match_the_scanpy_sklearn_computation(dataset: str) -> None:
    split = load_split(dataset)
    metrics = DenoisingMetrics(split.train, split.test)
    rng = np.random.default_rng(1)
    predictions = [split.train * rng.random(split.shape), split.train.astype(float), split.test.toarray(),
                   rng.gamma(0.3, 2.0, split.shape)]
    predictions[0][5] = 0.0  # an all-zero cell stays zero after normalisation
    for prediction in predictions:
        fast = metrics.raw(prediction)
        slow = reference_metrics(prediction, split.train, split.test)
        np.testing.assert_allclose(fast, slow, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dataset", ["synthetic-unit", "synthetic-pbmc"])
def test_no_denoising_scores_zero_and_perfect_scores_one(dataset: str) -> None:
    split = load_split(dataset)
    metrics = DenoisingMetrics(split.train, split.test)
    none, perfect = metrics.scores(split.train), metrics.scores(split.test.toarray())
    assert none.mse_norm == pytest.approx(0, abs=1e-12) and none.poisson_norm == pytest.approx(0, abs=1e-12)
    assert perfect.mse_norm == pytest.approx(1, abs=1e-12) and perfect.poisson_norm == pytest.approx(1, abs=1e-12)
    assert perfect.headline == pytest.approx(1, abs=1e-12)


@pytest.mark.parametrize("dataset", ["synthetic-unit", "synthetic-pbmc", "pbmc68k-reduced"])
def test_shipped_controls_match_a_fresh_computation(dataset: str) -> None:
    entry = shipped_references()[reference_key(dataset, 0, 0)]
    split = load_split(dataset)
    controls = DenoisingMetrics(split.train, split.test).controls
    assert list(split.shape) == entry["shape"]
    for name, value in entry["controls"].items():
        assert getattr(controls, name) == pytest.approx(value, rel=1e-9, abs=1e-12)


def test_pbmc68k_controls_and_magic_match_the_spec() -> None:
    with threadpool_limits(1):
        result = measure("pbmc68k-reduced")
    controls, scores = result["controls"], result["magic"]
    assert (round(controls["mse_none"], 3), round(controls["poisson_none"], 3)) == (3.404, 0.798)
    assert round(controls["poisson_perfect"], 3) == 0.085
    assert (round(scores["mse"], 3), round(scores["poisson"], 4)) == (3.175, 0.0915)
    entry = shipped_references()[reference_key("pbmc68k-reduced", 0, 0)]
    for name, value in entry["magic"].items():
        assert scores[name] == pytest.approx(value, rel=1e-6)


def test_magic_lands_in_the_spec_range_on_synthetic_unit() -> None:
    split = load_split("synthetic-unit")
    with threadpool_limits(1):
        scores = DenoisingMetrics(split.train, split.test).scores(magic(split.train, random_state=42))
    assert 0.18 <= round(scores.mse_norm, 2) <= 0.23 and 0.98 <= round(scores.poisson_norm, 2) <= 0.99
    shipped = shipped_references()[reference_key("synthetic-unit", 0, 0)]["magic"]
    assert scores.mse_norm == pytest.approx(shipped["mse_norm"], rel=1e-6)


# -- evaluation -------------------------------------------------------------------------------
def test_swapped_poisson_exploit_is_rejected_by_the_gate(unit: Denoising) -> None:
    train = unit.split.train.astype(float)
    exploit = np.where(train >= 60, train * 200.0, 0.0)
    ungated = unit.metrics.scores(exploit)
    assert ungated.poisson < unit.metrics.controls.poisson_perfect and ungated.poisson_norm > 1.5
    assert exploit.max() <= train.sum()
    code = "import numpy as np\ndef denoise(X, **kwargs):\n    return np.where(X >= 60, X * 200.0, 0.0)\n"
    evaluation = unit.evaluate(fenced(code), State())
    assert not evaluation.valid and evaluation.reward == 0.0
    assert "better than perfect denoising" in evaluation.error
    assert evaluation.details["poisson_norm"] == pytest.approx(ungated.poisson_norm, rel=1e-12)


@pytest.mark.parametrize(("body", "message"), [
    ("return X", "poisson_norm must be >= 0.97"),
    ("return X[:, :10]", "expected (500, 1716)"),
    ("import scipy.sparse as s\n    return s.csr_matrix(X)", "sparse csr_matrix"),
    ("return X * float('nan')", "NaN or inf"),
    ("return -X", "negative entries"),
    ("return X * 1e9", "more than all train molecules"),
    ("return {'Y': X}", "got a dict"),
    ("return X > 1", "dtype bool"),
    ("raise RuntimeError('no idea')", "no idea"),
    ("import time\n    time.sleep(30)\n    return X", "time limit"),
])
def test_invalid_outputs_are_zero_reward_steps_with_specific_messages(unit: Denoising, body: str,
                                                                      message: str) -> None:
    problem = unit if "sleep" not in body else Denoising(dataset="synthetic-unit", cpus=1, budget_s=1,
                                                         timeout_s=3, initial="empty")
    try:
        evaluation = problem.evaluate(fenced(f"def denoise(X, **kwargs):\n    {body}\n"), State())
    finally:
        if problem is not unit:
            problem.close()
    assert not evaluation.valid and evaluation.reward == 0.0
    assert message in evaluation.error


def test_missing_function_and_missing_block(unit: Denoising) -> None:
    assert "define a top-level function denoise" in unit.evaluate(fenced("def f(X):\n    return X\n"),
                                                                  State()).error
    assert not unit.evaluate("I would use MAGIC.", State()).valid


def test_sharpened_magic_is_valid_and_improves_the_reward(unit: Denoising) -> None:
    code = magic_source() + textwrap.dedent("""
        _magic = denoise

        def denoise(X, **kwargs):
            Y = _magic(X, **kwargs)
            totals = Y.sum(axis=1, keepdims=True)
            Y = Y ** 2.0
            return Y * totals / Y.sum(axis=1, keepdims=True)
        """)
    evaluation = unit.evaluate(fenced(code), State())
    assert evaluation.valid, evaluation.error
    initial = unit.initial_state(np.random.default_rng(0))
    assert evaluation.reward > initial.reward + 0.1
    assert evaluation.details["poisson_norm"] >= 0.97
    assert evaluation.details["headline"] == pytest.approx(
        (evaluation.details["mse_norm"] + evaluation.details["poisson_norm"]) / 2)


# -- env contract -----------------------------------------------------------------------------
def test_check_env_and_states() -> None:
    env = gym.make("ttd/Denoising-v0", dataset="synthetic-unit", cpus=1)
    try:
        check_env(env.unwrapped, skip_render_check=True)
        obs, info = env.reset(seed=0)
        shipped = shipped_references()[reference_key("synthetic-unit", 0, 0)]["magic"]
        assert info["score"] == pytest.approx(shipped["mse_norm"])
        assert "def denoise(X" in obs and "poisson_norm" in obs and "Poisson gate" in obs
        assert f"{shipped['headline']:.4f}" in obs
        restored = State.from_json(info["state"].to_json())
        assert restored.construction == info["state"].construction
        _, reward, terminated, _, step_info = env.step("no code here")
        assert reward == 0.0 and terminated and not step_info["valid"]
    finally:
        env.close()
        env.unwrapped.problem.close()


def test_empty_start_and_pickling() -> None:
    problem = Denoising(dataset="synthetic-unit", initial="empty")
    state = problem.initial_state(np.random.default_rng(0))
    assert state.code is None and "write one from scratch" in problem.prompt(state)
    data = pickle.dumps(problem)
    assert len(data) < 100_000  # the data are reloaded by the worker, not shipped
    clone = pickle.loads(data)
    assert np.array_equal(clone.split.train, problem.split.train)


def test_make_without_scanpy_names_the_extra() -> None:
    script = textwrap.dedent("""
        import sys

        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("scanpy", "anndata"):
                    raise ModuleNotFoundError(f"No module named {name!r}")
                return None

        sys.meta_path.insert(0, Block())
        import gymnasium, ttd_envs
        try:
            gymnasium.make("ttd/Denoising-v0", dataset="synthetic-unit")
        except ImportError as exc:
            print("REFUSED:", exc)
        """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "REFUSED:" in result.stdout and "pip install 'ttd[bio]'" in result.stdout


@pytest.mark.slow
def test_full_step_on_synthetic_pbmc_with_magic_within_budget() -> None:
    env = gym.make("ttd/Denoising-v0", cpus=2, budget_s=120)
    try:
        obs, info = env.reset(seed=0)
        shipped = shipped_references()[reference_key("synthetic-pbmc", 0, 0)]["magic"]
        assert 0.18 <= round(shipped["mse_norm"], 2) <= 0.23 and 0.98 <= round(shipped["poisson_norm"], 2) <= 0.99
        _, reward, _, _, step = env.step(fenced(info["state"].code))
        assert step["valid"], step["error"]
        within(step["elapsed_s"], 120, "MAGIC, the initial program, on synthetic-pbmc")
        assert reward == pytest.approx(shipped["mse_norm"], rel=1e-6)
        assert step["poisson_norm"] == pytest.approx(shipped["poisson_norm"], rel=1e-6)
    finally:
        env.close()
        env.unwrapped.problem.close()
