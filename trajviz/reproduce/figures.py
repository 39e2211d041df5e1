"""The publication figures of ``trajviz reproduce``: each built from stored results only, drawn
with :mod:`trajviz.plots.studies` and saved as PDF and PNG (the animation as GIF).

:data:`FIGURES` lists them; :func:`make_figures` draws those whose study is at hand, and the
scripts in analysis/ call :func:`build_figure` / :func:`save_figure` for one figure each.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from trajviz.errors import ConfigError

log = logging.getLogger(__name__)

ONE_COLUMN, TWO_COLUMNS = 3.4, 7.0  # inches
STYLE = {"font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8, "legend.fontsize": 7,
         "xtick.labelsize": 7, "ytick.labelsize": 7, "axes.spines.top": False,
         "axes.spines.right": False, "pdf.fonttype": 42, "savefig.dpi": 300}


@dataclass
class FigureContext:
    """What figure builders read: the studies' results, a seed, and a cache shared by figures
    that reuse one computation (the t-SNE embedding serves the figure and the animation)."""

    results: Mapping[str, Any]
    seed: int = 0
    cache: dict[str, Any] = field(default_factory=dict)
    n_boot: int = 2000  # bootstrap resamples of F10's table (the findings' number: one table)


@dataclass(frozen=True)
class FigureSpec:
    name: str
    study: str
    findings: tuple[str, ...]
    caption: str
    build: Callable[[FigureContext], Any]
    #: "static": build(ctx) returns a Figure; "gif" and "html": build(ctx, path) writes the file
    #: (an animation; an interactive plotly page) and returns its path
    kind: str = "static"


def _new_figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _depth_order(r: Any) -> list[str]:
    depth = {s: r.setting_config(s)["model"]["depth"] for s in r.setting_ids()}
    return sorted(depth, key=depth.get)


def _depth(r: Any, s: str) -> int:
    return int(r.setting_config(s)["model"]["depth"])


def fig_depth_boxplots(ctx: FigureContext) -> Any:
    r = ctx.results["depth"]
    order = _depth_order(r)
    fig = _new_figure(ONE_COLUMN, 2.6)
    ax = fig.add_subplot()
    methods = [m for m in ("none", "sdae") if m in r.methods()]
    from trajviz.plots.studies import error_boxplots

    error_boxplots(ax, [_depth(r, s) for s in order], {m: [r.errors(s, m) for s in order]
                                                       for m in methods})
    return fig


def fig_error_histograms(ctx: FigureContext) -> Any:
    from trajviz.plots.studies import error_histograms, method_label

    r = ctx.results["depth"]
    order = _depth_order(r)
    shallow, deep = order[0], order[-1]
    fig = _new_figure(TWO_COLUMNS, 2.4)
    axes = fig.subplots(1, 2, sharex=True)
    for ax, m in zip(axes, ("none", "sdae")):
        error_histograms(ax, {f"{_depth(r, shallow)} layer(s)": r.errors(shallow, m),
                              f"{_depth(r, deep)} layers": r.errors(deep, m)})
        ax.set_title(method_label(m))
    return fig


def fig_nll_curves(ctx: FigureContext) -> Any:
    from trajviz.reproduce.findings import run_curves
    from trajviz.plots.studies import nll_curves

    r = ctx.results["depth"]
    order = _depth_order(r)
    fig = _new_figure(TWO_COLUMNS, 2.3)
    axes = np.atleast_1d(fig.subplots(1, len(order)))
    for ax, s in zip(axes, order):
        nll_curves(ax, {m: run_curves(r.select(s, m)) for m in ("none", "sdae")},
                   title=f"{_depth(r, s)} hidden layer(s)")
    for ax in axes[1:]:  # one legend is enough
        if ax.get_legend() is not None:
            ax.get_legend().remove()
    return fig


def _errors_vs(r: Any, key: Callable[[str], float]) -> tuple[list[float], dict[str, list[np.ndarray]]]:
    order = sorted(r.setting_ids(), key=key)
    return [key(s) for s in order], {m: [r.errors(s, m) for s in order] for m in ("none", "sdae")}


def fig_size_errors(ctx: FigureContext) -> Any:
    from trajviz.plots.studies import error_vs_x

    r = ctx.results["size"]
    x, errs = _errors_vs(r, lambda s: r.setting_config(s)["dataset"]["n_train"])
    fig = _new_figure(ONE_COLUMN, 2.5)
    error_vs_x(fig.add_subplot(), x, errs, xlabel="training examples")
    return fig


def fig_width_errors(ctx: FigureContext) -> Any:
    from trajviz.plots.studies import error_vs_x

    r = ctx.results["width"]
    depths = sorted({_depth(r, s) for s in r.setting_ids()})
    fig = _new_figure(ONE_COLUMN * len(depths), 2.5)
    axes = np.atleast_1d(fig.subplots(1, len(depths), sharey=True))
    for ax, d in zip(axes, depths):
        ids = [s for s in r.setting_ids() if _depth(r, s) == d]
        ids.sort(key=lambda s: r.setting_config(s)["model"]["width"])
        error_vs_x(ax, [r.setting_config(s)["model"]["width"] for s in ids],
                   {m: [r.errors(s, m) for s in ids] for m in ("none", "sdae")},
                   xlabel="units per layer")
        ax.set_title(f"{d} hidden layer(s)")
    return fig


def fig_hist_table(ctx: FigureContext) -> Any:
    from trajviz.plots.studies import table

    r = ctx.results["hist"]
    rows = []
    for s in _depth_order(r):
        row = {"hidden layers": _depth(r, s)}
        for m, name in (("none", "uniform init"), ("sdae+hist", "histogram init"),
                        ("sdae", "pre-training")):
            v = r.errors(s, m)
            row[name] = f"{np.mean(v):.2f} ± {np.std(v, ddof=1):.2f}" if len(v) > 1 else "-"
        rows.append(row)
    fig = _new_figure(ONE_COLUMN * 1.4, 0.5 + 0.3 * len(rows))
    table(fig.add_subplot(), rows, title="test error (%), mean ± SD over seeds")
    return fig


def fig_partial_bars(ctx: FigureContext) -> Any:
    from trajviz.plots.studies import method_bars

    r = ctx.results["partial"]
    s = r.setting_ids()[0]
    order = [m for m in ("sdae", "sdae+reinit=2", "sdae+hist", "sdae+reinit=1", "none")
             if m in r.methods(s)]
    order += [m for m in r.methods(s) if m not in order]
    fig = _new_figure(ONE_COLUMN, 2.6)
    method_bars(fig.add_subplot(), {m: r.errors(s, m) for m in order})
    return fig


def fig_landscape(ctx: FigureContext) -> Any:
    from trajviz.plots.studies import landscape_scans
    from trajviz.reproduce.landscape import load_scans

    r = ctx.results["landscape"]
    scans = load_scans(r)
    order = _depth_order(r)
    fig = _new_figure(TWO_COLUMNS, 2.3)
    axes = np.atleast_1d(fig.subplots(1, len(order), sharey=True))
    for ax, s in zip(axes, order):
        res = scans[s]
        lines: dict[str, list[np.ndarray]] = {}
        for run in res.runs:
            if run.complete and "sgd" in run.scans1d:
                lines.setdefault(run.group, []).append(run.scans1d["sgd"]["nll"])
        landscape_scans(ax, res.alphas, {m: np.concatenate(v) for m, v in sorted(lines.items())},
                        title=f"{_depth(r, s)} hidden layer(s)")
    for ax in axes[1:]:
        if ax.get_legend() is not None:
            ax.get_legend().remove()
    return fig


def fig_total_variance(ctx: FigureContext) -> Any:
    from trajviz.plots.studies import method_color, method_label
    from trajviz.reproduce.statistics import total_variance

    r = ctx.results["depth"]
    order = _depth_order(r)
    fig = _new_figure(ONE_COLUMN, 2.4)
    ax = fig.add_subplot()
    for j, m in enumerate(("none", "sdae")):
        ax.plot([_depth(r, s) for s in order],
                [total_variance(r.final_outputs(s, m)) for s in order],
                "o-", color=method_color(m, j), label=method_label(m))
    ax.set_yscale("log")
    ax.set_xlabel("hidden layers")
    ax.set_ylabel("total variance of final functions")
    ax.set_xticks([_depth(r, s) for s in order])
    ax.legend(frameon=False)
    ax.grid(alpha=0.3)
    return fig


def trajectory_embedding(ctx: FigureContext, method: str) -> Any:
    """The joint embedding (trajviz.trajectories.embedding.embed) of all checkpoints of the trajectory study's
    runs, cached in ``ctx`` so figures and animation share it."""
    key = f"embedding:{method}"
    if key not in ctx.cache:
        from trajviz.trajectories.embedding import embed

        r = ctx.results["trajectories"]
        s = r.setting_ids()[0]
        # the studies' t-SNE reduced to 30 PCA dimensions first
        ctx.cache[key] = embed([r.files[s]], method=method, groups=["none", "sdae"],
                               pca_dims=30, seed=ctx.seed)
    return ctx.cache[key]


def _traj_figure(ctx: FigureContext, method: str) -> Any:
    from trajviz.plots.studies import trajectories

    emb = trajectory_embedding(ctx, method)
    fig = _new_figure(ONE_COLUMN, 3.0)
    runs = [(g, idx) for g, _, idx in emb.trajectories()]
    trajectories(fig.add_subplot(), emb.coords, runs,
                 title=f"{ {'tsne': 't-SNE', 'isomap': 'ISOMAP', 'umap': 'UMAP'}[method]} "
                       "of function-space trajectories")
    return fig


def fig_trajectories_tsne(ctx: FigureContext) -> Any:
    return _traj_figure(ctx, "tsne")


def fig_trajectories_isomap(ctx: FigureContext) -> Any:
    return _traj_figure(ctx, "isomap")


def fig_trajectories_umap(ctx: FigureContext) -> Any:
    return _traj_figure(ctx, "umap")


def fig_separation(ctx: FigureContext) -> Any:
    """F10 in function space: k-NN group accuracy per epoch (with its permutation p-values) and
    each group's spread with its divergence time, from the same table as the findings."""
    from trajviz.plots.studies import group_spreads, separation
    from trajviz.reproduce.trajectories import f10_table

    table = f10_table(ctx.results["trajectories"], ctx.seed, ctx.n_boot)
    sep = table.separation
    epochs = np.where(np.isfinite(table.epoch), table.epoch, table.checkpoint)
    fig = _new_figure(ONE_COLUMN, 3.6)
    top, bottom = fig.subplots(2, 1, sharex=True)
    separation(top, epochs, sep.knn_accuracy, sep.p_value, k=sep.k)
    top.set_xlabel("")
    div = {g: (None if d.checkpoint is None else
               float(epochs[int(np.flatnonzero(table.checkpoint == d.checkpoint)[0])]))
           for g, d in table.divergence.items()}
    group_spreads(bottom, epochs, table.spread, div)
    return fig


