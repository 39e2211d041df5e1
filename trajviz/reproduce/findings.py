"""Findings F1-F10 of Erhan et al. (2009, 2010), each turned into a statistic with a bootstrap
95% confidence interval and a verdict computed from the data (docs/findings.md).

Every statistic is defined so that the studies' claim predicts a *positive* value. Its interval
is the BCa bootstrap over runs (:func:`~trajviz.reproduce.statistics.bootstrap_interval`, by
:func:`scipy.stats.bootstrap`): each cell (the runs of one setting and pre-training method) is
resampled with replacement, independently, ``n_boot`` times, from a seeded generator; where BCa is
undefined the percentile interval of the same resamples is used, and the finding's notes say so.
The verdict rule (:func:`verdict`), with ``delta`` the smallest effect of interest declared per
finding in the statistic's own unit:

- **reproduced**: the interval lies above 0 (lo > 0) and reaches delta (hi >= delta);
- **not reproduced**: the interval lies below delta (hi < delta): an effect as large as delta
  is ruled out, which includes a clear effect in the opposite direction;
- **inconclusive**: otherwise (the interval holds 0 and reaches delta), or the statistic cannot
  be computed from the data (for example a group with no finished run).

The statistics and the rule live in :mod:`trajviz.reproduce.statistics`, the stored results
arrive through :mod:`trajviz.reproduce.results`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from trajviz.errors import ConfigError
from trajviz.reproduce.statistics import (INCONCLUSIVE, iqr, MAX_NAN_FRACTION, NOT_REPRODUCED, REPRODUCED,  # noqa: F401
                                VERDICTS, Cells, bootstrap,
                                bootstrap_interval, curves_on_grid, log_mean_ratio,
                                log_iqr_ratio, log_mean_contrast, log_median_contrast,
                                log_sd_ratio, log_total_variance_ratio, mean_curve_gap, median_contrast,
                                same_cost_grid, total_variance, verdict)

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- findings


@dataclass
class FindingResult:
    """What the report shows for one finding."""

    id: str
    claim: str
    statistic: str
    unit: str
    delta: float
    value: float = math.nan
    lo: float = math.nan
    hi: float = math.nan
    verdict: str = INCONCLUSIVE
    reference: str = ""
    n_runs: int = 0
    interval: str = ""  # how [lo, hi] was computed: "BCa", "percentile" (BCa undefined), "" (none)
    p_value: float = math.nan  # findings decided by a test (F10a, F10b): its p-value
    alpha: float = math.nan  # ... and its level; NaN for findings decided by an interval
    value_text: str = ""  # the value in words when it is not one number (F10c)
    details: list[dict[str, Any]] = field(default_factory=list)  # rows of a small table
    notes: list[str] = field(default_factory=list)
    available: bool = True

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                for k, v in asdict(self).items()}


@dataclass(frozen=True)
class Finding:
    """A finding: its claim, the statistic testing it, and where its data come from.

    ``compute(results, seed, n_boot)`` fills a :class:`FindingResult` from the
    :class:`~trajviz.reproduce.results.StudyResults` of the studies it names.
    """

    id: str
    claim: str
    statistic: str
    unit: str
    delta: float
    studies: tuple[str, ...]
    reference: str
    compute: Callable[..., FindingResult]


def _result(f: "Finding", cells: Cells, stat: Callable[[Cells], float], seed: int,
            n_boot: int, blocks: Mapping[str, np.ndarray] | None = None) -> FindingResult:
    ci = _interval(stat, cells, seed, n_boot, blocks)
    res = FindingResult(id=f.id, claim=f.claim, statistic=f.statistic, unit=f.unit,
                        delta=f.delta, value=ci.value, lo=ci.lo, hi=ci.hi,
                        verdict=verdict(ci.lo, ci.hi, f.delta), reference=f.reference,
                        n_runs=int(sum(len(v) for v in cells.values())), interval=ci.method)
    if not np.isfinite(ci.value):
        res.notes.append("the statistic is undefined on these results (too few finished runs, "
                         "or no overlap to compare)")
    elif ci.reason:
        res.notes.append(f"interval: {ci.reason}")
    if blocks is not None:
        res.notes.append("paired design (runs of one seed share initial weights and example "
                         "order across methods): the interval resamples whole seeds")
    return res


def _interval(stat: Callable[[Cells], float], cells: Cells, seed: int, n_boot: int,
              blocks: Mapping[str, np.ndarray] | None = None) -> Any:
    """The bootstrap interval of a finding (or of one row of its details). An interval that
    does not contain its own point value (a statistic biased under resampling by more than its
    standard error) is not given: lo = hi = NaN, and the reason says why."""
    import dataclasses

    ci = bootstrap_interval(stat, cells, n_boot=n_boot, seed=seed, blocks=blocks)
    if np.isfinite(ci.lo) and np.isfinite(ci.hi) and not ci.lo <= ci.value <= ci.hi:
        ci = dataclasses.replace(
            ci, lo=math.nan, hi=math.nan, method="",
            reason=f"no interval: the {ci.method} interval [{ci.lo:+.3g}, {ci.hi:+.3g}] does "
                   f"not contain the point value ({ci.reason or 'biased resamples'})")
    return ci


def _ci_text(ci: Any) -> str:
    if not np.isfinite(ci.value):
        return "n/a"
    if not (np.isfinite(ci.lo) and np.isfinite(ci.hi)):
        return f"{ci.value:+.3g} [no interval]"
    return f"{ci.value:+.3g} [{ci.lo:+.3g}, {ci.hi:+.3g}]"


# --------------------------------------------------------------------------- data access helpers

NONE, SDAE = "none", "sdae"
HIST, FIRST_ONLY, SECOND_ONLY = "sdae+hist", "sdae+reinit=2", "sdae+reinit=1"


def _cfg(results: Any, setting: str, dotted: str) -> Any:
    node: Any = results.setting_config(setting)
    for part in dotted.split("."):
        node = node.get(part, {}) if isinstance(node, dict) else {}
    return node


def _by_value(results: Any, dotted: str) -> dict[str, Any]:
    """setting id -> the config value at ``dotted`` (e.g. model.depth)."""
    return {s: _cfg(results, s, dotted) for s in results.setting_ids()}


def _need(results: Any, setting: str, methods: Sequence[str]) -> None:
    have = results.methods(setting)
    missing = [m for m in methods if m not in have]
    if missing:
        raise ConfigError(f"study {results.name!r}, setting {setting!r} has no runs of method "
                          f"{', '.join(map(repr, missing))} (it has {', '.join(have) or 'none'})")


def _fmt(v: np.ndarray) -> str:
    if len(v) == 0:
        return "-"
    q1, med, q3 = np.percentile(v, [25, 50, 75])
    return f"{med:.2f} [{q1:.2f}-{q3:.2f}]"


def _error_rows(results: Any, settings: Sequence[str], methods: Sequence[str], label: str,
                values: Mapping[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for s in settings:
        row: dict[str, Any] = {label: values[s]}
        for m in methods:
            v = results.errors(s, m)
            row[f"{m}: test error % median [IQR]"] = _fmt(v)
            row[f"{m}: n"] = len(v)
        rows.append(row)
    return rows


def _diverged_note(results: Any, settings: Sequence[str]) -> list[str]:
    n = sum(1 for r in results.runs if r.setting in settings and r.diverged)
    return [f"{n} run(s) diverged (NaN loss); their error is the one selected before diverging"] if n else []


def _blocks(results: Any, keys: Mapping[str, tuple[str, str]]) -> dict[str, np.ndarray] | None:
    """cell -> the seeds of its error values, when any of the cells' settings is a paired
    design (runs of one seed not independent across methods); None for independent nets."""
    paired = getattr(results, "paired", None)
    if paired is None or not any(paired(s) for s, _ in keys.values()):
        return None
    return {k: results.error_seeds(s, m) for k, (s, m) in keys.items()}


def _pp_finding(f: Finding, results: Any, weights: dict[tuple[str, str], float], seed: int,
                n_boot: int, log_scale: bool = False) -> FindingResult:
    """A contrast of cell medians (``log_scale``: of log medians, a relative difference)."""
    keys = {f"{m}@{s}": (s, m) for (s, m) in weights}
    cells = {k: results.errors(s, m) for k, (s, m) in keys.items()}
    w = {f"{m}@{s}": x for (s, m), x in weights.items()}
    stat = log_median_contrast(w) if log_scale else median_contrast(w)
    return _result(f, cells, stat, seed, n_boot, _blocks(results, keys))


def _row_interval(results: Any, weights: dict[tuple[str, str], float], seed: int, n_boot: int,
                  log_scale: bool = False) -> Any:
    """The interval of one row's contrast (e.g. one depth), as :func:`_pp_finding` would."""
    keys = {f"{m}@{s}": (s, m) for (s, m) in weights}
    cells = {k: results.errors(s, m) for k, (s, m) in keys.items()}
    w = {f"{m}@{s}": x for (s, m), x in weights.items()}
    stat = log_median_contrast(w) if log_scale else median_contrast(w)
    return _interval(stat, cells, seed, n_boot, _blocks(results, keys))


