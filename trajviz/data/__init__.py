"""Datasets: each module builds a :class:`Dataset` of train / valid / test splits from a config.

All inputs are float32 in [0, 1], flattened to (n, d); labels are int64 in [0, n_classes).
Builders are deterministic functions of the config (its ``seed`` included).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

from trajviz.config import DATASETS, DatasetConfig
from trajviz.data.base import Dataset, Split, resolve_sizes
from trajviz.errors import ConfigError

__all__ = ["Dataset", "Split", "load_dataset", "resolve_sizes", "BUILDERS", "DatasetShape",
           "dataset_shape"]


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


class DatasetShape(NamedTuple):
    """Sizes, input dimension and class count of a dataset, known without building it."""

    sizes: tuple[int, int, int]  # train, valid, test
    n_inputs: int
    n_classes: int


def dataset_shape(cfg: DatasetConfig) -> DatasetShape:
    """(train, valid, test) sizes, input dimension and class count of the dataset ``cfg`` names,
    without building it (no files read, nothing generated): what a cost plan needs."""
    if cfg.name == "mnist":
        from trajviz.data.mnist import IMAGE_SHAPE, STANDARD_SIZES

        d, c = IMAGE_SHAPE[0] * IMAGE_SHAPE[1], 10
    elif cfg.name == "digits":
        from trajviz.data.digits import STANDARD_SIZES

        d, c = 64, 10
    elif cfg.name == "shapeset":
        from trajviz.data.shapeset import CLASSES, SIDE, STANDARD_SIZES

        d, c = SIDE * SIDE, len(CLASSES)
    elif cfg.name == "shapeset3x2":
        from trajviz.data.shapeset3x2 import LABELS, SIDE, STANDARD_SIZES

        d, c = SIDE * SIDE, len(LABELS)
    else:
        raise ConfigError(f"unknown dataset {cfg.name!r}; choose one of {', '.join(DATASETS)}")
    return DatasetShape(resolve_sizes(cfg, STANDARD_SIZES), d, c)
