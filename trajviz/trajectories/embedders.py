"""Embedders for :mod:`trajviz.trajectories.embedding`: each maps PCA features (M, d) to coordinates (M, dims),
deterministically given a seed, and places new points into a fitted embedding.

``fit(method, X, dims=2, seed=0, params=None) -> (coords, fitted_params)``
    ``fitted_params`` are the parameters actually used (after automatic choices, which are
    logged), stored in the embedding file's ``params`` attribute.
``extend(method, X_ref, coords_ref, X_new, attrs) -> coords_new``
    Out-of-sample placement of ``X_new`` with ``X_ref``'s points kept where they are.
``embedding_quality(X_high, X_low) -> {"trustworthiness", "knn_preservation", "quality_k"}``

Methods and their parameters (defaults):

- ``tsne``: openTSNE (Policar et al. 2019, JSS; t-SNE of van der Maaten & Hinton 2008).
  ``perplexity`` 30 (the studies' setting; lowered to (M-1)/3 when M is small), ``n_iter``
  500 after 250 early-exaggeration iterations, ``n_jobs`` 1, ``neighbors`` "auto" (exact below
  1000 points). Extension: ``TSNEEmbedding.transform`` (new points optimised against the fixed
  reference embedding, openTSNE's default perplexity 5 for them).
- ``isomap``: scikit-learn Isomap (Tenenbaum et al. 2000). ``n_neighbors`` 10, raised until the
  neighbour graph is connected (the studies: "chosen so the graph has one connected
  component"); the value used is stored. Axes signs fixed so the largest |coordinate| is
  positive. Extension: Isomap.transform after refitting on the stored features.
- ``umap``: umap-learn (McInnes et al. 2018). ``n_neighbors`` 15, ``min_dist`` 0.1. Seeded,
  hence single-threaded. Extension: UMAP.transform after refitting on the stored features.
- ``pca``: the first ``dims`` PCA features. Extension: the stored PCA.
- ``aligned-umap``: umap-learn's AlignedUMAP (Dadu et al. 2023) with one slice per checkpoint
  index and the runs as the rows aligned between consecutive slices, so a run keeps its place
  from one checkpoint's map to the next. ``n_neighbors`` 15 (lowered to under half the runs of
  the smallest slice, or every map would be one blob),
  ``min_dist`` 0.1, ``alignment_regularisation`` 0.01, ``alignment_window_size`` 3. Needs
  ``slices`` (run and checkpoint of each point). No extension.
- ``phate``: the ``phate`` package (Moon et al. 2019; optional extra ``trajviz[phate]``).
  ``knn`` 5, ``decay`` 40, ``t`` "auto" (-1). No extension.
- ``inpca``: intensive PCA of the predicted distributions themselves, not of the PCA
  features (:mod:`trajviz.trajectories.inpca`); :func:`fit` refuses it, the embedding calls it.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any, Mapping

import numpy as np

from trajviz.errors import ConfigError, FormatError

log = logging.getLogger(__name__)

DEFAULTS: dict[str, dict[str, Any]] = {
    "tsne": {"perplexity": 30.0, "n_iter": 500, "early_exaggeration_iter": 250, "n_jobs": 1,
             "neighbors": "auto"},
    "isomap": {"n_neighbors": 10},
    "umap": {"n_neighbors": 15, "min_dist": 0.1},
    "pca": {},
    "aligned-umap": {"n_neighbors": 15, "min_dist": 0.1, "alignment_regularisation": 0.01,
                     "alignment_window_size": 3},
    "phate": {"knn": 5, "decay": 40.0, "t": -1},
    "inpca": {},
}
#: methods that place new points into a fitted embedding (``trajviz project --into``)
EXTENDABLE = ("tsne", "isomap", "umap", "pca", "inpca")


def method_params(method: str, params: Mapping[str, Any] | None) -> dict[str, Any]:
    """Defaults of ``method`` updated by ``params``; unknown names are refused."""
    if method not in DEFAULTS:
        raise ConfigError(f"method {method!r}: choose one of {', '.join(DEFAULTS)}")
    out = dict(DEFAULTS[method])
    for key, value in (params or {}).items():
        if key not in out:
            allowed = ", ".join(out) or "none"
            raise ConfigError(f"{method} parameter {key!r} is unknown; {method} takes: {allowed}")
        kind = type(out[key])
        try:
            out[key] = kind(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{method} parameter {key}={value!r}: expected {kind.__name__}, "
                              f"e.g. {key}={DEFAULTS[method][key]}") from None
    return out


def _fix_signs(coords: np.ndarray) -> np.ndarray:
    """Flip each axis so its largest-magnitude coordinate is positive (eigen-solvers leave the
    sign arbitrary)."""
    idx = np.argmax(np.abs(coords), axis=0)
    signs = np.sign(coords[idx, np.arange(coords.shape[1])])
    signs[signs == 0] = 1
    return coords * signs


def connected_n_neighbors(X: np.ndarray, n_neighbors: int) -> int:
    """Smallest k >= ``n_neighbors`` whose k-NN graph of X (as undirected) is connected."""
    from scipy.sparse.csgraph import connected_components
    from sklearn.neighbors import kneighbors_graph

    m = X.shape[0]

    def connected(k: int) -> bool:
        g = kneighbors_graph(X, k, mode="connectivity", include_self=False)
        return connected_components(g, directed=False)[0] == 1

    k = max(1, min(n_neighbors, m - 1))
    if connected(k):
        return k
    lo, hi = k, k
    while not connected(hi):
        lo, hi = hi, min(2 * hi, m - 1)
        if lo == m - 1:
            return m - 1
    while hi - lo > 1:  # lo not connected, hi connected
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if connected(mid) else (mid, hi)
    return hi


def _isomap(X: np.ndarray, dims: int, k: int) -> Any:
    from sklearn.manifold import Isomap

    # the dense eigen-solver is deterministic; ARPACK's start vector is random
    solver = "dense" if X.shape[0] <= 4000 else "arpack"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return Isomap(n_neighbors=k, n_components=dims, eigen_solver=solver).fit(X)


_NUMBA_CACHED = False


def _import_umap() -> Any:
    """umap-learn, with numba's on-disk cache switched on for its and pynndescent's compiled
    functions.

    umap-learn compiles ~250 numba functions without ``cache=True`` on every import, 25-30 CPU
    seconds, which dominated small projections (13 s wall for 54 points). Enabling the cache
    on those dispatchers before their first call stores the machine code (in the packages'
    ``__pycache__``, or numba's user-wide cache directory where that is read-only), so later
    processes load it: docs/benchmarks.md, "UMAP compile cache"."""
    global _NUMBA_CACHED
    try:
        import umap
    except ImportError:  # pragma: no cover - a declared dependency
        raise ConfigError("method 'umap' needs umap-learn: pip install umap-learn") from None
    if not _NUMBA_CACHED:
        import sys

        from numba.core.registry import CPUDispatcher

        for name, module in list(sys.modules.items()):
            if module is None or not name.startswith(("umap", "pynndescent")):
                continue
            for obj in list(vars(module).values()):
                if isinstance(obj, CPUDispatcher) and type(obj._cache).__name__ == "NullCache":
                    obj.enable_caching()
        _NUMBA_CACHED = True
    return umap


def _umap(X: np.ndarray, dims: int, seed: int, p: Mapping[str, Any]) -> Any:
    umap = _import_umap()
    k = max(2, min(int(p["n_neighbors"]), X.shape[0] - 1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "n_jobs overridden by setting random_state"
        return umap.UMAP(n_components=dims, n_neighbors=k, min_dist=float(p["min_dist"]),
                         random_state=seed, n_jobs=1).fit(X)


def _aligned_umap(X: np.ndarray, dims: int, seed: int, p: dict[str, Any],
                  slices: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """AlignedUMAP with one slice per checkpoint index; rows of consecutive slices are related
    when they belong to the same run."""
    umap = _import_umap()

    runs, checkpoints = (np.asarray(a) for a in slices)
    if runs.shape[0] != X.shape[0] or checkpoints.shape[0] != X.shape[0]:
        raise ConfigError(f"aligned-umap: {runs.shape[0]} run labels for {X.shape[0]} points")
    members = []
    for t in np.unique(checkpoints):
        idx = np.flatnonzero(checkpoints == t)
        members.append(idx[np.argsort(runs[idx], kind="stable")])
    smallest = min(idx.size for idx in members)
    if smallest < 3:
        raise ConfigError(f"aligned-umap needs at least 3 runs at every checkpoint; one "
                          f"checkpoint has {smallest}: select more runs or other checkpoints")
    if len(members) < 2:
        raise ConfigError("aligned-umap needs at least 2 checkpoints (one map per checkpoint)")
    # a neighbourhood spanning most of a slice makes its map one blob: at most half a slice
    k = max(2, min(int(p["n_neighbors"]), smallest // 2 - 1))
    if k != int(p["n_neighbors"]):
        log.info("aligned-umap: n_neighbors %d lowered to %d (the smallest checkpoint has %d "
                 "runs; a neighbourhood stays under half of them)", int(p["n_neighbors"]), k,
                 smallest)
    p["n_neighbors"] = k
    relations = []
    for a, b in zip(members[:-1], members[1:]):
        pos = {r: j for j, r in enumerate(runs[b])}
        relations.append({i: pos[r] for i, r in enumerate(runs[a]) if r in pos})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = umap.AlignedUMAP(
            n_neighbors=k, n_components=dims, min_dist=float(p["min_dist"]),
            alignment_regularisation=float(p["alignment_regularisation"]),
            alignment_window_size=int(p["alignment_window_size"]), random_state=seed,
        ).fit([X[idx] for idx in members], relations=relations)
    coords = np.zeros((X.shape[0], dims))
    for idx, emb in zip(members, model.embeddings_):
        coords[idx] = emb
    return coords


def _phate(X: np.ndarray, dims: int, seed: int, p: dict[str, Any]) -> np.ndarray:
    try:
        import phate
    except ImportError:
        raise ConfigError("method 'phate' needs the phate package: pip install 'trajviz[phate]'"
                          ) from None
    k = max(2, min(int(p["knn"]), X.shape[0] - 2))
    p["knn"] = k
    op = phate.PHATE(n_components=dims, knn=k, decay=float(p["decay"]),
                     t="auto" if int(p["t"]) < 0 else int(p["t"]), random_state=seed, n_jobs=1,
                     verbose=0)
    return np.asarray(op.fit_transform(X), dtype=np.float64)


def fit(method: str, X: np.ndarray, *, dims: int = 2, seed: int = 0,
        params: Mapping[str, Any] | None = None,
        slices: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """Embed features X (M, d) into (M, dims); returns coordinates and the parameters used.
    ``slices``: (run label, checkpoint index) of each point, needed by ``aligned-umap``."""
    p = method_params(method, params)
    X = np.ascontiguousarray(X, dtype=np.float64)
    m = X.shape[0]
    if method == "pca":
        if X.shape[1] < dims:
            raise ConfigError(f"pca: only {X.shape[1]} PCA dimensions for {dims} output dims")
        return X[:, :dims].copy(), p
    if method == "tsne":
        from openTSNE import TSNE

        perp = float(p["perplexity"])
        max_perp = (m - 1) / 3.0 - 1e-6
        if perp > max_perp:
            log.info("t-SNE: perplexity %.1f is too high for %d points; using %.2f", perp, m, max_perp)
            perp = max_perp
        p["perplexity"] = perp
        tsne = TSNE(n_components=dims, perplexity=perp, n_iter=int(p["n_iter"]),
                    early_exaggeration_iter=int(p["early_exaggeration_iter"]),
                    n_jobs=int(p["n_jobs"]), neighbors=str(p["neighbors"]), random_state=seed,
                    verbose=False)
        return np.asarray(tsne.fit(X), dtype=np.float64), p
    if method == "isomap":
        k = connected_n_neighbors(X, int(p["n_neighbors"]))
        if k != int(p["n_neighbors"]):
            log.warning("isomap: the %d-NN graph is not connected; raised n_neighbors to %d",
                        int(p["n_neighbors"]), k)
        p["n_neighbors_requested"] = int(p["n_neighbors"])
        p["n_neighbors"] = k
        return _fix_signs(_isomap(X, dims, k).embedding_.astype(np.float64)), p
    if method == "umap":
        p["n_neighbors"] = max(2, min(int(p["n_neighbors"]), m - 1))
        return np.asarray(_umap(X, dims, seed, p).embedding_, dtype=np.float64), p
    if method == "aligned-umap":
        if slices is None:
            raise ConfigError("aligned-umap needs each point's run and checkpoint (slices)")
        return _aligned_umap(X, dims, seed, p, slices), p
    if method == "phate":
        return _phate(X, dims, seed, p), p
    raise ConfigError(f"method {method!r} does not embed PCA features; "
                      f"fit() takes {', '.join(m for m in DEFAULTS if m != 'inpca')}")


def extend(method: str, X_ref: np.ndarray, coords_ref: np.ndarray, X_new: np.ndarray,
           attrs: Mapping[str, Any]) -> np.ndarray:
    """Coordinates (K, dims) for new features X_new (K, d), the reference points fixed.

    ``attrs`` are the embedding's attributes (``params``, ``seed``, ``dims``).
    """
    if method in DEFAULTS and method not in EXTENDABLE:
        raise ConfigError(f"a {method} embedding cannot take new points without moving the old "
                          f"ones; re-run the projection on all files (methods that can: "
                          f"{', '.join(EXTENDABLE)})")
    p = dict(attrs.get("params") or {})
    seed = int(attrs.get("seed", 0))
    dims = coords_ref.shape[1]
    X_ref = np.ascontiguousarray(X_ref, dtype=np.float64)
    X_new = np.ascontiguousarray(X_new, dtype=np.float64)
    if method == "pca":
        return X_new[:, :dims].copy()
    if method == "tsne":
        from openTSNE import TSNEEmbedding
        from openTSNE.affinity import PerplexityBasedNN

        aff = PerplexityBasedNN(X_ref, perplexity=float(p.get("perplexity", 30.0)),
                                method=str(p.get("neighbors", "auto")), random_state=seed,
                                n_jobs=int(p.get("n_jobs", 1)))
        ref = TSNEEmbedding(np.ascontiguousarray(coords_ref), aff, random_state=seed)
        return np.asarray(ref.transform(X_new), dtype=np.float64)
    if method == "isomap":
        model = _isomap(X_ref, dims, int(p.get("n_neighbors", 10)))
        refit = model.embedding_
        signs = np.sign(np.sum(refit * coords_ref, axis=0))
        signs[signs == 0] = 1
        _check_refit("isomap", refit * signs, coords_ref)
        return model.transform(X_new) * signs
    if method == "umap":
        model = _umap(X_ref, dims, seed, p)
        _check_refit("umap", model.embedding_, coords_ref)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return np.asarray(model.transform(X_new), dtype=np.float64)
    raise FormatError(f"embedding method {method!r} is unknown; this trajviz knows "
                      f"{', '.join(DEFAULTS)}")


def _check_refit(method: str, refit: np.ndarray, stored: np.ndarray) -> None:
    scale = float(np.ptp(stored)) or 1.0
    dev = float(np.max(np.abs(refit - stored))) / scale
    if dev > 1e-3:
        log.warning("%s: refitting on the stored features moved the reference points by up to "
                    "%.1f%% of the plot's extent (another library version?); added points are "
                    "placed relative to the refit", method, 100 * dev)


# --------------------------------------------------------------------------- quality


def knn_preservation(X_high: np.ndarray, X_low: np.ndarray, k: int = 10) -> float:
    """Mean fraction of each point's k nearest neighbours in ``X_high`` that are also among its
    k nearest neighbours in ``X_low`` (1 = neighbourhoods kept exactly)."""
    from sklearn.neighbors import NearestNeighbors

    k = min(k, X_high.shape[0] - 1)
    nh = NearestNeighbors(n_neighbors=k + 1).fit(X_high).kneighbors(return_distance=False)
    nl = NearestNeighbors(n_neighbors=k + 1).fit(X_low).kneighbors(return_distance=False)
    nh, nl = nh[:, :k], nl[:, :k]  # kneighbors() without X excludes the point itself
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(nh, nl)]))


def embedding_quality(X_high: np.ndarray, X_low: np.ndarray, *, k: int = 10,
                      max_points: int = 2000, seed: int = 0) -> dict[str, float]:
    """Trustworthiness (Venna & Kaski 2001, sklearn.manifold.trustworthiness) and k-NN
    preservation of ``X_low`` relative to ``X_high``, on a seeded random subset of at most
    ``max_points`` points (both are O(M^2) in memory)."""
    from sklearn.manifold import trustworthiness

    m = X_high.shape[0]
    if m > max_points:
        idx = np.sort(np.random.default_rng(seed).choice(m, max_points, replace=False))
        X_high, X_low = X_high[idx], X_low[idx]
        m = max_points
    k = max(1, min(k, (m - 1) // 2))
    if m < 4:
        return {"trustworthiness": float("nan"), "knn_preservation": float("nan"), "quality_k": k}
    return {"trustworthiness": float(trustworthiness(X_high, X_low, n_neighbors=k)),
            "knn_preservation": knn_preservation(X_high, X_low, k),
            "quality_k": k}