# --------------------------------------------------------------------------- F1-F10


def _by_depth(r: Any, methods: tuple[str, ...]) -> tuple[dict[str, Any], list[str]]:
    """The study's settings by depth and in order of depth, each checked to hold ``methods``."""
    depth = _by_value(r, "model.depth")
    order = sorted(depth, key=depth.get)
    for s in order:
        _need(r, s, methods)
    return depth, order


def _depth_two_and_deepest(r: Any) -> tuple[dict[str, Any], str, str]:
    """The depth study's settings by depth, its 2-layer setting and its deepest (F1)."""
    depth = _by_value(r, "model.depth")
    two = [s for s in depth if depth[s] == 2]
    deep = max(depth, key=depth.get)
    if not two or depth[deep] <= 2:
        raise ConfigError(f"study {r.name!r}: F1 compares 2 hidden layers with deeper nets; the "
                          f"study has depths {', '.join(map(str, sorted(depth.values())))}")
    for s in (two[0], deep):
        _need(r, s, (NONE, SDAE))
    return depth, two[0], deep


def _f1_details(out: FindingResult, r: Any, depth: Mapping[str, Any], two: str, deep: str) -> None:
    order = sorted(depth, key=depth.get)
    out.details = _error_rows(r, order, (NONE, SDAE), "hidden layers", depth)
    out.notes.append(f"{depth[deep]} vs {depth[two]} hidden layers")
    out.notes += _diverged_note(r, order)


