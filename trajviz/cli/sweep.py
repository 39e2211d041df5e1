"""``trajviz sweep``: an experiment config x a grid of values x seeds, on a local pool or Ray."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from trajviz.cli import HelpFormatter, add_common

DESCRIPTION = """\
Run a sweep: an experiment config whose [sweep] table maps dotted config keys to lists of
values. Every combination of the values (the grid) times every seed is one job: one `record`
of the config with that grid point and that single seed, written to its own shard
(OUT.shards/<job>.h5, one run per pre-training method). The shards are then gathered into one
experiment file OUT, read by `info`, `project`, `landscape` like any other: run ids are
"<grid point>:<method>-seed<seed>", groups "<method> <grid point>".

  seeds = [0, 1, 2]
  [sweep]
  "model.width" = [20, 40]
  "pretrain.methods" = [["none"], ["sdae"]]     # list-valued keys take a list of lists

Re-running skips complete jobs; a failed job is retried --retries times, then reported and
the exit code is 1 (the completed jobs are still gathered). Ray: docs/sweep.md.
examples:
  trajviz sweep runs/sweep_example.toml -o out/sweep.h5 --workers 2
  trajviz sweep runs/sweep_example.toml -o out/sweep.h5 --ray local
  trajviz sweep runs/sweep_example.toml -o out/sweep.h5 --ray auto     # a running cluster
  trajviz sweep runs/sweep_example.toml -o out/sweep.h5 --dry-run      # list the jobs
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sweep", help="run an experiment over a grid of config values x seeds, locally or on Ray",
                       description=DESCRIPTION, formatter_class=HelpFormatter)
    p.add_argument("config", metavar="CONFIG", help="sweep file: an experiment TOML with a [sweep] table")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set train.epochs=3, or a grid axis, "
                        "e.g. --set sweep.model.width=[10,20] (repeatable)")
    p.add_argument("-o", "--output", type=Path, default=None,
                   help="gathered output HDF5 file (default: runs/<config name>.h5)")
    p.add_argument("--shards", type=Path, default=None, metavar="DIR",
                   help="folder of the per-job shards (default: OUT with suffix .shards)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                   help="local worker processes; with --ray local, the CPUs of the Ray instance")
    p.add_argument("--ray", dest="ray_address", default=None, metavar="ADDRESS",
                   help="run on Ray: 'local' starts a private instance, 'auto' or HOST:PORT "
                        "joins a running cluster (needs pip install 'trajviz[ray]')")
    p.add_argument("--retries", type=int, default=2,
                   help="extra attempts of a failed job before it is reported failed")
    p.add_argument("--only", type=int, action="append", default=None, metavar="INDEX",
                   help="run only job INDEX (repeatable; e.g. one SLURM array task each) and "
                        "gather nothing; see --dry-run for the indices")
    p.add_argument("--dry-run", action="store_true",
                   help="list the jobs and whether each is already complete; run nothing")
    p.add_argument("--overwrite", action="store_true",
                   help="delete existing shards and output first and redo every job")
    add_common(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from trajviz.errors import ConfigError
    from trajviz.sweep import default_shards_dir, expand, job_state, load_sweep, run_sweep

    spec = load_sweep(args.config, args.overrides)
    output = args.output or Path("runs") / f"{spec.base_config.name}.h5"
    if args.workers < 1:
        raise ConfigError(f"--workers {args.workers}: must be >= 1")
    if args.retries < 0:
        raise ConfigError(f"--retries {args.retries}: must be >= 0")
    if args.dry_run:
        shards = args.shards or default_shards_dir(output)
        jobs = expand(spec)
        for job in jobs:
            state = job_state(job, shards / f"{job.key}.h5")
            print(f"{job.index:>5}  {job.key:<40} {','.join(job.methods):<12} {state}")
        print(f"{len(jobs)} jobs -> {output} (shards in {shards})")
        return 0
    result = run_sweep(spec, output, workers=args.workers, ray_address=args.ray_address,
                       retries=args.retries, shards_dir=args.shards, only=args.only,
                       overwrite=args.overwrite, progress=not args.quiet)
    if not args.quiet:
        print(result.format(), file=sys.stderr)
        if result.gathered:
            from trajviz.store.summary import summarize

            print(summarize(result.output).format())
    if result.failed:
        keys = ", ".join(o.job.key for o in result.failed)
        print(f"trajviz sweep: error: {len(result.failed)} of {len(result.outcomes)} jobs failed "
              f"(retried {args.retries} times): {keys}; rerun the same command to retry them",
              file=sys.stderr)
        return 1
    return 0
