"""Flatness measures from scans, aggregated per group with error bars and bootstrap CIs.

Erhan et al. (JMLR 2010, sec. 6.4, finding F9) saw flatter 1-D scans with depth and with
pre-training but gave no number. The measures here, all "bigger = sharper":

- ``curvature[KIND]``: second derivative d^2L/dalpha^2 at 0 of a least-squares quadratic fit of
  the training NLL on |alpha| <= fit_radius (NLL per squared unit of alpha), one per direction;
- ``rise[KIND]``: mean of L(-r) and L(+r) minus L(0) at the radius r = rise_radius (NLL), one per
  direction (linear interpolation between scanned alphas);
- ``top_eig``: the largest eigenvalue of the Hessian of the training NLL (Lanczos), per run;
- ``trace``: the Hessian trace (Hutchinson), per run.

A group is the runs of one depth and one experiment group (pre-training method). Its value is the
mean over runs of each run's mean over directions; error bars: ``sem`` over runs (seeds) and
``sd_dir``, the pooled standard deviation over directions within runs. A difference between two
groups comes with a percentile bootstrap CI that resamples runs, then directions within runs.
Only numpy is needed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from trajviz.errors import ConfigError
from trajviz.landscape.results import LandscapeResult, RunScan, group_label

log = logging.getLogger(__name__)


def quadratic_curvature(alphas: np.ndarray, losses: np.ndarray, radius: float = 0.5) -> np.ndarray:
    """Second derivative (2 c2) of the least-squares fit c0 + c1 a + c2 a^2 to ``losses`` (..., A)
    over the alphas with |a| <= ``radius``; NaN where a row holds NaN."""
    alphas = np.asarray(alphas, dtype=np.float64)
    sel = np.abs(alphas) <= radius + 1e-12
    if sel.sum() < 3:
        raise ConfigError(f"fit radius {radius} covers {int(sel.sum())} scanned alphas; the quadratic "
                          "fit needs at least 3: raise the radius or the number of points")
    a = alphas[sel]
    design = np.stack([np.ones_like(a), a, a * a], axis=1)
    y = np.asarray(losses, dtype=np.float64)[..., sel]
    coef = np.linalg.lstsq(design, y.reshape(-1, a.size).T, rcond=None)[0]  # (3, rows)
    return (2.0 * coef[2]).reshape(y.shape[:-1])


def loss_rise(alphas: np.ndarray, losses: np.ndarray, radius: float = 1.0) -> np.ndarray:
    """(L(-r) + L(r)) / 2 - L(0) for each row of ``losses`` (..., A), linearly interpolated."""
    alphas = np.asarray(alphas, dtype=np.float64)
    if radius > alphas.max() or -radius < alphas.min():
        raise ConfigError(f"rise radius {radius} lies outside the scanned alphas "
                          f"[{alphas.min()}, {alphas.max()}]; lower it or scan a wider span")
    y = np.asarray(losses, dtype=np.float64)
    flat = y.reshape(-1, alphas.size)
    out = np.array([(np.interp(-radius, alphas, row) + np.interp(radius, alphas, row)) / 2
                    - np.interp(0.0, alphas, row) for row in flat])
    out[np.isnan(flat).any(1)] = np.nan
    return out.reshape(y.shape[:-1])


@dataclass
class GroupStats:
    """One group's measures: name -> (mean, sem over runs, pooled sd over directions)."""

    label: str
    depth: int
    group: str
    run_ids: list[str]
    values: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (runs, directions)
    stats: dict[str, tuple[float, float, float]] = field(default_factory=dict)


@dataclass
class GroupDifference:
    """``b - a`` of one measure with its bootstrap CI."""

    measure: str
    a: str
    b: str
    diff: float
    ci_low: float
    ci_high: float
    level: float

    @property
    def verdict(self) -> str:
        if self.ci_high < 0:
            return f"{self.b} flatter"
        if self.ci_low > 0:
            return f"{self.a} flatter"
        return "no clear difference"


@dataclass
class FlatnessTable:
    """Per-group flatness (``groups``) and group differences with CIs (``differences``)."""

    measures: list[str]
    groups: list[GroupStats]
    differences: list[GroupDifference]
    excluded: list[str]
    settings: dict

    def format(self) -> str:
        """The table and the differences as plain text."""
        lines = []
        s = self.settings
        lines.append(f"flatness (bigger = sharper); curvature: quadratic fit on |alpha| <= "
                     f"{s['fit_radius']}; rise: at |alpha| = {s['rise_radius']}; "
                     "mean ± sem over seeds [sd over directions]")
        cells = {}
        for g in self.groups:
            for m in self.measures:
                mean, sem, sd = g.stats.get(m, (np.nan, np.nan, np.nan))
                cells[g.label, m] = (f"{mean:.4g} ± {sem:.2g}"
                                     + (f" [{sd:.2g}]" if np.isfinite(sd) else ""))
        col_w = max([len(g.label) for g in self.groups] + [len(c) for c in cells.values()] + [8])
        name_w = max([len("measure")] + [len(m) for m in self.measures])
        lines.append(f"{'measure':<{name_w}}  " + "  ".join(f"{g.label:>{col_w}}" for g in self.groups))
        lines.append(f"{'runs':<{name_w}}  " + "  ".join(f"{len(g.run_ids):>{col_w}}" for g in self.groups))
        for m in self.measures:
            lines.append(f"{m:<{name_w}}  " + "  ".join(f"{cells.get((g.label, m), '-'):>{col_w}}"
                                                        for g in self.groups))
        if self.differences:
            lines.append("")
            lines.append(f"differences (b - a) with {self.settings['level']:.0%} bootstrap CI "
                         f"({self.settings['n_boot']} resamples of runs, then directions):")
            for d in self.differences:
                lines.append(f"  {d.measure:<{name_w}}  {d.b} - {d.a}: {d.diff:+.4g} "
                             f"[{d.ci_low:+.4g}, {d.ci_high:+.4g}]  -> {d.verdict}")
        if self.excluded:
            lines.append(f"excluded (diverged or unfinished): {', '.join(self.excluded)}")
        return "\n".join(lines)