def _f1a(f: Finding, res: Mapping[str, Any], seed: int, n_boot: int) -> FindingResult:
    r = res["depth"]
    depth, two, deep = _depth_two_and_deepest(r)
    out = _pp_finding(f, r, {(deep, NONE): 1, (two, NONE): -1}, seed, n_boot)
    _f1_details(out, r, depth, two, deep)
    return out


def _f1b(f: Finding, res: Mapping[str, Any], seed: int, n_boot: int) -> FindingResult:
    r = res["depth"]
    depth, two, deep = _depth_two_and_deepest(r)
    out = _pp_finding(f, r, {(deep, NONE): 1, (two, NONE): -1, (deep, SDAE): -1,
                             (two, SDAE): 1}, seed, n_boot)
    _f1_details(out, r, depth, two, deep)
    return out


def _f2(f: Finding, res: Mapping[str, Any], seed: int, n_boot: int) -> FindingResult:
    r = res["depth"]
    depth, order = _by_depth(r, (NONE, SDAE))
    keys, pairs = {}, []
    for s in order:
        keys[f"none@{s}"], keys[f"sdae@{s}"] = (s, NONE), (s, SDAE)
        pairs.append((f"none@{s}", f"sdae@{s}"))
    cells = {k: r.errors(s, m) for k, (s, m) in keys.items()}
    resolution = max(r.error_resolution(s) for s in order)
    out = _result(f, cells, log_iqr_ratio(pairs, resolution), seed, n_boot, _blocks(r, keys))
    out.details = []
    for s, (a, b) in zip(order, pairs):
        sub = {a: cells[a], b: cells[b]}
        ci = _interval(log_iqr_ratio([(a, b)], resolution), sub, seed, n_boot,
                       _blocks(r, {a: keys[a], b: keys[b]}))
        out.details.append({
            "hidden layers": depth[s],
            "none: IQR of test error %": f"{iqr(cells[a], resolution):.3f}",
            "sdae: IQR of test error %": f"{iqr(cells[b], resolution):.3f}",
            "log(IQR none / IQR sdae) [95% CI]": _ci_text(ci),
            "verdict": verdict(ci.lo, ci.hi, f.delta),
            "none: max %": f"{np.max(cells[a]):.2f}" if len(cells[a]) else "-",
            "sdae: max %": f"{np.max(cells[b]):.2f}" if len(cells[b]) else "-"})
    out.notes.append(f"IQRs floored by the test set's resolution ({resolution:.3f} pp: "
                     "1.349 x resolution / sqrt 12 in quadrature)")
    return out