def animate_trajectories(ctx: FigureContext, path: Path, fps: int = 4) -> Path:
    """GIF of the t-SNE trajectories drawn checkpoint by checkpoint (matplotlib's PillowWriter)."""
    from matplotlib.animation import PillowWriter

    from trajviz.plots.studies import trajectories

    emb = trajectory_embedding(ctx, "tsne")
    runs = [(g, idx) for g, _, idx in emb.trajectories()]
    n_frames = max(len(idx) for _, idx in runs)
    fig = _new_figure(ONE_COLUMN, 3.0)
    ax = fig.add_subplot()
    pad = 0.05 * (emb.coords.max(0) - emb.coords.min(0))
    lo, hi = emb.coords.min(0) - pad, emb.coords.max(0) + pad
    writer = PillowWriter(fps=fps)
    with writer.saving(fig, str(path), dpi=120):
        for t in range(1, n_frames + 1):
            ax.clear()
            trajectories(ax, emb.coords, runs, upto=t, title=f"t-SNE, checkpoint {t - 1}")
            # fixed limits for every frame: equal scale by the axes box, not by the data limits
            ax.set_aspect("equal", adjustable="box")
            ax.set_xlim(lo[0], hi[0])
            ax.set_ylim(lo[1], hi[1])
            writer.grab_frame()
    return path


