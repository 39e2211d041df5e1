"""``trajviz report``: documents written from a stored report, e.g. README's findings table."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from trajviz.cli import HelpFormatter, add_common

DESCRIPTION = """\
Write documents from the findings.json that `trajviz reproduce` stored, so that they state
exactly what the code computed.

  readme-table FINDINGS    the findings table of README.md (Markdown): printed, written to -o,
                           or put between the findings-table markers of --readme FILE
examples:
  trajviz report readme-table reproduce-quick/findings.json
  trajviz report readme-table docs/findings-quick.json --readme README.md
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="documents from a stored report (README's findings table)",
                       description=DESCRIPTION, formatter_class=HelpFormatter)
    p.add_argument("what", choices=["readme-table"], help="what to write")
    p.add_argument("findings", type=Path, help="findings.json written by trajviz reproduce")
    p.add_argument("-o", "--output", type=Path, default=None,
                   help="write the table to this file (default: print it)")
    p.add_argument("--readme", type=Path, default=None, metavar="FILE",
                   help="replace the table between FILE's findings-table markers instead")
    p.add_argument("--overwrite", action="store_true", help="replace an existing -o file")
    add_common(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from trajviz.errors import ConfigError, FormatError, InputFileNotFoundError, OutputExistsError
    from trajviz.reproduce.report import readme_table, update_readme

    if args.output is not None and args.readme is not None:
        raise ConfigError("give either -o/--output or --readme, not both")
    try:
        data = json.loads(args.findings.read_text())
    except FileNotFoundError:
        raise InputFileNotFoundError(f"{args.findings} does not exist") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise FormatError(f"{args.findings} is not a readable JSON file: {exc}") from None
    table = readme_table(data)
    if args.readme is not None:
        try:
            text = args.readme.read_text()
        except OSError as exc:
            raise InputFileNotFoundError(f"--readme {args.readme}: cannot be read: {exc}") from None
        try:
            new = update_readme(text, table, args.findings.as_posix())
        except ValueError as exc:
            raise FormatError(f"--readme {args.readme}: {exc}") from None
        args.readme.write_text(new)
    elif args.output is not None:
        if args.output.exists() and not args.overwrite:
            raise OutputExistsError(f"{args.output} exists; use --overwrite to replace it")
        args.output.write_text(table)
    else:
        sys.stdout.write(table)
    return 0
