"""Model selection by validation error (early stopping as Erhan et al. 2009/2010 did).

Of every checkpoint a run records, the selected one is the first with the lowest validation
classification error (the earliest wins ties, as early stopping would stop there). Its step,
epoch, validation error and NLL, and test error and NLL become run attributes (docs/format.md):
``best_step``, ``best_epoch``, ``best_valid_error``, ``best_valid_nll``, ``test_error_at_best``,
``test_nll_at_best``. Numpy only, so the analysis side can recompute it from stored metrics.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

#: run attribute names written by :meth:`BestCheckpoint.attrs`
SELECTION_ATTRS = ("best_step", "best_epoch", "best_valid_error", "best_valid_nll",
                   "test_error_at_best", "test_nll_at_best")


class BestCheckpoint:
    """Tracks, for each of K nets trained together, the checkpoint of lowest validation error."""

    def __init__(self, n_nets: int):
        self.step = np.full(n_nets, -1, dtype=np.int64)
        self.epoch = np.full(n_nets, np.nan)
        self.valid_error = np.full(n_nets, np.inf)
        self.valid_nll = np.full(n_nets, np.nan)
        self.test_error = np.full(n_nets, np.nan)
        self.test_nll = np.full(n_nets, np.nan)

    def update(self, step: int, epoch: float, metrics: Mapping[str, np.ndarray],
               nets: np.ndarray | None = None) -> None:
        """Offer one checkpoint: ``metrics`` maps ``valid_error``, ``valid_nll``,
        ``test_error``, ``test_nll`` to (K,) arrays; ``nets`` (K,) bool masks the nets it
        counts for (e.g. those not diverged)."""
        err = np.asarray(metrics["valid_error"], dtype=float)
        better = np.isfinite(err) & (err < self.valid_error)
        if nets is not None:
            better &= np.asarray(nets, dtype=bool)
        self.step[better] = step
        self.epoch[better] = epoch
        self.valid_error[better] = err[better]
        for name, store in (("valid_nll", self.valid_nll), ("test_error", self.test_error),
                            ("test_nll", self.test_nll)):
            store[better] = np.asarray(metrics[name], dtype=float)[better]

    def attrs(self, k: int) -> dict[str, float | int]:
        """Net k's selection as run attributes (empty if no checkpoint had a finite error)."""
        if self.step[k] < 0:
            return {}
        return {"best_step": int(self.step[k]), "best_epoch": float(self.epoch[k]),
                "best_valid_error": float(self.valid_error[k]),
                "best_valid_nll": float(self.valid_nll[k]),
                "test_error_at_best": float(self.test_error[k]),
                "test_nll_at_best": float(self.test_nll[k])}


def select_from_metrics(steps: np.ndarray, epochs: np.ndarray,
                        metrics: Mapping[str, np.ndarray]) -> dict[str, float | int]:
    """The same selection from one run's stored metric arrays (T,), e.g. for files recorded
    before the attributes existed. Empty if there is no finite validation error."""
    tracker = BestCheckpoint(1)
    needed = ("valid_error", "valid_nll", "test_error", "test_nll")
    if any(name not in metrics for name in needed):
        return {}
    for t in range(len(steps)):
        tracker.update(int(steps[t]), float(epochs[t]),
                       {name: np.asarray(metrics[name][t:t + 1]) for name in needed})
    return tracker.attrs(0)
