"""``trajviz info``: a summary of a trajviz file (library twin of the subcommand)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from trajviz.errors import FormatError, TrajvizError
from trajviz.training.selection import select_from_metrics
from trajviz.store import ExperimentFile

#: a run whose final train NLL is above ln(C) - CHANCE_MARGIN nats has not measurably beaten a
#: uniform guess over the C classes: it has not left the chance plateau of its initialization.
CHANCE_MARGIN = 0.01


@dataclass
class GroupSummary:
    group: str
    runs: list[str] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)
    checkpoints: list[int] = field(default_factory=list)
    pretrain: set[str] = field(default_factory=set)
    first_train_nll: list[float] = field(default_factory=list)
    final_train_nll: list[float] = field(default_factory=list)
    final_test_error: list[float] = field(default_factory=list)
    #: model selection (trajviz.training.selection): test error at the checkpoint of best validation error
    test_error_at_best: list[float] = field(default_factory=list)
    best_epoch: list[float] = field(default_factory=list)

    def at_chance(self, n_classes: int) -> int:
        """How many runs end with a train NLL no better than guessing (:data:`CHANCE_MARGIN`)."""
        return sum(1 for v in self.final_train_nll
                   if np.isfinite(v) and v > chance_nll(n_classes) - CHANCE_MARGIN)


#: how a table shows a value that is missing (no checkpoint yet, no model selection, NaN)
MISSING = "-"


def format_number(value: float, fmt: str) -> str:
    """``fmt % value``, or :data:`MISSING` for a missing (non-finite) value."""
    return fmt % value if np.isfinite(value) else MISSING


def chance_nll(n_classes: int) -> float:
    """NLL of the uniform guess over ``n_classes`` classes: ln C nats."""
    return float(np.log(n_classes))


@dataclass
class RunSummary:
    """One run: its method (the spec for runner files, else the ``pretrain`` attribute)."""

    run_id: str
    group: str
    method: str
    seed: int
    status: str
    checkpoints: int
    final_test_error: float = float("nan")
    best_epoch: float = float("nan")
    test_error_at_best: float = float("nan")


@dataclass
class FileSummary:
    path: Path
    name: str
    probe_size: int
    n_classes: int
    probe_sha256: str
    groups: dict[str, GroupSummary]
    #: runs flagged 'diverged' (train NLL became NaN/Inf) -> the step at which they were stopped
    diverged: dict[str, int] = field(default_factory=dict)
    runs: list[RunSummary] = field(default_factory=list)
    #: resume states of unfinished batches (docs/format.md, "Resume state"): key -> JSON state
    resume_states: dict[str, dict] = field(default_factory=dict)

    def format(self, runs: bool = False) -> str:
        """A plain-text table, one line per group; ``runs``: then one line per run."""
        def stat(values: list[float], fmt: str) -> str:
            v = np.asarray(values, dtype=float)
            v = v[np.isfinite(v)]
            if v.size == 0:
                return MISSING
            return (fmt % v.mean()) + (" ± " + fmt % v.std(ddof=1) if v.size > 1 else "")

        gw = max([12] + [len(g) for g in self.groups])
        lines = [f"{self.path}: experiment {self.name!r}, probe set of {self.probe_size} examples "
                 f"x {self.n_classes} classes (sha256 {self.probe_sha256[:12]})",
                 f"{'group':<{gw}} {'pretrain':<10} {'runs':>4} {'checkpoints':>11}  "
                 f"{'train NLL start -> end':<28} {'test error':<16} {'test err @ best valid':<21} "
                 f"{'best epoch':<12} status"]
        for g in self.groups.values():
            cps = f"{min(g.checkpoints)}-{max(g.checkpoints)}" if g.checkpoints else "0"
            if g.checkpoints and min(g.checkpoints) == max(g.checkpoints):
                cps = str(g.checkpoints[0])
            status = ", ".join(f"{n} {s}" for s, n in sorted(g.statuses.items()))
            nll = f"{stat(g.first_train_nll, '%.3f')} -> {stat(g.final_train_nll, '%.3f')}"
            lines.append(f"{g.group:<{gw}} {','.join(sorted(g.pretrain)):<10} {len(g.runs):>4} "
                         f"{cps:>11}  {nll:<28} {stat(g.final_test_error, '%.4f'):<16} "
                         f"{stat(g.test_error_at_best, '%.4f'):<21} "
                         f"{stat(g.best_epoch, '%.1f'):<12} {status}")
        if self.diverged:
            lines.append("diverged (stopped, kept in the file, left out of projections): "
                         + ", ".join(f"{r} at step {s}" for r, s in self.diverged.items()))
        if self.resume_states:
            lines.append("unfinished batches that `trajviz record --resume` continues from their "
                         "last checkpoint: " + "; ".join(
                             f"{', '.join(map(str, m.get('runs') or [key]))} at step {m.get('step')}"
                             for key, m in self.resume_states.items()))
        for g in self.groups.values():
            stuck = g.at_chance(self.n_classes)
            if stuck and self.n_classes > 1:
                lines.append(
                    f"note: {stuck}/{len(g.final_train_nll)} runs of group {g.group!r} end "
                    f"with train NLL > {chance_nll(self.n_classes) - CHANCE_MARGIN:.3f} "
                    f"(ln {self.n_classes} - {CHANCE_MARGIN}), no better than a uniform guess: "
                    "still on the chance plateau (docs/config.md, 'The chance plateau')")
        if runs:
            rw = max([6] + [len(r.run_id) for r in self.runs])
            mw = max([6] + [len(r.method) for r in self.runs])
            lines.append("")
            lines.append(f"{'run':<{rw}} {'method':<{mw}} {'seed':>4} {'checkpoints':>11}  "
                         f"{'test error':<10} {'test err @ best valid':<21} {'best epoch':<10} status")
            for r in self.runs:
                lines.append(f"{r.run_id:<{rw}} {r.method:<{mw}} {r.seed:>4} {r.checkpoints:>11}  "
                             f"{format_number(r.final_test_error, '%.4f'):<10} "
                             f"{format_number(r.test_error_at_best, '%.4f'):<21} "
                             f"{format_number(r.best_epoch, '%.1f'):<10} {r.status}")
        return "\n".join(lines)


def summarize(path: str | Path, *, check: bool = True) -> FileSummary:
    """Runs per group, checkpoints, train NLL at start and end, final test error.

    ``check``: first read the whole file and check it against the format contract
    (:meth:`ExperimentFile.verify`), so a damaged file fails here with the key that is bad.
    """
    try:
        return _summarize(path, check)
    except (ValueError, TypeError, KeyError, OverflowError) as exc:
        if isinstance(exc, TrajvizError):
            raise
        raise FormatError(f"{path}: unexpected run attributes ({type(exc).__name__}: {exc}); "
                          "the file is damaged or not written by trajviz") from None


def _summarize(path: str | Path, check: bool) -> FileSummary:
    with ExperimentFile(path) as f:
        if check:
            f.verify()
        diverged: dict[str, int] = {}
        run_rows: list[RunSummary] = []
        groups: dict[str, GroupSummary] = defaultdict(lambda: GroupSummary(""))
        for info in f.runs():
            g = groups[info.group]
            g.group = info.group
            g.runs.append(info.run_id)
            g.pretrain.add(info.pretrain)
            g.statuses[info.status] = g.statuses.get(info.status, 0) + 1
            g.checkpoints.append(info.n_checkpoints)
            m = f.metrics(info.run_id)
            if info.n_checkpoints and "train_nll" in m:
                g.first_train_nll.append(m["train_nll"][0])
                g.final_train_nll.append(m["train_nll"][-1])
            if info.n_checkpoints and "test_error" in m:
                g.final_test_error.append(m["test_error"][-1])
            attrs = f.run_attrs(info.run_id)
            if info.status == "diverged":
                diverged[info.run_id] = int(attrs.get("diverged_step", -1))
            if "test_error_at_best" not in attrs and info.n_checkpoints:
                attrs = select_from_metrics(f.steps(info.run_id), f.epochs(info.run_id), m)
            if "test_error_at_best" in attrs:
                g.test_error_at_best.append(float(attrs["test_error_at_best"]))
                g.best_epoch.append(float(attrs["best_epoch"]))
            row = RunSummary(info.run_id, info.group, str(attrs.get("method", info.pretrain)),
                             info.seed, info.status, info.n_checkpoints,
                             test_error_at_best=float(attrs.get("test_error_at_best", np.nan)),
                             best_epoch=float(attrs.get("best_epoch", np.nan)))
            if info.n_checkpoints and "test_error" in m:
                row.final_test_error = float(m["test_error"][-1])
            run_rows.append(row)
        return FileSummary(path=Path(path), name=f.name, probe_size=f.probe_size,
                           n_classes=f.n_classes, probe_sha256=f.probe_sha256, groups=dict(groups),
                           diverged=diverged, runs=run_rows, resume_states=f.resume_states())
