"""The bootstrap of trajviz.reproduce.statistics (scipy.stats.bootstrap, BCa): reference intervals, seeding,
the undefined-resample contract, the fallbacks where BCa is undefined, and bias correction."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from trajviz.errors import ConfigError
from trajviz.reproduce.statistics import (MAX_NAN_FRACTION, bootstrap, bootstrap_interval,
                                median_contrast)


def _mean_of(key: str):
    return lambda cells: float(np.mean(cells[key]))


def _log_var(cells) -> float:
    """Log of the plug-in variance (divisor n): biased low, and lower still under resampling."""
    return float(np.log(np.var(cells["a"])))


def test_bca_of_a_mean_matches_the_normal_interval():
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, 100)
    ci = bootstrap_interval(_mean_of("a"), {"a": x}, n_boot=4000, seed=1)
    half = 1.96 * x.std() / math.sqrt(len(x))
    assert ci.method == "BCa" and ci.reason == "" and ci.nan_fraction == 0.0
    assert ci.value == pytest.approx(x.mean())
    assert ci.lo == pytest.approx(x.mean() - half, abs=0.1 * half)
    assert ci.hi == pytest.approx(x.mean() + half, abs=0.1 * half)


def test_cells_are_resampled_independently():
    """A difference of two cells' means: the normal interval with both cells' variances."""
    rng = np.random.default_rng(1)
    a, b = rng.normal(1.0, 1.0, 80), rng.normal(0.0, 3.0, 40)
    ci = bootstrap_interval(lambda c: float(np.mean(c["a"]) - np.mean(c["b"])), {"a": a, "b": b},
                            n_boot=4000, seed=2)
    half = 1.96 * math.sqrt(a.var() / len(a) + b.var() / len(b))
    assert ci.hi - ci.lo == pytest.approx(2 * half, rel=0.1)
    assert (ci.lo + ci.hi) / 2 == pytest.approx(a.mean() - b.mean(), abs=0.1 * half)


def test_same_seed_same_numbers():
    rng = np.random.default_rng(2)
    cells = {"a": rng.standard_normal(10), "b": rng.standard_normal(12)}
    stat = median_contrast({"a": 1.0, "b": -1.0})
    first = bootstrap_interval(stat, cells, n_boot=300, seed=7)
    assert bootstrap_interval(stat, cells, n_boot=300, seed=7) == first
    assert bootstrap_interval(stat, cells, n_boot=300, seed=8) != first
    assert bootstrap(stat, cells, n_boot=300, seed=7) == first.as_tuple()


def _min_log_separation(a_key: str, b_key: str, start: int = 1):
    """min over checkpoints t >= start of log(distance between the groups' centroids / their RMS
    radius), on (runs, T, D) cells: a statistic of whole runs with a strong resampling bias (the
    radius shrinks and the centroid distance grows when a resample repeats runs). F10 used it
    before it was split into tests of separability."""

    def stat(cells):
        a, b = cells[a_key][:, start:], cells[b_key][:, start:]
        if len(a) < 2 or len(b) < 2:
            return math.nan
        ca, cb = a.mean(axis=0), b.mean(axis=0)
        between = np.sqrt(((ca - cb) ** 2).sum(axis=-1))
        radius = np.sqrt((((a - ca) ** 2).sum(-1).mean(0) + ((b - cb) ** 2).sum(-1).mean(0)) / 2)
        r = between / radius
        return float(np.log(r).min()) if np.isfinite(r).all() and (r > 0).all() else math.nan

    return stat


def test_cells_of_any_shape_are_resampled_by_run():
    """(runs, T, D) trajectories: the statistic sees whole runs, not single numbers."""
    rng = np.random.default_rng(3)
    a = 0.1 * rng.standard_normal((10, 4, 6))
    b = 0.1 * rng.standard_normal((12, 4, 6)) + 3.0
    ci = bootstrap_interval(_min_log_separation("a", "b", start=0), {"a": a, "b": b}, n_boot=300)
    assert ci.method in ("BCa", "percentile") and ci.lo > math.log(5)


def _flagged_mean(cells) -> float:
    """Mean of column 0; undefined unless the resample holds a run flagged in column 1."""
    v = cells["a"]
    return float(v[:, 0].mean()) if v[:, 1].any() else math.nan


def _flagged(n_flagged: int, n: int = 10) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(4)
    flags = np.arange(n) < n_flagged
    return {"a": np.column_stack([rng.standard_normal(n), flags])}


def test_a_few_undefined_resamples_are_dropped():
    # P(no flagged run among 10 draws) = 0.7 ** 10 = 2.8% <= MAX_NAN_FRACTION
    ci = bootstrap_interval(_flagged_mean, _flagged(3), n_boot=2000, seed=0)
    assert 0.01 < ci.nan_fraction <= MAX_NAN_FRACTION
    assert ci.method == "BCa" and ci.lo < ci.value < ci.hi


def test_too_many_undefined_resamples_give_no_interval():
    # 0.8 ** 10 = 10.7% of resamples have no flagged run
    ci = bootstrap_interval(_flagged_mean, _flagged(2), n_boot=2000, seed=0)
    assert math.isfinite(ci.value) and math.isnan(ci.lo) and math.isnan(ci.hi)
    assert ci.nan_fraction == pytest.approx(0.8 ** 10, abs=0.02)
    assert ci.method == "" and "undefined" in ci.reason
    value, lo, hi, frac = bootstrap(_flagged_mean, _flagged(2), n_boot=2000, seed=0)
    assert math.isnan(lo) and math.isnan(hi) and frac == ci.nan_fraction


def test_undefined_point_value_gives_no_interval():
    value, lo, hi, _ = bootstrap(median_contrast({"a": 1.0, "b": -1.0}),
                                 {"a": np.zeros(0), "b": np.ones(3)}, n_boot=50)
    assert math.isnan(value) and math.isnan(lo) and math.isnan(hi)


def test_a_cell_of_one_run_gives_no_interval_not_an_error():
    ci = bootstrap_interval(median_contrast({"a": 1.0, "b": -1.0}),
                            {"a": np.array([2.0]), "b": np.arange(5.0)}, n_boot=50)
    assert ci.value == 0.0 and math.isnan(ci.lo) and math.isnan(ci.hi)
    assert "two runs" in ci.reason and "a (1 run)" in ci.reason


def test_identical_runs_fall_back_to_the_percentile_interval():
    """BCa is undefined when every resample gives the same value: [v, v], quietly."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ci = bootstrap_interval(median_contrast({"a": 1.0, "b": -1.0}),
                                {"a": np.full(6, 2.0), "b": np.zeros(6)}, n_boot=200)
    assert (ci.value, ci.lo, ci.hi) == (2.0, 2.0, 2.0)
    assert ci.method == "percentile" and "same value" in ci.reason


