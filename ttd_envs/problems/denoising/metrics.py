"""The OpenProblems denoising metrics, computed on the trusted side against the held-out test split.

With T the test counts, Y the prediction and X the train counts (all cells x genes, N = n*g):

    L(A)_ij = log1p(10^4 * A_ij / sum_j A_ij)          (all-zero rows stay 0)
    MSE     = (1/N) sum_ij (L(T)_ij - L(Y)_ij)^2
    Poisson = (1/N) sum_ij [T_ij - c*Y_ij*ln(T_ij + 1e-6)],   c = sum T / sum X

The Poisson term keeps the argument order every leaderboard used (test and prediction swapped
relative to a textbook NLL), so it is linear in Y and unbounded below. Each metric is normalised
against "no denoising" (Y = X) and "perfect" (Y = T): s_norm = (s_none - s) / (s_none - s_perfect).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numba
import numpy as np
import scipy.sparse as sp

TARGET_SUM = 1e4
POISSON_EPS = 1e-6
LOG_EPS = math.log(POISSON_EPS)


@numba.njit(cache=True, parallel=True)
def _accumulate(pred: np.ndarray, indptr: np.ndarray, indices: np.ndarray, log_test: np.ndarray,
                log_gap: np.ndarray) -> tuple[float, float, float, float]:
    """One pass over the prediction. Per cell i with s_i = 10^4 / sum_j Y_ij and l_ij = log1p(s_i Y_ij):
    returns (sum l^2, sum over test non-zeros of l * L(T), sum Y, sum over test non-zeros of
    Y * (ln(T + eps) - ln eps)). L(T) is zero off the test non-zeros, so these give both metrics."""
    n, g = pred.shape
    squares = 0.0
    cross = 0.0
    total = 0.0
    weighted = 0.0
    for i in numba.prange(n):
        row_sum = 0.0
        for j in range(g):
            row_sum += pred[i, j]
        scale = TARGET_SUM / row_sum if row_sum > 0.0 else 0.0
        row_squares = 0.0
        for j in range(g):
            value = math.log1p(scale * pred[i, j])
            row_squares += value * value
        row_cross = 0.0
        row_weighted = 0.0
        for k in range(indptr[i], indptr[i + 1]):
            j = indices[k]
            row_cross += math.log1p(scale * pred[i, j]) * log_test[k]
            row_weighted += pred[i, j] * log_gap[k]
        squares += row_squares
        cross += row_cross
        total += row_sum
        weighted += row_weighted
    return squares, cross, total, weighted


@dataclass(frozen=True)
class Controls:
    """Raw metric values of the two reference predictions on one split."""

    mse_none: float
    poisson_none: float
    poisson_perfect: float
    mse_perfect: float = 0.0


@dataclass(frozen=True)
class Scores:
    """Raw and normalised metrics of one prediction; `headline` = mean of the normalised pair."""

    mse: float
    poisson: float
    mse_norm: float
    poisson_norm: float
    headline: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def normalised(value: float, none: float, perfect: float) -> float:
    """(none - value) / (none - perfect): 0 for no denoising, 1 for perfect denoising."""
    return (none - value) / (none - perfect)


class DenoisingMetrics:
    """Holds the test split in the forms the kernel needs; `raw(Y)` returns (MSE, Poisson)."""

    def __init__(self, train: np.ndarray, test: sp.csr_matrix) -> None:
        test = sp.csr_matrix(test, dtype=np.float64)
        test.sum_duplicates()
        test.eliminate_zeros()
        self.shape = test.shape
        self.size = test.shape[0] * test.shape[1]
        self._indptr = test.indptr.astype(np.int64)
        self._indices = test.indices.astype(np.int64)
        row_sums = np.asarray(test.sum(axis=1)).ravel()
        scale = np.repeat(TARGET_SUM / np.where(row_sums > 0, row_sums, 1.0), np.diff(test.indptr))
        self._log_test = np.log1p(scale * test.data)
        self._log_test_squares = float(np.dot(self._log_test, self._log_test))
        self._log_gap = np.log(test.data + POISSON_EPS) - LOG_EPS
        self._test_mean = float(test.data.sum()) / self.size
        self._ratio = float(test.data.sum()) / float(np.sum(train, dtype=np.float64))
        self.controls = Controls(*self.raw(np.asarray(train, dtype=np.float64)),
                                 poisson_perfect=self.raw(test.toarray())[1])

    def raw(self, prediction: np.ndarray) -> tuple[float, float]:
        """(MSE, Poisson) of a dense, finite, non-negative prediction of the test shape."""
        pred = np.ascontiguousarray(prediction, dtype=np.float64)
        if pred.shape != self.shape:
            raise ValueError(f"prediction has shape {pred.shape}, expected {self.shape}")
        squares, cross, total, weighted = _accumulate(pred, self._indptr, self._indices, self._log_test,
                                                      self._log_gap)
        mse = max(squares - 2.0 * cross + self._log_test_squares, 0.0) / self.size
        poisson = self._test_mean - self._ratio * (total * LOG_EPS + weighted) / self.size
        return mse, poisson

    def scores(self, prediction: np.ndarray) -> Scores:
        mse, poisson = self.raw(prediction)
        c = self.controls
        mse_norm = normalised(mse, c.mse_none, c.mse_perfect)
        poisson_norm = normalised(poisson, c.poisson_none, c.poisson_perfect)
        return Scores(mse, poisson, mse_norm, poisson_norm, 0.5 * (mse_norm + poisson_norm))


def reference_metrics(prediction: np.ndarray, train: np.ndarray, test: sp.spmatrix) -> tuple[float, float]:
    """(MSE, Poisson) the way OpenProblems computes them (scanpy normalize_total + log1p, sklearn's
    mean_squared_error, the swapped Poisson call): the slow cross-check for `DenoisingMetrics`."""
    import anndata
    import scanpy as sc
    from sklearn.metrics import mean_squared_error

    test_dense = test.toarray().astype(np.float64) if sp.issparse(test) else np.asarray(test, dtype=np.float64)
    pred = np.asarray(prediction, dtype=np.float64)
    logged = []
    for matrix in (test_dense, pred):
        adata = anndata.AnnData(X=matrix.copy())
        sc.pp.normalize_total(adata, target_sum=TARGET_SUM)
        sc.pp.log1p(adata)
        logged.append(adata.X)
    mse = float(mean_squared_error(logged[0], logged[1]))
    scaled = pred * test_dense.sum() / np.asarray(train, dtype=np.float64).sum()
    poisson = float(np.mean(test_dense - scaled * np.log(test_dense + POISSON_EPS)))
    return mse, poisson