def run_curves(runs: Sequence[Any]) -> np.ndarray:
    """(runs, T, 2) of (log train NLL, log test NLL) at each epoch-end checkpoint (step > 0),
    NaN-padded to the longest run."""
    rows = []
    for r in runs:
        tr, te = r.metrics.get("train_nll"), r.metrics.get("test_nll")
        if tr is None or te is None:
            continue
        with np.errstate(divide="ignore", invalid="ignore"):
            rows.append(np.stack([np.log(tr[1:]), np.log(te[1:])], axis=-1))
    if not rows:
        return np.zeros((0, 0, 2))
    t = max(len(x) for x in rows)
    out = np.full((len(rows), t, 2), np.nan)
    for i, x in enumerate(rows):
        out[i, :len(x)] = x
    return out


def _f3(f: Finding, res: Mapping[str, Any], seed: int, n_boot: int) -> FindingResult:
    r = res["depth"]
    depth, order = _by_depth(r, (NONE, SDAE))
    cells, pairs, details = {}, [], []
    for s in order:
        cn, cp = run_curves(r.select(s, NONE)), run_curves(r.select(s, SDAE))
        grid = same_cost_grid([cn, cp])
        if len(grid) == 0:
            details.append({"hidden layers": depth[s], "log train NLL range compared": "no overlap"})
            continue
        cells[f"none@{s}"], cells[f"sdae@{s}"] = curves_on_grid(cn, grid), curves_on_grid(cp, grid)
        pairs.append((f"none@{s}", f"sdae@{s}"))
        gap = mean_curve_gap([(f"none@{s}", f"sdae@{s}")])(cells)
        details.append({"hidden layers": depth[s],
                        "log train NLL range compared": f"{grid[0]:.2f} .. {grid[-1]:.2f}",
                        "gap in log test NLL (none - sdae)": f"{gap:.3f}"})
    if not pairs:
        out = FindingResult(id=f.id, claim=f.claim, statistic=f.statistic, unit=f.unit,
                            delta=f.delta, reference=f.reference)
        out.notes.append("the two groups never reach the same training NLL: no same-cost comparison")
    else:
        out = _result(f, cells, mean_curve_gap(pairs), seed, n_boot)
    out.details = details
    return out


def _benefit(r: Any, s: str) -> str:
    """log(median error without / with pre-training) of one setting: its relative benefit."""
    a, b = np.median(r.errors(s, NONE)), np.median(r.errors(s, SDAE))
    return f"{math.log(a / b):+.3f}" if a > 0 and b > 0 else "-"


def _f4(f: Finding, res: Mapping[str, Any], seed: int, n_boot: int) -> FindingResult:
    r = res["size"]
    size = _by_value(r, "dataset.n_train")
    if any(not v for v in size.values()):
        raise ConfigError("study 'size': every setting must set dataset.n_train explicitly")
    small, large = min(size, key=size.get), max(size, key=size.get)
    for s in (small, large):
        _need(r, s, (NONE, SDAE))
    out = _pp_finding(f, r, {(small, NONE): 1, (small, SDAE): -1, (large, NONE): -1,
                             (large, SDAE): 1}, seed, n_boot, log_scale=True)
    order = sorted(size, key=size.get)
    out.details = _error_rows(r, order, (NONE, SDAE), "training examples", size)
    for row, s in zip(out.details, order):
        row["relative benefit log(none / sdae)"] = _benefit(r, s)
    out.notes.append(f"relative benefit at {size[small]} minus at {size[large]} training examples")
    return out


def _f5(f: Finding, res: Mapping[str, Any], seed: int, n_boot: int) -> FindingResult:
    r = res["depth"]
    depth, order = _by_depth(r, (NONE, SDAE))
    cells, pairs, details = {}, [], []
    for s in order:
        a, b = r.final_outputs(s, NONE), r.final_outputs(s, SDAE)
        cells[f"none@{s}"], cells[f"sdae@{s}"] = a, b
        pairs.append((f"none@{s}", f"sdae@{s}"))
        details.append({"hidden layers": depth[s],
                        "none: total variance": f"{total_variance(a):.3g}",
                        "sdae: total variance": f"{total_variance(b):.3g}"})
    out = _result(f, cells, log_total_variance_ratio(pairs), seed, n_boot)
    out.details = details
    out.notes.append("total variance: mean squared Euclidean distance of the nets' final probe "
                     "outputs (all probe examples x classes, concatenated) to their group's "
                     "centroid (a squared distance; not the 'spread' of F10 and trajviz "
                     "divergence, a mean pairwise RMS distance)")
    return out


