"""Count matrices for the denoising problem and the molecular cross-validation (MCV) split.

Sources, selected by name: two seeded synthetic generators with ground truth (`synthetic-unit`,
`synthetic-pbmc`), the PBMC 68k subset that ships inside scanpy's wheel (`pbmc68k-reduced`), or
any `.h5ad` file with integer counts. Nothing is downloaded.
"""

from __future__ import annotations

import importlib.util
import logging
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

log = logging.getLogger(__name__)

BIO_EXTRA_HINT = "pip install 'ttd[bio]'"
TRAIN_FRACTION = 0.9
MIN_CELL_COUNTS = 2
INTEGER_ATOL = 1e-6
PBMC68K_ROUNDING_ATOL = 0.25  # the stored log1p values are float32; recovered counts sit within 0.08 of integers


def require_bio(feature: str) -> None:
    """Fail with the extra to install unless scanpy is importable (the env promises it to programs
    too). Only looks the module up: importing scanpy costs seconds and most paths never need it."""
    try:
        found = importlib.util.find_spec("scanpy") is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise ImportError(f"{feature} needs scanpy, which is not installed; install the bio extra: {BIO_EXTRA_HINT}")


@dataclass(frozen=True)
class SyntheticConfig:
    """Parameters of the seeded generator (spec §5.3): softmax expression profiles, Poisson counts."""

    cells: int
    genes: int
    median_library: float
    gene_sd: float
    cell_types: int = 6
    type_gene_fraction: float = 0.1
    rank: int = 3
    cell_factor_sd: float = 0.3
    library_log_sd: float = 0.35


SYNTHETIC = {
    "synthetic-unit": SyntheticConfig(cells=500, genes=2000, median_library=800.0, gene_sd=2.5),
    "synthetic-pbmc": SyntheticConfig(cells=1000, genes=10000, median_library=4000.0, gene_sd=2.5),
}
PBMC68K = "pbmc68k-reduced"
BUILTIN = (*SYNTHETIC, PBMC68K)


def synthetic_expression(config: SyntheticConfig, seed: int) -> np.ndarray:
    """Ground-truth means mu_ij = L_i * softmax_j(b_j + D_{t_i j} + U_i . V_j), cells x genes.

    b ~ N(0, gene_sd) gene abundances; t_i a uniform cell type; D type effects N(0, 1) on a random
    `type_gene_fraction` of (type, gene) pairs; U, V a rank-`rank` cell-state term; library sizes
    L_i ~ LogNormal(ln median_library, library_log_sd).
    """
    rng = np.random.default_rng(seed)
    n, g, k = config.cells, config.genes, config.cell_types
    gene_log_abundance = rng.normal(0.0, config.gene_sd, g)
    cell_type = rng.integers(0, k, n)
    type_effect = np.zeros((k, g))
    affected = rng.random((k, g)) < config.type_gene_fraction
    type_effect[affected] = rng.normal(0.0, 1.0, int(affected.sum()))
    cell_factors = rng.normal(0.0, config.cell_factor_sd, (n, config.rank))
    gene_factors = rng.normal(0.0, 1.0, (g, config.rank))
    logits = gene_log_abundance + type_effect[cell_type] + cell_factors @ gene_factors.T
    logits -= logits.max(axis=1, keepdims=True)
    profile = np.exp(logits)
    profile /= profile.sum(axis=1, keepdims=True)
    library = rng.lognormal(np.log(config.median_library), config.library_log_sd, n)
    return library[:, None] * profile


