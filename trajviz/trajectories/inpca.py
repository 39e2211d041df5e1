"""Intensive PCA (InPCA) of predicted distributions: Quinn et al. 2019 (PNAS, "Visualizing
probabilistic models and data with Intensive Principal Component Analysis"), the embedding Mao
et al. 2024 (PNAS, "The training process of many deep networks explores the same
low-dimensional manifold") use for training trajectories.

Each point is a net at a checkpoint, i.e. N predicted distributions p^n over C classes (one per
probe). Between two points u, v the *intensive* Bhattacharyya distance is the mean over probes

    d(u, v) = -(1/N) sum_n log sum_c sqrt(p_u^n(c) p_v^n(c)),

which, unlike Euclidean distances between outputs, does not grow with N. InPCA double-centres
the M x M distance matrix, ``W = -1/2 L D L`` with ``L = I - 11^T / M`` (classical MDS), and
keeps the ``dims`` eigenpairs of largest |eigenvalue|, negative ones included (W need not be
positive semi-definite: the space is Minkowski-like). Coordinates are ``sqrt(|lambda_i|) u_i``;
an axis from a negative eigenvalue is "time-like" (distance along it *subtracts*). The
*explained stress* ``sum_kept lambda^2 / sum_all lambda^2 = 1 - ||W - W_k||_F^2 / ||W||_F^2`` says
how much of W the kept axes reproduce.

New points are placed without moving the old (Gower's out-of-sample formula): their distances to
the fitted points ``a`` (K, M) give ``k = -1/2 (a - mean_j a - r + g)`` (r: row means of D, g: its
mean) and coordinates ``k u_i sqrt(|lambda_i|) / lambda_i``; a fitted point placed again lands
exactly on itself.

Nothing here imports torch; the distance matrix is built probe block by probe block, in memory
O(M^2 + block x M x C).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from trajviz.errors import ConfigError

log = logging.getLogger(__name__)

#: floor on the Bhattacharyya coefficient before the log (two distributions with disjoint
#: support would otherwise be infinitely far apart)
MIN_COEFFICIENT = 1e-12
#: working memory of one probe block of the distance computation, MiB
BLOCK_MB = 64.0


def bhattacharyya_distances(P: np.ndarray, Q: np.ndarray | None = None, *,
                            block_mb: float = BLOCK_MB) -> np.ndarray:
    """Intensive Bhattacharyya distances between the rows of P (M, N, C) and of Q (K, N, C)
    (Q None: P itself); returns (M, K) float64, 0 on the diagonal of P against itself."""
    P = np.asarray(P, dtype=np.float64)
    Q = P if Q is None else np.asarray(Q, dtype=np.float64)
    if P.ndim != 3 or Q.ndim != 3 or P.shape[1:] != Q.shape[1:]:
        raise ConfigError(f"distributions of shapes {P.shape} and {Q.shape}: expected (M, N, C) "
                          "and (K, N, C) over the same N probes and C classes")
    m, n, c = P.shape
    k = Q.shape[0]
    sp = np.sqrt(np.clip(P, 0.0, None)).transpose(1, 0, 2)  # (N, M, C)
    sq = sp if Q is P else np.sqrt(np.clip(Q, 0.0, None)).transpose(1, 0, 2)  # (N, K, C)
    out = np.zeros((m, k), dtype=np.float64)
    step = max(1, int(block_mb * 2**20 / (8 * max(m * k, 1))))
    for lo in range(0, n, step):
        bc = np.matmul(sp[lo:lo + step], sq[lo:lo + step].transpose(0, 2, 1))  # (b, M, K)
        out -= np.log(np.clip(bc, MIN_COEFFICIENT, None)).sum(axis=0)
    out /= n
    if Q is P:
        np.fill_diagonal(out, 0.0)
        out = 0.5 * (out + out.T)  # exact symmetry despite summation order
    return np.clip(out, 0.0, None)


@dataclass
class InPCA:
    """A fitted InPCA: ``coords_`` (M, dims), ``eigenvalues_`` (dims,) by decreasing |value|,
    ``eigenvectors_`` (M, dims), ``row_means_`` (M,) and ``grand_mean_`` of the distance matrix,
    ``explained_stress_`` (fraction of ||W||_F^2 the kept axes reproduce) and
    ``explained_stress_per_axis_`` (dims,)."""

    dims: int = 2

    def fit(self, D: np.ndarray) -> "InPCA":
        """Fit on a symmetric (M, M) distance matrix (:func:`bhattacharyya_distances`)."""
        D = np.asarray(D, dtype=np.float64)
        m = D.shape[0]
        if D.ndim != 2 or D.shape[1] != m:
            raise ConfigError(f"distance matrix of shape {D.shape}: expected square (M, M)")
        if m <= self.dims:
            raise ConfigError(f"InPCA of {m} points into {self.dims} dimensions: needs more points")
        self.row_means_ = D.mean(axis=1)
        self.grand_mean_ = float(D.mean())
        W = -0.5 * (D - self.row_means_[:, None] - self.row_means_[None, :] + self.grand_mean_)
        w, u = np.linalg.eigh(W)  # all eigenpairs: the stress needs sum of all lambda^2
        order = np.argsort(-np.abs(w), kind="stable")[:self.dims]
        lam, vec = w[order], u[:, order]
        # each axis's sign: its largest-magnitude entry positive (eigh leaves it arbitrary)
        idx = np.argmax(np.abs(vec), axis=0)
        vec = vec * np.where(vec[idx, np.arange(self.dims)] < 0, -1.0, 1.0)
        total = float(np.sum(w ** 2))
        self.eigenvalues_ = lam
        self.eigenvectors_ = vec
        self.explained_stress_per_axis_ = lam ** 2 / total if total > 0 else np.zeros(self.dims)
        self.explained_stress_ = float(self.explained_stress_per_axis_.sum())
        self.coords_ = vec * np.sqrt(np.abs(lam))
        n_neg = int(np.sum(lam < 0))
        log.info("InPCA: explained stress %.3f; eigenvalues %s%s", self.explained_stress_,
                 ", ".join(f"{v:.3g}" for v in lam),
                 f" ({n_neg} negative: time-like axes)" if n_neg else "")
        return self

    def transform(self, A: np.ndarray) -> np.ndarray:
        """Coordinates (K, dims) of new points given their distances A (K, M) to the fitted ones."""
        A = np.atleast_2d(np.asarray(A, dtype=np.float64))
        if A.shape[1] != self.row_means_.size:
            raise ConfigError(f"distances to {A.shape[1]} points given; the InPCA was fitted on "
                              f"{self.row_means_.size}")
        K = -0.5 * (A - A.mean(axis=1, keepdims=True) - self.row_means_[None, :]
                    + self.grand_mean_)
        lam = self.eigenvalues_
        scale = np.where(lam != 0, np.sqrt(np.abs(lam)) / np.where(lam != 0, lam, 1.0), 0.0)
        return (K @ self.eigenvectors_) * scale

    # --- persistence, as arrays of an embedding file
    def state(self) -> dict[str, np.ndarray]:
        return {"inpca/eigenvalues": self.eigenvalues_, "inpca/eigenvectors": self.eigenvectors_,
                "inpca/row_means": self.row_means_,
                "inpca/grand_mean": np.array([self.grand_mean_])}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> "InPCA":
        keys = ("inpca/eigenvalues", "inpca/eigenvectors", "inpca/row_means", "inpca/grand_mean")
        if missing := [k for k in keys if k not in state]:
            raise ConfigError(f"this InPCA embedding lacks {', '.join('/' + k for k in missing)}, "
                              "so points cannot be added; re-run the projection")
        self = cls(dims=int(np.asarray(state["inpca/eigenvalues"]).size))
        self.eigenvalues_ = np.asarray(state["inpca/eigenvalues"], dtype=np.float64)
        self.eigenvectors_ = np.asarray(state["inpca/eigenvectors"], dtype=np.float64)
        self.row_means_ = np.asarray(state["inpca/row_means"], dtype=np.float64)
        self.grand_mean_ = float(np.asarray(state["inpca/grand_mean"]).reshape(-1)[0])
        if self.eigenvectors_.shape != (self.row_means_.size, self.dims):
            raise ConfigError(f"/inpca/eigenvectors has shape {self.eigenvectors_.shape}, expected "
                              f"({self.row_means_.size}, {self.dims})")
        return self
