"""Error-landscape figures: 1-D scans of a group (Erhan et al. JMLR 2010, fig. 11: training NLL
along 7 sgd directions around the final parameters, panels by depth and pre-training) and 2-D
contour plots of a grid scan. Each function draws on the Axes it is given and returns it."""

from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
from matplotlib.axes import Axes

from trajviz.landscape.results import RunScan


def plot_scans_1d(ax: Axes, alphas: np.ndarray, runs: Sequence[RunScan], kind: str, *,
                  column: str = "nll", color: str | None = None, label: str | None = None,
                  mean: bool = True) -> Axes:
    """Every direction of every run as a thin line, and their mean (thick) when ``mean``.

    ``alphas`` (A,) step along each direction; ``column``: "nll" (training NLL) or "error"
    (classification error); runs lacking a scan of ``kind`` are skipped.
    """
    curves = [r.scans1d[kind][column] for r in runs if kind in r.scans1d]
    line = None
    for c in curves:
        for row in np.atleast_2d(c):
            line, = ax.plot(alphas, row, lw=0.5, alpha=0.45,
                            color=color if color is not None else (line.get_color() if line else None))
    # the mean over the rows scanned so far (a scan in progress has all-NaN rows, a kind may
    # have none); where every scanned row is NaN the mean line has a gap
    rows = np.concatenate([np.atleast_2d(c) for c in curves]) if curves else np.zeros((0, 0))
    rows = rows[np.isfinite(rows).any(axis=1)] if rows.size else rows
    if mean and len(rows):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # "Mean of empty slice": the gaps
            mean_curve = np.nanmean(rows, axis=0)
        ax.plot(alphas, mean_curve, lw=1.6,
                color=color if color is not None else (line.get_color() if line else None), label=label)
    ax.axvline(0.0, color="0.6", lw=0.4, ls=":")
    ax.set_xlabel(r"$\alpha$")
    ax.set_ylabel("training NLL" if column == "nll" else "training error")
    return ax


def plot_scan_grid(ax: Axes, alphas: np.ndarray, grid: np.ndarray, *, levels: int = 15,
                   cmap: str = "viridis", log: bool = True, colorbar: bool = True) -> Axes:
    """Contours of a (A, A) grid scan, rows along the first direction (alpha, y axis) and
    columns along the second (beta, x axis); the scanned point is marked at the origin.
    ``log``: contour levels spaced evenly in log10 of the loss."""
    z = np.asarray(grid, dtype=np.float64)
    shown = np.log10(np.clip(z, 1e-12, None)) if log else z
    cs = ax.contourf(alphas, alphas, shown, levels=levels, cmap=cmap)
    ax.contour(alphas, alphas, shown, levels=cs.levels, colors="k", linewidths=0.25)
    ax.plot([0.0], [0.0], marker="+", color="w", ms=6)
    ax.set_xlabel(r"$\beta$ (direction 2)")
    ax.set_ylabel(r"$\alpha$ (direction 1)")
    ax.set_aspect("equal")
    if colorbar:
        cb = ax.figure.colorbar(cs, ax=ax, shrink=0.8)
        cb.set_label("log10 loss" if log else "loss")
    return ax
