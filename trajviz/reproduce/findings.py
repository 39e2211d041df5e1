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
from trajviz.reproduce.statistics import (INCONCLUSIVE, MAX_NAN_FRACTION, NOT_REPRODUCED, REPRODUCED,  # noqa: F401
                                VERDICTS, Cells, bootstrap,
                                bootstrap_interval, curves_on_grid, log_mean_ratio,
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
            n_boot: int) -> FindingResult:
    ci = bootstrap_interval(stat, cells, n_boot=n_boot, seed=seed)
    res = FindingResult(id=f.id, claim=f.claim, statistic=f.statistic, unit=f.unit,
                        delta=f.delta, value=ci.value, lo=ci.lo, hi=ci.hi,
                        verdict=verdict(ci.lo, ci.hi, f.delta), reference=f.reference,
                        n_runs=int(sum(len(v) for v in cells.values())), interval=ci.method)
    if not np.isfinite(ci.value):
        res.notes.append("the statistic is undefined on these results (too few finished runs, "
                         "or no overlap to compare)")
    elif ci.reason:
        res.notes.append(f"interval: {ci.reason}")
    return res


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


def _pp_finding(f: Finding, results: Any, weights: dict[tuple[str, str], float], seed: int,
                n_boot: int) -> FindingResult:
    cells = {f"{m}@{s}": results.errors(s, m) for (s, m) in weights}
    stat = median_contrast({f"{m}@{s}": w for (s, m), w in weights.items()})
    return _result(f, cells, stat, seed, n_boot)


# --------------------------------------------------------------------------- F1-F10


def _f1(f: Finding, res: Mapping[str, Any], seed: int, n_boot: int) -> FindingResult:
    r = res["depth"]
    depth = _by_value(r, "model.depth")
    shallow = min(depth, key=depth.get)
    deep = max(depth, key=depth.get)
    for s in (shallow, deep):
        _need(r, s, (NONE, SDAE))
    out = _pp_finding(f, r, {(deep, NONE): 1, (shallow, NONE): -1, (deep, SDAE): -1,
                             (shallow, SDAE): 1}, seed, n_boot)
    order = sorted(depth, key=depth.get)
    out.details = _error_rows(r, order, (NONE, SDAE), "hidden layers", depth)
    out.notes += [f"contrast of {depth[deep]} vs {depth[shallow]} hidden layers"]
    out.notes += _diverged_note(r, order)
    return out


def _f2(f: Finding, res: Mapping[str, Any], seed: int, n_boot: int) -> FindingResult:
    r = res["depth"]
    depth = _by_value(r, "model.depth")
    order = sorted(depth, key=depth.get)
    cells, pairs = {}, []
    for s in order:
        _need(r, s, (NONE, SDAE))
        cells[f"none@{s}"], cells[f"sdae@{s}"] = r.errors(s, NONE), r.errors(s, SDAE)
        pairs.append((f"none@{s}", f"sdae@{s}"))
    resolution = max(r.error_resolution(s) for s in order)
    out = _result(f, cells, log_sd_ratio(pairs, resolution), seed, n_boot)
    out.details = [{"hidden layers": depth[s],
                    "none: SD of test error %": f"{np.std(cells[f'none@{s}'], ddof=1):.3f}",
                    "sdae: SD of test error %": f"{np.std(cells[f'sdae@{s}'], ddof=1):.3f}",
                    "none: max %": f"{np.max(cells[f'none@{s}']):.2f}",
                    "sdae: max %": f"{np.max(cells[f'sdae@{s}']):.2f}"} for s in order]
    out.notes.append(f"SDs floored by the test set's resolution ({resolution:.3f} pp / sqrt 12)")
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
    depth = _by_value(r, "model.depth")
    order = sorted(depth, key=depth.get)
    cells, pairs, details = {}, [], []
    for s in order:
        _need(r, s, (NONE, SDAE))
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


def _f4(f: Finding, res: Mapping[str, Any], seed: int, n_boot: int) -> FindingResult:
    r = res["size"]
    size = _by_value(r, "dataset.n_train")
    if any(not v for v in size.values()):
        raise ConfigError("study 'size': every setting must set dataset.n_train explicitly")
    small, large = min(size, key=size.get), max(size, key=size.get)
    for s in (small, large):
        _need(r, s, (NONE, SDAE))
    out = _pp_finding(f, r, {(small, NONE): 1, (small, SDAE): -1, (large, NONE): -1,
                             (large, SDAE): 1}, seed, n_boot)
    order = sorted(size, key=size.get)
    out.details = _error_rows(r, order, (NONE, SDAE), "training examples", size)
    for row, s in zip(out.details, order):
        row["benefit (none - sdae), pp"] = (
            f"{np.median(r.errors(s, NONE)) - np.median(r.errors(s, SDAE)):+.2f}")
    out.notes.append(f"benefit at {size[small]} minus benefit at {size[large]} training examples")
    return out


def _f5(f: Finding, res: Mapping[str, Any], seed: int, n_boot: int) -> FindingResult:
    r = res["depth"]
    depth = _by_value(r, "model.depth")
    order = sorted(depth, key=depth.get)
    cells, pairs, details = {}, [], []
    for s in order:
        _need(r, s, (NONE, SDAE))
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


