"""``trajviz info``: a summary of a trajviz file (library twin of the subcommand)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from trajviz.store import ExperimentFile


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


@dataclass
class FileSummary:
    path: Path
    name: str
    probe_size: int
    n_classes: int
    probe_sha256: str
    groups: dict[str, GroupSummary]

    def format(self) -> str:
        """A plain-text table, one line per group."""
        def stat(values: list[float], fmt: str) -> str:
            v = np.asarray(values, dtype=float)
            v = v[np.isfinite(v)]
            if v.size == 0:
                return "-"
            return (fmt % v.mean()) + (" ± " + fmt % v.std(ddof=1) if v.size > 1 else "")

        lines = [f"{self.path}: experiment {self.name!r}, probe set of {self.probe_size} examples "
                 f"x {self.n_classes} classes (sha256 {self.probe_sha256[:12]})",
                 f"{'group':<12} {'pretrain':<10} {'runs':>4} {'checkpoints':>11}  "
                 f"{'train NLL start -> end':<28} {'test error':<16} status"]
        for g in self.groups.values():
            cps = f"{min(g.checkpoints)}-{max(g.checkpoints)}" if g.checkpoints else "0"
            if g.checkpoints and min(g.checkpoints) == max(g.checkpoints):
                cps = str(g.checkpoints[0])
            status = ", ".join(f"{n} {s}" for s, n in sorted(g.statuses.items()))
            nll = f"{stat(g.first_train_nll, '%.3f')} -> {stat(g.final_train_nll, '%.3f')}"
            lines.append(f"{g.group:<12} {','.join(sorted(g.pretrain)):<10} {len(g.runs):>4} "
                         f"{cps:>11}  {nll:<28} {stat(g.final_test_error, '%.4f'):<16} {status}")
        return "\n".join(lines)


def summarize(path: str | Path) -> FileSummary:
    """Runs per group, checkpoints, train NLL at start and end, final test error."""
    with ExperimentFile(path) as f:
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
        return FileSummary(path=Path(path), name=f.name, probe_size=f.probe_size,
                           n_classes=f.n_classes, probe_sha256=f.probe_sha256, groups=dict(groups))
