"""F10 of Erhan et al. (2010) [J] in four parts, from the trajectories study's file, computed in
the original function space by :func:`trajviz.trajectories.divergence.divergence_table` and
:mod:`trajviz.trajectories.separation` (the same analysis as ``trajviz divergence FILE --groups
none,sdae``; definitions in docs/project.md, rules in docs/findings.md):

- F10a *start apart*: k-NN group accuracy at checkpoint 0 (after pre-training, before the first
  fine-tuning update), permutation test over whole runs;
- F10b *stay apart*: the smallest k-NN accuracy over the later checkpoints, with the
  intersection-union p-value (the largest per-checkpoint p-value);
- F10c *move together, then diverge*: each group's divergence time with its bootstrap interval;
- F10d *smaller end region*: log(final spread of random-init / pre-trained nets) with its
  bootstrap interval.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from trajviz.reproduce.findings import FindingResult, Finding, _need
from trajviz.reproduce.statistics import INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED, verdict

log = logging.getLogger(__name__)

NONE, SDAE = "none", "sdae"
#: share of bootstrap resamples without divergence at most which a group is said to diverge
#: (F10c), and at least which (with no divergence at the point value) it is said not to
DIVERGES, DOES_NOT = 0.05, 0.5

_CACHE: dict[tuple, Any] = {}


def f10_table(results: Any, seed: int, n_boot: int) -> Any:
    """The divergence table (with separation) of the trajectories study's none and sdae runs,
    computed once per file, seed and number of resamples."""
    from trajviz.trajectories.divergence import divergence_table

    s = results.setting_ids()[0]
    _need(results, s, (NONE, SDAE))
    path = Path(results.files[s])
    key = (str(path.resolve()), path.stat().st_mtime_ns, seed, n_boot)
    if key not in _CACHE:
        _CACHE.clear()
        _CACHE[key] = divergence_table([path], groups=[NONE, SDAE], n_boot=n_boot, seed=seed)
    return _CACHE[key]


def _base(f: Finding, **kw: Any) -> FindingResult:
    return FindingResult(id=f.id, claim=f.claim, statistic=f.statistic, unit=f.unit,
                         delta=f.delta, reference=f.reference, **kw)


def _epochs(table: Any) -> list[str]:
    return [("-" if not np.isfinite(e) else f"{e:g}") for e in table.epoch]


def _design(sep: Any) -> str:
    how = ("paired by seed: a none and an sdae run of one seed share initial weights and example "
           "order, so labels are permuted within seed pairs" if sep.paired else
           "independent runs: labels permuted across all runs")
    test = (f"{'exact, ' if sep.exact else ''}{sep.n_relabellings} relabellings"
            if sep.n_relabellings else "no test")
    return f"{sep.k}-NN on RMS distances of probe outputs; {how}; {test}"


def start_apart(f: Finding, res: Mapping[str, Any], seed: int, n_boot: int) -> FindingResult:
    table = f10_table(res["trajectories"], seed, n_boot)
    sep = table.separation
    out = _base(f, value=float(sep.knn_accuracy[0]), p_value=sep.start_apart.p_value,
                alpha=_alpha(), verdict=sep.start_apart.verdict, n_runs=_n_runs(table))
    out.notes = [_design(sep), f"checkpoint {int(sep.checkpoint[0])}: after pre-training, "
                 "before the first fine-tuning update"] + sep.notes
    if sep.paired and np.isfinite(sep.twin_nearest):
        out.notes.append(f"at checkpoint {int(sep.checkpoint[0])}, {sep.twin_nearest:.0%} of the "
                         "nets' nearest neighbour is their same-seed twin of the other group "
                         "(shared initial weights and example order)")
    return out


def stay_apart(f: Finding, res: Mapping[str, Any], seed: int, n_boot: int) -> FindingResult:
    table = f10_table(res["trajectories"], seed, n_boot)
    sep = table.separation
    later = sep.knn_accuracy[1:]
    out = _base(f, value=float(later.min()) if later.size else math.nan,
                p_value=sep.stay_apart.p_value, alpha=_alpha(), verdict=sep.stay_apart.verdict,
                n_runs=_n_runs(table))
    if later.size and np.isfinite(sep.p_value[1:]).all():
        worst = 1 + int(np.argmax(sep.p_value[1:]))
        n_sig = int(np.sum(sep.p_value[1:] <= _alpha()))
        n_fwer = int(np.sum(sep.p_value_maxt[1:] <= _alpha()))
        out.notes.append(f"largest p-value at checkpoint {int(sep.checkpoint[worst])} "
                         f"(epoch {_epochs(table)[worst]}): accuracy {sep.knn_accuracy[worst]:.2f}; "
                         f"separable at p <= {_alpha()} at {n_sig} of {later.size} later "
                         f"checkpoints, {n_fwer} of them after max-T family-wise adjustment")
    out.notes = [_design(sep)] + out.notes + sep.notes
    ep = _epochs(table)
    out.details = [{"checkpoint": int(c), "epoch": ep[t],
                    "k-NN group accuracy": f"{sep.knn_accuracy[t]:.2f}",
                    "p": _p(sep.p_value[t]), "p (max-T)": _p(sep.p_value_maxt[t]),
                    f"spread {NONE}": f"{table.spread[NONE][t]:.3g}",
                    f"spread {SDAE}": f"{table.spread[SDAE][t]:.3g}"}
                   for t, c in enumerate(sep.checkpoint)]
    return out


def diverge(f: Finding, res: Mapping[str, Any], seed: int, n_boot: int) -> FindingResult:
    table = f10_table(res["trajectories"], seed, n_boot)
    out = _base(f, n_runs=_n_runs(table))
    parts, rows, ok, no = [], [], [], []
    first = int(table.checkpoint[0])
    for g in (NONE, SDAE):
        d = table.divergence[g]
        share = d.p_no_divergence
        sp = table.spread[g]
        if np.isfinite(sp).all() and sp.size:
            lo_t, hi_t = int(np.argmin(sp)), int(np.argmax(sp))
            out.notes.append(
                f"spread of {g}: {sp[0]:.3g} at checkpoint {int(table.checkpoint[0])}, smallest "
                f"{sp[lo_t]:.3g} at {int(table.checkpoint[lo_t])}, largest {sp[hi_t]:.3g} at "
                f"{int(table.checkpoint[hi_t])}, {sp[-1]:.3g} at the last ({int(table.checkpoint[-1])})")
        if d.checkpoint is None:
            parts.append(f"{g}: no divergence")
        else:
            ci = ("" if d.ci_low is None else f" [{d.ci_low:.3g}, {d.ci_high:.3g}]")
            parts.append(f"{g}: {d.checkpoint}{ci}")
            if d.ci_low is not None and not d.ci_low <= d.checkpoint <= d.ci_high:
                out.notes.append(f"{g}: the divergence time lies outside its percentile interval")
        ok.append(d.checkpoint is not None and d.checkpoint > first and share <= DIVERGES)
        no.append(d.checkpoint is None and share >= DOES_NOT)
        rows.append({"group": g, "divergence time (checkpoint)": "-" if d.checkpoint is None
                     else d.checkpoint, "epoch": "-" if d.epoch is None else f"{d.epoch:.3g}",
                     "95% interval over diverging resamples": "-" if d.ci_low is None
                     else f"{d.ci_low:.3g} - {d.ci_high:.3g}",
                     "resamples without divergence": f"{share:.0%}", "runs": d.n_runs})
    out.value_text = "; ".join(parts)
    out.verdict = REPRODUCED if all(ok) else NOT_REPRODUCED if any(no) else INCONCLUSIVE
    out.details = rows
    out.notes.insert(0, f"spread = mean RMS distance between a group's nets; divergence time: the "
                        f"last checkpoint at which the spread is within tau = "
                        f"{table.attrs['tau']} of its later rise above its minimum, after which "
                        "it stays above (docs/project.md); 95% percentile interval over "
                        f"{table.attrs['n_boot']} resamples of each group's runs")
    return out


def end_region(f: Finding, res: Mapping[str, Any], seed: int, n_boot: int) -> FindingResult:
    table = f10_table(res["trajectories"], seed, n_boot)
    e = table.separation.end_spread_ratio  # sdae / none
    value = -math.log(e.value) if e.value > 0 else math.nan
    lo = -math.log(e.ci_high) if e.ci_high > 0 else math.nan
    hi = -math.log(e.ci_low) if e.ci_low > 0 else math.nan
    out = _base(f, value=value, lo=lo, hi=hi, verdict=verdict(lo, hi, f.delta),
                n_runs=_n_runs(table), interval="percentile" if math.isfinite(lo) else "")
    last = -1
    out.details = [{"group": g, "final spread": f"{table.spread[g][last]:.3g}",
                    "checkpoint": int(table.checkpoint[last])} for g in (NONE, SDAE)]
    out.notes.append(f"end spread ratio (sdae / none) = {e.value:.3g} [{e.ci_low:.3g}, "
                     f"{e.ci_high:.3g}], 95% percentile bootstrap over runs"
                     + (", resampled by seed pair" if table.separation.paired else ""))
    if e.note:
        out.notes.append(e.note)
    return out


def _alpha() -> float:
    from trajviz.trajectories.separation import ALPHA

    return ALPHA


def _p(p: float) -> str:
    return "-" if not np.isfinite(p) else f"{p:.3g}"


def _n_runs(table: Any) -> int:
    return int(sum(len(v) for v in table.attrs["runs"].values()))
