"""``trajviz plot landscape``: 1-D scan panels by depth and pre-training, or 2-D contours."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from trajviz.cli import HelpFormatter, add_common

DESCRIPTION = """\
Draw landscape files (from `trajviz landscape`). View 'lines' (default): one panel per depth
(columns) and group (rows), each showing the training loss along every direction of every run
around its parameters (thin) and their mean (thick), on one shared y axis, like the studies'
figure (Erhan et al. 2010, fig. 11). View 'contour': the 2-D grid (scanned with --grid) of one
run per group, as log-spaced contours. Give one file per depth to get depth columns. With
--html (or an .html output): an interactive page (plotly, opens offline): every 1-D curve with
hover (run, direction, alpha, value) and a legend entry per group and kind, and each 2-D grid as a
surface beside its contours.
examples:
  trajviz plot landscape runs/default.landscape.h5 -o fig/landscape.pdf
  trajviz plot landscape d1.h5 d2.h5 d3.h5 --kind sgd -o fig/landscape_depths.pdf
  trajviz plot landscape grid.h5 --view contour --kind filter -o fig/grid.png
  trajviz plot landscape runs/default.landscape.h5 --html -o landscape.html
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("landscape", help="1-D scans by depth and pre-training, or 2-D contours",
                       description=DESCRIPTION, formatter_class=HelpFormatter)
    p.add_argument("files", type=Path, nargs="+", metavar="LANDSCAPE", help="landscape HDF5 file(s)")
    p.add_argument("-o", "--output", type=Path, required=True,
                   help="figure file: .pdf, .png or .svg; .html with --html")
    p.add_argument("--html", action="store_true",
                   help="write an interactive page (plotly) instead of a static figure")
    p.add_argument("--view", choices=("lines", "contour"), default="lines", help="what to draw")
    p.add_argument("--kind", default=None,
                   help="direction kind to draw (default: the first kind scanned)")
    p.add_argument("--column", choices=("nll", "error"), default="nll",
                   help="training NLL or classification error")
    p.add_argument("--run", dest="runs", action="append", default=None, metavar="RUN",
                   help="contour view: run to draw (repeatable; default: the first run of each group)")
    p.add_argument("--panel-size", type=float, default=2.0, help="panel width and height, inches")
    p.add_argument("--font-size", type=float, default=7.0, help="font size, points")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    add_common(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from trajviz.cli.plot import check_output, save_figure, wants_html
    from trajviz.errors import ConfigError
    from trajviz.landscape import load_result
    from trajviz.plots.landscape import plot_scan_grid, plot_scans_1d

    html = wants_html(args)
    check_output(args.output, args.overwrite, html=html)
    results = [load_result(f) for f in args.files]
    if html:
        from trajviz.plots.interactive import landscape_figures, write_html

        figures = [fig for res in results for fig in landscape_figures(res, column=args.column)]
        write_html(figures, args.output, title=", ".join(f.name for f in args.files))
        if not args.quiet:
            print(f"wrote {args.output}", file=sys.stderr)
        return 0
    kinds = [k for r in results for k in r.kinds]
    kind = args.kind or (kinds[0] if kinds else None)
    if kind is None or kind not in kinds:
        raise ConfigError(f"direction kind {kind!r} was not scanned in {', '.join(map(str, args.files))}; "
                          f"scanned: {', '.join(dict.fromkeys(kinds)) or 'none'}")
    rc = {"font.size": args.font_size, "axes.labelsize": args.font_size,
          "axes.titlesize": args.font_size, "xtick.labelsize": args.font_size - 1,
          "ytick.labelsize": args.font_size - 1, "axes.linewidth": 0.6, "pdf.fonttype": 42,
          "svg.fonttype": "none"}
    runs = [(res, r) for res in results for r in res.runs if r.complete]
    depths = sorted({r.depth for _, r in runs})
    groups = list(dict.fromkeys(r.group for _, r in runs))
    size = args.panel_size
    with plt.rc_context(rc):
        if args.view == "lines":
            fig, axes = plt.subplots(len(groups), len(depths), figsize=(size * len(depths), size * len(groups)),
                                     sharex=True, sharey=True, squeeze=False)
            for i, g in enumerate(groups):
                for j, d in enumerate(depths):
                    sel = [r for _, r in runs if r.group == g and r.depth == d]
                    alphas = next((res.alphas for res, r in runs if r.group == g and r.depth == d), None)
                    ax = axes[i, j]
                    if alphas is not None:
                        plot_scans_1d(ax, alphas, sel, kind, column=args.column, color=f"C{i}")
                    depth = f"{d} hidden layer{'s' if d > 1 else ''}, " if d else ""  # 0: scan_model
                    ax.set_title(f"{depth}{g} ({len(sel)} run{'s' if len(sel) != 1 else ''})")
                    if not d:  # scan_model: its loss_fn on the data it was given
                        ax.set_ylabel("loss" if args.column == "nll" else "error")
                    if i < len(groups) - 1:
                        ax.set_xlabel("")
                    if j > 0:
                        ax.set_ylabel("")
        else:
            chosen = []
            for res, r in runs:
                if kind not in r.scans2d:
                    continue
                if args.runs is not None:
                    if r.run_id in args.runs:
                        chosen.append((res, r))
                elif all((r.depth, r.group) != (c.depth, c.group) for _, c in chosen):
                    chosen.append((res, r))
            if not chosen:
                raise ConfigError(f"no 2-D grid of {kind!r}" + (f" for runs {', '.join(args.runs)}"
                                                                 if args.runs else "")
                                  + "; scan with `trajviz landscape --grid`")
            fig, axes = plt.subplots(1, len(chosen), figsize=(size * 1.25 * len(chosen), size), squeeze=False)
            for ax, (res, r) in zip(axes[0], chosen):
                plot_scan_grid(ax, res.alphas, r.scans2d[kind][args.column], log=args.column == "nll")
                ax.set_title(f"{r.run_id} ({f'depth {r.depth}, ' if r.depth else ''}{kind})")
        fig.tight_layout()
        save_figure(fig, args.output)
        plt.close(fig)
    if not args.quiet:
        print(f"wrote {args.output}", file=sys.stderr)
    return 0