def _f6(f: Finding, res: Mapping[str, Any], seed: int, n_boot: int) -> FindingResult:
    r = res["width"]
    width, depth = _by_value(r, "model.width"), _by_value(r, "model.depth")
    depths = sorted(set(depth.values()))
    weights: dict[tuple[str, str], float] = {}
    for d in depths:
        ss = [s for s in width if depth[s] == d]
        narrow, wide = min(ss, key=width.get), max(ss, key=width.get)
        for s in (narrow, wide):
            _need(r, s, (NONE, SDAE))
        w = 1.0 / len(depths)
        weights.update({(wide, NONE): w, (wide, SDAE): -w, (narrow, NONE): -w, (narrow, SDAE): w})
    out = _pp_finding(f, r, weights, seed, n_boot)
    order = sorted(width, key=lambda s: (depth[s], width[s]))
    label = {s: f"{depth[s]} x {width[s]}" for s in order}
    out.details = _error_rows(r, order, (NONE, SDAE), "layers x units", label)
    for row, s in zip(out.details, order):
        row["benefit (none - sdae), pp"] = (
            f"{np.median(r.errors(s, NONE)) - np.median(r.errors(s, SDAE)):+.2f}")
    out.notes.append("benefit at the widest minus benefit at the narrowest layers, averaged over depths")
    return out


def _f7(f: Finding, res: Mapping[str, Any], seed: int, n_boot: int) -> FindingResult:
    r = res["hist"]
    depth = _by_value(r, "model.depth")
    order = sorted(depth, key=depth.get)
    weights: dict[tuple[str, str], float] = {}
    for s in order:
        _need(r, s, (NONE, HIST, SDAE))
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


def _f9(f: Finding, res: Mapping[str, Any], seed: int, n_boot: int) -> FindingResult:
    from trajviz.reproduce.landscape import flatness_cells

    r = res["landscape"]
    cells, pairs, details, notes = flatness_cells(r, seed=seed)
    out = _result(f, cells, log_mean_ratio(pairs), seed, n_boot)
    out.details, out.notes = details, out.notes + notes
    return out


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
FINDINGS: dict[str, Finding] = {f.id: f for f in [
    Finding("F1", "Without pre-training, test error rises with depth, faster than with pre-training.",
            "(median error without - with pre-training) at the deepest minus at the shallowest net",
            PP, 0.2, ("depth",), "+0.44 (MNIST, 4 vs 1 layers, medians of 400 seeds, [A])", _f1),
    Finding("F2", "Pre-training makes the result robust to the seed: lower variance across seeds.",
            "mean over depths of log(SD of test error without / with pre-training)",
            "log ratio", math.log(1.1), ("depth",),
            "about +0.55 from the IQRs of [A] (depths 1-4; the studies give IQRs, not SDs)", _f2),
    Finding("F3", "At the same training NLL, pre-trained nets reach a lower test NLL.",
            "mean gap in log test NLL (without - with pre-training) at equal log train NLL, "
            "averaged over depths", "log NLL", 0.02, ("depth",),
            "no number; positive in [J]'s figure (1-3 layers, MNIST)", _f3),
    Finding("F4", "Pre-training helps most for small training sets.",
            "pre-training benefit (median error without - with) at the smallest minus at the "
            "largest training set", PP, 0.2, ("size",), "no number given in [J]", _f4),
    Finding("F5", "Pre-training acts as a regularizer: final functions vary less.",
            "mean over depths of log(total variance of final probe outputs without / with "
            "pre-training)",
            "log ratio", math.log(1.1), ("depth",),
            "no number; pre-trained nets end in a smaller region in [J]'s embeddings", _f5),
    Finding("F6", "Pre-training helps wide layers and hurts small ones.",
            "pre-training benefit at the widest minus at the narrowest layer width, averaged over "
            "depths", PP, 0.2, ("width",),
            "+2.52 (1 layer, 800 vs 25 units), +2.0 (2 layers), +1.47 (3 layers), MNIST, [J]", _f6),
    Finding("F7", "Histogram init (marginal conditioning) does not explain the benefit.",
            "median error with histogram init minus with pre-training, averaged over depths",
            PP, 0.2, ("hist",), "+0.43 (1-2 layers, means, MNIST, [J])", _f7),
    Finding("F8", "Pre-training the lower layers matters more than the upper ones.",
            "median error with only the second layer pre-trained minus with only the first",
            PP, 0.2, ("partial",), "+0.28 (1.72 vs 1.44, 2 layers, MNIST, [A])", _f8),
    Finding("F9", "The error landscape is flatter around pre-trained nets' final parameters.",
            "mean over depths of log(curvature without / with pre-training), curvature of a "
            "quadratic fit of training NLL along stochastic-gradient directions",
            "log ratio", math.log(1.1), ("landscape",),
            "no number; [J]'s scans show it at 2-3 layers, not clearly at 1", _f9),
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


#: ids that stand for several findings: F10 is checked in four parts
GROUPS = {"F10": ("F10a", "F10b", "F10c", "F10d")}


def parse_only(text: str | None) -> list[str]:
    """``"F1,F10"`` -> ["F1", "F10a", "F10b", "F10c", "F10d"] (F10 stands for its four parts);
    None or "" -> every finding. Unknown ids raise."""
    if not text:
        return list(FINDINGS)
    ids = [t.strip().upper().replace("F10A", "F10a").replace("F10B", "F10b")
           .replace("F10C", "F10c").replace("F10D", "F10d") for t in text.split(",") if t.strip()]
    ids = [x for i in ids for x in GROUPS.get(i, (i,))]
    unknown = [i for i in ids if i not in FINDINGS]
    if unknown or not ids:
        raise ConfigError(f"--only {text!r}: unknown finding {unknown[0] if unknown else '(none)'}; "
                          f"choose from {', '.join(FINDINGS)} (F10: all four parts)")
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

