"""``trajviz record``: train an experiment's nets and record their trajectories."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from trajviz.cli import HelpFormatter, add_common

DESCRIPTION = """\
Train every run of an experiment config (each seed once per pre-training method spec, e.g.
none, sdae, rbm, sdae+hist, sdae+reinit=2, sdae+layers=1; docs/config.md) and record, at every
checkpoint, each net's softmax outputs on the probe set plus train/valid/test NLL and error,
and at the end the checkpoint of best validation error, into one HDF5 file (docs/format.md).
Without CONFIG: the built-in default experiment (Shapeset, 2 hidden layers, 8 seeds with and 8
without SDAE pre-training).

Every config key and its default: `trajviz config --show-defaults`.
Crash safety (docs/reliability.md): a record killed at any moment leaves the file as its last
complete write left it, and --resume rolls back the interrupted write and carries on from
each unfinished batch's last checkpoint (engine.resume_state; from epoch 0 when it is off),
ending identical to an uninterrupted run. A file that another record is writing is refused (the
message names its pid); `trajviz info` may read it meanwhile.
examples:
  trajviz record                                   # built-in default -> runs/default.h5
  trajviz record runs/smoke.toml --set train.epochs=5 -o out/smoke.h5
  trajviz record runs/partial_pretrain.toml --set dataset.path=data   # MNIST, F8
  trajviz record runs/smoke.toml --resume          # finish an interrupted experiment
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("record", help="train nets and record their function-space trajectories",
                       description=DESCRIPTION, formatter_class=HelpFormatter)
    p.add_argument("config", nargs="?", metavar="CONFIG",
                   help="experiment TOML file (default: the built-in experiment, described above)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set model.depth=3 (repeatable)")
    p.add_argument("-o", "--output", type=Path, default=None,
                   help="output HDF5 file (default: runs/<config name>.h5)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true",
                      help="continue an existing output: complete runs are kept, unfinished ones "
                           "continue from their last checkpoint")
    mode.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    add_common(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from trajviz.config import load_config
    from trajviz.training.runner import record_experiment

    cfg = load_config(args.config, args.overrides)
    output = args.output or Path("runs") / f"{cfg.name}.h5"
    mode = "resume" if args.resume else "overwrite" if args.overwrite else "create"
    record_experiment(cfg, output, mode=mode, progress=not args.quiet)
    if not args.quiet:
        from trajviz.store.summary import summarize

        print(summarize(output).format())
    print(f"wrote {output}", file=sys.stderr) if not args.quiet else None
    return 0