def run_measures(run: RunScan, alphas: np.ndarray, *, fit_radius: float = 0.5,
                 rise_radius: float = 1.0) -> dict[str, np.ndarray]:
    """Per-direction measures of one run: name -> (n_directions,) array (run-level ones: (1,))."""
    out: dict[str, np.ndarray] = {}
    for kind, scan in run.scans1d.items():
        if scan["nll"].shape[0] == 0:  # a kind that gave no direction (pca of a still run)
            continue
        out[f"curvature[{kind}]"] = quadratic_curvature(alphas, scan["nll"], fit_radius)
        out[f"rise[{kind}]"] = loss_rise(alphas, scan["nll"], rise_radius)
    if np.isfinite(run.top_eigenvalue):
        out["top_eig"] = np.array([run.top_eigenvalue])
    if np.isfinite(run.hessian_trace):
        out["trace"] = np.array([run.hessian_trace])
    return out


def _group_stats(values: np.ndarray) -> tuple[float, float, float]:
    per_run = np.nanmean(values, axis=1)
    mean = float(np.mean(per_run))
    sem = float(np.std(per_run, ddof=1) / np.sqrt(len(per_run))) if len(per_run) > 1 else float("nan")
    sd_dir = (float(np.sqrt(np.nanmean(np.nanvar(values, axis=1, ddof=1))))
              if values.shape[1] > 1 else float("nan"))
    return mean, sem, sd_dir


def _bootstrap_means(values: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot,) group means over resampled runs, then resampled directions within each run."""
    r, n = values.shape
    runs = rng.integers(r, size=(n_boot, r))
    dirs = rng.integers(n, size=(n_boot, r, n))
    return np.nanmean(values[runs[..., None], dirs], axis=(1, 2))


def flatness_table(results: LandscapeResult | Sequence[LandscapeResult], *, fit_radius: float = 0.5,
                   rise_radius: float = 1.0, n_boot: int = 2000, level: float = 0.95,
                   seed: int = 0) -> FlatnessTable:
    """Aggregate the runs of one or more landscape results (e.g. one file per depth) into
    per-group flatness with error bars, and the difference of every pair of groups that differ
    in one factor (pre-training at the same depth; neighbouring depths in the same group), each
    with a percentile bootstrap CI at ``level`` drawn with ``seed``."""
    if isinstance(results, LandscapeResult):
        results = [results]
    if not 0 < level < 1:
        raise ConfigError(f"CI level {level}: must be between 0 and 1")
    if n_boot < 10:
        raise ConfigError(f"bootstrap resamples = {n_boot}: use at least 10 (1000+ for a CI to report)")
    per_group: dict[tuple[int, str], dict[str, list[np.ndarray]]] = {}
    ids: dict[tuple[int, str], list[str]] = {}
    excluded = []
    for res in results:
        for run in res.runs:
            if not run.complete:
                excluded.append(run.run_id)
                continue
            key = (run.depth, run.group)
            meas = run_measures(run, res.alphas, fit_radius=fit_radius, rise_radius=rise_radius)
            slot = per_group.setdefault(key, {})
            for name, v in meas.items():
                slot.setdefault(name, []).append(v)
            ids.setdefault(key, []).append(run.run_id if len(results) == 1
                                           else f"{res.path.stem}:{run.run_id}")
    if excluded:
        log.warning("landscape runs not complete, left out of the table: %s", ", ".join(excluded))
    measures: list[str] = []
    groups = []
    for (depth, group) in sorted(per_group):
        g = GroupStats(group_label(depth, group), depth, group, ids[(depth, group)])
        for name, rows in per_group[(depth, group)].items():
            if len(rows) != len(g.run_ids) or len({r.size for r in rows}) != 1:
                continue  # measured on only some runs of the group: not comparable
            g.values[name] = np.stack(rows)
            g.stats[name] = _group_stats(g.values[name])
            if name not in measures:
                measures.append(name)
        groups.append(g)
    measures.sort(key=lambda m: (m in ("top_eig", "trace"), m))
    rng = np.random.default_rng(seed)
    diffs = []
    for i, ga in enumerate(groups):
        for gb in groups[i + 1:]:
            same_depth = ga.depth == gb.depth
            neighbours = ga.group == gb.group and abs(ga.depth - gb.depth) == 1
            if not (same_depth or neighbours):
                continue
            for m in measures:
                if m not in ga.values or m not in gb.values:
                    continue
                va, vb = ga.values[m], gb.values[m]
                boot = _bootstrap_means(vb, n_boot, rng) - _bootstrap_means(va, n_boot, rng)
                lo, hi = np.nanpercentile(boot, [50 * (1 - level), 50 * (1 + level)])
                diffs.append(GroupDifference(m, ga.label, gb.label,
                                             gb.stats[m][0] - ga.stats[m][0], float(lo), float(hi), level))
    settings = {"fit_radius": fit_radius, "rise_radius": rise_radius, "n_boot": n_boot,
                "level": level, "seed": seed}
    return FlatnessTable(measures, groups, diffs, excluded, settings)
