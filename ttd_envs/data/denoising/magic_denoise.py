"""MAGIC-style denoising (van Dijk et al. 2018), the "reversed normalisation" variant.

sqrt transform, scale each cell to sum 1, PCA, adaptive-bandwidth kNN affinities (alpha-decay
kernel), a row-stochastic diffusion operator applied t times in PCA space, inverse PCA, square,
and multiply by each cell's sqrt-library size.
"""

import numpy as np
from scipy import sparse
from sklearn.decomposition import PCA
from sklearn.neighbors import NearestNeighbors


def diffusion_operator(points, knn=5, knn_max=15, decay=1.0, thresh=1e-4):
    """Row-stochastic Markov matrix of the symmetrised kernel exp(-(d_ij / sigma_i)^decay), where
    sigma_i is the distance from cell i to its knn-th neighbour; weights below thresh are dropped."""
    n = points.shape[0]
    k = min(knn_max, n - 1)
    distances, neighbours = NearestNeighbors(n_neighbors=k + 1).fit(points).kneighbors(points)
    bandwidth = np.maximum(distances[:, min(knn, k)], 1e-12)
    weights = np.exp(-((distances / bandwidth[:, None]) ** decay))
    weights[weights < thresh] = 0.0
    rows = np.repeat(np.arange(n), k + 1)
    kernel = sparse.csr_matrix((weights.ravel(), (rows, neighbours.ravel())), shape=(n, n))
    kernel = (kernel + kernel.T) * 0.5
    degree = np.asarray(kernel.sum(axis=1)).ravel()
    return sparse.diags(1.0 / degree) @ kernel


def denoise(X, random_state=42, knn=5, knn_max=15, decay=1.0, t=3, n_pca=100, **kwargs):
    """X: cells x genes raw train counts. Returns denoised counts of the same shape."""
    X = np.asarray(X, dtype=np.float64)
    root = np.sqrt(X)
    library = root.sum(axis=1)
    library[library == 0] = 1.0
    profile = root / library[:, None]
    n_components = min(n_pca, profile.shape[0] - 1, profile.shape[1] - 1)
    pca = PCA(n_components=n_components, svd_solver="randomized", random_state=random_state)
    reduced = pca.fit_transform(profile)
    operator = diffusion_operator(reduced, knn=knn, knn_max=knn_max, decay=decay)
    for _ in range(t):
        reduced = operator @ reduced
    smoothed = pca.inverse_transform(reduced)
    return np.square(smoothed) * library[:, None]
