"""Streaming PCA of checkpoint vectors: memory O(batch x N x C), never O(points x N x C)."""

from __future__ import annotations

import logging
from typing import Iterable, Sequence

import numpy as np

from trajviz.errors import FormatError
from trajviz.store import ExperimentFile
from trajviz.trajectories.runs import SelectedRun, iter_checkpoint_vectors

log = logging.getLogger(__name__)


class StreamingPCA:
    """PCA fitted from a stream of rows, a batch at a time: the incremental PCA of Ross et al.
    2008 ("Incremental learning for robust visual tracking", IJCV; the update scikit-learn's
    IncrementalPCA uses), with each batch's SVD taken through its small Gram matrix.

    Memory is O(batch_rows x D), independent of the number of rows. ``batch_rows`` None: all
    rows in one batch (exact PCA) when they fit in ``memory_mb`` of float32, else batches of
    ``2 * n_components`` rows (fewer if that exceeds ``memory_mb``, never fewer than
    ``n_components``).
    """

    def __init__(self, n_components: int = 50, *, batch_rows: int | None = None,
                 memory_mb: float = 16.0):
        self.n_components = n_components
        self.batch_rows = batch_rows
        self.memory_mb = memory_mb

    def _batch_sizes(self, n_rows: int, n_features: int, n_comp: int) -> list[int]:
        budget_rows = int(self.memory_mb * 2**20 / (4 * n_features))
        if self.batch_rows:
            rows = self.batch_rows
        elif n_rows <= budget_rows:
            rows = n_rows  # everything fits: one batch, exact PCA
        else:
            # each batch costs an SVD of (n_comp + rows) x D, so small batches are cheaper too
            rows = min(2 * n_comp, budget_rows)
        rows = max(rows, n_comp, 1)
        n_batches = max(1, n_rows // rows)
        base, rem = divmod(n_rows, n_batches)
        return [base + (i < rem) for i in range(n_batches)]

    def fit(self, rows: Iterable[np.ndarray], n_rows: int) -> "StreamingPCA":
        """Fit from ``n_rows`` 1-D rows of equal length D (an iterator: read once)."""
        it = iter(rows)
        first = np.asarray(next(it), dtype=np.float32)
        n_features = first.size
        n_comp = int(min(self.n_components, n_rows, n_features))
        sizes = self._batch_sizes(n_rows, n_features, n_comp)
        mean = np.zeros(n_features)
        basis = np.zeros((0, n_features))  # singular values x components, (k, D)
        n_seen, sum_sq = 0, 0.0
        pending: list[np.ndarray] = [first]
        for size in sizes:
            while len(pending) < size:
                pending.append(np.asarray(next(it), dtype=np.float32))
            X = np.stack(pending).astype(np.float64)
            pending = []
            b = X.shape[0]
            sum_sq += float(np.einsum("ij,ij->", X, X))
            col_mean = X.mean(axis=0)
            X -= col_mean
            # Ross et al. (2008): the old subspace, the centred batch and a mean-shift row
            # together have the same scatter matrix as all rows seen so far
            shift = np.sqrt(n_seen * b / (n_seen + b)) * (mean - col_mean)
            A = np.vstack([basis, X, shift[None, :]]) if n_seen else X
            del X
            mean = (n_seen * mean + b * col_mean) / (n_seen + b)
            n_seen += b
            s_vals, vt = _wide_svd(A, n_comp)
            basis = s_vals[:, None] * vt
        total_var = (sum_sq - n_seen * float(mean @ mean)) / max(n_seen - 1, 1)
        self.mean_ = mean
        self.components_ = vt
        self.explained_variance_ = s_vals**2 / max(n_seen - 1, 1)
        self.explained_variance_ratio_ = self.explained_variance_ / total_var if total_var > 0 \
            else np.zeros(n_comp)
        self.n_components_ = n_comp
        self.n_batches_ = len(sizes)
        return self

    @classmethod
    def from_arrays(cls, mean: np.ndarray, components: np.ndarray,
                    explained_variance_ratio: np.ndarray | None = None) -> "StreamingPCA":
        """A fitted PCA from stored arrays: mean (D,), components (d, D)."""
        pca = cls(n_components=int(components.shape[0]))
        pca.mean_ = np.asarray(mean, dtype=np.float64)
        pca.components_ = np.asarray(components, dtype=np.float64)
        pca.n_components_ = int(components.shape[0])
        pca.explained_variance_ratio_ = (np.full(pca.n_components_, np.nan)
                                         if explained_variance_ratio is None
                                         else np.asarray(explained_variance_ratio))
        return pca

    def transform(self, X: np.ndarray) -> np.ndarray:
        """(b, D) -> (b, d) coordinates on the principal axes."""
        X = np.atleast_2d(np.asarray(X))
        if X.shape[1] != self.mean_.size:
            raise FormatError(f"PCA was fitted on vectors of length {self.mean_.size}, got "
                              f"{X.shape[1]} (another probe set or class count?)")
        return (X - self.mean_) @ self.components_.T

    def transform_stream(self, rows: Iterable[np.ndarray], n_rows: int,
                         batch: int = 256) -> np.ndarray:
        """Transform rows read one at a time: (n_rows, d) float64."""
        out = np.empty((n_rows, self.n_components_))
        buf: list[np.ndarray] = []
        i = 0
        for row in rows:
            buf.append(row)
            if len(buf) == batch:
                out[i:i + len(buf)] = self.transform(np.stack(buf))
                i += len(buf)
                buf = []
        if buf:
            out[i:i + len(buf)] = self.transform(np.stack(buf))
            i += len(buf)
        if i != n_rows:
            raise FormatError(f"expected {n_rows} checkpoints, read {i}")
        return out


def _wide_svd(A: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k singular values (k,) and right singular vectors (k, D) of a wide A (m, D), m << D,
    through the eigen-decomposition of the small Gram matrix A A^T (m, m): a matrix product
    instead of LAPACK's gesdd on A, many times faster for m ~ 100 and D ~ 10^5. Signs are fixed
    so each vector's largest-magnitude entry is positive."""
    w, u = np.linalg.eigh(A @ A.T)
    order = np.argsort(w)[::-1][:k]
    s_vals = np.sqrt(np.clip(w[order], 0.0, None))
    vt = (u[:, order].T @ A) / np.where(s_vals > 0, s_vals, 1.0)[:, None]
    idx = np.argmax(np.abs(vt), axis=1)
    signs = np.sign(vt[np.arange(vt.shape[0]), idx])
    signs[signs == 0] = 1.0
    return s_vals, vt * signs[:, None]


def reduce_checkpoints(files: Sequence[ExperimentFile], runs: Sequence[SelectedRun],
                       representation: str, pca_dims: int, *, memory_mb: float = 16.0,
                       progress: bool = False) -> tuple[StreamingPCA, np.ndarray]:
    """Fit streaming PCA on the selected checkpoints (one pass) and project them (second pass).

    Returns the fitted PCA and features (M, d), M = number of selected checkpoints.
    """
    m = sum(r.checkpoints.size for r in runs)
    pca = StreamingPCA(pca_dims, memory_mb=memory_mb)
    pca.fit(iter_checkpoint_vectors(files, runs, representation, progress=progress,
                                    desc="PCA fit"), m)
    feats = pca.transform_stream(iter_checkpoint_vectors(files, runs, representation,
                                                         progress=progress, desc="PCA project"), m)
    log.info("PCA to %d dims keeps %.1f%% of the variance (%d batch(es))", pca.n_components_,
             100 * pca.explained_variance_ratio_.sum(), pca.n_batches_)
    return pca, feats
