"""Joint embeddings of function-space trajectories: the picture of F10 in [A] (Erhan et al. 2009,
Fig. 6-7) and [J] (Erhan et al. 2010, Fig. 8-9).

A *point* is one net at one checkpoint, represented by its outputs on the whole probe set,
flattened into one vector of N x C numbers (N probe examples, C classes). All selected points of
all selected runs, from one or several trajviz files that share a probe set, are embedded jointly.

Pipeline: read checkpoint by checkpoint from HDF5 -> representation
(:func:`trajviz.trajectories.runs.represent`) -> streaming PCA to ``pca_dims`` dimensions
(:class:`trajviz.trajectories.pca.StreamingPCA`; memory O(batch x N x C), never
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
Run selection (``select``, ``represent``, ``parse_checkpoints``, ``open_experiments``) lives in
:mod:`trajviz.trajectories.runs`, streaming PCA in :mod:`trajviz.trajectories.pca`.

Nothing here imports torch. Embedders live in :mod:`trajviz.trajectories.embedders`.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

from trajviz.errors import ConfigError, FormatError, ProbeSetMismatchError
from trajviz.store import ExperimentFile, read_embedding, write_embedding
from trajviz.trajectories.pca import StreamingPCA, reduce_checkpoints
from trajviz.trajectories.runs import (REPRESENTATIONS, SelectedRun, iter_checkpoint_vectors,
                                      open_experiments, select)

log = logging.getLogger(__name__)

#: prefix of the per-point metric datasets in embedding files (``/points/metric_train_error``)
METRIC_PREFIX = "metric_"
#: embedding methods
METHODS = ("tsne", "isomap", "umap", "pca", "inpca", "aligned-umap", "phate")
#: InPCA holds every selected checkpoint's distributions in memory at once: at most this many MiB
INPCA_MAX_MB = 4096.0


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
    #: the runs' scalar metrics at each point (e.g. ``train_error``, ``test_nll``): name -> (M,)
    #: float, NaN where a run did not record that metric
    metrics: dict[str, np.ndarray] = field(default_factory=dict)
    #: what a method needs to place new points besides features and PCA (InPCA's eigenpairs and
    #: distance means): HDF5 path (``"inpca/eigenvalues"``) -> array
    state: dict[str, np.ndarray] = field(default_factory=dict)
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
        extra.update(self.state)
        write_embedding(path, self.coords, self.run, self.step, self.group, attrs=self.attrs,
                        points={"epoch": self.epoch, "checkpoint": self.checkpoint,
                                "source": self.source, "added": self.added,
                                **{METRIC_PREFIX + k: v for k, v in self.metrics.items()}},
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
                   pca=pca,
                   state={k: v for k, v in ex.items() if k.startswith("inpca/")},
                   metrics={k[len(METRIC_PREFIX):]: np.asarray(v, dtype=np.float64)
                            for k, v in pts.items() if k.startswith(METRIC_PREFIX)})

    # --- adding points
    def add(self, files: Sequence[str | Path], *, groups: Sequence[str] | None = None,
            where: Iterable[str] | None = None, checkpoints: str | slice | None = None,
            progress: bool = False) -> "Embedding":
        """Place the selected checkpoints of ``files`` into this embedding, old points fixed.

        Checkpoints already present (same source file, run and step) are skipped, so a resumed
        file can be passed again to add only its new checkpoints. Uses the stored PCA and
        features: new points go through the same PCA, then the method's out-of-sample
        extension (:func:`trajviz.trajectories.embedders.extend`). Returns a new Embedding.
        """
        from trajviz.trajectories.embedders import extend

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
            lab = _labels(kept, exps, src_map)
            if self.method == "inpca":
                new_coords = self._place_inpca(exps, kept, stack)
        if self.method != "inpca":
            new_coords = extend(self.method, self.features, self.coords, feats, self.attrs)
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
                         attrs=attrs, features=np.vstack([self.features, feats]), pca=self.pca,
                         metrics=_concat_metrics(self.metrics, self.run.size, lab["metrics"]))

    def _place_inpca(self, exps: Sequence[ExperimentFile], kept: Sequence[SelectedRun],
                     stack: contextlib.ExitStack) -> np.ndarray:
        """InPCA coordinates of ``kept``'s checkpoints: their Bhattacharyya distances to the
        fitted points (re-read from the source files recorded in the embedding)."""
        from trajviz.trajectories.inpca import InPCA, bhattacharyya_distances

        model = InPCA.from_state(self.state)
        fitted = np.flatnonzero(~self.added)
        if fitted.size != model.row_means_.size:
            raise FormatError(f"the embedding has {fitted.size} fitted points but its InPCA "
                              f"{model.row_means_.size}")
        sources = list(self.attrs.get("sources", []))
        old = []
        for src in sorted(set(self.source[fitted].tolist())):
            path = Path(str(sources[src]["path"])) if src < len(sources) else None
            if path is None or not path.exists():
                raise ConfigError(f"InPCA places new points by their distances to the fitted "
                                  f"ones, read from {path}, which does not exist; pass the "
                                  "embedding's source files where they were")
            old.append(stack.enter_context(ExperimentFile(path)))
        by_source = dict(zip(sorted(set(self.source[fitted].tolist())), old))
        P_old = np.empty((fitted.size, *_distribution_shape(exps[0])), dtype=np.float32)
        for (src, run), idx in _point_groups(self.source[fitted], self.run[fitted]).items():
            P_old[idx] = by_source[src].outputs(run, self.checkpoint[fitted][idx])
        P_new = _distributions(exps, kept)
        return model.transform(bhattacharyya_distances(P_new, P_old))


def _point_groups(source: np.ndarray, run: np.ndarray) -> dict[tuple[int, str], np.ndarray]:
    """Point indices of each (source, run), in point order."""
    out: dict[tuple[int, str], list[int]] = {}
    for i, key in enumerate(zip(source.tolist(), run.tolist())):
        out.setdefault(key, []).append(i)
    return {k: np.asarray(v) for k, v in out.items()}


def _distribution_shape(f: ExperimentFile) -> tuple[int, int]:
    return f.probe_size, f.n_classes


def _distributions(files: Sequence[ExperimentFile], runs: Sequence[SelectedRun], *,
                   progress: bool = False) -> np.ndarray:
    """Every selected checkpoint's probe probabilities, (M, N, C) float32, in selection order."""
    n, c = _distribution_shape(files[0])
    m = sum(r.checkpoints.size for r in runs)
    need = m * n * c * 4 / 2**20
    if need > INPCA_MAX_MB:
        raise ConfigError(f"InPCA of {m} checkpoints x {n} probes x {c} classes needs "
                          f"{need:,.0f} MiB in memory (limit {INPCA_MAX_MB:,.0f}); select fewer "
                          "checkpoints (e.g. checkpoints='::2') or runs")
    out = np.empty((m, n, c), dtype=np.float32)
    for i, vec in enumerate(iter_checkpoint_vectors(files, runs, "probs", progress=progress,
                                                    desc="reading")):
        out[i] = vec.reshape(n, c)
    return out