def test_undefined_jackknife_falls_back_to_the_percentile_interval():
    """BCa's acceleration needs the statistic on each leave-one-run-out sample."""
    x = np.random.default_rng(5).standard_normal(8)
    needs_all = lambda c: float(np.mean(c["a"])) if len(c["a"]) == 8 else math.nan  # noqa: E731
    ci = bootstrap_interval(needs_all, {"a": x}, n_boot=500)
    pct = bootstrap_interval(needs_all, {"a": x}, n_boot=500, method="percentile")
    assert ci.method == "percentile" and "one run is left out" in ci.reason
    assert (ci.lo, ci.hi) == (pct.lo, pct.hi)


def test_point_value_outside_every_resample_falls_back_to_percentile():
    # distinct runs in a resample: n only for a permutation (p = 10!/10**10), so below the point
    distinct = lambda c: float(len(np.unique(c["a"])))  # noqa: E731
    ci = bootstrap_interval(distinct, {"a": np.arange(10.0)}, n_boot=500)
    assert ci.method == "percentile" and "outside every resampled value" in ci.reason
    assert ci.point_quantile == 1.0 and ci.hi < ci.value


def test_bca_corrects_a_statistic_biased_under_resampling():
    """Same resamples, two intervals: the log plug-in variance falls under resampling (a resample
    repeats runs), so the percentile interval sits low; BCa moves both ends up."""
    x = np.random.default_rng(6).standard_normal(10)
    bca = bootstrap_interval(_log_var, {"a": x}, n_boot=2000, seed=3)
    pct = bootstrap_interval(_log_var, {"a": x}, n_boot=2000, seed=3, method="percentile")
    assert bca.method == "BCa" and pct.method == "percentile"
    assert bca.point_quantile > 0.55  # most resamples lie below the point value
    assert bca.lo > pct.lo and bca.hi > pct.hi


def test_bca_covers_a_biased_statistic_more_often_than_percentile():
    """Coverage of the true log variance (0) by 95% intervals from samples of 10 normal values:
    about 72% for the percentile interval and 81% for BCa (400 data sets, 2000 resamples)."""
    rng = np.random.default_rng(7)
    hits = {"BCa": 0, "percentile": 0}
    n_sets = 120
    for i in range(n_sets):
        cells = {"a": rng.standard_normal(10)}
        for method in hits:
            ci = bootstrap_interval(_log_var, cells, n_boot=500, seed=i, method=method)
            hits[method] += ci.lo <= 0.0 <= ci.hi
    assert hits["BCa"] >= hits["percentile"] + 0.04 * n_sets


def test_strong_resampling_bias_is_reported():
    """Two overlapping groups: the centroid distance over the radius rises under resampling far
    beyond its spread; the point value lies below most resamples and the report says so."""
    rng = np.random.default_rng(8)
    cells = {"a": rng.standard_normal((10, 3, 30)), "b": rng.standard_normal((10, 3, 30))}
    ci = bootstrap_interval(_min_log_separation("a", "b"), cells, n_boot=500)
    assert ci.point_quantile < 0.025
    assert "biased under resampling" in ci.reason and not ci.lo <= ci.value <= ci.hi


def test_bad_arguments_raise():
    stat, cells = _mean_of("a"), {"a": np.arange(5.0)}
    with pytest.raises(ConfigError, match="percentile"):
        bootstrap_interval(stat, cells, method="basic")
    with pytest.raises(ConfigError, match="resamples"):
        bootstrap_interval(stat, cells, n_boot=0)
    with pytest.raises(ConfigError, match="level"):
        bootstrap_interval(stat, cells, level=95)


