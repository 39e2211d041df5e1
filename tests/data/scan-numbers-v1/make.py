"""Writes tiny.h5 (a tiny `trajviz record` experiment, every checkpoint's parameters) and
expected.json (what `trajviz landscape` gave on it before scan_model existed, commit d70a61f).

tests/test_landscape.py::test_project_files_scan_to_the_numbers_of_the_old_code checks that the
scan still gives these numbers. Rerun only to renew the frozen file (and then say why):
    PYTHONPATH=. python tests/data/scan-numbers-v1/make.py
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from trajviz.config import config_from_dict
from trajviz.landscape import ScanSettings, scan_file
from trajviz.training.runner import record_experiment

HERE = Path(__file__).parent
CONFIG = {"name": "landscape_v1", "seeds": [0],
          "dataset": {"name": "shapeset", "n_train": 60, "n_valid": 20, "n_test": 24},
          "model": {"depth": 1, "width": 6},
          "pretrain": {"methods": ["none", "sdae"], "epochs": 1},
          "train": {"epochs": 2, "lr": 0.1, "batch_size": 10}, "probe": {"n": 12},
          "record": {"every_steps": 6, "params": "all"}}
#: the scans whose numbers are frozen: every direction kind, a grid, the Hessian measures
SCANS = {
    "all": dict(directions=("sgd", "gaussian", "filter", "hessian", "pca", "toward:sdae-seed0"),
                n_directions=2, points=5, span=1.0, grid=True, hessian=True, hessian_iters=4,
                hutchinson_probes=3),
    "subset": dict(directions=("sgd", "hessian"), n_directions=2, points=5, span=1.0, n_examples=30,
                   seed=4, hessian=True, hessian_iters=4, hutchinson_probes=3, dtype="float64"),
}


def main() -> None:
    path = record_experiment(config_from_dict(CONFIG), HERE / "tiny.h5", mode="overwrite")
    expected = {}
    for name, kw in SCANS.items():
        res = scan_file(path, HERE / f"{name}.tmp.h5", settings=ScanSettings(**kw), mode="overwrite")
        (HERE / f"{name}.tmp.h5").unlink()
        expected[name] = {r.run_id: {"loss_at_theta": list(r.loss_at_theta),
                                     "scans1d": {k: {c: v.tolist() for c, v in t.items()}
                                                 for k, t in r.scans1d.items()},
                                     "scans2d": {k: {c: v.tolist() for c, v in t.items()}
                                                 for k, t in r.scans2d.items()},
                                     "hessian": [r.top_eigenvalue, r.hessian_trace,
                                                 r.hessian_trace_sem]}
                          for r in res.runs}
    (HERE / "expected.json").write_text(json.dumps({"scans": SCANS, "expected": expected}, indent=None))


if __name__ == "__main__":
    np.seterr(all="raise")
    main()
