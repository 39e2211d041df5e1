"""Joint embeddings of function-space trajectories: the picture of F10 in [A] (Erhan et al. 2009,
Fig. 6-7) and [J] (Erhan et al. 2010, Fig. 8-9).

A *point* is one net at one checkpoint, represented by its outputs on the whole probe set,
flattened into one vector of N x C numbers (N probe examples, C classes). All selected points of
all selected runs, from one or several trajviz files that share a probe set, are embedded jointly.

Pipeline: read checkpoint by checkpoint from HDF5 -> representation (:func:`represent`) ->
streaming PCA to ``pca_dims`` dimensions (:class:`StreamingPCA`; memory O(batch x N x C), never
O(points x N x C)) -> a 2-D or 3-D embedder (:data:`METHODS`) -> quality figures.

Public API
----------
``embed(files, *, method="tsne", representation="probs", dims=2, pca_dims=50, groups=None,
where=None, checkpoints=None, seed=0, params=None, progress=False) -> Embedding``
    Embed the selected checkpoints jointly.
``Embedding``
    Coordinates plus per-point labels (run, step, group, epoch, ...); ``save(path)``,
    ``Embedding.load(path)`` (format: docs/format.md, "Embedding files"), and
    ``add(files, ...) -> Embedding``: place new runs or checkpoints into an existing embedding
    without moving the old points (PCA, ISOMAP, UMAP, t-SNE via openTSNE).
``select(files, groups=..., where=..., checkpoints=...) -> list[SelectedRun]``
    Which runs and checkpoints a selection means (the same rules for ``trajviz divergence``).
``represent(probabilities, kind)``, ``parse_checkpoints(text) -> slice``,
``StreamingPCA``, ``open_experiments(paths)``.

Nothing here imports torch. Embedders live in :mod:`trajviz.embedders`.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

from trajviz.errors import ConfigError, FormatError, ProbeSetMismatchError
from trajviz.progress import progress_bar
from trajviz.store import DIVERGED, ExperimentFile, read_embedding, write_embedding

log = logging.getLogger(__name__)

#: representations of a checkpoint's probe outputs p (N, C)
REPRESENTATIONS = ("probs", "sqrt", "log")
#: floor applied to probabilities before the log (float32 softmax outputs can underflow to 0)
LOG_EPS = 1e-7
#: embedding methods
METHODS = ("tsne", "isomap", "umap", "pca")


def represent(probabilities: np.ndarray, kind: str) -> np.ndarray:
    """Map probe probabilities (..., N, C) to the vectors whose Euclidean distances we use.

    ``probs``: p itself (the studies' choice). ``sqrt``: sqrt(p); Euclidean distance between
    two such vectors is sqrt(2) x the Hellinger distance summed over probes, tied to the
    Bhattacharyya coefficient. ``log``: log(max(p, LOG_EPS)).
    """
    p = np.asarray(probabilities, dtype=np.float32)
    if kind == "probs":
        return p
    if kind == "sqrt":
        return np.sqrt(np.clip(p, 0.0, None))
    if kind == "log":
        return np.log(np.clip(p, LOG_EPS, None))
    raise ConfigError(f"representation {kind!r}: choose one of {', '.join(REPRESENTATIONS)}")


def parse_checkpoints(text: str | slice | None) -> slice:
    """Parse a checkpoint selection ``START:STOP:STRIDE`` (Python slice over each run's
    checkpoint *index*, 0 = the checkpoint before training; negative counts from the end;
    any part may be empty) or a single index ``I``. ``None`` or ``""`` selects all."""
    if text is None or isinstance(text, slice):
        return text or slice(None)
    text = text.strip()
    if not text:
        return slice(None)
    parts = text.split(":")
    try:
        if len(parts) == 1:
            i = int(parts[0])
            return slice(i, i + 1 if i != -1 else None)
        if len(parts) > 3:
            raise ValueError
        nums = [int(p) if p.strip() else None for p in parts]
    except ValueError:
        raise ConfigError(f"checkpoints {text!r}: expected START:STOP[:STRIDE] or an index, "
                          "integers, e.g. 0:20:2 or ::5 or -1") from None
    if len(nums) == 3 and nums[2] is not None and nums[2] <= 0:
        raise ConfigError(f"checkpoints {text!r}: STRIDE must be a positive integer")
    return slice(*nums)


# --------------------------------------------------------------------------- selection


@dataclass(frozen=True)
class SelectedRun:
    """One run chosen for embedding: where it lives and which checkpoint indices to use."""

    source: int  # index into the list of files
    run_id: str
    group: str
    seed: int
    checkpoints: np.ndarray  # (T,) int, indices into the run's checkpoints
    steps: np.ndarray  # (T,) int, SGD steps of those checkpoints
    epochs: np.ndarray  # (T,) float, epochs (NaN where unknown)


def open_experiments(paths: Sequence[str | Path], stack: contextlib.ExitStack) -> list[ExperimentFile]:
    """Open trajviz files (closed by ``stack``), refusing files recorded on different probe sets."""
    if not paths:
        raise ConfigError("no input files given")
    files = [stack.enter_context(ExperimentFile(p)) for p in paths]
    first = files[0]
    for other in files[1:]:
        if other.probe_sha256 != first.probe_sha256:
            raise ProbeSetMismatchError(
                f"{first.path} and {other.path} were recorded on different probe sets "
                f"(probe_sha256 {first.probe_sha256[:12]} vs {other.probe_sha256[:12]}); "
                "only files sharing a probe set can be compared")
    return files


def _parse_where(where: Iterable[str] | Mapping[str, Any] | None) -> dict[str, set[str]]:
    if not where:
        return {}
    if isinstance(where, Mapping):
        items = [(k, v) for k, v in where.items()]
    else:
        items = []
        for cond in where:
            key, sep, value = str(cond).partition("=")
            if not sep or not key.strip():
                raise ConfigError(f"--where {cond!r}: expected KEY=VALUE[,VALUE...], e.g. seed=0,1")
            items.append((key.strip(), value))
    out = {}
    for key, value in items:
        values = value if isinstance(value, (list, tuple, set)) else str(value).split(",")
        out[key] = {str(v).strip() for v in values}
    return out


def select(files: Sequence[ExperimentFile], *, groups: Sequence[str] | None = None,
           where: Iterable[str] | Mapping[str, Any] | None = None,
           checkpoints: str | slice | None = None) -> list[SelectedRun]:
    """Choose runs and checkpoints.

    ``groups``: keep runs whose ``group`` attribute is listed (all if None). ``where``: run
    attributes that must match, e.g. ``["seed=0,1,2", "pretrain=sdae"]`` (values compared as
    strings, a comma separates alternatives). ``checkpoints``: see :func:`parse_checkpoints`.
    Runs whose status is ``diverged`` are left out with a warning naming them.
    """
    cp = parse_checkpoints(checkpoints)
    conds = _parse_where(where)
    wanted = set(groups) if groups else None
    all_groups: set[str] = set()
    chosen: list[SelectedRun] = []
    diverged: list[str] = []
    for i, f in enumerate(files):
        for info in f.runs():
            all_groups.add(info.group)
            if wanted is not None and info.group not in wanted:
                continue
            if conds:
                attrs = f.run_attrs(info.run_id)
                attrs.setdefault("group", info.group)
                attrs.setdefault("run_id", info.run_id)
                if any(key not in attrs or str(attrs[key]) not in values
                       for key, values in conds.items()):
                    continue
            if info.status == DIVERGED:
                diverged.append(info.run_id if len(files) == 1 else f"{f.path.name}:{info.run_id}")
                continue
            idx = np.arange(info.n_checkpoints)[cp]
            if idx.size == 0:
                continue
            steps = f.steps(info.run_id)[idx]
            epochs = f.epochs(info.run_id)[idx]
            chosen.append(SelectedRun(i, info.run_id, info.group, info.seed, idx, steps, epochs))
    if diverged:
        log.warning("left out %d diverged run(s): %s", len(diverged), ", ".join(diverged))
    if wanted is not None and (missing := wanted - all_groups):
        raise ConfigError(f"group(s) {', '.join(sorted(missing))} not in the input; groups there: "
                          + ", ".join(sorted(all_groups)))
    if not chosen:
        raise ConfigError("the selection (groups/where/checkpoints) matches no checkpoint; "
                          f"groups in the input: {', '.join(sorted(all_groups))}")
    return chosen


def iter_checkpoint_vectors(files: Sequence[ExperimentFile], runs: Sequence[SelectedRun],
                            representation: str, *, progress: bool = False,
                            desc: str = "reading") -> Iterator[np.ndarray]:
    """Yield each selected checkpoint as one (N*C,) float32 vector, run by run, one checkpoint in
    memory at a time."""
    total = sum(r.checkpoints.size for r in runs)
    with progress_bar(total=total, enabled=progress, desc=desc, unit="ckpt") as bar:
        for r in runs:
            for vec in run_vectors(files[r.source], r, representation):
                yield vec
                bar.update(1)


def run_vectors(f: ExperimentFile, run: SelectedRun, representation: str) -> Iterator[np.ndarray]:
    """The selected checkpoints of one run as (N*C,) float32 vectors, in order."""
    idx = run.checkpoints
    if idx.size and idx[0] == 0 and np.all(np.diff(idx) == 1):
        # sequential reads skip the store's per-call validation (~4 ms a call)
        for _, out in zip(range(idx.size), f.iter_outputs(run.run_id)):
            yield represent(out, representation).reshape(-1)
        return
    for t in idx:
        out = f.outputs(run.run_id, slice(int(t), int(t) + 1))[0]
        yield represent(out, representation).reshape(-1)


# --------------------------------------------------------------------------- streaming PCA


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


# --------------------------------------------------------------------------- embedding


@dataclass
class Embedding:
    """Joint embedding of checkpoints. Arrays have one row per point (M rows).

    ``coords`` (M, dims); ``run``, ``group`` (M,) str; ``step``, ``checkpoint`` (M,) int (SGD
    step, index within the run); ``epoch`` (M,) float; ``source`` (M,) int index into
    ``attrs["sources"]``; ``added`` (M,) bool, True for points placed by :meth:`add`.
    ``features`` (M, d) PCA features and ``pca`` are kept so points can be added later.
    """

    coords: np.ndarray
    run: np.ndarray
    step: np.ndarray
    group: np.ndarray
    epoch: np.ndarray
    checkpoint: np.ndarray
    source: np.ndarray
    added: np.ndarray
    attrs: dict[str, Any] = field(default_factory=dict)
    features: np.ndarray | None = None
    pca: StreamingPCA | None = None

    @property
    def method(self) -> str:
        return str(self.attrs.get("method", ""))

    @property
    def groups(self) -> list[str]:
        """Group names in order of first appearance."""
        return list(dict.fromkeys(self.group.tolist()))

    def trajectories(self) -> Iterator[tuple[str, str, np.ndarray]]:
        """(group, run label, point indices ordered by step) for each run."""
        keys = list(dict.fromkeys(zip(self.source.tolist(), self.run.tolist())))
        for src, run in keys:
            idx = np.flatnonzero((self.source == src) & (self.run == run))
            idx = idx[np.argsort(self.step[idx], kind="stable")]
            label = run if len(self.attrs.get("sources", [])) <= 1 else f"{src}:{run}"
            yield str(self.group[idx[0]]), label, idx

    # --- persistence
    def save(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Write the embedding file (docs/format.md, "Embedding files")."""
        extra: dict[str, np.ndarray] = {}
        if self.features is not None:
            extra["features"] = self.features.astype(np.float32)
        if self.pca is not None:
            extra["pca/mean"] = self.pca.mean_.astype(np.float32)
            extra["pca/components"] = self.pca.components_.astype(np.float32)
            extra["pca/explained_variance_ratio"] = self.pca.explained_variance_ratio_
        write_embedding(path, self.coords, self.run, self.step, self.group, attrs=self.attrs,
                        points={"epoch": self.epoch, "checkpoint": self.checkpoint,
                                "source": self.source, "added": self.added},
                        extra=extra, overwrite=overwrite)
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> "Embedding":
        """Read an embedding file; optional per-point datasets default sensibly when absent."""
        d = read_embedding(path)
        pts, coords, ex = d["points"], d["coords"], d["extra"]
        m = coords.shape[0]
        pca = None
        if "pca/mean" in ex and "pca/components" in ex:
            pca = StreamingPCA.from_arrays(ex["pca/mean"], ex["pca/components"],
                                           ex.get("pca/explained_variance_ratio"))
        feats = ex.get("features")
        if feats is not None and feats.shape[0] != m:
            raise FormatError(f"{path}: '/features' has {feats.shape[0]} rows, '/coords' {m}")
        return cls(coords=coords,
                   run=np.asarray(pts["run"], dtype=object).astype(str),
                   step=pts["step"].astype(np.int64),
                   group=np.asarray(pts["group"], dtype=object).astype(str),
                   epoch=np.asarray(pts.get("epoch", np.full(m, np.nan)), dtype=np.float64),
                   checkpoint=np.asarray(pts.get("checkpoint", np.full(m, -1)), dtype=np.int64),
                   source=np.asarray(pts.get("source", np.zeros(m)), dtype=np.int64),
                   added=np.asarray(pts.get("added", np.zeros(m)), dtype=bool),
                   attrs=dict(d["attrs"]),
                   features=None if feats is None else np.asarray(feats, dtype=np.float64),
                   pca=pca)

    # --- adding points
    def add(self, files: Sequence[str | Path], *, groups: Sequence[str] | None = None,
            where: Iterable[str] | None = None, checkpoints: str | slice | None = None,
            progress: bool = False) -> "Embedding":
        """Place the selected checkpoints of ``files`` into this embedding, old points fixed.

        Checkpoints already present (same source file, run and step) are skipped, so a resumed
        file can be passed again to add only its new checkpoints. Uses the stored PCA and
        features: new points go through the same PCA, then the method's out-of-sample
        extension (:func:`trajviz.embedders.extend`). Returns a new Embedding.
        """
        from trajviz.embedders import extend

        if self.pca is None or self.features is None:
            raise FormatError("this embedding file has no '/pca' and '/features' (written by "
                              "another program?), so points cannot be added; re-run the projection")
        rep = str(self.attrs.get("representation", "probs"))
        sources = list(self.attrs.get("sources", []))
        with contextlib.ExitStack() as stack:
            exps = open_experiments(files, stack)
            sha = str(self.attrs.get("probe_sha256", ""))
            if sha and exps[0].probe_sha256 != sha:
                raise ProbeSetMismatchError(
                    f"{exps[0].path} was recorded on a different probe set than the embedding "
                    f"(probe_sha256 {exps[0].probe_sha256[:12]} vs {sha[:12]})")
            runs = select(exps, groups=groups, where=where, checkpoints=checkpoints)
            src_map = []
            for e in exps:
                ident = _source_entry(e)
                match = [i for i, s in enumerate(sources) if s.get("path") == ident["path"]]
                if match:
                    src_map.append(match[0])
                else:
                    sources.append(ident)
                    src_map.append(len(sources) - 1)
            have = set(zip(self.source.tolist(), self.run.tolist(), self.step.tolist()))
            kept = []
            for r in runs:
                keep = np.array([(src_map[r.source], r.run_id, int(s)) not in have for s in r.steps])
                if keep.any():
                    kept.append(replace(r, checkpoints=r.checkpoints[keep], steps=r.steps[keep],
                                        epochs=r.epochs[keep]))
            if not kept:
                raise ConfigError("every selected checkpoint is already in the embedding; "
                                  "nothing to add")
            m = sum(r.checkpoints.size for r in kept)
            feats = self.pca.transform_stream(
                iter_checkpoint_vectors(exps, kept, rep, progress=progress, desc="PCA project"), m)
        new_coords = extend(self.method, self.features, self.coords, feats, self.attrs)
        lab = _labels(kept, src_map)
        attrs = dict(self.attrs, sources=sources,
                     n_added=int(self.attrs.get("n_added", 0)) + m)
        log.info("added %d checkpoint(s) of %d run(s) to the %s embedding", m, len(kept),
                 self.method)
        return Embedding(coords=np.vstack([self.coords, new_coords]),
                         run=np.concatenate([self.run, lab["run"]]),
                         step=np.concatenate([self.step, lab["step"]]),
                         group=np.concatenate([self.group, lab["group"]]),
                         epoch=np.concatenate([self.epoch, lab["epoch"]]),
                         checkpoint=np.concatenate([self.checkpoint, lab["checkpoint"]]),
                         source=np.concatenate([self.source, lab["source"]]),
                         added=np.concatenate([self.added, np.ones(m, dtype=bool)]),
                         attrs=attrs, features=np.vstack([self.features, feats]), pca=self.pca)


def _source_entry(f: ExperimentFile) -> dict[str, str]:
    return {"path": str(f.path.resolve()), "name": f.name}


def _labels(runs: Sequence[SelectedRun], src_map: Sequence[int] | None = None) -> dict[str, np.ndarray]:
    def cat(fn: Any, dtype: Any) -> np.ndarray:
        return np.concatenate([np.asarray(fn(r), dtype=dtype) for r in runs])

    return {"run": cat(lambda r: [r.run_id] * r.checkpoints.size, object).astype(str),
            "group": cat(lambda r: [r.group] * r.checkpoints.size, object).astype(str),
            "step": cat(lambda r: r.steps, np.int64),
            "epoch": cat(lambda r: r.epochs, np.float64),
            "checkpoint": cat(lambda r: r.checkpoints, np.int64),
            "source": cat(lambda r: np.full(r.checkpoints.size,
                                            r.source if src_map is None else src_map[r.source]),
                          np.int64)}


def embed(files: Sequence[str | Path], *, method: str = "tsne", representation: str = "probs",
          dims: int = 2, pca_dims: int = 50, groups: Sequence[str] | None = None,
          where: Iterable[str] | Mapping[str, Any] | None = None,
          checkpoints: str | slice | None = None, seed: int = 0,
          params: Mapping[str, Any] | None = None, quality_k: int = 10,
          memory_mb: float = 16.0, progress: bool = False) -> Embedding:
    """Embed all selected checkpoints of all selected runs jointly.

    ``method``: one of :data:`METHODS`; ``params``: method parameters (see
    :mod:`trajviz.embedders`, e.g. ``{"perplexity": 30}``, ``{"n_neighbors": 10}``).
    ``representation``: see :func:`represent`. ``pca_dims``: streaming-PCA dimensions before
    the method (the studies' t-SNE used 30). Deterministic given ``seed``.
    Quality figures (trustworthiness, k-NN preservation, k = ``quality_k``) compare the
    embedding with the PCA features; ``pca_explained_variance`` says how much of the function
    space's variance those keep.
    """
    from trajviz.embedders import embedding_quality, fit

    if method not in METHODS:
        raise ConfigError(f"method {method!r}: choose one of {', '.join(METHODS)}")
    if representation not in REPRESENTATIONS:
        raise ConfigError(f"representation {representation!r}: choose one of "
                          f"{', '.join(REPRESENTATIONS)}")
    if dims not in (2, 3):
        raise ConfigError(f"dims {dims}: choose 2 or 3")
    if pca_dims < dims:
        raise ConfigError(f"pca_dims {pca_dims}: must be at least dims ({dims})")
    with contextlib.ExitStack() as stack:
        exps = open_experiments(files, stack)
        runs = select(exps, groups=groups, where=where, checkpoints=checkpoints)
        m = sum(r.checkpoints.size for r in runs)
        if m < 3:
            raise ConfigError(f"the selection has {m} checkpoint(s); embedding needs at least 3")
        pca, feats = reduce_checkpoints(exps, runs, representation, pca_dims,
                                        memory_mb=memory_mb, progress=progress)
        sources = [_source_entry(e) for e in exps]
        sha = exps[0].probe_sha256
        probe = (exps[0].probe_size, exps[0].n_classes)
    coords, fitted = fit(method, feats, dims=dims, seed=seed, params=params)
    quality = embedding_quality(feats, coords, k=quality_k, seed=seed)
    lab = _labels(runs)
    attrs = {"method": method, "representation": representation, "dims": dims,
             "pca_dims": int(pca.n_components_), "seed": seed, "params": fitted,
             "probe_sha256": sha, "probe_size": probe[0], "n_classes": probe[1],
             "sources": sources,
             "pca_explained_variance": float(pca.explained_variance_ratio_.sum()),
             "quality_trustworthiness": quality["trustworthiness"],
             "quality_knn_preservation": quality["knn_preservation"],
             "quality_k": quality["quality_k"], "n_added": 0}
    log.info("%s embedding of %d checkpoints: trustworthiness %.3f, %d-NN preservation %.3f",
             method, m, quality["trustworthiness"], quality["quality_k"],
             quality["knn_preservation"])
    return Embedding(coords=coords, run=lab["run"], step=lab["step"], group=lab["group"],
                     epoch=lab["epoch"], checkpoint=lab["checkpoint"], source=lab["source"],
                     added=np.zeros(m, dtype=bool), attrs=attrs, features=feats, pca=pca)