def interactive_trajectories(ctx: FigureContext, path: Path) -> Path:
    """The t-SNE trajectories as an interactive page: hover, hide a group, slide over
    checkpoints (:func:`trajviz.plots.interactive.trajectories_figure`)."""
    from trajviz.plots.interactive import trajectories_figure, write_html

    fig = trajectories_figure(trajectory_embedding(ctx, "tsne"),
                              title="t-SNE of function-space trajectories")
    return write_html(fig, path, title="trajectories")


def interactive_landscape(ctx: FigureContext, path: Path) -> Path:
    """F9's 1-D scans, one interactive panel per depth."""
    from trajviz.plots.interactive import landscape_figures, write_html
    from trajviz.reproduce.landscape import load_scans

    r = ctx.results["landscape"]
    scans = load_scans(r)
    figures = [landscape_figures(scans[s])[0] for s in _depth_order(r)]
    for fig, s in zip(figures, _depth_order(r)):
        fig.update_layout(title=f"{_depth(r, s)} hidden layer(s): training NLL along each direction")
    return write_html(figures, path, title="landscape scans")


#: F10's parts; the embeddings are shown with the first
F10 = ("F10a", "F10b", "F10c", "F10d")
FIGURES: list[FigureSpec] = [
    FigureSpec("depth_boxplots", "depth", ("F1a", "F1b", "F2"),
               "Test error vs depth, with and without pre-training (box: quartiles; whiskers: "
               "1.5 IQR; dots: outlying seeds).", fig_depth_boxplots),
    FigureSpec("error_histograms", "depth", ("F2",),
               "Histograms of test error over seeds, shallowest vs deepest nets.",
               fig_error_histograms),
    FigureSpec("nll_curves", "depth", ("F3",),
               "log test NLL against log train NLL after each epoch, one line per seed "
               "(dot: last epoch).", fig_nll_curves),
    FigureSpec("function_variance", "depth", ("F5",),
               "Total variance of the final functions (mean squared distance of probe outputs "
               "to the group centroid) by depth.", fig_total_variance),
    FigureSpec("size_errors", "size", ("F4",),
               "Test error vs training-set size (mean, 95% error bars over seeds).",
               fig_size_errors),
    FigureSpec("width_errors", "width", ("F6a", "F6b", "F6c"),
               "Test error vs layer width (mean, 95% error bars over seeds).", fig_width_errors),
    FigureSpec("hist_table", "hist", ("F7",),
               "Histogram initialization vs uniform init and pre-training.", fig_hist_table),
    FigureSpec("partial_bars", "partial", ("F8",),
               "Partial pre-training (median, IQR bars, seeds as dots).", fig_partial_bars),
    FigureSpec("landscape_scans", "landscape", ("F9a", "F9b", "F9c"),
               "Training NLL along 7 unit stochastic-gradient directions around the final "
               "parameters of each run.", fig_landscape),
    FigureSpec("landscape_interactive", "landscape", ("F9a", "F9b", "F9c"),
               "The same scans, interactive: hover a curve for its run and direction; click a "
               "legend entry to hide it.", interactive_landscape, "html"),
    FigureSpec("trajectories_tsne", "trajectories", F10,
               "t-SNE of all checkpoints of all nets (probe outputs); colour: training time "
               "(dark = start), circle: start, cross: end.", fig_trajectories_tsne),
    FigureSpec("trajectories_isomap", "trajectories", F10,
               "ISOMAP of the same checkpoints.", fig_trajectories_isomap),
    FigureSpec("trajectories_umap", "trajectories", F10,
               "UMAP of the same checkpoints.", fig_trajectories_umap),
    FigureSpec("group_separation", "trajectories", ("F10b", "F10a", "F10c", "F10d"),
               "Top: leave-one-out k-NN group accuracy per epoch in function space (filled: "
               "permutation p <= 0.05; dashed: chance). Bottom: each group's spread (mean RMS "
               "distance between its nets' probe outputs), dotted at its divergence time.",
               fig_separation),
    FigureSpec("trajectories_animation", "trajectories", F10,
               "t-SNE trajectories over training (animated GIF).", animate_trajectories, "gif"),
    FigureSpec("trajectories_interactive", "trajectories", F10,
               "The t-SNE trajectories, interactive: hover a point for its run, epoch and errors; "
               "click a legend entry to hide a group; the slider moves through checkpoints.",
               interactive_trajectories, "html"),
]


