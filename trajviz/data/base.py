"""The containers every dataset builder returns."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trajviz.config import DatasetConfig
from trajviz.errors import DataError


@dataclass(frozen=True)
class Split:
    """One split: inputs ``x`` (n, d) float32 in [0, 1] and labels ``y`` (n,) int64."""

    x: np.ndarray
    y: np.ndarray

    def __post_init__(self) -> None:
        if self.x.ndim != 2 or self.y.shape != (self.x.shape[0],):
            raise DataError(f"split shapes disagree: x {self.x.shape}, y {self.y.shape}")

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def head(self, n: int) -> "Split":
        return Split(self.x[:n], self.y[:n])


@dataclass(frozen=True)
class Dataset:
    """Train / valid / test splits of one dataset."""

    name: str
    train: Split
    valid: Split
    test: Split
    n_classes: int
    image_shape: tuple[int, ...]

    @property
    def n_inputs(self) -> int:
        return int(self.train.x.shape[1])

    def split(self, name: str) -> Split:
        if name not in ("train", "valid", "test"):
            raise DataError(f"unknown split {name!r}; choose train, valid or test")
        return getattr(self, name)


def resolve_sizes(cfg: DatasetConfig, standard: tuple[int, int, int],
                  available: int | None = None) -> tuple[int, int, int]:
    """The (train, valid, test) sizes a config asks for, 0 meaning the dataset's standard size.

    ``available`` caps the total for datasets of fixed size, with an error naming both numbers.
    """
    sizes = tuple(n or s for n, s in zip((cfg.n_train, cfg.n_valid, cfg.n_test), standard))
    if available is not None and sum(sizes) > available:
        raise DataError(
            f"dataset {cfg.name!r} has {available} examples, but n_train + n_valid + n_test = "
            f"{sizes[0]} + {sizes[1]} + {sizes[2]} = {sum(sizes)}; lower them")
    return sizes  # type: ignore[return-value]
