"""Command line of the analysis/ scripts: one figure from stored ``trajviz reproduce`` results.

Lives with the CLI (which may print); the drawing itself is :mod:`trajviz.reproduce.figures`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence


def figure_main(name: str, argv: Sequence[str] | None = None) -> int:
    """Command line of one analysis/ script: draw figure ``name`` from stored results.

    ``python analysis/<name>.py [DIR] [--profile PROFILE] [--studies DIR] [-o OUT]``
    reads ``DIR/results`` (what ``trajviz reproduce -o DIR`` recorded) and writes OUT/<name>.pdf
    and .png (.gif for the animation, .html for the interactive pages). Trains nothing; a
    missing result is a one-line error.
    """
    import argparse
    import sys

    from trajviz.cli import HelpFormatter
    from trajviz.errors import TrajvizError
    from trajviz.reproduce.figures import FigureContext, build_figure, figure_spec
    from trajviz.reproduce.results import read_results
    from trajviz.reproduce.run import needed_studies
    from trajviz.reproduce.studies import PROFILES, load_studies

    spec = figure_spec(name)
    p = argparse.ArgumentParser(prog=f"analysis/{name}.py", description=spec.caption,
                                formatter_class=HelpFormatter)
    p.add_argument("results", nargs="?", type=Path, default=Path("reproduce-quick"),
                   help="output directory of `trajviz reproduce` (holding results/)")
    p.add_argument("--profile", choices=PROFILES, default="quick", help="profile the results were recorded with")
    p.add_argument("--studies", type=Path, default=None, metavar="DIR",
                   help="directory of study files (default: the ones packaged with trajviz)")
    p.add_argument("-o", "--output", type=Path, default=None, help="figure directory (default: RESULTS/figures)")
    p.add_argument("--seed", type=int, default=0, help="seed of the embeddings")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    args = p.parse_args(argv)
    try:
        studies = load_studies(args.studies, args.profile)
        plan = needed_studies(studies, [spec.study])
        results = read_results({s.name: s for s in plan}, args.results / "results")
        paths = build_figure(name, FigureContext(results, seed=args.seed),
                             args.output or args.results / "figures")
    except TrajvizError as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        return 1
    if not args.quiet:
        for path in paths:
            print(path)
    return 0
