"""Function-space trajectories of an embedding, as in Erhan et al. 2009 (Fig. 6-7) and 2010
(Fig. 8-9): every checkpoint of every net one point, coloured by training time with one colour
map per group, each net's checkpoints joined by a thin line, its start and end marked.

``plot_trajectories(ax, embedding, ...) -> Axes`` draws on the Axes it is given (a 3-D Axes for
a 3-D embedding shows all three coordinates; a 2-D Axes shows the first two).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

#: one sequential colour map per group, in the order groups first appear
GROUP_CMAPS = ("Blues", "Reds", "Greens", "Purples", "Oranges", "Greys")
#: the part of each map used: its palest end is invisible on white
CMAP_RANGE = (0.3, 1.0)
METHOD_LABELS = {"tsne": "t-SNE", "isomap": "ISOMAP", "umap": "UMAP", "pca": "PC"}


def _truncated(name: str) -> Any:
    import matplotlib as mpl
    from matplotlib.colors import LinearSegmentedColormap

    base = mpl.colormaps[name]
    lo, hi = CMAP_RANGE
    return LinearSegmentedColormap.from_list(f"{name}_trunc", base(np.linspace(lo, hi, 256)))


def training_time(embedding: Any) -> tuple[np.ndarray, str]:
    """Per-point training time and its label: epochs when every point has one, else SGD steps."""
    epoch = np.asarray(embedding.epoch, dtype=np.float64)
    if epoch.size and np.all(np.isfinite(epoch)):
        return epoch, "epoch"
    return np.asarray(embedding.step, dtype=np.float64), "step"


def set_equal_scale(ax: Any, xyz: np.ndarray) -> None:
    """One unit is as long on every axis: distances in an embedding are what a reader compares,
    and a square box around a 19 x 5 cloud would stretch one axis 4-fold."""
    if hasattr(ax, "zaxis"):
        span = np.ptp(xyz, axis=0) if len(xyz) else np.ones(3)
        ax.set_box_aspect(np.where(span > 0, span, max(float(span.max()), 1e-12)))
    else:
        ax.set_aspect("equal", adjustable="datalim")


def plot_trajectories(ax: Any, embedding: Any, *, groups: Sequence[str] | None = None,
                      cmaps: Sequence[str] | None = None, lines: bool = True,
                      markers: bool = True, legend: bool = True, colorbar: bool = True,
                      point_size: float = 7.0, line_width: float = 0.5,
                      line_alpha: float = 0.35) -> Any:
    """Draw the trajectories of ``embedding`` (a :class:`trajviz.trajectories.embedding.Embedding`) on ``ax``.

    ``groups``: which groups and in which order (default: all, in order of appearance);
    ``cmaps``: matplotlib colour-map names, one per group (default :data:`GROUP_CMAPS`).
    Colour encodes training time on a scale shared by all groups. Start of each run: a circle,
    end: a square, both black-edged. Both axes (all three in 3-D) have the same scale; the
    legend sits above the axes. ``colorbar`` adds one colour bar per group (needs
    ``ax.figure``). Returns ``ax``.
    """
    from matplotlib.colors import Normalize
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    coords = np.asarray(embedding.coords, dtype=np.float64)
    three_d = coords.shape[1] >= 3 and hasattr(ax, "zaxis")
    xyz = coords[:, :3] if three_d else coords[:, :2]
    time, time_label = training_time(embedding)
    names = list(groups) if groups is not None else list(embedding.groups)
    cmap_names = list(cmaps) if cmaps is not None else list(GROUP_CMAPS)
    if len(cmap_names) < len(names):
        cmap_names = [cmap_names[i % len(cmap_names)] for i in range(len(names))]
    norm = Normalize(vmin=float(np.min(time)), vmax=float(np.max(time)) or 1.0)
    handles = []
    mappables = []
    for gi, g in enumerate(names):
        cmap = _truncated(cmap_names[gi])
        runs = [(lab, idx) for grp, lab, idx in embedding.trajectories() if grp == g]
        for _, idx in runs:
            pts = xyz[idx]
            if lines and idx.size > 1:
                ax.plot(*pts.T, color=cmap(0.75), lw=line_width, alpha=line_alpha, zorder=1)
        sel = np.flatnonzero(np.asarray(embedding.group) == g)
        sc = ax.scatter(*xyz[sel].T, c=time[sel], cmap=cmap, norm=norm, s=point_size,
                        linewidths=0, zorder=2, rasterized=sel.size > 2000)
        mappables.append((g, sc))
        if markers:
            starts = np.array([idx[0] for _, idx in runs])
            ends = np.array([idx[-1] for _, idx in runs])
            ax.scatter(*xyz[starts].T, c=time[starts], cmap=cmap, norm=norm,
                       s=point_size * 3.5, marker="o", edgecolors="black", linewidths=0.6, zorder=3)
            ax.scatter(*xyz[ends].T, c=time[ends], cmap=cmap, norm=norm,
                       s=point_size * 3.5, marker="s", edgecolors="black", linewidths=0.6, zorder=3)
        handles.append(Line2D([], [], color=cmap(0.75), marker="o", markersize=4, lw=1,
                              label=f"{g} ({len(runs)} runs)"))
    if markers:
        handles.append(Line2D([], [], ls="", marker="o", markersize=4, markerfacecolor="white",
                              markeredgecolor="black", label="start"))
        handles.append(Line2D([], [], ls="", marker="s", markersize=4, markerfacecolor="white",
                              markeredgecolor="black", label="end"))
    method = str(getattr(embedding, "attrs", {}).get("method", ""))
    label = METHOD_LABELS.get(method, method or "dim")
    ax.set_xlabel(f"{label} 1")
    ax.set_ylabel(f"{label} 2")
    if three_d:
        ax.set_zlabel(f"{label} 3")
    if method in ("tsne", "umap", "aligned-umap", "phate"):  # axes without units worth reading
        ax.set_xticks([])
        ax.set_yticks([])
    set_equal_scale(ax, xyz)
    if legend:
        # above the axes, in columns: at one journal column's width a legend inside the axes
        # covers a good part of the points
        ax.legend(handles=handles, loc="lower left", bbox_to_anchor=(0.0, 1.01),
                  ncol=min(len(handles), 3 if len(names) <= 3 else 2), frameon=False,
                  handlelength=1.2, columnspacing=0.8, borderaxespad=0.1, labelspacing=0.25)
    if colorbar and ax.figure is not None and mappables:
        # one thin bar per group, stacked in a column right of the axes
        n, gap = len(mappables), 0.08
        height = (1.0 - gap * (n - 1)) / n
        for i, (g, sc) in enumerate(mappables):
            x0 = 1.2 if three_d else 1.03  # clear of a 3-D axes' z labels
            cax = ax.inset_axes([x0, 1.0 - (i + 1) * height - i * gap, 0.035, height])
            cb = ax.figure.colorbar(sc, cax=cax)
            cb.set_label(f"{time_label}, {g}", labelpad=2)
            cb.outline.set_linewidth(0.4)
            cb.ax.tick_params(width=0.4, length=2, pad=1)
            cb.ax.yaxis.set_major_locator(MaxNLocator(nbins=4, integer=True))
    return ax
