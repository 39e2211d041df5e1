"""``trajviz info``: summarize a trajviz file."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from trajviz.cli import HelpFormatter, add_common


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="summarize a trajviz file: runs per group, checkpoints, final metrics",
                       description="Summarize a trajviz file: runs per group, checkpoints, train NLL "
                                   "at start and end, final test error, and test error at the "
                                   "checkpoint of best validation error with its epoch (model "
                                   "selection; mean ± std over runs). A note flags every "
                                   "group with runs that end no better than a uniform guess "
                                   "(train NLL > ln C - 0.01: still on the chance plateau).",
                       formatter_class=HelpFormatter)
    p.add_argument("file", type=Path, metavar="FILE", help="trajviz HDF5 file")
    p.add_argument("-o", "--output", type=Path, default=None,
                   help="also write the summary as JSON to this file")
    p.add_argument("--runs", action="store_true",
                   help="also list every run: its method spec, seed, test error at the end and "
                        "at the checkpoint of best validation error")
    add_common(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from trajviz.store.summary import summarize

    summary = summarize(args.file)
    print(summary.format(runs=args.runs))
    if args.output:
        data = {"path": str(summary.path), "name": summary.name, "probe_size": summary.probe_size,
                "n_classes": summary.n_classes, "probe_sha256": summary.probe_sha256,
                "diverged": summary.diverged,
                "groups": {k: {"runs": g.runs, "pretrain": sorted(g.pretrain),
                               "statuses": g.statuses, "checkpoints": g.checkpoints,
                               "final_train_nll": g.final_train_nll,
                               "runs_at_chance": g.at_chance(summary.n_classes),
                               "final_test_error": g.final_test_error,
                               "test_error_at_best": g.test_error_at_best,
                               "best_epoch": g.best_epoch}
                           for k, g in summary.groups.items()},
                "runs": {r.run_id: {"group": r.group, "method": r.method, "seed": r.seed,
                                    "status": r.status, "checkpoints": r.checkpoints,
                                    "final_test_error": r.final_test_error,
                                    "test_error_at_best": r.test_error_at_best,
                                    "best_epoch": r.best_epoch}
                         for r in summary.runs}}
        args.output.write_text(json.dumps(_missing_as_null(data), indent=2, allow_nan=False))
    return 0


def _missing_as_null(value: Any) -> Any:
    """NaN (a missing value) as JSON null, as the tables print '-': strict JSON, one spelling."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _missing_as_null(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_missing_as_null(v) for v in value]
    return value
