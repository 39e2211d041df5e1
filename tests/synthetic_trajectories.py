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


# --------------------------------------------------------------------------- independent writer


def write_plain_h5py(path: Path, runs: dict[str, tuple[str, int, np.ndarray]], *,
                     config: dict | None = None) -> Path:
    """Write ``runs``: run id -> (group, seed, probabilities (T, N, C)) with plain h5py, following
    docs/format.md alone (no trajviz code): the file another program would write. Epoch of
    checkpoint t = t."""
    import json

    import h5py

    first = next(iter(runs.values()))[2]
    t_len, n, c = first.shape
    with h5py.File(path, "w") as f:
        f.attrs["format"] = "trajviz"
        f.attrs["format_version"] = 1
        f.attrs["probe_sha256"] = "f" * 64
        f.attrs["n_classes"] = c
        f.attrs["config"] = json.dumps(config or {})
        f.create_dataset("probe/targets", data=np.arange(n, dtype=np.int64) % c)
        for rid, (group, seed, probs) in runs.items():
            g = f.create_group(f"runs/{rid}")
            g.attrs["seed"] = seed
            g.attrs["pretrain"] = group
            g.attrs["group"] = group
            g.create_dataset("outputs", data=probs.astype(np.float32))
            g.create_dataset("steps", data=np.arange(t_len, dtype=np.int64) * 50)
            g.create_dataset("epochs", data=np.arange(t_len, dtype=np.float64))
    return path


def apart_together_parting(t0: int, *, n_runs: int = 8, T: int = 12, N: int = 40, C: int = 3,
                           gap: float = 3.0, start: float = 1.0, floor: float = 0.15,
                           rate: float = 0.5, rate_b: float | None = None, seed: int = 0,
                           same_distribution: bool = False, paired_seeds: bool = True,
                           names: tuple[str, str] = ("A", "B")) -> dict[str, tuple[str, int, np.ndarray]]:
    """Groups "A" and "B" of ``n_runs`` nets each. Logits of net i at checkpoint t:

        common path(t) + (+-) gap/2 x shift + a(t) x e_i + max(t - t0, 0) x rate x u_i

    with a(t) falling linearly from ``start`` to ``floor`` at t0 and holding there, e_i and u_i
    each net's own random directions (``rate_b``: B's rate, default ``rate``): the groups are apart at every checkpoint, each group's
    nets move together until t0, then part for good. ``same_distribution``: no gap (both groups
    drawn alike: a null). Seeds: 0..n-1 in both groups (``paired_seeds``) or 0..n-1 and
    1000..1000+n-1. ``names``: the two groups' names."""
    rng = np.random.default_rng(seed)
    path = rng.normal(size=(N, C)) + rng.normal(size=(T, N, C)).cumsum(axis=0) * 0.1
    shift = rng.normal(size=(N, C))
    t = np.arange(T, dtype=float)
    amp = np.where(t < t0, start + (floor - start) * t / t0, floor)[:, None, None]
    runs = {}
    for g, sign in ((names[0], 0.5), (names[1], -0.5)):
        r = rate if g == names[0] or rate_b is None else rate_b
        away = (np.maximum(t - t0, 0.0) * r)[:, None, None]
        for i in range(n_runs):
            e, u = rng.normal(size=(N, C)), rng.normal(size=(N, C))
            z = path + (0.0 if same_distribution else sign * gap) * shift + amp * e + away * u
            s = i if (paired_seeds or g == names[0]) else 1000 + i
            runs[f"{g}-{i}"] = (g, s, softmax(z))
    return runs
