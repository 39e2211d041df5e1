"""Error-landscape probes around stored parameters, and flatness measured with error bars
(Erhan et al., JMLR 2010, sec. 6.4; finding F9: flatter with depth and pre-training).

Public API::

    from trajviz.landscape import ScanSettings, scan_file, scan_model, load_result, flatness_table

    result = scan_file("runs/default.h5", "runs/default.landscape.h5",
                       settings=ScanSettings(directions=("sgd",), n_directions=7, span=2.5, points=51),
                       runs=None, mode="create")          # -> LandscapeResult
    table = flatness_table([result], fit_radius=0.5, rise_radius=1.0, seed=0)  # -> FlatnessTable
    print(table.format())                                 # per-group table + differences with CIs
    table.groups[0].stats["curvature[sgd]"]               # (mean, sem over seeds, sd over directions)
    table.differences[0].diff, .ci_low, .ci_high, .verdict

    load_result("runs/default.landscape.h5")              # read a finished (or partial) scan back

    # any nn.Module, loss and data (tensors or a DataLoader), same directions and file format:
    result = scan_model(model, torch.nn.CrossEntropyLoss(), (x, y), "mine.landscape.h5",
                        settings=ScanSettings(directions=("filter",), n_directions=2, grid=True),
                        train_data=(x_train, y_train))

Modules: :mod:`~trajviz.landscape.params` (flat parameter layout, batched evaluation of many
points per pass), :mod:`~trajviz.landscape.directions` (sgd, gaussian, filter, hessian, pca,
toward:RUN), :mod:`~trajviz.landscape.hessian` (Hessian-vector products, Lanczos, power
iteration, Hutchinson), :mod:`~trajviz.landscape.scan` (:func:`scan_file`, resumable, and the
scan engine both share), :mod:`~trajviz.landscape.modules` (any module as a function of a flat
parameter vector) and :mod:`~trajviz.landscape.module_scan` (:func:`scan_model`),
:mod:`~trajviz.landscape.results` and :mod:`~trajviz.landscape.flatness` (numpy only: reading
results, flatness measures, group table, bootstrap CIs).

Importing this package does not import torch; ``scan_file``, ``scan_model`` and ``ScanSettings``
load it lazily.
"""

from __future__ import annotations

from typing import Any

from trajviz.landscape.flatness import (FlatnessTable, GroupDifference, GroupStats, flatness_table,
                                        loss_rise, quadratic_curvature, run_measures)
from trajviz.landscape.results import LandscapeResult, RunScan, load_result

__all__ = ["ScanSettings", "scan_file", "scan_model", "load_result", "flatness_table", "LandscapeResult", "RunScan",
           "FlatnessTable", "GroupStats", "GroupDifference", "quadratic_curvature", "loss_rise",
           "run_measures"]

_LAZY = {"ScanSettings": "trajviz.landscape.scan", "scan_file": "trajviz.landscape.scan",
         "scan_model": "trajviz.landscape.module_scan"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'trajviz.landscape' has no attribute {name!r}")