def _width_ends(r: Any) -> tuple[dict, dict, list[tuple[int, str, str]]]:
    """(width, depth, [(depth, narrowest setting, widest setting)]) of the width study."""
    width, depth = _by_value(r, "model.width"), _by_value(r, "model.depth")
    ends = []
    for d in sorted(set(depth.values())):
        ss = [s for s in width if depth[s] == d]
        narrow, wide = min(ss, key=width.get), max(ss, key=width.get)
        if narrow == wide:
            raise ConfigError(f"study {r.name!r}: depth {d} has a single width; F6 compares the "
                              "narrowest with the widest layers")
        for s in (narrow, wide):
            _need(r, s, (NONE, SDAE))
        ends.append((d, narrow, wide))
    return width, depth, ends


def _f6(part: str) -> Callable[..., FindingResult]:
    """F6a: relative benefit at the widest minus at the narrowest layers; F6b: pre-training
    hurts the narrowest (log(error with / without) > 0); F6c: it helps the widest."""

    def weights(narrow: str, wide: str, w: float) -> dict[tuple[str, str], float]:
        return {"a": {(wide, NONE): w, (wide, SDAE): -w, (narrow, NONE): -w, (narrow, SDAE): w},
                "b": {(narrow, SDAE): w, (narrow, NONE): -w},
                "c": {(wide, NONE): w, (wide, SDAE): -w}}[part]

    def compute(f: Finding, res: Mapping[str, Any], seed: int, n_boot: int) -> FindingResult:
        r = res["width"]
        width, depth, ends = _width_ends(r)
        total: dict[tuple[str, str], float] = {}
        for _, narrow, wide in ends:
            total.update(weights(narrow, wide, 1.0 / len(ends)))
        out = _pp_finding(f, r, total, seed, n_boot, log_scale=True)
        order = sorted(width, key=lambda s: (depth[s], width[s]))
        label = {s: f"{depth[s]} x {width[s]}" for s in order}
        out.details = _error_rows(r, order, (NONE, SDAE), "layers x units", label)
        for row, s in zip(out.details, order):
            row["relative benefit log(none / sdae)"] = _benefit(r, s)
        for d, narrow, wide in ends:
            ci = _row_interval(r, weights(narrow, wide, 1.0), seed, n_boot, log_scale=True)
            out.details.append({"layers x units": f"{d} layers: this part",
                                "relative benefit log(none / sdae)": _ci_text(ci),
                                "verdict": verdict(ci.lo, ci.hi, f.delta)})
        what = {"a": "relative benefit at the widest minus at the narrowest layers",
                "b": "log(error with / without pre-training) at the narrowest layers",
                "c": "log(error without / with pre-training) at the widest layers"}[part]
        out.notes.append(f"{what}, averaged over depths " + ", ".join(
            f"{d} ({width[n]} vs {width[w]} units)" for d, n, w in ends))
        return out

    return compute


def _f7(f: Finding, res: Mapping[str, Any], seed: int, n_boot: int) -> FindingResult:
    r = res["hist"]
    depth, order = _by_depth(r, (NONE, HIST, SDAE))
    weights: dict[tuple[str, str], float] = {}
    for s in order:
        weights[(s, HIST)] = 1.0 / len(order)
        weights[(s, SDAE)] = -1.0 / len(order)
    out = _pp_finding(f, r, weights, seed, n_boot)
    rows = []
    for s in order:
        n, h, p = (r.errors(s, m) for m in (NONE, HIST, SDAE))
        row = {"hidden layers": depth[s]}
        for name, v in (("uniform init", n), ("histogram init", h), ("pre-training", p)):
            row[f"{name}: mean +- SD %"] = (f"{np.mean(v):.2f} +- {np.std(v, ddof=1):.2f}"
                                            if len(v) > 1 else "-")
        benefit = np.median(n) - np.median(p)
        if abs(benefit) > 1e-12:
            row["share of benefit recovered by histogram init"] = (
                f"{(np.median(n) - np.median(h)) / benefit:.2f}")
        rows.append(row)
    out.details = rows
    return out