# --------------------------------------------------------------------------- paired designs


def _paired_cells(effect: float, n: int = 20, seed: int = 0):
    """Runs of one seed share a large seed effect (sd 3) across the two cells; the method adds
    ``effect`` and small noise (sd 0.2): a paired design."""
    rng = np.random.default_rng(seed)
    u = rng.normal(0.0, 3.0, n)
    return {"a": u + effect + rng.normal(0, 0.2, n), "b": u + rng.normal(0, 0.2, n)}


def _diff(cells) -> float:
    return float(np.mean(cells["a"]) - np.mean(cells["b"]))


def test_block_bootstrap_sees_the_pairing_an_independent_one_misses():
    seeds = np.arange(20)
    cells = _paired_cells(0.5)
    paired = bootstrap_interval(_diff, cells, blocks={"a": seeds, "b": seeds}, seed=1)
    indep = bootstrap_interval(_diff, cells, seed=1)
    assert paired.value == indep.value == pytest.approx(_diff(cells))
    assert 0 < paired.lo < 0.5 < paired.hi < 1.0  # the effect, seen through the seed noise
    assert indep.lo < 0 < indep.hi  # resampling cells independently drowns it in seed noise
    assert paired.hi - paired.lo < 0.2 * (indep.hi - indep.lo)


def test_block_bootstrap_null_effect_interval_holds_zero():
    seeds = np.arange(20)
    hits = 0
    for rep in range(20):
        cells = _paired_cells(0.0, seed=100 + rep)
        ci = bootstrap_interval(_diff, cells, blocks={"a": seeds, "b": seeds}, seed=rep, n_boot=500)
        hits += ci.lo <= 0 <= ci.hi
    assert hits >= 16  # nominal 95%: 19 of 20 expected


def test_block_bootstrap_draws_each_seed_in_every_cell_and_allows_missing_runs():
    """A cell lacking a seed's run gets nothing for it; the others get their run of that seed."""
    cells = {"a": np.array([10.0, 11.0, 12.0]), "b": np.array([20.0, 22.0])}
    blocks = {"a": [0, 1, 2], "b": [0, 2]}
    seen = []

    def stat(c):
        # runs of one resample come in drawn-seed order: a's seed-2 run (12) pairs b's (22)
        seen.append((tuple(c["a"]), tuple(c["b"])))
        return float(np.mean(c["a"]) + np.mean(c["b"])) if len(c["b"]) else math.nan

    bootstrap_interval(stat, cells, blocks=blocks, n_boot=50, seed=0)
    for a, b in seen:
        assert [x - 10 for x in a if x != 11.0] == [(y - 20) / 1 for y in b]
    with pytest.raises(ConfigError, match="two runs of one block"):
        bootstrap_interval(stat, cells, blocks={"a": [0, 0, 1], "b": [0, 2]})
    with pytest.raises(ConfigError, match="no block labels"):
        bootstrap_interval(stat, cells, blocks={"a": [0, 1, 2]})


# --------------------------------------------------------------------------- contrasts (F4, F6, F9)


def _curvatures(ratio: float, n: int = 10, seed: int = 0) -> dict[str, np.ndarray]:
    """Per-run curvatures, log-normal around 1 (sdae) and ``ratio`` (none): F9's cells."""
    rng = np.random.default_rng(seed)
    return {"none": ratio * np.exp(0.3 * rng.normal(size=n)),
            "sdae": np.exp(0.3 * rng.normal(size=n))}


def test_log_mean_contrast_finds_a_planted_flatter_group_and_no_effect_in_a_null():
    from trajviz.reproduce.statistics import log_mean_contrast

    stat = log_mean_contrast({"none": 1.0, "sdae": -1.0})
    cells = _curvatures(3.0)
    value, lo, hi, _ = bootstrap(stat, cells, n_boot=500, seed=0)
    assert value == pytest.approx(np.log(cells["none"].mean() / cells["sdae"].mean()))
    assert lo <= value <= hi and lo > np.log(2.0) and hi < np.log(4.5)  # covers log 3
    covered = 0
    for seed in range(12):  # null: the same distribution in both cells
        value, lo, hi, _ = bootstrap(stat, _curvatures(1.0, seed=seed), n_boot=300, seed=seed)
        assert lo <= value <= hi
        covered += lo <= 0.0 <= hi
    assert covered >= 9


def test_contrasts_are_undefined_for_empty_cells_and_non_positive_summaries():
    from trajviz.reproduce.statistics import log_mean_contrast, log_median_contrast, median_contrast

    assert np.isnan(log_mean_contrast({"a": 1.0})({"a": np.array([])}))
    assert np.isnan(log_median_contrast({"a": 1.0})({"a": np.array([0.0, -1.0, 0.0])}))
    assert median_contrast({"a": 1.0, "b": -1.0})({"a": np.array([1.0, 3.0]),
                                                   "b": np.array([-2.0])}) == 4.0
