"""Datasets: each module builds a :class:`Dataset` of train / valid / test splits from a config.

All inputs are float32 in [0, 1], flattened to (n, d); labels are int64 in [0, n_classes).
Builders are deterministic functions of the config (its ``seed`` included).
"""

from __future__ import annotations

from typing import Callable

from trajviz.config import DATASETS, DatasetConfig
from trajviz.data.base import Dataset, Split, resolve_sizes
from trajviz.errors import ConfigError

__all__ = ["Dataset", "Split", "load_dataset", "resolve_sizes", "BUILDERS"]


def _shapeset(cfg: DatasetConfig) -> Dataset:
    from trajviz.data.shapeset import build

    return build(cfg)


def _shapeset3x2(cfg: DatasetConfig) -> Dataset:
    from trajviz.data.shapeset3x2 import build

    return build(cfg)


def _mnist(cfg: DatasetConfig) -> Dataset:
    from trajviz.data.mnist import build

    return build(cfg)


def _digits(cfg: DatasetConfig) -> Dataset:
    from trajviz.data.digits import build

    return build(cfg)


#: name -> builder; config.DATASETS must list exactly these names (a test checks).
BUILDERS: dict[str, Callable[[DatasetConfig], Dataset]] = {
    "shapeset": _shapeset,
    "shapeset3x2": _shapeset3x2,
    "mnist": _mnist,
    "digits": _digits,
}


def load_dataset(cfg: DatasetConfig) -> Dataset:
    """Build the dataset a config names."""
    try:
        builder = BUILDERS[cfg.name]
    except KeyError:
        raise ConfigError(
            f"unknown dataset {cfg.name!r}; choose one of {', '.join(DATASETS)}") from None
    return builder(cfg)