def _f8(f: Finding, res: Mapping[str, Any], seed: int, n_boot: int) -> FindingResult:
    r = res["partial"]
    ids = r.setting_ids()
    depth = _by_value(r, "model.depth")
    weights: dict[tuple[str, str], float] = {}
    for s in ids:
        _need(r, s, (FIRST_ONLY, SECOND_ONLY))
        weights[(s, SECOND_ONLY)] = 1.0 / len(ids)
        weights[(s, FIRST_ONLY)] = -1.0 / len(ids)
    out = _pp_finding(f, r, weights, seed, n_boot)
    names = {SDAE: "both layers", FIRST_ONLY: "first only", SECOND_ONLY: "second only",
             NONE: "none", HIST: "histogram"}
    rows = []
    for s in ids:
        for m in r.methods(s):
            v = r.errors(s, m)
            rows.append({"hidden layers": depth[s], "pre-trained": names.get(m, m), "method": m,
                         "test error % median [IQR]": _fmt(v), "n": len(v)})
    out.details = rows
    return out


def _f9(part: str) -> Callable[..., FindingResult]:
    """F9a: flatter with pre-training along unit-norm stochastic-gradient directions (the
    studies'); F9b: the same along filter-normalized directions (scale-invariant); F9c: flatter
    for deeper nets (filter-normalized: unit-norm curvature falls with the parameter count)."""

    def compute(f: Finding, res: Mapping[str, Any], seed: int, n_boot: int) -> FindingResult:
        from trajviz.reproduce.landscape import curvature_cells

        r = res["landscape"]
        cv = curvature_cells(r)
        kind = "sgd" if part == "a" else "filter"
        if kind not in cv.cells:
            raise ConfigError(f"the landscape scans hold no {kind!r} directions; add "
                              f"{kind!r} to the study's scan directions")
        cells, seeds = cv.cells[kind], cv.seeds[kind]
        order = sorted(cv.depth, key=cv.depth.get)
        paired = any(getattr(r, "paired", lambda s: False)(s) for s in order)
        if part in ("a", "b"):
            w = {}
            for s in order:
                w[f"none@{s}"], w[f"sdae@{s}"] = 1.0 / len(order), -1.0 / len(order)
        else:
            if len(order) < 2:
                raise ConfigError("F9c compares depths; the landscape study has one")
            lo, hi = order[0], order[-1]
            w = {f"none@{lo}": 0.5, f"sdae@{lo}": 0.5, f"none@{hi}": -0.5, f"sdae@{hi}": -0.5}
        sub = {k: cells[k] for k in w}
        out = _result(f, sub, log_mean_contrast(w), seed, n_boot,
                      {k: seeds[k] for k in w} if paired else None)
        rows = []
        for s in order:
            row: dict[str, Any] = {"hidden layers": cv.depth[s]}
            for k in ("sgd", "filter"):
                if k not in cv.cells:
                    continue
                a, b = f"none@{s}", f"sdae@{s}"
                ca = {a: cv.cells[k][a], b: cv.cells[k][b]}
                ci = _interval(log_mean_contrast({a: 1.0, b: -1.0}), ca, seed, n_boot,
                               {x: cv.seeds[k][x] for x in ca} if paired else None)
                name = "unit-norm sgd" if k == "sgd" else "filter-normalized"
                row[f"{name}: curvature none / sdae"] = f"{_ms(ca[a])} / {_ms(ca[b])}"
                row[f"{name}: log ratio [95% CI]"] = _ci_text(ci)
                row[f"{name}: verdict"] = verdict(ci.lo, ci.hi, f.delta)
            row["train NLL at theta none / sdae"] = (f"{cv.nll[s]['none']:.3f} / "
                                                     f"{cv.nll[s]['sdae']:.3f}")
            rows.append(row)
        out.details = rows
        out.notes.append(f"curvature: 2nd derivative of a least-squares quadratic fit of training "
                         f"NLL on |alpha| <= {cv.radius[kind]:g} along {kind} directions, mean "
                         "over a run's directions")
        if part == "c":
            out.notes.append(f"{cv.depth[order[0]]} vs {cv.depth[order[-1]]} hidden layers, "
                             "averaged over both methods")
        return out

    return compute


def _ms(v: np.ndarray) -> str:
    return f"{np.mean(v):.3g}" if len(v) else "-"