def synthetic_counts(config: SyntheticConfig, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(counts ~ Poisson(mu), mu) for one generator seed; the counts are not yet filtered."""
    mu = synthetic_expression(config, seed)
    counts = np.random.default_rng([seed, 1]).poisson(mu)
    return counts, mu


def scanpy_bundled_data() -> tuple[str, ...]:
    """The data files inside scanpy's wheel. A program that reads one undoes any split of it
    (test = full - train), so denoising programs never see them (see `Denoising.grants`)."""
    spec = importlib.util.find_spec("scanpy")
    if spec is None or spec.origin is None:
        return ()
    return tuple(sorted(str(p.resolve()) for p in (Path(spec.origin).parent / "datasets").glob("*.h5ad")))


def pbmc68k_reduced_counts() -> np.ndarray:
    """UMI counts recovered from scanpy's bundled `pbmc68k_reduced` (700 cells x 765 genes).

    Its `raw.X` holds log1p(10^4 * counts / n_counts) per cell, so counts = expm1(raw.X) *
    n_counts / 10^4, which must round to integers (checked).
    """
    require_bio("dataset 'pbmc68k-reduced'")
    import scanpy as sc

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adata = sc.datasets.pbmc68k_reduced()
    logged = adata.raw.X
    logged = logged.toarray() if sp.issparse(logged) else np.asarray(logged)
    totals = adata.obs["n_counts"].to_numpy(dtype=np.float64)
    values = np.expm1(logged.astype(np.float64)) * totals[:, None] / 1e4
    counts = np.rint(values)
    distance = float(np.abs(values - counts).max())
    if distance > PBMC68K_ROUNDING_ATOL:
        raise ValueError(f"scanpy's pbmc68k_reduced no longer inverts to counts (max distance to an integer "
                         f"{distance:.3f}); this scanpy version ships a different file")
    return counts.astype(np.int64)


def h5ad_counts(path: str | Path, layer: str | None = None, subset: dict[str, Any] | None = None) -> np.ndarray:
    """Integer counts from an .h5ad: `X`, `layers[layer]`, or `raw.X` for layer="raw".

    `subset` keeps cells whose `obs` columns equal the given values (e.g. {"tech": "inDrop1"}).
    """
    require_bio(f"reading {path}")
    import anndata

    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"dataset file {str(file)!r} does not exist; pass one of {list(BUILTIN)} "
                                "or the path of an .h5ad file with integer counts")
    adata = anndata.read_h5ad(file)
    if subset:
        keep = np.ones(adata.n_obs, dtype=bool)
        for column, value in subset.items():
            if column not in adata.obs:
                raise KeyError(f"subset column {column!r} is not in obs of {file.name}; obs has {list(adata.obs)}")
            keep &= (adata.obs[column] == value).to_numpy()
        if not keep.any():
            raise ValueError(f"subset {subset} keeps no cell of {file.name}")
        adata = adata[keep]
    if layer == "raw":
        if adata.raw is None:
            raise ValueError(f"{file.name} has no .raw; choose layer=None (X) or one of {list(adata.layers)}")
        matrix = adata.raw.X
    elif layer is not None:
        if layer not in adata.layers:
            raise KeyError(f"layer {layer!r} not in {file.name}; it has layers {list(adata.layers)} "
                           "(or use layer=None for X, 'raw' for raw.X)")
        matrix = adata.layers[layer]
    else:
        matrix = adata.X
    dense = matrix.toarray() if sp.issparse(matrix) else np.asarray(matrix)
    return as_integer_counts(dense, f"{file.name} ({'X' if layer is None else layer})")


def as_integer_counts(matrix: np.ndarray, where: str) -> np.ndarray:
    """MCV needs molecule counts: non-negative integers (float storage is fine)."""
    values = np.asarray(matrix, dtype=np.float64)
    if values.ndim != 2:
        raise ValueError(f"{where}: expected a cells x genes matrix, got shape {values.shape}")
    if not np.all(np.isfinite(values)) or values.min(initial=0.0) < 0:
        raise ValueError(f"{where}: counts must be finite and non-negative")
    rounded = np.rint(values)
    if not np.allclose(values, rounded, rtol=0.0, atol=INTEGER_ATOL):
        raise ValueError(f"{where} holds non-integer values (e.g. {values[values != rounded][:3]}); the MCV split "
                         "needs raw UMI counts: pass the layer that holds them (layer='counts' or 'raw')")
    return rounded.astype(np.int64)


def filter_counts(counts: np.ndarray) -> np.ndarray:
    """Drop genes seen in no cell, then cells with fewer than 2 molecules (OpenProblems' loaders)."""
    counts = counts[:, counts.sum(axis=0) > 0]
    return counts[counts.sum(axis=1) >= MIN_CELL_COUNTS]


@dataclass(frozen=True)
class CountSplit:
    """Train and test halves of one MCV split; genes absent from train are already dropped."""

    name: str
    split_seed: int
    train: np.ndarray  # dense int64, what the program sees
    test: sp.csr_matrix  # int64, held by the trusted side only

    @property
    def shape(self) -> tuple[int, int]:
        return self.train.shape


def mcv_split(counts: np.ndarray, seed: int, train_fraction: float = TRAIN_FRACTION) -> tuple[np.ndarray, np.ndarray]:
    """Binomial thinning: train_ij ~ Binomial(x_ij, 0.9), test = x - train; then drop genes with no
    train molecule. Uses `np.random.RandomState(seed)` as OpenProblems v1 did (same draws)."""
    train = np.random.RandomState(seed).binomial(counts, train_fraction)
    test = counts - train
    keep = train.sum(axis=0) > 0
    return train[:, keep], test[:, keep]


def load_counts(dataset: str, layer: str | None = None, subset: dict[str, Any] | None = None,
                seed: int = 0) -> np.ndarray:
    """Filtered counts of a built-in dataset (synthetic ones use `seed`) or of an .h5ad path."""
    if dataset in SYNTHETIC:
        counts, _ = synthetic_counts(SYNTHETIC[dataset], seed)
    elif dataset == PBMC68K:
        counts = pbmc68k_reduced_counts()
    elif dataset.endswith(".h5ad"):
        counts = h5ad_counts(dataset, layer, subset)
    else:
        raise ValueError(f"unknown dataset {dataset!r}; use one of {list(BUILTIN)} or a path to an .h5ad file")
    return filter_counts(counts)


@lru_cache(maxsize=4)
def _builtin_split(dataset: str, split_seed: int, data_seed: int) -> CountSplit:
    return _make_split(dataset, load_counts(dataset, seed=data_seed), split_seed)


def _make_split(name: str, counts: np.ndarray, split_seed: int) -> CountSplit:
    train, test = mcv_split(counts, split_seed)
    if train.shape[0] < 2 or train.shape[1] < 2:
        raise ValueError(f"{name}: only {train.shape} cells x genes left after filtering; need a larger matrix")
    log.info("dataset %s split %d: %d cells x %d genes", name, split_seed, *train.shape)
    return CountSplit(name, split_seed, train, sp.csr_matrix(test))


def load_split(dataset: str, split_seed: int = 0, *, layer: str | None = None, subset: dict[str, Any] | None = None,
               data_seed: int = 0) -> CountSplit:
    """The MCV split the env scores against. Built-in datasets are memoised (they are pure functions
    of their seeds); files are re-read on each call."""
    if dataset in BUILTIN:
        if layer is not None or subset:
            raise ValueError(f"layer= and subset= apply to .h5ad files, not to the built-in dataset {dataset!r}")
        return _builtin_split(dataset, split_seed, data_seed)
    return _make_split(Path(dataset).name, load_counts(dataset, layer, subset), split_seed)