def _source_entry(f: ExperimentFile) -> dict[str, str]:
    return {"path": str(f.path.resolve()), "name": f.name}


def _labels(runs: Sequence[SelectedRun], files: Sequence[ExperimentFile],
            src_map: Sequence[int] | None = None) -> dict[str, Any]:
    """Per-point labels of the selected checkpoints, in selection order, and the runs' metrics
    at those checkpoints (``"metrics"``: name -> (M,), NaN for runs without that metric)."""
    def cat(fn: Any, dtype: Any) -> np.ndarray:
        return np.concatenate([np.asarray(fn(r), dtype=dtype) for r in runs])

    per_run = [files[r.source].metrics(r.run_id) for r in runs]
    names = list(dict.fromkeys(k for m in per_run for k in m))
    metrics = {k: np.concatenate([m[k][r.checkpoints] if k in m
                                  else np.full(r.checkpoints.size, np.nan)
                                  for r, m in zip(runs, per_run)]) for k in names}
    return {"run": cat(lambda r: [r.run_id] * r.checkpoints.size, object).astype(str),
            "group": cat(lambda r: [r.group] * r.checkpoints.size, object).astype(str),
            "step": cat(lambda r: r.steps, np.int64),
            "epoch": cat(lambda r: r.epochs, np.float64),
            "checkpoint": cat(lambda r: r.checkpoints, np.int64),
            "source": cat(lambda r: np.full(r.checkpoints.size,
                                            r.source if src_map is None else src_map[r.source]),
                          np.int64),
            "metrics": metrics}