def _f10(part: str) -> Callable[..., FindingResult]:
    """F10's parts live in :mod:`trajviz.reproduce.trajectories` (imported when used)."""

    def compute(f: Finding, res: Mapping[str, Any], seed: int, n_boot: int) -> FindingResult:
        from trajviz.reproduce import trajectories

        return getattr(trajectories, part)(f, res, seed, n_boot)

    return compute


PP = "percentage points"
#: level of F10's tests (trajviz.trajectories.separation.ALPHA); F10c's rule uses shares of
#: bootstrap resamples instead (docs/findings.md)
ALPHA_F10 = 0.05
LOG = "log ratio"
FINDINGS: dict[str, Finding] = {f.id: f for f in [
    Finding("F1a", "Without pre-training, test error rises with depth beyond 2 hidden layers.",
            "median error without pre-training at the deepest net minus at 2 hidden layers",
            PP, 0.2, ("depth",), "+0.40 (MNIST, 4 vs 2 layers, medians of 400 seeds, [A])", _f1a),
    Finding("F1b", "... and faster than with pre-training (depth x pre-training interaction).",
            "(median error without - with pre-training) at the deepest net minus at 2 hidden "
            "layers", PP, 0.2, ("depth",), "+0.45 (MNIST, 4 vs 2 layers, [A])", _f1b),
    Finding("F2", "Pre-training makes the result robust to the seed: less spread across seeds.",
            "mean over depths of log(IQR of test error without / with pre-training)",
            LOG, math.log(1.1), ("depth",), "+0.55 from the IQRs of [A] (depths 1-4)", _f2),
    Finding("F3", "At the same training NLL, pre-trained nets reach a lower test NLL.",
            "mean gap in log test NLL (without - with pre-training) at equal log train NLL, "
            "averaged over depths", "log NLL", 0.02, ("depth",),
            "no number; positive in [J]'s figure (1-3 layers, MNIST)", _f3),
    Finding("F4", "Pre-training helps most for small training sets.",
            "relative benefit log(median error without / with pre-training) at the smallest "
            "minus at the largest training set", LOG, math.log(1.1), ("size",),
            "no number given in [J]", _f4),
    Finding("F5", "Pre-training acts as a regularizer: final functions vary less.",
            "mean over depths of log(total variance of final probe outputs without / with "
            "pre-training)",
            LOG, math.log(1.1), ("depth",),
            "no number; pre-trained nets end in a smaller region in [J]'s embeddings", _f5),
    Finding("F6a", "Pre-training helps wide layers more than narrow ones.",
            "relative benefit log(median error without / with) at the widest minus at the "
            "narrowest layers, averaged over depths", LOG, math.log(1.1), ("width",),
            "+0.62 (MNIST, 800 vs 25 units, mean of 1-3 layers, [J])", _f6("a")),
    Finding("F6b", "Pre-training hurts narrow layers.",
            "log(median error with / without pre-training) at the narrowest layers, averaged "
            "over depths", LOG, math.log(1.1), ("width",),
            "+0.34 (MNIST, 25 units, mean of 1-3 layers, [J])", _f6("b")),
    Finding("F6c", "Pre-training helps wide layers.",
            "log(median error without / with pre-training) at the widest layers, averaged over "
            "depths", LOG, math.log(1.1), ("width",),
            "+0.28 (MNIST, 800 units, mean of 1-3 layers, [J])", _f6("c")),
    Finding("F7", "Histogram init (marginal conditioning) does not explain the benefit.",
            "median error with histogram init minus with pre-training, averaged over depths",
            PP, 0.2, ("hist",), "+0.43 (1-2 layers, means, MNIST, [J])", _f7),
    Finding("F8", "Pre-training the lower layers matters more than the upper ones.",
            "median error with only the second layer pre-trained minus with only the first",
            PP, 0.2, ("partial",), "+0.28 (1.72 vs 1.44, 2 layers, MNIST, [A])", _f8),
    Finding("F9a", "The error landscape is flatter around pre-trained nets' final parameters.",
            "mean over depths of log(mean curvature without / with pre-training) of training NLL "
            "along unit-norm stochastic-gradient directions (the studies' directions)",
            LOG, math.log(1.1), ("landscape",),
            "no number; [J]'s scans show it at 2-3 layers, not clearly at 1", _f9("a")),
    Finding("F9b", "... also by a scale-invariant measure.",
            "as F9a along filter-normalized random directions (Li et al. 2018), whose curvature "
            "does not change when a layer's weights are rescaled", LOG, math.log(1.1),
            ("landscape",), "no number (not measured by the studies)", _f9("b")),
    Finding("F9c", "The error landscape is flatter for deeper nets.",
            "log(mean curvature at the shallowest / at the deepest net), filter-normalized "
            "directions, averaged over both methods", LOG, math.log(1.1), ("landscape",),
            "no number; in [J]'s scans the NLL rises less around deeper nets", _f9("c")),
    Finding("F10a", "In function space, pre-trained and random-init nets start apart: separable "
            "after pre-training, before fine-tuning.",
            "leave-one-out k-NN group accuracy at checkpoint 0 (after pre-training, before "
            "fine-tuning), one-sided permutation test over whole runs", "accuracy", ALPHA_F10,
            ("trajectories",), "no number; distinct starting regions in [J]'s t-SNE figures",
            _f10("start_apart")),
    Finding("F10b", "... and stay apart: separable at every later checkpoint.",
            "smallest leave-one-out k-NN group accuracy over the checkpoints after the first; p: "
            "the largest per-checkpoint permutation p-value (intersection-union test)",
            "accuracy", ALPHA_F10, ("trajectories",),
            "no number; disjoint regions in [J]'s t-SNE and ISOMAP figures", _f10("stay_apart")),
    Finding("F10c", "Trajectories of one kind first move together, then diverge.",
            "each group's divergence time (checkpoint after which its spread rises for good), "
            "with its 95% bootstrap interval over runs", "checkpoint", ALPHA_F10,
            ("trajectories",), "no number; [J] sec. 6.3", _f10("diverge")),
    Finding("F10d", "Pre-trained nets end in a smaller region of function space.",
            "log(final spread of random-init / pre-trained nets); spread = mean RMS distance "
            "between a group's nets' probe outputs", "log ratio", math.log(1.1),
            ("trajectories",), "no number; a smaller final region in [J]'s figures",
            _f10("end_region")),
]}

