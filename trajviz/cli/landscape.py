"""``trajviz landscape``: scan the training loss around stored parameters and measure flatness."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from trajviz.cli import HelpFormatter, add_common

DESCRIPTION = """\
Scan the training loss around each run's stored parameters along directions in parameter space
(Erhan et al. 2010, sec. 6.4), write the scans to a landscape file as they come (an interrupted
scan continues with --resume), and print per-group flatness (quadratic-fit curvature, loss rise
at a fixed radius, top Hessian eigenvalue, Hessian trace) with error bars over seeds and
directions, and each group difference with a bootstrap confidence interval.

Directions (docs/landscape.md): sgd (the studies': unit-norm minibatch gradients), gaussian,
filter (Li et al. 2018 filter-normalized), hessian (top Hessian eigenvectors), pca (of the run's
parameter trajectory; record with --set record.params='"all"'), toward:RUN (the line to run RUN's
parameters). Groups: the runs of one depth and one pre-training method. The sgd and hessian
directions and the Hessian measures always use the training split, whatever --split is scanned.

FILE must be written by `trajviz record` (the project's MLPs, whose data and architecture its
config rebuilds); other files (e.g. from trajviz.Recorder in your own loop) are refused: scan
such a model from Python with trajviz.landscape.scan_model (docs/landscape.md).
examples:
  trajviz landscape runs/default.h5 -o runs/default.landscape.h5           # 7 sgd directions
  trajviz landscape runs/default.h5 --directions filter --grid --points 25 -o grid.h5
  trajviz landscape runs/default.h5 --directions sgd filter --runs none-seed0 sdae-seed0 -o a.h5
  trajviz plot landscape runs/default.landscape.h5 -o landscape.pdf
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("landscape", help="probe the error landscape around stored parameters",
                       description=DESCRIPTION, formatter_class=HelpFormatter)
    p.add_argument("file", type=Path, metavar="FILE", help="trajviz file written by `trajviz record`")
    p.add_argument("-o", "--output", type=Path, default=None,
                   help="landscape HDF5 file to write (default: FILE with suffix .landscape.h5)")
    p.add_argument("--runs", nargs="+", default=None, metavar="RUN",
                   help="run ids to scan (default: every complete run)")
    p.add_argument("--directions", nargs="+", default=["sgd"], metavar="KIND",
                   help="direction kinds: sgd, gaussian, filter, hessian, pca, toward:RUN")
    p.add_argument("--n-directions", type=int, default=7, help="directions per kind (toward: 1)")
    p.add_argument("--span", type=float, default=2.5, help="alphas run from -SPAN to +SPAN")
    p.add_argument("--points", type=int, default=51, help="alphas per direction (odd)")
    p.add_argument("--grid", action="store_true",
                   help="also a POINTS x POINTS grid over the first two directions of each kind")
    p.add_argument("--split", choices=("train", "valid", "test"), default="train",
                   help="split the loss is measured on (directions: always train)")
    p.add_argument("--n-examples", type=int, default=0,
                   help="seeded random subset of the split (0 = the whole split)")
    p.add_argument("--seed", type=int, default=0, help="seed of directions, subset and Hessian probes")
    p.add_argument("--checkpoint", default="final",
                   help="'final' parameters, or a stored checkpoint index (needs record.params='all')")
    p.add_argument("--sgd-batch-size", type=int, default=10, help="minibatch of each sgd direction")
    p.add_argument("--no-hessian", action="store_true",
                   help="skip the top Hessian eigenvalue and trace")
    p.add_argument("--hessian-iters", type=int, default=20, help="Lanczos steps for the top eigenvalue")
    p.add_argument("--hutchinson-probes", type=int, default=10, help="probes of the trace estimate")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                   help="dtype of the scan evaluation")
    p.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:N or auto")
    p.add_argument("--fit-radius", type=float, default=0.5,
                   help="curvature: quadratic fit on |alpha| <= this")
    p.add_argument("--rise-radius", type=float, default=1.0, help="rise: loss increase at |alpha| = this")
    p.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples of each CI")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true",
                      help="continue an existing output scanned with the same settings")
    mode.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    add_common(p)
    p.set_defaults(func=run)


def _checkpoint(text: str) -> int:
    from trajviz.errors import ConfigError

    if text == "final":
        return -1
    try:
        value = int(text)
    except ValueError:
        value = -2
    if value < 0:
        raise ConfigError(f"--checkpoint {text!r}: use 'final' or a checkpoint index >= 0")
    return value


def check_table_options(settings, args: argparse.Namespace) -> None:
    """Reject table options that cannot work with these alphas before any scanning."""
    import numpy as np

    from trajviz.errors import ConfigError
    from trajviz.landscape import loss_rise, quadratic_curvature

    alphas = settings.alphas()
    quadratic_curvature(alphas, np.zeros_like(alphas), args.fit_radius)
    loss_rise(alphas, np.zeros_like(alphas), args.rise_radius)
    if args.bootstrap < 10:
        raise ConfigError(f"--bootstrap {args.bootstrap}: use at least 10 (1000+ for a CI to report)")


def run(args: argparse.Namespace) -> int:
    from trajviz.landscape import ScanSettings, flatness_table, scan_file

    settings = ScanSettings(directions=tuple(args.directions), n_directions=args.n_directions,
                            span=args.span, points=args.points, grid=args.grid, split=args.split,
                            n_examples=args.n_examples, seed=args.seed,
                            checkpoint=_checkpoint(args.checkpoint),
                            sgd_batch_size=args.sgd_batch_size, hessian=not args.no_hessian,
                            hessian_iters=args.hessian_iters,
                            hutchinson_probes=args.hutchinson_probes, dtype=args.dtype).validate()
    check_table_options(settings, args)
    output = args.output or args.file.with_suffix(".landscape.h5")
    mode = "resume" if args.resume else "overwrite" if args.overwrite else "create"
    result = scan_file(args.file, output, settings=settings, runs=args.runs, mode=mode,
                       device=args.device, progress=not args.quiet)
    table = flatness_table(result, fit_radius=args.fit_radius, rise_radius=args.rise_radius,
                           n_boot=args.bootstrap, seed=args.seed)
    print(table.format())
    if not args.quiet:
        print(f"wrote {output}", file=sys.stderr)
    return 0
