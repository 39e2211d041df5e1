"""The ``trajviz`` command line: parses arguments and calls one library function per subcommand.

Each subcommand lives in its own module of this package with a ``register(subparsers)`` function
that adds its parser and sets ``func``; list new modules in ``COMMANDS``. Errors that trajviz
raises on purpose (:class:`~trajviz.errors.TrajvizError`) become one line on stderr and exit
code 1; usage errors exit 2 (argparse).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from typing import Sequence

from trajviz import __version__
from trajviz.errors import TrajvizError

#: subcommand modules, in the order ``--help`` lists them
COMMANDS = ["record", "info", "config", "plot", "data", "sweep", "reproduce", "project",
            "divergence", "landscape", "report"]


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Shows each option's default once and keeps the description's line breaks.

    Appends ``(default: VALUE)`` to an option's help unless the help already states its default
    in words (``(default: the built-in experiment)``), the option is a flag (off unless given),
    it has no default value (``None``: its help says what happens without it) or it collects
    repeated values into an empty list.
    """

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if ("default:" in text or "%(default)" in text or action.default is None
                or action.default is False or action.default is argparse.SUPPRESS
                or action.default == []):
            return action.help
        if action.option_strings or action.nargs in (argparse.OPTIONAL, argparse.ZERO_OR_MORE):
            return text + " (default: %(default)s)"
        return action.help


def add_common(parser: argparse.ArgumentParser) -> None:
    """Options every subcommand takes."""
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars or info messages")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug messages")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trajviz", formatter_class=HelpFormatter,
        description="Record, project and probe function-space trajectories of neural networks.")
    parser.add_argument("--version", action="version", version=f"trajviz {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"trajviz.cli.{name}").register(sub)
    return parser


def _setup_logging(args: argparse.Namespace) -> None:
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=logging.WARNING, format="trajviz: %(message)s", stream=sys.stderr)
    logging.getLogger("trajviz").setLevel(level)


#: library errors speak of arguments; on the command line the same advice names the flags
_ARGUMENTS_AS_FLAGS = (("reopen it with mode='resume'", "rerun with --resume"),
                       ("mode='resume'", "--resume"), ("mode='overwrite'", "--overwrite"))


def as_flags(message: str) -> str:
    """A library error's advice in command-line terms (``mode='resume'`` -> ``--resume``)."""
    for argument, flag in _ARGUMENTS_AS_FLAGS:
        message = message.replace(argument, flag)
    return message


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args)
    try:
        return int(args.func(args) or 0)
    except TrajvizError as exc:
        print(f"trajviz {args.command}: error: {as_flags(str(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"trajviz {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, as a shell reports it


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
