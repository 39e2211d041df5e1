"""trajviz: record, project and probe the function-space trajectories of neural networks.

The package follows the pipeline, one subpackage per stage::

    config, data/ -> training/ -> record/ -> store/ -> trajectories/, landscape/ -> reproduce/, plots/
    cli/ (one subcommand per library entry point), sweep/ (many configs on a pool or Ray)

Library entry points (each CLI subcommand has one):

- :class:`trajviz.Recorder` records outputs on a probe set from any PyTorch training loop
  (Lightning and Hugging Face callbacks: :mod:`trajviz.integrations`, optional extras);
- :func:`trajviz.record_experiment` runs a config (``trajviz record``);
- :func:`trajviz.load_config` reads a TOML experiment config;
- :class:`trajviz.ExperimentFile` reads a trajviz file, :func:`trajviz.summarize` summarizes it
  (``trajviz info``);
- :func:`trajviz.embed` embeds trajectories jointly (``trajviz project``), returning an
  :class:`trajviz.Embedding`; :func:`trajviz.divergence_table` measures how groups diverge
  (``trajviz divergence``);
- :mod:`trajviz.landscape` scans the error landscape (``trajviz landscape``);
- :func:`trajviz.reproduce.reproduce` runs the studies (``trajviz reproduce``).

Heavy modules (torch) are imported on first use, so analysis code can import trajviz cheaply.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "Recorder": "trajviz.record",
    "record_experiment": "trajviz.training.runner",
    "load_config": "trajviz.config",
    "ExperimentConfig": "trajviz.config",
    "ExperimentFile": "trajviz.store",
    "summarize": "trajviz.store.summary",
    "embed": "trajviz.trajectories",
    "Embedding": "trajviz.trajectories",
    "divergence_table": "trajviz.trajectories",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'trajviz' has no attribute {name!r}")
