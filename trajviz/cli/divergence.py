"""``trajviz divergence``: divergence measures of trajectories in function space."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from trajviz.cli import HelpFormatter, add_common

DESCRIPTION = """\
Measure, in the original function space (not on a picture), per group and checkpoint: the
spread (mean pairwise distance between the group's nets), the distance between group
centroids, and how well groups separate (leave-one-out k-NN accuracy); and per group the
divergence time (the checkpoint after which the group's nets move apart for good), with a
bootstrap interval over seeds. With two groups A,B (--groups A,B, or the only two in the
file) also the separation tests: a permutation test of the k-NN accuracy at every checkpoint
(relabelling whole runs; within seed pairs when runs are paired), "start apart" (separable at
the first checkpoint) and "stay apart" (at every later one) with verdicts, and B's spread over
A's at the last checkpoint with a bootstrap interval; the JSON output's "separation" object.
Distance: RMS over probe examples of the Euclidean distance between the representations of
two nets' outputs. Definitions: docs/project.md.
Prints the table and saves it (.json: everything; .csv: the per-checkpoint rows).
examples:
  trajviz divergence runs/default.h5                       # -> runs/default.divergence.json
  trajviz divergence runs/default.h5 --representation sqrt --n-boot 2000 -o div.csv
"""


def register(sub: argparse._SubParsersAction) -> None:
    from trajviz.trajectories.embedding import REPRESENTATIONS

    p = sub.add_parser("divergence", help="spread, centroid distance, k-NN separability and "
                                          "divergence time of trajectories",
                       description=DESCRIPTION, formatter_class=HelpFormatter)
    p.add_argument("files", nargs="+", type=Path, metavar="FILE", help="trajviz HDF5 file(s)")
    p.add_argument("-o", "--output", type=Path, default=None,
                   help="table file, .json or .csv (default: FILE with suffix .divergence.json)")
    p.add_argument("--representation", choices=REPRESENTATIONS, default="probs",
                   help="probs: probabilities; sqrt: square roots (Hellinger); log: log-probabilities")
    p.add_argument("--groups", default=None,
                   help="comma-separated groups to keep, e.g. none,sdae (default: all groups)")
    p.add_argument("--where", action="append", default=[], metavar="KEY=VALUE[,VALUE]",
                   help="keep runs whose attribute KEY is one of the values (repeatable)")
    p.add_argument("--checkpoints", default=None, metavar="START:STOP[:STRIDE]",
                   help="checkpoint indices per run (default: all)")
    p.add_argument("-k", type=int, default=None,
                   help="neighbours of the leave-one-out k-NN accuracy; at most the other runs of "
                        "the smallest group (a larger k is lowered, with a warning) (default: the "
                        "largest odd k <= 5 the group sizes allow)")
    p.add_argument("--tau", type=float, default=0.1,
                   help="divergence threshold, as a fraction of the spread's rise after its minimum")
    p.add_argument("--min-rise", type=float, default=0.1,
                   help="a rise below this fraction of the minimum spread counts as no divergence")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples over seeds")
    p.add_argument("--permutations", type=int, default=9999,
                   help="relabellings of the permutation test (all of them, an exact test, when "
                        "there are no more)")
    p.add_argument("--pairing", choices=("auto", "seed", "independent"), default="auto",
                   help="seed: runs of one seed share initial weights across the two groups, so "
                        "labels are permuted within seed pairs; independent: across all runs; "
                        "auto: as the files' configs say (pretrain.shared_init), else seed when "
                        "the seeds pair every run")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap and permutations")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    add_common(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from trajviz.errors import ConfigError, OutputExistsError
    from trajviz.trajectories.divergence import divergence_table

    output = args.output or args.files[0].with_suffix(".divergence.json")
    if output.suffix.lower() not in (".json", ".csv"):
        raise ConfigError(f"output {str(output)!r}: suffix must be .json or .csv")
    if output.exists() and not args.overwrite:
        raise OutputExistsError(f"{output} exists; pass --overwrite to replace it")
    groups = [g.strip() for g in args.groups.split(",") if g.strip()] if args.groups else None
    table = divergence_table(args.files, representation=args.representation, groups=groups,
                             where=args.where, checkpoints=args.checkpoints, k=args.k,
                             tau=args.tau, min_rise=args.min_rise, n_boot=args.n_boot,
                             seed=args.seed, n_permutations=args.permutations,
                             paired={"auto": None, "seed": True, "independent": False}[args.pairing],
                             progress=not args.quiet)
    print(table.format())
    table.save(output, overwrite=args.overwrite)
    if not args.quiet:
        print(f"wrote {output}", file=sys.stderr)
    return 0
