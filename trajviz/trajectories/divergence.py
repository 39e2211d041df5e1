"""Divergence of function-space trajectories measured in numbers, in the original function space
(not on an embedding's picture). Quantifies F10 of [A]/[J]: pre-trained and random-init nets
start and stay apart; nets of one kind first move together, then diverge; pre-trained nets end
in a smaller region.

Distance between two nets f, g at a checkpoint, in a representation r (see
:func:`trajviz.trajectories.runs.represent`)::

    d(f, g) = sqrt( (1/N) * sum_n || r(f(x_n)) - r(g(x_n)) ||^2 )

the root-mean-square over the N probe examples of the per-example Euclidean distance between
output vectors, so values do not grow with the probe-set size. (For ``sqrt``, d / sqrt(2) is
the RMS Hellinger distance.)

Measures, per checkpoint index t (runs aligned by checkpoint index):

- ``spread`` of group g: mean of d over all pairs of g's nets (the one meaning of "spread" in
  trajviz: a distance, in the unit of d).
- ``centroid_distance`` of groups g, h: d between the mean representations of the groups.
- ``knn_accuracy``: leave-one-out k-NN accuracy of predicting each net's group from its k
  nearest other nets (majority vote; ties go to the group of the nearest tied net; neighbours by
  scikit-learn). k is capped by the group sizes (:func:`trajviz.trajectories.separation.choose_k`:
  at most the number of other nets in the smallest group; default the largest odd k <= 5 under
  that cap), with a one-line warning when a requested k is lowered.
- ``separation`` of two groups A, B (:mod:`trajviz.trajectories.separation`): permutation
  p-values of the k-NN accuracy per checkpoint, "start apart" and "stay apart" tests with
  verdicts, and B's spread over A's at the last checkpoint with a bootstrap interval.
- ``divergence time`` of group g (:func:`divergence_time`): let s(t) be g's spread,
  t_min = argmin_t s(t), rise = max_{t >= t_min} s(t) - s(t_min). If rise < ``min_rise`` x
  s(t_min) the group does not diverge (None). Otherwise, with threshold
  theta = s(t_min) + ``tau`` x rise, the divergence time is the last checkpoint t >= t_min with
  s(t) <= theta: up to it the nets are (within tau of the rise) as close as they ever get; after
  it their spread stays above theta, i.e. they move apart and do not rejoin. If that is the last
  checkpoint (the spread ends near its minimum) the group does not diverge either (None).
  Uncertainty over seeds: the runs of the group are resampled with replacement ``n_boot``
  times (pairs of a run with itself left out) and the divergence time recomputed; reported as
  a 95 % percentile interval, the standard deviation and the fraction of resamples without
  divergence.

Public API: ``divergence_table(files, *, representation="probs", groups=None, where=None,
checkpoints=None, k=None, tau=0.1, min_rise=0.1, n_boot=1000, seed=0, paired=None,
n_permutations=9999) -> DivergenceTable`` (with
``format()``, ``to_dict()``, ``save(path)``); ``distance_matrices``, ``spread``,
``knn_accuracy``, ``divergence_time``, ``bootstrap_divergence_time`` for arrays.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from trajviz.errors import ConfigError
from trajviz.progress import progress_bar
from trajviz.trajectories.runs import open_experiments, represent, run_vectors, select
from trajviz.trajectories.separation import (N_PERMUTATIONS, Separation, choose_k, knn_correct,
                                             knn_neighbours, separation)
from trajviz.store import ExperimentFile

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- array-level measures


def pairwise_rms_distances(X: np.ndarray, n_probe: int) -> np.ndarray:
    """X (R, N*C) representations -> (R, R) RMS-over-probes distances (see module docstring)."""
    X = np.asarray(X, dtype=np.float64)
    sq = np.einsum("ij,ij->i", X, X)
    d2 = sq[:, None] + sq[None, :] - 2.0 * (X @ X.T)
    np.fill_diagonal(d2, 0.0)
    return np.sqrt(np.clip(d2, 0.0, None) / n_probe)


def spread(dist: np.ndarray, members: np.ndarray | None = None) -> np.ndarray:
    """Mean pairwise distance among ``members`` (indices, repeats allowed: pairs of equal
    indices are left out). ``dist`` (..., R, R) -> (...)."""
    r = dist.shape[-1]
    idx = np.arange(r) if members is None else np.asarray(members)
    sub = dist[..., idx[:, None], idx[None, :]]
    mask = idx[:, None] != idx[None, :]
    if not mask.any():
        return np.full(dist.shape[:-2], np.nan)
    return sub[..., mask].mean(axis=-1)


def knn_accuracy(dist: np.ndarray, labels: Sequence[Any], k: int | None = None) -> float:
    """Leave-one-out k-NN accuracy of predicting ``labels`` from a (R, R) distance matrix; k as
    :func:`~trajviz.trajectories.separation.choose_k` allows for the group sizes (a requested k
    that is too large is lowered, with a warning). NaN with fewer than 2 groups or a group of
    one run."""
    labels = np.asarray(labels)
    names, codes = np.unique(labels, return_inverse=True)
    counts = np.bincount(codes)
    if names.size < 2 or counts.min() < 2:
        return float("nan")
    k_used, msg = choose_k(counts.tolist(), k)
    if msg:
        log.warning(msg)
    return float(knn_correct(knn_neighbours(dist[None], k_used), codes)[0].mean())


def divergence_time(s: np.ndarray, *, tau: float = 0.1, min_rise: float = 0.1) -> int | None:
    """Divergence time (checkpoint index) of a spread curve s (T,), or None if it does not
    rise; definition in the module docstring."""
    s = np.asarray(s, dtype=np.float64)
    if s.size == 0 or not np.all(np.isfinite(s)):
        return None
    t_min = int(np.argmin(s))
    rise = float(s[t_min:].max() - s[t_min])
    if rise <= min_rise * max(float(s[t_min]), 1e-12):
        return None
    theta = s[t_min] + tau * rise
    t_div = int(t_min + np.flatnonzero(s[t_min:] <= theta)[-1])
    return None if t_div == s.size - 1 else t_div  # back near its minimum at the end: no parting


def bootstrap_divergence_time(dist: np.ndarray, members: np.ndarray, *, n_boot: int = 1000,
                              seed: int = 0, tau: float = 0.1,
                              min_rise: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Resample ``members`` (run indices) with replacement ``n_boot`` times.

    ``dist`` (T, R, R). Returns divergence times (n_boot,) float (NaN = no divergence) and the
    resampled spread curves (n_boot, T).
    """
    rng = np.random.default_rng(seed)
    members = np.asarray(members)
    times = np.full(n_boot, np.nan)
    curves = np.full((n_boot, dist.shape[0]), np.nan)
    for b in range(n_boot):
        idx = rng.choice(members, size=members.size, replace=True)
        if np.unique(idx).size < 2:
            continue
        curves[b] = spread(dist, idx)
        t = divergence_time(curves[b], tau=tau, min_rise=min_rise)
        times[b] = np.nan if t is None else t
    return times, curves


