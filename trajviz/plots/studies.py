"""Figures of the pre-training studies (Erhan et al. 2009, 2010), each drawn on a given Axes.

Inputs are plain arrays (test errors in %, NLL curves, embedding coordinates, loss scans), so the
functions serve ``trajviz reproduce`` and the analysis/ scripts alike; nothing here reads files
or saves figures. Colours: :data:`METHOD_COLORS`, the same in every figure.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
from matplotlib.axes import Axes

#: one colour per pre-training method spec (others cycle through the default palette)
METHOD_COLORS = {"none": "#d62728", "sdae": "#1f77b4", "rbm": "#2ca02c",
                 "sdae+hist": "#9467bd", "sdae+reinit=2": "#17becf", "sdae+reinit=1": "#ff7f0e"}
#: readable names of method specs
METHOD_LABELS = {"none": "no pre-training", "sdae": "SDAE pre-training", "rbm": "RBM pre-training",
                 "sdae+hist": "histogram init", "sdae+reinit=2": "first layer only",
                 "sdae+reinit=1": "second layer only"}
#: colour maps of trajectories over training time, one per group (dark = start)
TIME_CMAPS = {"none": "autumn", "sdae": "winter"}


def method_color(method: str, i: int = 0) -> str:
    return METHOD_COLORS.get(method, f"C{i % 10}")


def method_label(method: str) -> str:
    return METHOD_LABELS.get(method, method)


def error_boxplots(ax: Axes, x_values: Sequence, errors: Mapping[str, Sequence[np.ndarray]], *,
                   xlabel: str = "hidden layers", ylabel: str = "test error (%)") -> Axes:
    """Box plots of test error (%) at each x (e.g. depth), one box per method side by side;
    ``errors[method][i]`` holds the per-seed errors at ``x_values[i]``. Whiskers at 1.5 IQR,
    outliers as points (the studies' Fig. 1 of [A])."""
    methods = list(errors)
    n = len(methods)
    width = 0.8 / max(n, 1)
    for j, m in enumerate(methods):
        pos = np.arange(len(x_values)) + (j - (n - 1) / 2) * width
        data = [np.asarray(v) if len(v) else np.array([np.nan]) for v in errors[m]]
        bp = ax.boxplot(data, positions=pos, widths=width * 0.85, patch_artist=True,
                        manage_ticks=False, flierprops={"marker": ".", "markersize": 4})
        for box in bp["boxes"]:
            box.set(facecolor=method_color(m, j), alpha=0.45, edgecolor=method_color(m, j))
        for med in bp["medians"]:
            med.set(color="black")
        ax.plot([], [], "s", color=method_color(m, j), alpha=0.6, label=method_label(m))
    ax.set_xticks(np.arange(len(x_values)), [str(v) for v in x_values])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(frameon=False, fontsize="small")
    ax.grid(axis="y", alpha=0.3)
    return ax


def error_histograms(ax: Axes, errors: Mapping[str, np.ndarray], *, bins: int = 20,
                     xlabel: str = "test error (%)") -> Axes:
    """Overlaid histograms of per-seed test errors, one per label (e.g. "1 layer, none")."""
    allv = np.concatenate([np.asarray(v) for v in errors.values() if len(v)] or [np.zeros(1)])
    edges = np.histogram_bin_edges(allv, bins=bins)
    for i, (label, v) in enumerate(errors.items()):
        ax.hist(v, bins=edges, alpha=0.5, label=label, color=f"C{i}", edgecolor="white")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("seeds")
    ax.legend(frameon=False, fontsize="small")
    return ax


def nll_curves(ax: Axes, curves: Mapping[str, np.ndarray], *, title: str | None = None) -> Axes:
    """log test NLL against log train NLL over training, one line per seed, coloured by method
    (the same-cost figure of [J]). ``curves[method]`` is (runs, T, 2): (log train, log test)."""
    for j, (m, c) in enumerate(curves.items()):
        for i, run in enumerate(c):
            ok = np.isfinite(run).all(axis=1)
            ax.plot(run[ok, 0], run[ok, 1], "-", lw=0.8, alpha=0.6, color=method_color(m, j),
                    label=method_label(m) if i == 0 else None)
            if ok.any():
                ax.plot(run[ok, 0][-1], run[ok, 1][-1], "o", ms=2.5, color=method_color(m, j))
    ax.set_xlabel("log train NLL")
    ax.set_ylabel("log test NLL")
    if title:
        ax.set_title(title, fontsize="medium")
    ax.legend(frameon=False, fontsize="small")
    return ax


def error_vs_x(ax: Axes, x_values: Sequence[float], errors: Mapping[str, Sequence[np.ndarray]], *,
               xlabel: str, logx: bool = True, ylabel: str = "test error (%)") -> Axes:
    """Mean test error (%) against x (layer width, training-set size) with 95% error bars
    (1.96 standard errors over seeds), one line per method (the layer-size figure of [J])."""
    x = np.asarray(x_values, dtype=float)
    for j, (m, vals) in enumerate(errors.items()):
        mean = np.array([np.mean(v) if len(v) else np.nan for v in vals])
        sem = np.array([np.std(v, ddof=1) / np.sqrt(len(v)) if len(v) > 1 else np.nan for v in vals])
        ax.errorbar(x, mean, yerr=1.96 * sem, marker="o", ms=4, capsize=3,
                    color=method_color(m, j), label=method_label(m))
    if logx:
        ax.set_xscale("log")
        ax.set_xticks(x, [f"{v:g}" for v in x])
        ax.minorticks_off()
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(frameon=False, fontsize="small")
    ax.grid(alpha=0.3)
    return ax


def method_bars(ax: Axes, errors: Mapping[str, np.ndarray], *, ylabel: str = "test error (%)") -> Axes:
    """Median test error (%) per method as bars, inter-quartile range as error bars, seeds as dots
    (the partial pre-training figure of [A])."""
    names = list(errors)
    for i, m in enumerate(names):
        v = np.asarray(errors[m])
        if not len(v):
            continue
        q1, med, q3 = np.percentile(v, [25, 50, 75])
        ax.bar(i, med, color=method_color(m, i), alpha=0.6, width=0.7)
        ax.errorbar(i, med, yerr=[[med - q1], [q3 - med]], color="black", capsize=4)
        jitter = np.random.default_rng(i).uniform(-0.2, 0.2, len(v))  # fixed: only for display
        ax.plot(i + jitter, v, ".", color="black", ms=3, alpha=0.6)
    ax.set_xticks(range(len(names)), [method_label(m) for m in names], rotation=20, ha="right")
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)
    return ax


