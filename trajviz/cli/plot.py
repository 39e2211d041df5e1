"""``trajviz plot KIND``: figures from stored results. Each kind lives in its own module
``trajviz.cli.plot_<kind>`` with a ``register(sub)`` function; list it in ``KINDS``."""

from __future__ import annotations

import argparse
import importlib

from trajviz.cli import HelpFormatter

#: plot kinds, each a module trajviz.cli.plot_<kind>
KINDS: list[str] = ["trajectories", "landscape"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plot", help="draw figures from stored results",
                       description="Draw a figure from a stored result file; the format follows "
                                   "the output's suffix (.pdf, .png, .svg).",
                       formatter_class=HelpFormatter)
    kinds = p.add_subparsers(dest="kind", metavar="KIND", required=True)
    for kind in KINDS:
        importlib.import_module(f"trajviz.cli.plot_{kind}").register(kinds)


def save_figure(fig, output) -> None:
    """Save a matplotlib figure, the format taken from the output's suffix."""
    from pathlib import Path

    from trajviz.errors import ConfigError

    output = Path(output)
    allowed = (".pdf", ".png", ".svg")
    if output.suffix.lower() not in allowed:
        raise ConfigError(f"output {str(output)!r}: suffix must be one of {', '.join(allowed)}")
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, bbox_inches="tight", dpi=300 if output.suffix.lower() == ".png" else None)