# --------------------------------------------------------------------------- file-level table


@dataclass
class DivergenceTime:
    """Divergence time of one group: checkpoint index and epoch, with bootstrap uncertainty."""

    group: str
    checkpoint: int | None  # None: the group's spread does not rise again
    epoch: float | None
    ci_low: float | None  # 2.5th / 97.5th percentiles of the bootstrap, checkpoint index
    ci_high: float | None
    std: float | None
    p_no_divergence: float  # fraction of bootstrap resamples without divergence
    n_runs: int


@dataclass
class DivergenceTable:
    """Divergence measures per checkpoint (arrays of length T) and per group."""

    groups: list[str]
    checkpoint: np.ndarray  # (T,) checkpoint index
    epoch: np.ndarray  # (T,) mean epoch over runs (NaN if unknown)
    step: np.ndarray  # (T,) SGD step of the first run
    spread: dict[str, np.ndarray]  # group -> (T,)
    spread_se: dict[str, np.ndarray]  # group -> (T,) bootstrap standard error over seeds
    centroid_distance: dict[str, np.ndarray]  # "g|h" -> (T,)
    knn_accuracy: np.ndarray  # (T,)
    divergence: dict[str, DivergenceTime]
    attrs: dict[str, Any] = field(default_factory=dict)
    separation: Separation | None = None  # two groups only

    def rows(self) -> list[dict[str, Any]]:
        """One dict per checkpoint: the per-checkpoint table."""
        out = []
        for t in range(self.checkpoint.size):
            row: dict[str, Any] = {"checkpoint": int(self.checkpoint[t]),
                                   "epoch": _num(self.epoch[t]), "step": int(self.step[t])}
            for g in self.groups:
                row[f"spread[{g}]"] = _num(self.spread[g][t])
                row[f"spread_se[{g}]"] = _num(self.spread_se[g][t])
            for pair, arr in self.centroid_distance.items():
                row[f"centroid_distance[{pair}]"] = _num(arr[t])
            row["knn_accuracy"] = _num(self.knn_accuracy[t])
            if self.separation is not None:
                row["knn_p_value"] = _num(self.separation.p_value[t])
                row["knn_p_value_maxt"] = _num(self.separation.p_value_maxt[t])
            out.append(row)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"attrs": self.attrs, "groups": self.groups, "per_checkpoint": self.rows(),
                "divergence_time": {g: asdict(d) for g, d in self.divergence.items()},
                "separation": None if self.separation is None else self.separation.to_dict()}

    def format(self) -> str:
        """The table as aligned text, followed by the divergence times."""
        rows = self.rows()
        cols = list(rows[0].keys())
        fmt = [lambda v: "" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))]
        cells = [[fmt[0](r[c]) for c in cols] for r in rows]
        widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
        lines = ["  ".join(c.rjust(w) for c, w in zip(cols, widths))]
        lines += ["  ".join(v.rjust(w) for v, w in zip(row, widths)) for row in cells]
        lines.append("")
        lines.append(f"divergence time (tau={self.attrs.get('tau')}, 95% bootstrap interval over "
                     f"seeds, {self.attrs.get('n_boot')} resamples):")
        for g, d in self.divergence.items():
            if d.checkpoint is None:
                lines.append(f"  {g}: no divergence (spread does not rise again); "
                             f"{100 * (1 - d.p_no_divergence):.0f}% of resamples diverge")
            else:
                ep = "" if d.epoch is None else f" (epoch {d.epoch:.3g})"
                ci = ("" if d.ci_low is None or d.ci_high is None
                      else f", 95% CI [{d.ci_low:.3g}, {d.ci_high:.3g}]")
                ci += "" if d.std is None else f", sd {d.std:.2g}"
                lines.append(f"  {g}: checkpoint {d.checkpoint}{ep}{ci}; "
                             f"{100 * d.p_no_divergence:.0f}% of resamples without divergence; "
                             f"{d.n_runs} runs")
        if self.separation is not None:
            lines += ["", self.separation.format()]
        return "\n".join(lines)

    def save(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Write ``.json`` (everything) or ``.csv`` (the per-checkpoint rows)."""
        from trajviz.errors import OutputExistsError

        path = Path(path)
        suffix = path.suffix.lower()
        if suffix not in (".json", ".csv"):
            raise ConfigError(f"output {str(path)!r}: suffix must be .json or .csv")
        if path.exists() and not overwrite:
            raise OutputExistsError(f"{path} exists; pass --overwrite to replace it")
        path.parent.mkdir(parents=True, exist_ok=True)
        if suffix == ".json":
            path.write_text(json.dumps(self.to_dict(), indent=2))
        else:
            rows = self.rows()
            with path.open("w", newline="") as fh:
                w = csv.DictWriter(fh, fieldnames=list(rows[0]))
                w.writeheader()
                w.writerows(rows)
        return path


def _num(v: Any) -> float | None:
    v = float(v)
    return None if math.isnan(v) else v


def distance_matrices(files: Sequence[ExperimentFile], runs: Sequence[Any], representation: str,
                      *, progress: bool = False) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """RMS distances between all selected runs at each aligned checkpoint, (T, R, R), and the
    group centroids' representations' pairwise distances {"g|h": (T,)}.

    Memory: one checkpoint of every run at a time, O(R x N x C)."""
    t_len = min(r.checkpoints.size for r in runs)
    if any(r.checkpoints.size != t_len for r in runs):
        log.warning("runs have different numbers of checkpoints; using the first %d of each", t_len)
    n_probe = files[0].probe_size
    groups = list(dict.fromkeys(r.group for r in runs))
    labels = np.array([r.group for r in runs])
    dist = np.empty((t_len, len(runs), len(runs)))
    cdist: dict[str, np.ndarray] = {f"{g}|{h}": np.empty(t_len)
                                    for i, g in enumerate(groups) for h in groups[i + 1:]}
    streams = [run_vectors(files[r.source], r, representation) for r in runs]  # in lockstep
    for t in progress_bar(range(t_len), enabled=progress, desc="distances", unit="ckpt"):
        X = np.stack([next(s) for s in streams]).astype(np.float64)
        dist[t] = pairwise_rms_distances(X, n_probe)
        cents = {g: X[labels == g].mean(axis=0) for g in groups}
        for pair in cdist:
            g, h = pair.split("|")
            cdist[pair][t] = float(np.sqrt(np.sum((cents[g] - cents[h]) ** 2) / n_probe))
    return dist, cdist


def declared_pairing(configs: Sequence[Mapping[str, Any]]) -> bool | None:
    """Whether runs of one seed share initial weights across methods, as the files' configs say
    (``pretrain.shared_init``; a trajviz config from before the key existed: True, the runner's
    design then): False if any file says False, True if all say True, None (unknown: decide from
    the seeds) for files without a trajviz config."""
    said = []
    for cfg in configs:
        pre = cfg.get("pretrain") if isinstance(cfg, Mapping) else None
        said.append(None if not isinstance(pre, Mapping) else bool(pre.get("shared_init", True)))
    if any(v is False for v in said):
        return False
    return True if said and all(v is True for v in said) else None


def divergence_table(files: Sequence[str | Path], *, representation: str = "probs",
                     groups: Sequence[str] | None = None,
                     where: Iterable[str] | Mapping[str, Any] | None = None,
                     checkpoints: str | slice | None = None, k: int | None = None,
                     tau: float = 0.1, min_rise: float = 0.1, n_boot: int = 1000, seed: int = 0,
                     paired: bool | None = None, n_permutations: int = N_PERMUTATIONS,
                     progress: bool = False) -> DivergenceTable:
    """Divergence measures of the selected runs (selection rules: :func:`trajviz.trajectories.runs.select`;
    diverged runs left out). See the module docstring for every definition.

    With exactly two groups (``groups=[A, B]`` in that order, or the only two in the input), also
    the separation tests of :func:`trajviz.trajectories.separation.separation`: ``paired`` says
    whether runs of one seed share initial weights across the groups (None: as the files'
    configs declare, :func:`declared_pairing`, else from the runs' seeds,
    :func:`~trajviz.trajectories.separation.seed_pairs`); ``n_permutations`` caps the
    relabellings of the permutation test (exact when there are no more)."""
    if not 0 < tau < 1:
        raise ConfigError(f"tau {tau}: must lie strictly between 0 and 1")
    if k is not None and k < 1:
        raise ConfigError(f"k {k}: must be a positive integer")
    if n_permutations < 1:
        raise ConfigError(f"n_permutations {n_permutations}: must be >= 1")
    if n_boot < 0:
        raise ConfigError(f"n_boot {n_boot}: must be >= 0")
    represent(np.zeros((1, 1), dtype=np.float32), representation)  # validates the name
    with contextlib.ExitStack() as stack:
        exps = open_experiments(files, stack)
        runs = select(exps, groups=groups, where=where, checkpoints=checkpoints)
        dist, cdist = distance_matrices(exps, runs, representation, progress=progress)
        sources = [str(e.path) for e in exps]
        declared = declared_pairing([e.config for e in exps])
    if paired is None:
        paired = declared
    t_len = dist.shape[0]
    labels = np.array([r.group for r in runs])
    names = list(dict.fromkeys(labels.tolist()))
    ep = np.array([np.nanmean([r.epochs[t] for r in runs]) if any(np.isfinite(r.epochs[t])
                   for r in runs) else np.nan for t in range(t_len)])
    cp_index = runs[0].checkpoints[:t_len].astype(np.float64)
    pos = np.arange(t_len, dtype=np.float64)
    stride = float(np.mean(np.diff(cp_index))) if t_len > 1 else 1.0
    spreads, ses, div = {}, {}, {}
    for gi, g in enumerate(names):
        members = np.flatnonzero(labels == g)
        spreads[g] = spread(dist, members)
        t_div = divergence_time(spreads[g], tau=tau, min_rise=min_rise)
        if members.size >= 2 and n_boot > 0:
            times, curves = bootstrap_divergence_time(dist, members, n_boot=n_boot,
                                                      seed=seed + gi, tau=tau, min_rise=min_rise)
            ok = np.isfinite(curves[:, 0])
            ses[g] = curves[ok].std(axis=0, ddof=1) if ok.sum() > 1 else np.full(t_len, np.nan)
            valid = times[ok]
            div_times = valid[np.isfinite(valid)]
            p_none = float(np.mean(~np.isfinite(valid))) if valid.size else float("nan")
        else:
            ses[g] = np.full(t_len, np.nan)
            div_times, p_none = np.array([]), float("nan")
        if members.size < 2:
            log.warning("group %s has one run: no spread or divergence time", g)
        lo, hi = (np.percentile(div_times, [2.5, 97.5]) if div_times.size else (None, None))
        # positions in the selected checkpoints -> checkpoint indices (they differ with a stride)
        lo, hi = (None, None) if lo is None else np.interp([lo, hi], pos, cp_index)
        div[g] = DivergenceTime(
            group=g, checkpoint=None if t_div is None else int(cp_index[t_div]),
            epoch=None if t_div is None or not np.isfinite(ep[t_div]) else float(ep[t_div]),
            ci_low=None if lo is None else float(lo), ci_high=None if hi is None else float(hi),
            std=float(div_times.std(ddof=1)) * stride if div_times.size > 1 else None,
            p_no_divergence=p_none, n_runs=int(members.size))
    codes = np.unique(labels, return_inverse=True)[1]
    sizes = np.bincount(codes)
    k_used, msg = None, ""
    if len(names) >= 2 and sizes.min() >= 2:
        k_used, msg = choose_k(sizes.tolist(), k)
        if msg:
            log.warning(msg)
        acc = knn_correct(knn_neighbours(dist, k_used), codes).mean(axis=-1)
    else:
        log.warning("k-NN group accuracy needs two groups with at least 2 runs each; "
                    "groups here: %s", ", ".join(f"{g} ({int((labels == g).sum())})" for g in names))
        acc = np.full(t_len, np.nan)
    pair = list(groups) if groups and len(groups) == 2 else names if len(names) == 2 else None
    sep = None
    if pair is None:
        log.warning("no separation tests: they compare exactly two groups (here %d: %s); "
                    "pick two with groups=[A, B] (--groups A,B)", len(names), ", ".join(names))
    else:
        # k as chosen above (its warning given once); the two groups are all the groups here
        sep = separation(dist, labels, pair, checkpoint=cp_index.astype(np.int64),
                         seeds=[r.seed for r in runs], paired=paired,
                         k=k if k_used is None else k_used, n_permutations=n_permutations,
                         n_boot=n_boot, seed=seed)
        if msg:
            sep.notes.insert(0, msg)
    first = runs[0]
    return DivergenceTable(
        groups=names, checkpoint=first.checkpoints[:t_len].astype(np.int64), epoch=ep,
        step=first.steps[:t_len].astype(np.int64), spread=spreads, spread_se=ses,
        centroid_distance=cdist, knn_accuracy=acc, divergence=div, separation=sep,
        attrs={"representation": representation, "k": k_used, "k_requested": k, "tau": tau,
               "min_rise": min_rise, "n_permutations": n_permutations,
               "separation": None if sep is None else sep.attrs(),
               "n_boot": n_boot, "seed": seed, "sources": sources,
               "runs": {g: [r.run_id for r in runs if r.group == g] for g in names},
               "distance": "RMS over probe examples of the Euclidean distance of representations"})
