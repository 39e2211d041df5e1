"""Synthetic trajviz files with planted structure, for tests of project and metrics.

Nets are softmax outputs of logits that move along planted paths; no training, no torch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from trajviz.store import COMPLETE, ExperimentWriter, probe_sha256


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def write_experiment(path: Path, runs: dict[str, tuple[str, np.ndarray]], *, probe_seed: int = 0,
                     statuses: dict[str, str] | None = None, epochs_per_step: float = 0.01,
                     errors: bool = False) -> Path:
    """Write ``runs``: run id -> (group, probabilities (T, N, C)). The probe set's identity
    depends on ``probe_seed`` and N only. ``errors``: also record train and test error
    (0.5 / (t + 1) and 0.6 / (t + 1) plus the run's index / 1000, so each point's are known)."""
    first = next(iter(runs.values()))[1]
    n, c = first.shape[1:]
    inputs = np.random.default_rng(probe_seed).random((n, 4)).astype(np.float32)
    targets = np.arange(n) % c
    with ExperimentWriter(path, probe_targets=targets, probe_sha=probe_sha256(inputs),
                          n_classes=c, name="synthetic") as w:
        for i, (rid, (group, probs)) in enumerate(runs.items()):
            rw = w.start_run(rid, seed=i, pretrain=group, group=group)
            for t in range(probs.shape[0]):
                metrics = {"train_nll": 1.0 / (t + 1)}
                if errors:
                    metrics.update(train_error=0.5 / (t + 1) + i / 1000,
                                   test_error=0.6 / (t + 1) + i / 1000)
                rw.append(step=100 * t, probabilities=probs[t], epoch=100 * t * epochs_per_step,
                          metrics=metrics)
            rw.finish((statuses or {}).get(rid, COMPLETE))
    return path


def two_groups(n_runs: int = 6, T: int = 8, N: int = 30, C: int = 3, *, gap: float = 3.0,
               noise: float = 0.3, seed: int = 0, prefix: str = "") -> dict[str, tuple[str, np.ndarray]]:
    """Groups "a" and "b" whose nets start apart (logit centres ``gap`` apart per probe) and
    drift together along a common path, each net with its own noise."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(N, C))
    shift = rng.normal(size=(N, C))
    drift = rng.normal(size=(T, N, C)).cumsum(axis=0) * 0.2
    runs = {}
    for g, sign in (("a", 1.0), ("b", -1.0)):
        for r in range(n_runs):
            z = base + sign * gap * shift / 2 + drift + noise * rng.normal(size=(T, N, C))
            runs[f"{prefix}{g}-{r}"] = (g, softmax(z).astype(np.float32))
    return runs


def diverging_group(t0: int, *, n_runs: int = 8, T: int = 14, N: int = 40, C: int = 3,
                    rate: float = 0.6, noise: float = 0.02, seed: int = 1,
                    group: str = "d") -> dict[str, tuple[str, np.ndarray]]:
    """Nets that share one path (tiny individual noise) up to checkpoint ``t0``, then each moves
    off in its own direction, further at every checkpoint."""
    rng = np.random.default_rng(seed)
    path = rng.normal(size=(N, C)) + rng.normal(size=(T, N, C)).cumsum(axis=0) * 0.1
    runs = {}
    for r in range(n_runs):
        direction = rng.normal(size=(N, C))
        away = np.maximum(np.arange(T) - t0, 0)[:, None, None] * rate * direction
        z = path + away + noise * rng.normal(size=(T, N, C))
        runs[f"{group}-{r}"] = (group, softmax(z).astype(np.float32))
    return runs
