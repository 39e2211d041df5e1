"""``trajviz plot KIND``: figures from stored results. Each kind lives in its own module
``trajviz.cli.plot_<kind>`` with a ``register(sub)`` function; list it in ``KINDS``."""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

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


SUFFIXES = (".pdf", ".png", ".svg")
#: interactive pages (plotly), written with --html
HTML_SUFFIXES = (".html", ".htm")


def _check_suffix(output: Path, html: bool = False) -> None:
    from trajviz.errors import ConfigError

    allowed = HTML_SUFFIXES if html else SUFFIXES
    if output.suffix.lower() not in allowed:
        hint = "" if html else " (or .html with --html)"
        raise ConfigError(f"output {str(output)!r}: suffix must be one of {', '.join(allowed)}{hint}")


def wants_html(args: argparse.Namespace) -> bool:
    """--html given, or an output named .html."""
    return bool(args.html) or Path(args.output).suffix.lower() in HTML_SUFFIXES


def check_output(output: str | Path, overwrite: bool, *, html: bool = False) -> None:
    """Refuse, before any work, an output that exists (without --overwrite) or whose suffix
    names no figure format (``html``: an interactive page, .html)."""
    from trajviz.errors import OutputExistsError

    output = Path(output)
    if output.exists() and not overwrite:
        raise OutputExistsError(f"{output} exists; pass --overwrite to replace it")
    _check_suffix(output, html)


def save_figure(fig, output: str | Path) -> None:
    """Save a matplotlib figure, the format taken from the output's suffix."""
    output = Path(output)
    _check_suffix(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, bbox_inches="tight", dpi=300 if output.suffix.lower() == ".png" else None)