def table(ax: Axes, rows: Sequence[Mapping[str, object]], *, title: str | None = None) -> Axes:
    """A table of ``rows`` (dicts with the same keys) drawn as a figure (e.g. histogram init)."""
    ax.axis("off")
    if not rows:
        return ax
    cols = list(rows[0])
    cells = [[str(r.get(c, "")) for c in cols] for r in rows]
    t = ax.table(cellText=cells, colLabels=cols, loc="center", cellLoc="center")
    t.auto_set_font_size(False)
    t.set_fontsize(8)
    t.scale(1.0, 1.4)
    if title:
        ax.set_title(title, fontsize="medium")
    return ax


def trajectories(ax: Axes, coords: np.ndarray, runs: Sequence[tuple[str, np.ndarray]], *,
                 title: str | None = None, upto: int | None = None) -> Axes:
    """2-D trajectories: ``runs`` lists (group, point indices in time order) into ``coords``
    (M, 2). Each run is a line; its points are coloured by training time with one colour map
    per group (:data:`TIME_CMAPS`, dark at the start); start marked by a circle, end by a cross.
    ``upto``: draw only the first ``upto`` checkpoints of each run (for animations)."""
    import matplotlib as mpl

    seen = set()
    for group, idx in runs:
        idx = np.asarray(idx)[:upto] if upto is not None else np.asarray(idx)
        if not len(idx):
            continue
        cmap = mpl.colormaps[TIME_CMAPS.get(group, "viridis")]
        full = len(runs[0][1]) if upto is not None else len(idx)
        t = np.linspace(0, 1, max(full, 2))[:len(idx)]
        xy = coords[idx]
        ax.plot(xy[:, 0], xy[:, 1], "-", lw=0.5, color=cmap(0.5), alpha=0.4)
        ax.scatter(xy[:, 0], xy[:, 1], c=t, cmap=cmap, vmin=0, vmax=1, s=8, zorder=3,
                   label=method_label(group) if group not in seen else None)
        ax.plot(*xy[0], "o", mfc="none", mec="black", ms=4, mew=0.6, zorder=4)
        ax.plot(*xy[-1], "x", color="black", ms=4, mew=0.8, zorder=4)
        seen.add(group)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_aspect("equal", adjustable="datalim")  # distances are what a reader compares
    if title:
        ax.set_title(title, fontsize="medium")
    ax.legend(frameon=False, fontsize="small", markerscale=1.5)
    return ax


