"""Bootstrap intervals, the verdict rule, and the statistics that test the findings of Erhan et
al. (2009, 2010): plain numpy functions on *cells*, arrays whose first axis indexes runs.

:mod:`trajviz.findings` applies them to stored results; docs/findings.md states the rule.
Statistic builders return a function ``cells -> float`` so :func:`bootstrap` can resample the
cells and recompute it.
"""

from __future__ import annotations

import math
from typing import Callable, Mapping, Sequence

import numpy as np

from trajviz.errors import ConfigError

REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE = "reproduced", "not reproduced", "inconclusive"
VERDICTS = (REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE)
#: fraction of bootstrap replicates that may be undefined (NaN) before the interval is refused
MAX_NAN_FRACTION = 0.05

Cells = Mapping[str, np.ndarray]


# --------------------------------------------------------------------------- bootstrap + rule


def bootstrap(statistic: Callable[[Cells], float], cells: Cells, *, n_boot: int = 2000,
              seed: int = 0, level: float = 0.95) -> tuple[float, float, float, float]:
    """Point value and percentile-bootstrap interval of ``statistic(cells)``.

    ``cells`` maps a cell name to an array whose first axis indexes runs (seeds); every cell is
    resampled independently with replacement. Returns ``(value, lo, hi, nan_fraction)``; lo and
    hi are NaN when more than :data:`MAX_NAN_FRACTION` of the replicates are undefined.
    """
    value = float(statistic(cells))
    rng = np.random.default_rng(seed)
    reps = np.empty(n_boot)
    for b in range(n_boot):
        sample = {}
        for k, v in cells.items():
            n = len(v)
            sample[k] = v[rng.integers(0, n, n)] if n else v
        reps[b] = statistic(sample)
    finite = np.isfinite(reps)
    nan_fraction = 1.0 - finite.mean()
    if not np.isfinite(value) or nan_fraction > MAX_NAN_FRACTION:
        return value, math.nan, math.nan, float(nan_fraction)
    alpha = (1.0 - level) / 2
    lo, hi = np.quantile(reps[finite], [alpha, 1 - alpha])
    return value, float(lo), float(hi), float(nan_fraction)


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


def median_contrast(weights: Mapping[str, float]) -> Callable[[Cells], float]:
    """sum_k weights[k] * median(cells[k]): a linear contrast of cell medians."""

    def stat(cells: Cells) -> float:
        total = 0.0
        for k, w in weights.items():
            v = cells[k]
            if len(v) == 0:
                return math.nan
            total += w * float(np.median(v))
        return total

    return stat


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


def spread(points: np.ndarray) -> float:
    """Mean squared Euclidean distance of points (n, D) to their centroid (total variance)."""
    if len(points) < 2:
        return math.nan
    centred = points - points.mean(axis=0, keepdims=True)
    return float((centred * centred).sum(axis=1).mean())


def log_spread_ratio(pairs: Sequence[tuple[str, str]]) -> Callable[[Cells], float]:
    """Mean over (a, b) pairs of log(spread(a) / spread(b)); cells are (runs, D) points."""

    def stat(cells: Cells) -> float:
        logs = []
        for a, b in pairs:
            sa, sb = spread(cells[a]), spread(cells[b])
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


def separation_ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per checkpoint, distance between the two groups' centroids over the groups' RMS radius.

    a, b: (runs, T, D) trajectories. Returns (T,): ||mean(a) - mean(b)|| /
    sqrt((spread(a) + spread(b)) / 2). Above 1, the centroids are further apart than a typical
    net is from its own group's centre.
    """
    ca, cb = a.mean(axis=0), b.mean(axis=0)
    between = np.sqrt(((ca - cb) ** 2).sum(axis=-1))
    ra = ((a - ca) ** 2).sum(axis=-1).mean(axis=0)
    rb = ((b - cb) ** 2).sum(axis=-1).mean(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return between / np.sqrt((ra + rb) / 2)


def min_log_separation(a_key: str, b_key: str, start: int = 1) -> Callable[[Cells], float]:
    """min over checkpoints t >= start of log(separation_ratio): > 0 means the two groups'
    trajectories stay apart at every checkpoint (F10)."""

    def stat(cells: Cells) -> float:
        a, b = cells[a_key], cells[b_key]
        if len(a) < 2 or len(b) < 2:
            return math.nan
        r = separation_ratio(a[:, start:], b[:, start:])
        if not np.isfinite(r).all() or (r <= 0).any():
            return math.nan
        return float(np.log(r).min())

    return stat
