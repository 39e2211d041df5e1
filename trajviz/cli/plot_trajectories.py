"""``trajviz plot trajectories``: the function-space picture of an embedding file."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from trajviz.cli import HelpFormatter, add_common

DESCRIPTION = """\
Draw an embedding file (from `trajviz project`): every checkpoint one point, coloured by
training time with one colour map per group, each run's checkpoints joined by a line, its start
(circle) and end (square) marked, both axes at the same scale. Sized for one journal column
(3.4 in wide) by default. With --html (or an .html output): an interactive page (plotly, opens
offline) with hover (run, group, epoch, step, train and test error), a legend whose entries hide
a group, and a slider and play button over checkpoints.
examples:
  trajviz plot trajectories runs/default.tsne.h5 -o fig/tsne.pdf
  trajviz plot trajectories iso.h5 --groups sdae,none --cmaps Blues,Reds -o iso.png
  trajviz plot trajectories runs/default.tsne.h5 --html -o tsne.html
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("trajectories", help="trajectories of an embedding, coloured by training time",
                       description=DESCRIPTION, formatter_class=HelpFormatter)
    p.add_argument("embedding", type=Path, metavar="EMBEDDING", help="embedding HDF5 file")
    p.add_argument("-o", "--output", type=Path, required=True,
                   help="figure file: .pdf, .png or .svg; .html with --html")
    p.add_argument("--html", action="store_true",
                   help="write an interactive page (plotly) instead of a static figure")
    p.add_argument("--groups", default=None,
                   help="comma-separated groups to draw, in this order (default: all)")
    p.add_argument("--cmaps", default=None,
                   help="comma-separated matplotlib colour maps, one per group "
                        "(default: Blues,Reds,Greens,Purples,Oranges,Greys)")
    p.add_argument("--width", type=float, default=3.4, help="figure width, inches")
    p.add_argument("--height", type=float, default=3.0, help="figure height, inches")
    p.add_argument("--font-size", type=float, default=7.0, help="font size, points")
    p.add_argument("--title", default=None, help="figure title")
    p.add_argument("--no-lines", action="store_true", help="do not join each run's checkpoints")
    p.add_argument("--no-colorbar", action="store_true", help="no colour bars")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    add_common(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from trajviz.cli.plot import check_output, save_figure, wants_html
    from trajviz.errors import ConfigError
    from trajviz.plots.trajectories import plot_trajectories
    from trajviz.trajectories.embedding import Embedding

    html = wants_html(args)
    check_output(args.output, args.overwrite, html=html)
    emb = Embedding.load(args.embedding)
    groups = [g.strip() for g in args.groups.split(",") if g.strip()] if args.groups else None
    if groups is not None and (missing := set(groups) - set(emb.groups)):
        raise ConfigError(f"group(s) {', '.join(sorted(missing))} not in {args.embedding}; "
                          f"groups there: {', '.join(emb.groups)}")
    if html:
        from trajviz.plots.interactive import trajectories_figure, write_html

        fig = trajectories_figure(emb, groups=groups, title=args.title)
        write_html(fig, args.output, title=args.title or args.embedding.name)
        if not args.quiet:
            print(f"wrote {args.output}", file=sys.stderr)
        return 0
    cmaps = [c.strip() for c in args.cmaps.split(",")] if args.cmaps else None
    if cmaps is not None:
        import matplotlib as mpl

        unknown = [c for c in cmaps if c not in mpl.colormaps]
        if unknown:
            raise ConfigError(f"colour map(s) {', '.join(unknown)} unknown to matplotlib; "
                              "e.g. Blues, Reds, Greens, viridis")
    rc = {"font.size": args.font_size, "axes.labelsize": args.font_size,
          "legend.fontsize": args.font_size - 1, "xtick.labelsize": args.font_size - 1,
          "ytick.labelsize": args.font_size - 1, "axes.linewidth": 0.6,
          "pdf.fonttype": 42, "svg.fonttype": "none"}
    with plt.rc_context(rc):
        fig = plt.figure(figsize=(args.width, args.height))
        ax = fig.add_subplot(projection="3d" if emb.coords.shape[1] == 3 else None)
        plot_trajectories(ax, emb, groups=groups, cmaps=cmaps, lines=not args.no_lines,
                          colorbar=not args.no_colorbar)
        if args.title:
            ax.set_title(args.title)
        save_figure(fig, args.output)
        plt.close(fig)
    if not args.quiet:
        print(f"wrote {args.output}", file=sys.stderr)
    return 0