def figure_spec(name: str) -> FigureSpec:
    for f in FIGURES:
        if f.name == name:
            return f
    raise ConfigError(f"unknown figure {name!r}; choose one of {', '.join(f.name for f in FIGURES)}")


def save_figure(fig: Any, base: Path) -> list[Path]:
    """Write ``base``.pdf and ``base``.png (300 dpi); returns the paths."""
    base.parent.mkdir(parents=True, exist_ok=True)
    out = []
    for ext in (".pdf", ".png"):
        path = base.with_suffix(ext)
        fig.savefig(path, dpi=300 if ext == ".png" else None)
        out.append(path)
    return out


def build_figure(name: str, ctx: FigureContext, out_dir: str | Path) -> list[Path]:
    """Draw one figure from ``ctx`` and write it into ``out_dir``; returns the files written."""
    import matplotlib as mpl

    spec = figure_spec(name)
    out_dir = Path(out_dir)
    with mpl.rc_context(STYLE):
        if spec.kind in ("gif", "html"):
            out_dir.mkdir(parents=True, exist_ok=True)
            return [spec.build(ctx, out_dir / f"{name}.{spec.kind}")]
        return save_figure(spec.build(ctx), out_dir / name)


def make_figures(ctx: FigureContext, findings: Sequence[str], out_dir: str | Path
                 ) -> dict[str, list[Path]]:
    """Every figure serving one of ``findings`` whose study is in ``ctx.results``. A figure that
    fails to draw is logged and left out (the report says which), never fatal."""
    out: dict[str, list[Path]] = {}
    for spec in FIGURES:
        if spec.study not in ctx.results or not set(spec.findings) & set(findings):
            continue
        try:
            out[spec.name] = build_figure(spec.name, ctx, out_dir)
        except (ConfigError, ValueError, KeyError, IndexError) as exc:
            log.warning("figure %s not drawn: %s", spec.name, exc)
    return out