#: ids that stand for several findings (a claim tested in parts)
GROUPS = {"F1": ("F1a", "F1b"), "F6": ("F6a", "F6b", "F6c"), "F9": ("F9a", "F9b", "F9c"),
          "F10": ("F10a", "F10b", "F10c", "F10d")}


def parse_only(text: str | None) -> list[str]:
    """``"F1,F10"`` -> ["F1a", "F1b", "F10a", "F10b", "F10c", "F10d"] (a claim tested in parts
    stands for its parts);
    None or "" -> every finding. Unknown ids raise."""
    if not text:
        return list(FINDINGS)
    known = {k.upper(): k for k in (*FINDINGS, *GROUPS)}
    ids = [known.get(t.strip().upper(), t.strip()) for t in text.split(",") if t.strip()]
    ids = [x for i in ids for x in GROUPS.get(i, (i,))]
    unknown = [i for i in ids if i not in FINDINGS]
    if unknown or not ids:
        raise ConfigError(f"--only {text!r}: unknown finding {unknown[0] if unknown else '(none)'}; "
                          f"choose from {', '.join(FINDINGS)} (or "
                          f"{', '.join(f'{g} for {chr(47).join(p)}' for g, p in GROUPS.items())})")
    return [i for i in FINDINGS if i in ids]


def evaluate_finding(fid: str, results: Mapping[str, Any], *, seed: int = 0,
                     n_boot: int = 2000) -> FindingResult:
    """Compute one finding's statistic, interval and verdict from stored results. Missing data
    (a study not in ``results``, a method without runs) gives an inconclusive result saying so."""
    f = FINDINGS[fid]
    missing = [s for s in f.studies if s not in results]
    if missing:
        out = FindingResult(id=f.id, claim=f.claim, statistic=f.statistic, unit=f.unit,
                            delta=f.delta, reference=f.reference, available=False)
        out.notes.append(f"no results of study {', '.join(missing)}")
        return out
    try:
        return f.compute(f, results, seed, n_boot)
    except ConfigError as exc:  # data the finding needs are missing; a broken import is a bug
        # and must fail, not read as "not evaluated"
        log.warning("%s cannot be evaluated: %s", fid, exc)
        out = FindingResult(id=f.id, claim=f.claim, statistic=f.statistic, unit=f.unit,
                            delta=f.delta, reference=f.reference, available=False)
        out.notes.append(f"not evaluated: {exc}")
        return out

