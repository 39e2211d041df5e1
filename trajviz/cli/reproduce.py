"""``trajviz reproduce``: every finding of the pre-training studies by one command."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from trajviz.cli import HelpFormatter, add_common
from trajviz.reproduce.studies import PROFILES

DESCRIPTION = """\
Reproduce findings F1-F10 of Erhan et al. (2009, 2010): record whatever results are missing
(resumable: finished runs are never redone), scan the error landscapes, compute each finding's
statistic with a bootstrap 95% interval (BCa) and a verdict (rule: docs/findings.md), draw the
figures (PDF, PNG, GIF) and write report.md, report.html and findings.json into the output
directory.

The studies are TOML files that ship with trajviz (trajviz/presets/studies/*.toml; any working
directory will do), each with a `quick` profile (scikit-learn's 8x8 digits, 10 seeds; sized for
2 CPU cores, all ten findings in under 20 minutes), a `medium` profile (MNIST, 400 units, 10
seeds, 30 epochs; about an hour on a workstation GPU or a few hours on 16 cores), a `full` profile
(MNIST and Shapeset, up to 400 seeds, 50 epochs; a GPU box or a cluster) and a `tiny` one that checks an installation in
seconds (its numbers mean nothing). To change them: --copy-studies DIR, edit, --studies DIR.
Study-file format, outputs and figures: docs/reproduce.md; the verdict rule: docs/findings.md.
examples:
  trajviz reproduce                          # quick profile, all findings -> reproduce-quick/
  trajviz reproduce --only F1,F10 -o out/    # only what F1 and F10 need
  trajviz reproduce --profile tiny --only F5 -o out/   # check the installation (seconds)
  trajviz reproduce --profile full -o full/  # the studies' sizes (needs MNIST: trajviz data fetch mnist)
  trajviz reproduce --profile full --plan            # what is left to train, and how long; trains nothing
  trajviz reproduce --profile medium --ray local     # the missing runs as Ray tasks on this machine
  trajviz reproduce --profile full --ray auto        # ... or on a running Ray cluster (docs/reproduce.md)
  trajviz reproduce --copy-studies my-studies/       # copy the study files to edit
  trajviz reproduce --studies my-studies/ -o mine/   # ... and run the edited ones
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("reproduce", help="reproduce the pre-training studies' findings, with figures and a report",
                       description=DESCRIPTION, formatter_class=HelpFormatter)
    p.add_argument("--profile", choices=PROFILES, default="quick",
                   help="study sizes: tiny (seconds; checks an installation), quick (2 CPU cores), "
                        "medium (MNIST; a GPU or a 16-core machine) or full (the studies' sizes)")
    p.add_argument("--only", default=None, metavar="F1,F10",
                   help="comma-separated findings to reproduce; F10 stands for its four parts "
                        "F10a-F10d, which can also be named alone (default: all ten)")
    p.add_argument("-o", "--output", type=Path, default=None,
                   help="output directory (default: reproduce-<profile>)")
    p.add_argument("--studies", type=Path, default=None, metavar="DIR",
                   help="directory of study files (default: the ones packaged with trajviz)")
    p.add_argument("--copy-studies", type=Path, default=None, metavar="DIR",
                   help="write the packaged study files into DIR (to edit, then --studies DIR) and "
                        "exit; never replaces a file")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap and the embeddings")
    p.add_argument("--n-boot", type=int, default=2000, help="bootstrap resamples per finding (BCa interval)")
    p.add_argument("--no-figures", action="store_true", help="skip the figures")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads; the studies' small nets at minibatch 10 gain nothing "
                        "from more, and lose on a busy machine (0 = as many as torch picks)")
    p.add_argument("--plan", action="store_true",
                   help="print, per study setting, the runs, net-epochs, SGD updates and pre-training "
                        "layer-epochs still missing from the output directory, and an estimate of the "
                        "time from a few seconds of calibration (CPU, and CUDA when present); trains "
                        "nothing")
    p.add_argument("--ray", default=None, metavar="ADDRESS",
                   help="record the missing runs as Ray tasks, one per seed chunk: 'local' starts a "
                        "private instance, 'auto' or HOST:PORT joins a cluster (GPUs used when "
                        "present); interrupted, a rerun skips finished chunks; needs "
                        "pip install 'trajviz[ray]'")
    p.add_argument("--workers", type=int, default=None,
                   help="with --ray local, the CPUs of the Ray instance (default: all)")
    p.add_argument("--chunk", type=int, default=None, metavar="SEEDS",
                   help="with --ray, seeds per task, rounded up to whole batches of "
                        "engine.nets_per_batch (default: one batch)")
    p.add_argument("--retries", type=int, default=2,
                   help="with --ray, extra attempts of a failed chunk before it is reported")
    add_common(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from trajviz.errors import ConfigError
    from trajviz.reproduce import copy_studies, reproduce

    if args.copy_studies is not None:
        for path in copy_studies(args.copy_studies):
            if not args.quiet:
                print(path)
        return 0
    if args.n_boot < 100:
        raise ConfigError(f"--n-boot {args.n_boot}: must be >= 100 for a 95% interval")
    if args.seed < 0:
        raise ConfigError(f"--seed {args.seed}: must be >= 0")
    if args.threads < 0:
        raise ConfigError(f"--threads {args.threads}: must be >= 0 (0 = as many as torch picks)")
    for flag, value, low in (("--workers", args.workers, 1), ("--chunk", args.chunk, 1),
                             ("--retries", args.retries, 0)):
        if value is not None and value < low:
            raise ConfigError(f"{flag} {value}: must be >= {low}")
    if args.ray is None and (args.workers is not None or args.chunk is not None):
        raise ConfigError("--workers and --chunk apply to --ray; add --ray local (or a cluster "
                          "address) or drop them")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    output = args.output or Path(f"reproduce-{args.profile}")
    if output.exists() and not output.is_dir():
        raise ConfigError(f"--output {str(output)!r} is a file; give a directory")
    if args.plan:
        from trajviz.reproduce.plan import plan_reproduction

        print(plan_reproduction(profile=args.profile, only=args.only, output=output,
                                studies_dir=args.studies, devices=None).format())
        return 0
    command = "trajviz reproduce " + " ".join(sys.argv[2:]) if sys.argv[1:2] == ["reproduce"] else ""
    res = reproduce(profile=args.profile, only=args.only, output=output, studies_dir=args.studies,
                    seed=args.seed, n_boot=args.n_boot, figures=not args.no_figures,
                    progress=not args.quiet, command=command.strip(), ray=args.ray,
                    workers=args.workers, chunk=args.chunk, retries=args.retries)
    if not args.quiet:
        from trajviz.reproduce.report import format_value

        for f in res.findings:
            print(f"{f.id:<4} {f.verdict:<15} {format_value(f)} {f.unit}")
        print(f"wrote {res.report[0]} and {res.report[1]} ({res.seconds['total']:.0f} s, "
              f"{res.cpu_seconds['total']:.0f} s CPU)",
              file=sys.stderr)
    return 0
