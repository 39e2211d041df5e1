"""``trajviz config``: show every config key with its default, or validate a config file."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from trajviz.cli import HelpFormatter, add_common


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config", help="show config defaults, or validate and resolve a config",
                       description="With --show-defaults: every config key, its default and what it "
                                   "allows, as TOML. With CONFIG: validate it (and --set overrides) "
                                   "and print the resolved config as JSON.",
                       formatter_class=HelpFormatter)
    p.add_argument("config", nargs="?", metavar="CONFIG", help="experiment TOML file to validate")
    p.add_argument("--show-defaults", action="store_true", help="print all keys with defaults")
    p.add_argument("--markdown", action="store_true",
                   help="with --show-defaults: as the Markdown key table of docs/config.md")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (repeatable)")
    p.add_argument("-o", "--output", type=Path, default=None, help="write to this file, not stdout")
    add_common(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from trajviz.config import defaults_table, load_config, show_defaults

    if args.show_defaults:
        text = defaults_table() if args.markdown else show_defaults()
    else:
        import json

        text = json.dumps(load_config(args.config, args.overrides).to_dict(), indent=2) + "\n"
    if args.output:
        args.output.write_text(text)
    else:
        sys.stdout.write(text)
    return 0
