"""Reading landscape results files into plain numpy objects (no torch needed).

:func:`load_result` returns a :class:`LandscapeResult`: the scan settings, the alphas, and one
:class:`RunScan` per scanned run with its 1-D scans (n_directions, n_alphas), 2-D grids
(n_alphas, n_alphas) and Hessian measures. Rows of a scan that was interrupted are NaN.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from trajviz.store import LandscapeFile

log = logging.getLogger(__name__)


@dataclass
class RunScan:
    """Everything scanned around one run's parameters."""

    run_id: str
    group: str          # the run's group in its experiment (its pre-training method by default)
    pretrain: str
    seed: int
    depth: int          # hidden layers (0 for a scan_model run)
    width: int          # (0 for a scan_model run)
    complete: bool
    loss_at_theta: tuple[float, float] = (float("nan"), float("nan"))  # (NLL, error) at alpha = 0
    scans1d: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # kind -> nll/error (n, A)
    scans2d: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # kind -> nll/error (A, A)
    top_eigenvalue: float = float("nan")
    hessian_trace: float = float("nan")
    hessian_trace_sem: float = float("nan")

    @property
    def label(self) -> str:
        return group_label(self.depth, self.group)


def group_label(depth: int, group: str) -> str:
    """"depth 2, sdae"; just the group for a scan_model run (no depth)."""
    return f"depth {depth}, {group}" if depth else group


@dataclass
class LandscapeResult:
    """A landscape file read into memory: ``settings`` (the scan's settings as a dict),
    ``alphas`` (A,) step sizes along each direction, ``runs`` in file order."""

    path: Path
    settings: dict[str, Any]
    alphas: np.ndarray
    runs: list[RunScan]
    source: str = ""

    @property
    def kinds(self) -> list[str]:
        return list(self.settings.get("directions", []))

    def run(self, run_id: str) -> RunScan:
        for r in self.runs:
            if r.run_id == run_id:
                return r
        raise KeyError(run_id)


def load_result(path: str | Path) -> LandscapeResult:
    """Read a landscape file (docs/format.md, "Landscape files").

    :class:`~trajviz.store.LandscapeFile` checks the file's structure when it opens it (kinds
    of the run and Hessian attributes, scan tables (n, A) and (A, A) against the A alphas), so
    a damaged file is refused with a one-line FormatError naming the key and what is expected,
    and what is read below has the kinds and shapes the flatness code and the plots rely on.
    """
    with LandscapeFile(path) as f:
        settings = f.config
        alphas = f.array("alphas")
        runs = []
        for rid in f.keys("runs"):
            a = f.attrs(f"runs/{rid}")
            run = RunScan(run_id=rid, group=str(a.get("group", "")), pretrain=str(a.get("pretrain", "")),
                          seed=int(a.get("seed", -1)), depth=int(a.get("depth", 0)),
                          width=int(a.get("width", 0)), complete=a.get("status") == "complete",
                          loss_at_theta=(float(a.get("nll_at_theta", np.nan)),
                                         float(a.get("error_at_theta", np.nan))))
            for dim, target in (("scan1d", run.scans1d), ("scan2d", run.scans2d)):
                for kind in f.keys(f"runs/{rid}/{dim}"):
                    key = f"runs/{rid}/{dim}/{kind}"
                    target[kind] = {c: f.array(f"{key}/{c}") for c in ("nll", "error")}
            if f.has(f"runs/{rid}/hessian"):
                h = f.attrs(f"runs/{rid}/hessian")
                run.top_eigenvalue = float(h.get("top_eigenvalue", np.nan))
                run.hessian_trace = float(h.get("trace", np.nan))
                run.hessian_trace_sem = float(h.get("trace_sem", np.nan))
            runs.append(run)
        return LandscapeResult(Path(path), settings, alphas, runs, source=f.source)