def _concat_metrics(old: Mapping[str, np.ndarray], n_old: int,
                    new: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Metrics of old points followed by new ones; a metric missing on one side is NaN there."""
    n_new = next(iter(new.values())).size if new else 0
    return {k: np.concatenate([old.get(k, np.full(n_old, np.nan)),
                               new.get(k, np.full(n_new, np.nan))])
            for k in dict.fromkeys([*old, *new])}


def embed(files: Sequence[str | Path], *, method: str = "tsne", representation: str = "probs",
          dims: int = 2, pca_dims: int = 50, groups: Sequence[str] | None = None,
          where: Iterable[str] | Mapping[str, Any] | None = None,
          checkpoints: str | slice | None = None, seed: int = 0,
          params: Mapping[str, Any] | None = None, quality_k: int = 10,
          memory_mb: float = 16.0, progress: bool = False) -> Embedding:
    """Embed all selected checkpoints of all selected runs jointly.

    ``method``: one of :data:`METHODS`; ``params``: method parameters (see
    :mod:`trajviz.trajectories.embedders`, e.g. ``{"perplexity": 30}``, ``{"n_neighbors": 10}``).
    ``representation``: see :func:`represent`. ``pca_dims``: streaming-PCA dimensions before
    the method (the studies' t-SNE used 30). Deterministic given ``seed``.
    Quality figures (trustworthiness, k-NN preservation, k = ``quality_k``) compare the
    embedding with the PCA features; ``pca_explained_variance`` says how much of the function
    space's variance those keep.
    """
    from trajviz.trajectories.embedders import embedding_quality, fit

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
        lab = _labels(runs, exps)
        state: dict[str, np.ndarray] = {}
        if method == "inpca":
            from trajviz.trajectories.inpca import InPCA, bhattacharyya_distances

            if params:
                raise ConfigError(f"inpca takes no parameters; got {', '.join(params)}")
            if representation != "probs":
                log.info("inpca compares the predicted distributions themselves; representation "
                         "%r applies to the PCA features of the quality figures only",
                         representation)
            model = InPCA(dims=dims).fit(bhattacharyya_distances(
                _distributions(exps, runs, progress=progress)))
            coords, fitted, state = model.coords_, {}, model.state()
            fitted["explained_stress"] = model.explained_stress_
            fitted["explained_stress_per_axis"] = model.explained_stress_per_axis_.tolist()
            fitted["eigenvalues"] = model.eigenvalues_.tolist()
    if method != "inpca":
        coords, fitted = fit(method, feats, dims=dims, seed=seed, params=params,
                             slices=(np.char.add(lab["source"].astype(str),
                                                 np.char.add(":", lab["run"].astype(str))),
                                     lab["checkpoint"]))
    quality = embedding_quality(feats, coords, k=quality_k, seed=seed)
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
                     added=np.zeros(m, dtype=bool), attrs=attrs, features=feats, pca=pca,
                     state=state,
                     metrics=lab["metrics"])