def landscape_scans(ax: Axes, alphas: np.ndarray, scans: Mapping[str, np.ndarray], *,
                    title: str | None = None, ylabel: str = "training NLL") -> Axes:
    """1-D loss scans: ``scans[method]`` is (lines, A), one line per direction and run, against
    ``alphas`` (A,); one colour per method (the landscape figure of [J])."""
    for j, (m, rows) in enumerate(scans.items()):
        for i, row in enumerate(np.atleast_2d(rows)):
            ax.plot(alphas, row, "-", lw=0.7, alpha=0.5, color=method_color(m, j),
                    label=method_label(m) if i == 0 else None)
    ax.set_xlabel("step along direction (alpha)")
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize="medium")
    ax.legend(frameon=False, fontsize="small")
    return ax


def separation(ax: Axes, epochs: np.ndarray, accuracy: np.ndarray, p_value: np.ndarray, *,
               alpha: float = 0.05, k: int | None = None) -> Axes:
    """Leave-one-out k-NN group accuracy of two groups over epochs; filled markers where the
    permutation p-value is <= ``alpha``, open ones elsewhere; 0.5 (chance) dashed."""
    ok = np.asarray(p_value) <= alpha
    ax.plot(epochs, accuracy, "-", color="black", lw=0.8)
    ax.plot(np.asarray(epochs)[ok], np.asarray(accuracy)[ok], "o", color="black", ms=3,
            label=f"p <= {alpha:g}")
    ax.plot(np.asarray(epochs)[~ok], np.asarray(accuracy)[~ok], "o", mfc="white", color="black",
            ms=3, label=f"p > {alpha:g}")
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"{k}-NN group accuracy" if k else "k-NN group accuracy")
    ax.legend(frameon=False, fontsize="small", loc="lower right")
    ax.grid(alpha=0.3)
    return ax


def group_spreads(ax: Axes, epochs: np.ndarray, spreads: Mapping[str, np.ndarray],
                  divergence: Mapping[str, float | None] | None = None) -> Axes:
    """Each group's spread (mean pairwise RMS distance of its nets) over epochs, with a dotted
    vertical line at its divergence epoch where it has one."""
    for i, (g, s) in enumerate(spreads.items()):
        ax.plot(epochs, s, "-", color=method_color(g, i), label=method_label(g))
        t = (divergence or {}).get(g)
        if t is not None:
            ax.axvline(t, color=method_color(g, i), ls=":", lw=1.0)
    ax.set_xlabel("epoch")
    ax.set_ylabel("spread (RMS distance)")
    ax.legend(frameon=False, fontsize="small")
    ax.grid(alpha=0.3)
    return ax
