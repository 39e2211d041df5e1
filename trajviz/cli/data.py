"""``trajviz data``: manage dataset files (``trajviz data fetch mnist``)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from trajviz.cli import HelpFormatter, add_common

#: datasets that live in files and can be fetched
FETCHABLE = ("mnist",)

FETCH_DESCRIPTION = """\
Download a dataset's files into DIR and verify their checksums. Files already present with the
right checksum are kept; a download lands under its final name only once its checksum matches.

mnist: the four gzipped IDX files of LeCun's MNIST (train/test images and labels). Point
experiments at DIR with [dataset] path = "DIR" or the TRAJVIZ_DATA environment variable.
Without a network: an error; copy the files into DIR by hand instead.
examples:
  trajviz data fetch mnist                 # into $TRAJVIZ_DATA, else ./data
  trajviz data fetch mnist -o ~/data/mnist
"""


def default_dir() -> Path:
    """$TRAJVIZ_DATA if set, else ./data."""
    return Path(os.environ.get("TRAJVIZ_DATA") or "data")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="manage dataset files: fetch MNIST",
                       description="Manage dataset files.", formatter_class=HelpFormatter)
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    f = actions.add_parser("fetch", help="download a dataset's files and verify checksums",
                           description=FETCH_DESCRIPTION, formatter_class=HelpFormatter)
    f.add_argument("dataset", choices=FETCHABLE, help="dataset to download")
    from trajviz.data.mnist import BASE_URL

    f.add_argument("-o", "--output", type=Path, default=default_dir(), metavar="DIR",
                   help="directory to fill (default: $TRAJVIZ_DATA, else ./data)")
    f.add_argument("--base-url", default=BASE_URL,
                   help="mirror holding the files under their canonical names")
    f.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the server")
    add_common(f)
    f.set_defaults(func=run_fetch)


def run_fetch(args: argparse.Namespace) -> int:
    from trajviz.data import mnist

    dest = args.output
    paths = mnist.fetch(dest, progress=not args.quiet, base_url=args.base_url,
                        timeout=args.timeout)
    if not args.quiet:
        for path in paths:
            print(path)
        print(f"{args.dataset}: {len(paths)} files verified in {dest}", file=sys.stderr)
    return 0
