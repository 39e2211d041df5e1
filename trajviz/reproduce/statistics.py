"""Bootstrap intervals, the verdict rule, and the statistics that test the findings of Erhan et
al. (2009, 2010): numpy functions on *cells*, arrays whose first axis indexes runs.

:mod:`trajviz.reproduce.findings` applies them to stored results; docs/findings.md states the rule.
Statistic builders return a function ``cells -> float`` so :func:`bootstrap` can resample the
cells and recompute it; the resampling and the BCa interval are :func:`scipy.stats.bootstrap`'s.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, replace
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from scipy import stats as scipy_stats
from scipy.stats import DegenerateDataWarning

from trajviz.errors import ConfigError

REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE = "reproduced", "not reproduced", "inconclusive"
VERDICTS = (REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE)
#: fraction of bootstrap replicates that may be undefined (NaN) before the interval is refused
MAX_NAN_FRACTION = 0.05

Cells = Mapping[str, np.ndarray]


# --------------------------------------------------------------------------- bootstrap + rule


#: interval methods of :func:`bootstrap_interval`, as :func:`scipy.stats.bootstrap` names them
INTERVAL_METHODS = ("BCa", "percentile")


@dataclass(frozen=True)
class BootstrapInterval:
    """What :func:`bootstrap_interval` found: the point value, the interval and how it was made.

    ``method``: ``"BCa"`` or ``"percentile"`` (asked for, or the fallback when BCa is undefined),
    ``""`` when there is no interval (lo = hi = NaN). ``nan_fraction``: the fraction of resamples
    on which the statistic was undefined (NaN when none were drawn). ``point_quantile``: the share
    of the defined resamples below the point value, ties counted half (0.5 for a statistic that is
    unbiased under resampling; BCa's bias correction is computed from it). ``reason``: why there is
    no interval, why it is not BCa, or a warning about it; ``""`` when there is nothing to say.
    """

    value: float
    lo: float
    hi: float
    nan_fraction: float
    method: str
    point_quantile: float = math.nan
    reason: str = ""

    def as_tuple(self) -> tuple[float, float, float, float]:
        return self.value, self.lo, self.hi, self.nan_fraction


def bootstrap_interval(statistic: Callable[[Cells], float], cells: Cells, *, n_boot: int = 2000,
                       seed: int = 0, level: float = 0.95, method: str = "BCa",
                       blocks: Mapping[str, Sequence[int]] | None = None) -> BootstrapInterval:
    """Point value and bootstrap interval (BCa by default) of ``statistic(cells)``, by
    :func:`scipy.stats.bootstrap`.

    ``cells`` maps a cell name to an array whose first axis indexes runs (seeds); every cell is
    resampled independently with replacement (scipy's multi-sample bootstrap, ``paired=False``),
    ``n_boot`` times, from ``numpy.random.default_rng(seed)``: the same seed gives the same
    numbers. scipy resamples 1-D samples, so the samples it is given are each cell's run indices,
    in the order of ``cells``, and the statistic receives the cells by name with the resampled
    runs: cells of any shape work, e.g. (runs, T, D) trajectories.

    ``method="BCa"``: the bias-corrected and accelerated interval (Efron & Tibshirani 1993,
    ch. 14; acceleration from a jackknife over each cell's runs). It corrects for a statistic whose
    resampled values are biased or skewed, such as a spread, which shrinks when a resample repeats
    a run; for a linear statistic it agrees with the percentile interval. Note that, like the
    percentile interval, it contains the point value only when the point value lies within the
    central ``level`` share of the resampled values: when the resampling bias exceeds about 2
    standard errors, BCa centres the interval on the bias-corrected value, away from the point
    value (``reason`` then says so; the remedy is a less biased statistic).

    Deliberate departures from a bare ``scipy.stats.bootstrap`` call, which returns NaN as soon as
    one resampled value is NaN and raises on a sample of one:

    - resamples on which the statistic is undefined (NaN or inf) are dropped, and the interval is
      taken from the others; if they are more than :data:`MAX_NAN_FRACTION` of all, there is no
      interval (lo = hi = NaN);
    - where BCa is undefined (every resample gives the same value, e.g. cells of identical runs;
      the statistic is undefined on a jackknife sample, e.g. the SD of a cell of two runs; the
      point value lies outside every resampled value), the percentile interval of the same
      resamples is returned, with ``method="percentile"`` and the reason;
    - a cell with fewer than two runs cannot be resampled: no interval;
    - an undefined point value: no interval.

    ``blocks`` (paired designs): ``blocks[name][i]`` is the block (the seed) of run i of cell
    ``name``, for every cell. Runs of one block are then not independent (with
    ``pretrain.shared_init`` the runs of one seed share their initial weights and example order
    across methods), so whole blocks are resampled: one resample draws seeds with replacement and
    every cell receives, for each drawn seed, its run of that seed (if it has one), in the drawn
    order; the jackknife leaves out one seed at a time. A cell may hold at most one run per block.
    """
    if method not in INTERVAL_METHODS:
        raise ConfigError(f"bootstrap interval {method!r}: choose from "
                          f"{', '.join(INTERVAL_METHODS)}")
    if n_boot < 1:
        raise ConfigError(f"bootstrap resamples = {n_boot}: must be >= 1 "
                          "(1000+ for a 95% interval)")
    if not 0 < level < 1:
        raise ConfigError(f"confidence level {level}: must lie between 0 and 1")
    value = float(statistic(cells))
    names = list(cells)
    sizes = [len(cells[k]) for k in names]
    if blocks is not None:
        return _block_bootstrap(statistic, cells, blocks, value, n_boot=n_boot, seed=seed,
                                level=level, method=method)

    def none(reason: str, nan_fraction: float = math.nan) -> BootstrapInterval:
        return BootstrapInterval(value, math.nan, math.nan, nan_fraction, "", reason=reason)

    if not np.isfinite(value):
        return none("the statistic is undefined on these data; no interval")
    if not names or min(sizes) < 2:
        small = [f"{k} ({n} run{'s' * (n != 1)})" for k, n in zip(names, sizes) if n < 2]
        return none("a bootstrap needs at least two runs in every cell: "
                    + (", ".join(small) or "there are no cells") + "; no interval")

    def on_indices(*indices: np.ndarray, axis: int = -1) -> np.ndarray:
        # scipy passes one index array per cell, runs on the last axis and the resamples (or
        # jackknife samples) on the leading ones: evaluate the statistic once per resample
        lead = np.broadcast_shapes(*(i.shape[:-1] for i in indices))
        idx = [np.broadcast_to(i, lead + i.shape[-1:]) for i in indices]
        out = np.empty(lead)
        for pos in np.ndindex(lead):
            out[pos] = statistic({k: cells[k][i[pos]] for k, i in zip(names, idx)})
        return out

    samples = [np.arange(n) for n in sizes]

    def scipy_bootstrap(how: str, **kw: Any) -> Any:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            # scipy warns when an interval comes out NaN; each such case is handled below
            warnings.simplefilter("ignore", DegenerateDataWarning)
            return scipy_stats.bootstrap(samples, on_indices, vectorized=True, paired=False,
                                         axis=-1, confidence_level=level, method=how, **kw)

    # resample once (the percentile method spares the jackknife); the interval is then computed
    # by scipy from the defined resamples only, reusing them (``bootstrap_result``)
    res = scipy_bootstrap("percentile", n_resamples=n_boot, rng=np.random.default_rng(seed))
    reps = np.asarray(res.bootstrap_distribution, dtype=float)
    finite = np.isfinite(reps)
    nan_fraction = float(1.0 - finite.mean())
    if nan_fraction > MAX_NAN_FRACTION:
        return none(f"{nan_fraction:.0%} of bootstrap resamples left the statistic undefined; "
                    "no interval", nan_fraction)
    reps = reps[finite]
    point_quantile = float((np.sum(reps < value) + 0.5 * np.sum(reps == value)) / len(reps))
    kept = replace(res, bootstrap_distribution=reps)
    for how in INTERVAL_METHODS[INTERVAL_METHODS.index(method):]:
        ci = scipy_bootstrap(how, n_resamples=0, bootstrap_result=kept).confidence_interval
        lo, hi = float(ci.low), float(ci.high)
        if not (np.isfinite(lo) and np.isfinite(hi)):
            continue
        if how != method:
            reason = _why_not_bca(value, reps, on_indices, samples)
        elif not (1 - level) / 2 <= point_quantile <= (1 + level) / 2:
            side = "below" if point_quantile < 0.5 else "above"
            reason = (f"the point value lies {side} {max(point_quantile, 1 - point_quantile):.0%} "
                      "of its resampled values: the statistic is biased under resampling by "
                      f"more than its standard error, and the {how} interval excludes it")
            if how == "BCa":
                q_lo, q_hi = np.mean(reps < lo), np.mean(reps <= hi)
                reason += (f"; BCa's bias correction puts its ends at the {q_lo:.1%} and "
                           f"{q_hi:.1%} quantiles of the resamples, so its width is not reliable")
        else:
            reason = ""
        return BootstrapInterval(value, lo, hi, nan_fraction, how, point_quantile, reason)
    return BootstrapInterval(value, math.nan, math.nan, nan_fraction, "", point_quantile,
                             "scipy gave no interval")  # pragma: no cover (percentile is defined)


def _block_bootstrap(statistic: Callable[[Cells], float], cells: Cells,
                     blocks: Mapping[str, Sequence[int]], value: float, *, n_boot: int, seed: int,
                     level: float, method: str) -> BootstrapInterval:
    """:func:`bootstrap_interval` resampling whole blocks (seeds) across all cells: the
    cells become one sample of block labels, each label standing for its runs in every cell."""
    names = list(cells)
    missing = [k for k in names if k not in blocks]
    if missing:
        raise ConfigError(f"blocks: cell {missing[0]!r} has no block labels; give one per run "
                          "of every cell")
    labels = sorted({int(b) for k in names for b in blocks[k]})
    where = {b: i for i, b in enumerate(labels)}
    rows: dict[str, np.ndarray] = {}  # cell -> (n_labels,) row of each label, -1 where absent
    for k in names:
        lab = [int(b) for b in blocks[k]]
        if len(lab) != len(cells[k]):
            raise ConfigError(f"blocks: cell {k!r} has {len(cells[k])} runs but {len(lab)} block "
                              "labels")
        if len(set(lab)) != len(lab):
            raise ConfigError(f"blocks: cell {k!r} holds two runs of one block; a paired design "
                              "has one run per seed in each cell")
        r = np.full(len(labels), -1)
        r[[where[b] for b in lab]] = np.arange(len(lab))
        rows[k] = r

    def by_blocks(picked: np.ndarray) -> Cells:
        out = {}
        for k in names:
            r = rows[k][picked]
            out[k] = cells[k][r[r >= 0]]
        return out

    res = bootstrap_interval(lambda c: statistic(by_blocks(c["blocks"])),
                             {"blocks": np.arange(len(labels))}, n_boot=n_boot, seed=seed,
                             level=level, method=method)
    if res.reason.startswith("a bootstrap needs at least two runs"):
        res = replace(res, reason=f"a paired bootstrap needs at least two seeds ({len(labels)} "
                                  "here); no interval")
    return replace(res, value=value)


def _why_not_bca(value: float, reps: np.ndarray, on_indices: Callable[..., np.ndarray],
                 samples: Sequence[np.ndarray]) -> str:
    """Why BCa gave no interval, in words for the report."""
    if np.ptp(reps) == 0:
        why = "every resample gives the same value"
    elif value < reps.min() or value > reps.max():
        why = "the point value lies outside every resampled value"
    elif any(not np.isfinite(on_indices(*[np.delete(s, k) if i == j else t
                                          for i, t in enumerate(samples)]))
             for j, s in enumerate(samples) for k in range(len(s))):
        why = "the statistic is undefined when one run is left out of a cell"
    else:  # pragma: no cover (the three above are the ways BCa's formula breaks down)
        why = "scipy gave no BCa interval"
    return f"BCa is undefined here ({why}): percentile interval"


def bootstrap(statistic: Callable[[Cells], float], cells: Cells, *, n_boot: int = 2000,
              seed: int = 0, level: float = 0.95, method: str = "BCa",
              blocks: Mapping[str, Sequence[int]] | None = None) -> tuple[float, float, float, float]:
    """``(value, lo, hi, nan_fraction)`` of :func:`bootstrap_interval` (BCa by default, by
    scipy): lo and hi are NaN when there is no interval, e.g. when more than
    :data:`MAX_NAN_FRACTION` of the resamples leave the statistic undefined."""
    return bootstrap_interval(statistic, cells, n_boot=n_boot, seed=seed, level=level,
                              method=method, blocks=blocks).as_tuple()


def verdict(lo: float, hi: float, delta: float) -> str:
    """The verdict rule of docs/findings.md for a statistic whose claim predicts > 0."""
    if delta <= 0:
        raise ConfigError(f"delta = {delta}: the smallest effect of interest must be > 0")
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return INCONCLUSIVE
    if hi < delta:
        return NOT_REPRODUCED
    if lo > 0:
        return REPRODUCED
    return INCONCLUSIVE


# --------------------------------------------------------------------------- statistics


def _contrast(weights: Mapping[str, float], summary: Callable[[np.ndarray], float],
              log: bool) -> Callable[[Cells], float]:
    """sum_k weights[k] * f(summary(cells[k])), f the identity or log; NaN if a cell is empty or
    (with log) a summary is not positive."""

    def stat(cells: Cells) -> float:
        total = 0.0
        for k, w in weights.items():
            v = cells[k]
            if len(v) == 0:
                return math.nan
            m = float(summary(v))
            if log:
                if not m > 0:
                    return math.nan
                m = math.log(m)
            total += w * m
        return total

    return stat


def median_contrast(weights: Mapping[str, float]) -> Callable[[Cells], float]:
    """sum_k weights[k] * median(cells[k]): a linear contrast of cell medians."""
    return _contrast(weights, np.median, log=False)


def log_sd_ratio(pairs: Sequence[tuple[str, str]], resolution: float = 0.0) -> Callable[[Cells], float]:
    """Mean over (a, b) pairs of log(sd(a) / sd(b)); each sd is floored by the quantization of
    the values (``resolution`` / sqrt(12), added in quadrature) so a cell of equal values does
    not give log(0)."""
    q2 = resolution ** 2 / 12.0

    def stat(cells: Cells) -> float:
        logs = []
        for a, b in pairs:
            va, vb = cells[a], cells[b]
            if len(va) < 2 or len(vb) < 2:
                return math.nan
            sa = math.sqrt(np.var(va, ddof=1) + q2)
            sb = math.sqrt(np.var(vb, ddof=1) + q2)
            if sa == 0 or sb == 0:
                return math.nan
            logs.append(math.log(sa / sb))
        return float(np.mean(logs))

    return stat


def total_variance(points: np.ndarray) -> float:
    """Total variance of points (n, D): their mean squared Euclidean distance to their centroid
    (F5). Not a "spread": trajviz calls spread the mean pairwise RMS distance of
    :mod:`trajviz.trajectories.divergence`."""
    if len(points) < 2:
        return math.nan
    centred = points - points.mean(axis=0, keepdims=True)
    return float((centred * centred).sum(axis=1).mean())


def log_total_variance_ratio(pairs: Sequence[tuple[str, str]]) -> Callable[[Cells], float]:
    """Mean over (a, b) pairs of log(total_variance(a) / total_variance(b)); cells are (runs, D)
    points."""

    def stat(cells: Cells) -> float:
        logs = []
        for a, b in pairs:
            sa, sb = total_variance(cells[a]), total_variance(cells[b])
            if not (sa > 0 and sb > 0):
                return math.nan
            logs.append(math.log(sa / sb))
        return float(np.mean(logs))

    return stat


def log_mean_ratio(pairs: Sequence[tuple[str, str]]) -> Callable[[Cells], float]:
    """Mean over (a, b) pairs of log(mean(a) / mean(b)) for positive per-run values."""

    def stat(cells: Cells) -> float:
        logs = []
        for a, b in pairs:
            va, vb = cells[a], cells[b]
            if len(va) == 0 or len(vb) == 0:
                return math.nan
            ma, mb = float(np.mean(va)), float(np.mean(vb))
            if not (ma > 0 and mb > 0):
                return math.nan
            logs.append(math.log(ma / mb))
        return float(np.mean(logs))

    return stat


def same_cost_grid(curves: Sequence[np.ndarray], n_grid: int = 20) -> np.ndarray:
    """Common grid of log train NLL for the same-cost comparison (F3).

    ``curves``: one (runs, T, 2) array per group, [..., 0] = log train NLL, [..., 1] = log test
    NLL. The grid spans the range that the median run of every group covers; empty (0,) if the
    groups' ranges do not overlap.
    """
    los, his = [], []
    for c in curves:
        x = c[..., 0]
        if x.size == 0:
            return np.zeros(0)
        los.append(np.nanmedian(np.nanmin(x, axis=1)))
        his.append(np.nanmedian(np.nanmax(x, axis=1)))
    lo, hi = max(los), min(his)
    if not (np.isfinite(lo) and np.isfinite(hi)) or hi <= lo:
        return np.zeros(0)
    return np.linspace(lo, hi, n_grid)


def curves_on_grid(curves: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Each run's log test NLL interpolated at the grid's log train NLL values: (runs, G), NaN
    where the grid leaves the run's range. ``curves`` is (runs, T, 2)."""
    out = np.full((curves.shape[0], len(grid)), np.nan)
    for i, c in enumerate(curves):
        ok = np.isfinite(c).all(axis=1)
        x, y = c[ok, 0], c[ok, 1]
        if len(x) < 2:
            continue
        order = np.argsort(x)
        x, y = x[order], y[order]
        inside = (grid >= x[0]) & (grid <= x[-1])
        out[i, inside] = np.interp(grid[inside], x, y)
    return out


def mean_curve_gap(pairs: Sequence[tuple[str, str]]) -> Callable[[Cells], float]:
    """Mean over pairs (a, b) and grid points of mean_runs(a) - mean_runs(b); cells are
    (runs, G) curves from :func:`curves_on_grid`."""

    def stat(cells: Cells) -> float:
        gaps = []
        for a, b in pairs:
            va, vb = cells[a], cells[b]
            if len(va) == 0 or len(vb) == 0:
                return math.nan
            with np.errstate(all="ignore"), _quiet_nanmean():
                ga = np.nanmean(va, axis=0) - np.nanmean(vb, axis=0)
            if not np.isfinite(ga).any():
                return math.nan
            gaps.append(float(np.nanmean(ga)))
        return float(np.mean(gaps))

    return stat


class _quiet_nanmean:
    def __enter__(self):
        import warnings

        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("ignore", category=RuntimeWarning)

    def __exit__(self, *exc):
        self._w.__exit__(*exc)


#: IQR of a normal distribution in units of its SD (2 x 0.6745)
IQR_PER_SD = 1.3490


def iqr(values: np.ndarray, resolution: float = 0.0) -> float:
    """Inter-quartile range of ``values`` (numpy's linear quantiles), floored by the values'
    quantization: ``sqrt(IQR^2 + (1.349 * resolution / sqrt 12)^2)``, the IQR of the rounding
    noise of a normal added in quadrature, so a cell of equal values is not log(0)."""
    if len(values) < 2:
        return math.nan
    q1, q3 = np.percentile(values, [25, 75])
    floor = IQR_PER_SD * resolution / math.sqrt(12.0)
    return math.sqrt(float(q3 - q1) ** 2 + floor ** 2)


def log_iqr_ratio(pairs: Sequence[tuple[str, str]], resolution: float = 0.0) -> Callable[[Cells], float]:
    """Mean over (a, b) pairs of log(IQR(a) / IQR(b)) (:func:`iqr`, floored): a robust ratio of
    spreads, as the studies' IQRs (F2)."""

    def stat(cells: Cells) -> float:
        logs = []
        for a, b in pairs:
            ia, ib = iqr(cells[a], resolution), iqr(cells[b], resolution)
            if not (ia > 0 and ib > 0):
                return math.nan
            logs.append(math.log(ia / ib))
        return float(np.mean(logs))

    return stat


def log_median_contrast(weights: Mapping[str, float]) -> Callable[[Cells], float]:
    """sum_k weights[k] * log(median(cells[k])): a contrast of log medians, i.e. of relative
    differences (log error ratios; F4, F6). Undefined (NaN) if a median is not positive."""
    return _contrast(weights, np.median, log=True)


def log_mean_contrast(weights: Mapping[str, float]) -> Callable[[Cells], float]:
    """sum_k weights[k] * log(mean(cells[k])) for positive per-run values (F9's curvatures)."""
    return _contrast(weights, np.mean, log=True)
