"""scikit-learn's bundled 8x8 handwritten digits (1,797 images, no download)."""

from __future__ import annotations

import numpy as np

from trajviz.config import DatasetConfig
from trajviz.data.base import Dataset, Split, resolve_sizes

STANDARD_SIZES = (1197, 300, 300)


def build(cfg: DatasetConfig) -> Dataset:
    """Shuffle the 1,797 digits with ``cfg.seed`` and cut train / valid / test in that order."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.data / 16.0).astype(np.float32)
    y = bunch.target.astype(np.int64)
    n_train, n_valid, n_test = resolve_sizes(cfg, STANDARD_SIZES, available=len(y))
    order = np.random.default_rng(cfg.seed).permutation(len(y))
    x, y = x[order], y[order]
    cuts = np.cumsum([n_train, n_valid, n_test])
    return Dataset(
        name="digits",
        train=Split(x[: cuts[0]], y[: cuts[0]]),
        valid=Split(x[cuts[0]: cuts[1]], y[cuts[0]: cuts[1]]),
        test=Split(x[cuts[1]: cuts[2]], y[cuts[1]: cuts[2]]),
        n_classes=10,
        image_shape=(8, 8),
    )
