"""Interactive figures (plotly): trajectories of an embedding and error landscapes, for a browser.

- :func:`trajectories_figure`: one legend entry per group (click to hide it), each run's
  checkpoints joined by a line; hovering a point shows its run, group, epoch, step and the run's
  train and test error there; a slider (and a play button) over checkpoint indices moves a marker
  per run along its trajectory. Axes at equal scale, as in every embedding figure.
- :func:`landscape_figures`: 1-D scans as curves (one per run and direction, a legend entry per
  group and kind); each 2-D grid scan as a surface beside its contours.
- :func:`write_html`: a self-contained page (plotly.js inlined: it opens offline).
- :func:`html_fragment`: a ``<div>`` for a page that loads plotly.js once (the report), and
  :func:`page_body`, the figures of a page already written.

Each function builds a ``plotly.graph_objects.Figure`` and returns it; writing files is the
caller's job, as for the static figures.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from trajviz.errors import TrajvizError

#: one colour per group, in the order groups first appear (matplotlib's tab10)
GROUP_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#7f7f7f",
                 "#8c564b", "#e377c2", "#bcbd22", "#17becf")
#: metrics shown on hover, when the embedding holds them
HOVER_METRICS = ("train_error", "test_error", "train_nll", "test_nll")


def _go() -> Any:
    try:
        import plotly.graph_objects as go
    except ImportError:  # a core dependency, but an environment may lack it
        raise TrajvizError("interactive figures need plotly: pip install plotly") from None
    return go


def _fmt(v: float) -> str:
    return "-" if not np.isfinite(v) else f"{v:.4g}"


def trajectories_figure(embedding: Any, *, groups: Sequence[str] | None = None,
                        title: str | None = None, slider: bool = True) -> Any:
    """The trajectories of ``embedding`` (:class:`trajviz.trajectories.Embedding`) as a plotly
    figure; 3-D embeddings are drawn in 3-D. ``groups``: which and in which order (default all).
    ``slider``: add a checkpoint slider with a play button (2-D only)."""
    go = _go()
    coords = np.asarray(embedding.coords, dtype=np.float64)
    three_d = coords.shape[1] >= 3
    names = list(groups) if groups is not None else list(embedding.groups)
    metrics = {k: np.asarray(v, dtype=np.float64) for k, v in embedding.metrics.items()
               if k in HOVER_METRICS}
    epoch = np.asarray(embedding.epoch, dtype=np.float64)
    method = str(embedding.attrs.get("method", "")) or "dim"
    hover_lines = ["run %{customdata[0]}", "group %{customdata[1]}",
                   "epoch %{customdata[2]}", "step %{customdata[3]}",
                   "checkpoint %{customdata[4]}"]
    hover_lines += [f"{k.replace('_', ' ')} %{{customdata[{5 + i}]}}" for i, k in enumerate(metrics)]
    template = "<br>".join(hover_lines) + "<extra></extra>"

    def custom(idx: np.ndarray) -> list[list[str]]:
        rows = []
        for i in idx:
            rows.append([str(embedding.run[i]), str(embedding.group[i]), _fmt(epoch[i]),
                         str(int(embedding.step[i])), str(int(embedding.checkpoint[i])),
                         *(_fmt(metrics[k][i]) for k in metrics)])
        return rows

    fig = go.Figure()
    runs_of: dict[str, list[np.ndarray]] = {g: [] for g in names}
    for grp, _, idx in embedding.trajectories():
        if grp in runs_of:
            runs_of[grp].append(idx)
    for gi, g in enumerate(names):
        colour = GROUP_COLOURS[gi % len(GROUP_COLOURS)]
        # one trace per group: runs joined by lines, separated by gaps (None)
        order: list[int | None] = []
        for idx in runs_of[g]:
            order.extend(idx.tolist())
            order.append(None)
        pts = np.array([i for i in order if i is not None], dtype=np.int64)
        xyz = [[None if i is None else float(coords[i, d]) for i in order]
               for d in range(3 if three_d else 2)]
        cd = custom(pts)
        it = iter(cd)
        customdata = [None if i is None else next(it) for i in order]
        common = dict(name=f"{g} ({len(runs_of[g])} runs)", legendgroup=g, mode="lines+markers",
                      customdata=customdata, hovertemplate=template,
                      line=dict(color=colour, width=1), marker=dict(color=colour, size=4),
                      opacity=0.8)
        if three_d:
            fig.add_trace(go.Scatter3d(x=xyz[0], y=xyz[1], z=xyz[2], **common))
        else:
            fig.add_trace(go.Scatter(x=xyz[0], y=xyz[1], **common))
        starts = np.array([idx[0] for idx in runs_of[g]], dtype=np.int64)
        ends = np.array([idx[-1] for idx in runs_of[g]], dtype=np.int64)
        for which, sel, symbol in (("start", starts, "circle"), ("end", ends, "square")):
            marks = dict(name=f"{g} {which}", legendgroup=g, showlegend=False, mode="markers",
                         customdata=custom(sel), hovertemplate=template,
                         marker=dict(color=colour, size=9, symbol=symbol,
                                     line=dict(color="black", width=1)))
            if three_d:
                fig.add_trace(go.Scatter3d(x=coords[sel, 0], y=coords[sel, 1], z=coords[sel, 2],
                                           **marks))
            else:
                fig.add_trace(go.Scatter(x=coords[sel, 0], y=coords[sel, 1], **marks))
    axis_names = [f"{method} {d + 1}" for d in range(3)]
    layout: dict[str, Any] = dict(template="plotly_white", hovermode="closest",
                                  legend=dict(itemclick="toggle", itemdoubleclick="toggleothers"),
                                  margin=dict(l=40, r=20, t=40 if title else 20, b=40))
    if title:
        layout["title"] = title
    if three_d:
        layout["scene"] = dict(xaxis_title=axis_names[0], yaxis_title=axis_names[1],
                               zaxis_title=axis_names[2], aspectmode="data")
    else:
        layout["xaxis"] = dict(title=axis_names[0], constrain="domain")
        # equal scale: one unit on y is as long as one unit on x
        layout["yaxis"] = dict(title=axis_names[1], scaleanchor="x", scaleratio=1)
    fig.update_layout(**layout)
    if slider and not three_d:
        _add_checkpoint_slider(fig, embedding, names, runs_of, coords, custom, template)
    return fig


def _add_checkpoint_slider(fig: Any, embedding: Any, names: Sequence[str],
                           runs_of: dict[str, list[np.ndarray]], coords: np.ndarray,
                           custom: Any, template: str) -> None:
    """A marker per run at checkpoint index k, moved by a slider and a play button: one
    "current" trace per group, updated by frames (frames carry only those traces)."""
    go = _go()
    n_ck = max((idx.size for runs in runs_of.values() for idx in runs), default=0)
    if n_ck < 2:
        return
    epoch = np.asarray(embedding.epoch, dtype=np.float64)

    def at(k: int, g: str) -> np.ndarray:
        return np.array([idx[min(k, idx.size - 1)] for idx in runs_of[g]], dtype=np.int64)

    first_current = len(fig.data)
    for gi, g in enumerate(names):
        colour = GROUP_COLOURS[gi % len(GROUP_COLOURS)]
        sel = at(0, g)
        fig.add_trace(go.Scatter(x=coords[sel, 0], y=coords[sel, 1], mode="markers",
                                 name=f"{g} at checkpoint", legendgroup=g, showlegend=False,
                                 customdata=custom(sel), hovertemplate=template,
                                 marker=dict(color=colour, size=13, symbol="diamond",
                                             line=dict(color="white", width=1.5))))
    frames, steps = [], []
    for k in range(n_ck):
        data = []
        for g in names:
            sel = at(k, g)
            data.append(go.Scatter(x=coords[sel, 0], y=coords[sel, 1], customdata=custom(sel)))
        ep = epoch[at(k, names[0])] if names else np.array([np.nan])
        label = f"{k}" if not np.all(np.isfinite(ep)) else f"{k} (epoch {np.nanmedian(ep):g})"
        frames.append(go.Frame(data=data, name=str(k),
                               traces=list(range(first_current, first_current + len(names)))))
        steps.append(dict(method="animate", label=label,
                          args=[[str(k)], dict(mode="immediate", frame=dict(duration=0, redraw=False),
                                               transition=dict(duration=0))]))
    fig.frames = frames
    fig.update_layout(
        sliders=[dict(active=0, steps=steps, currentvalue=dict(prefix="checkpoint "),
                      x=0.12, len=0.88, y=0, yanchor="top", pad=dict(t=50))],
        updatemenus=[dict(type="buttons", showactive=False, direction="left", x=0.1, y=0,
                          xanchor="right", yanchor="top", pad=dict(t=60, r=10),
                          buttons=[dict(label="play", method="animate",
                                        args=[None, dict(frame=dict(duration=150, redraw=False),
                                                         fromcurrent=True)]),
                                   dict(label="pause", method="animate",
                                        args=[[None], dict(mode="immediate",
                                                           frame=dict(duration=0, redraw=False))])])])


def landscape_figures(result: Any, *, column: str = "nll") -> list[Any]:
    """A landscape result (:func:`trajviz.landscape.load_result`) as plotly figures.

    First, when the file has 1-D scans: every direction of every run a curve against alpha, one
    legend entry per (group, direction kind), hover showing run, direction and value. Then one
    figure per 2-D grid scan (run x kind): a surface beside its contours. ``column``: "nll" or
    "error". Rows of a scan in progress (NaN) are left out."""
    go = _go()
    from plotly.subplots import make_subplots

    if column not in ("nll", "error"):
        raise TrajvizError(f"column {column!r}: choose 'nll' or 'error'")
    alphas = np.asarray(result.alphas, dtype=np.float64)
    ylabel = "training NLL" if column == "nll" else "training error"
    figures = []
    curves = go.Figure()
    labels = list(dict.fromkeys(r.label for r in result.runs))
    seen: set[str] = set()
    for r in result.runs:
        colour = GROUP_COLOURS[labels.index(r.label) % len(GROUP_COLOURS)]
        for kind, table in r.scans1d.items():
            key = f"{r.label}, {kind}"
            for j, row in enumerate(np.atleast_2d(table[column])):
                if not np.isfinite(row).any():
                    continue
                curves.add_trace(go.Scatter(
                    x=alphas, y=row, mode="lines", legendgroup=key, name=key,
                    showlegend=key not in seen, line=dict(color=colour, width=1), opacity=0.6,
                    hovertemplate=(f"run {r.run_id}<br>{kind} direction {j}<br>"
                                   f"alpha %{{x:.3g}}<br>{ylabel} %{{y:.4g}}<extra></extra>")))
                seen.add(key)
    if curves.data:
        curves.update_layout(template="plotly_white", hovermode="closest", xaxis_title="alpha",
                             yaxis_title=ylabel, margin=dict(l=50, r=20, t=50, b=50),
                             title=f"{ylabel} along 1-D directions ({result.path.name})")
        figures.append(curves)
    for r in result.runs:
        for kind, table in r.scans2d.items():
            z = np.asarray(table[column], dtype=np.float64)
            if not np.isfinite(z).any():
                continue
            hover = (f"run {r.run_id}<br>{kind} grid<br>alpha %{{y:.3g}}<br>beta %{{x:.3g}}<br>"
                     f"{ylabel} %{{z:.4g}}<extra></extra>")
            fig = make_subplots(rows=1, cols=2, specs=[[{"type": "surface"}, {"type": "xy"}]],
                                subplot_titles=("surface", "contours"))
            fig.add_trace(go.Surface(x=alphas, y=alphas, z=z, showscale=False,
                                     hovertemplate=hover, name=f"{r.run_id} {kind}"), 1, 1)
            fig.add_trace(go.Contour(x=alphas, y=alphas, z=z, hovertemplate=hover,
                                     colorbar=dict(title=ylabel), name=f"{r.run_id} {kind}"), 1, 2)
            fig.update_layout(template="plotly_white", margin=dict(l=40, r=20, t=60, b=40),
                              title=f"run {r.run_id} ({r.label}): {kind} grid, {ylabel}",
                              scene=dict(xaxis_title="beta", yaxis_title="alpha",
                                         zaxis_title=ylabel))
            fig.update_xaxes(title_text="beta (direction 2)", row=1, col=2)
            fig.update_yaxes(title_text="alpha (direction 1)", scaleanchor="x2", scaleratio=1,
                             row=1, col=2)
            figures.append(fig)
    if not figures:
        raise TrajvizError(f"{result.path}: no scanned rows to draw yet")
    return figures


def write_html(figures: Any, path: str | Path, *, title: str = "trajviz") -> Path:
    """Write one figure or a list of figures as a self-contained page (plotly.js inlined once,
    so it opens offline)."""
    import html

    figs = figures if isinstance(figures, (list, tuple)) else [figures]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = "\n".join(html_fragment(f) for f in figs)
    path.write_text(f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
                    f"<title>{html.escape(title)}</title>"
                    f"<script type=\"text/javascript\">{plotly_js()}</script></head>"
                    f"<body>\n{body}\n</body></html>\n", encoding="utf-8")
    return path


def page_body(path: str | Path) -> str:
    """The figures of a page written by :func:`write_html` (its ``<body>``), to embed in another
    page that inlines :func:`plotly_js` once."""
    text = Path(path).read_text(encoding="utf-8")
    start, end = text.find("<body>"), text.rfind("</body>")
    if start < 0 or end < start:
        raise TrajvizError(f"{path}: not a page written by trajviz (no <body>)")
    return text[start + len("<body>"):end]


def plotly_js() -> str:
    """plotly.js itself, to inline once in a page holding several :func:`html_fragment`\\ s."""
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


def html_fragment(fig: Any, *, div_id: str | None = None, height: str = "520px") -> str:
    """The figure as a ``<div>`` plus its script, for a page that inlines :func:`plotly_js`."""
    return fig.to_html(include_plotlyjs=False, full_html=False, div_id=div_id,
                       default_height=height, config={"displaylogo": False, "responsive": True})
