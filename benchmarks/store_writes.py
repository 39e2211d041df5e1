"""Cost of crash safety: checkpoint appends through the journaled writer (trajviz.store) against
the two alternatives considered (docs/reliability.md), measured in one run, reported as ratios.

* ``plain``: the previous design, plain h5py, resize + write + flush per checkpoint. Safe only
  between writes: a kill inside a flush can leave metadata half-written.
* ``swmr``: HDF5 single-writer/multiple-reader mode (libver latest): datasets must exist before
  SWMR starts (no new runs, metrics or attributes afterwards without closing and reopening).
* ``journal``: trajviz.store.ExperimentWriter (rollback journal, page copies, flock).

    .venv/bin/python benchmarks/store_writes.py            # K=8 runs x T=50 checkpoints
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np


def plain(path: Path, probs: np.ndarray) -> None:
    k, t_max, n, c = probs.shape
    with h5py.File(path, "w") as f:
        runs = [f.create_group(f"runs/r{k_}") for k_ in range(k)]
        for g in runs:
            g.create_dataset("outputs", shape=(0, n, c), maxshape=(None, n, c), dtype="f4",
                             chunks=(1, n, c), compression="gzip", compression_opts=1, shuffle=True)
            g.create_dataset("steps", shape=(0,), maxshape=(None,), dtype="i8", chunks=(256,))
        for t in range(t_max):
            for k_, g in enumerate(runs):
                for key, value in (("outputs", probs[k_, t]), ("steps", t)):
                    g[key].resize(t + 1, axis=0)
                    g[key][t] = value
                f.flush()


def swmr(path: Path, probs: np.ndarray) -> None:
    k, t_max, n, c = probs.shape
    with h5py.File(path, "w", libver="latest") as f:
        runs = [f.create_group(f"runs/r{k_}") for k_ in range(k)]
        for g in runs:
            g.create_dataset("outputs", shape=(0, n, c), maxshape=(None, n, c), dtype="f4",
                             chunks=(1, n, c), compression="gzip", compression_opts=1, shuffle=True)
            g.create_dataset("steps", shape=(0,), maxshape=(None,), dtype="i8", chunks=(256,))
        f.swmr_mode = True
        for t in range(t_max):
            for k_, g in enumerate(runs):
                for key, value in (("outputs", probs[k_, t]), ("steps", t)):
                    g[key].resize(t + 1, axis=0)
                    g[key][t] = value
                    g[key].flush()


def journal(path: Path, probs: np.ndarray) -> None:
    from trajviz.store import ExperimentWriter

    k, t_max, n, c = probs.shape
    with ExperimentWriter(path, probe_targets=np.zeros(n, int), probe_sha="x", n_classes=c,
                          mode="overwrite") as w:
        runs = [w.start_run(f"r{k_}", seed=k_, pretrain="none") for k_ in range(k)]
        for t in range(t_max):
            for k_, run in enumerate(runs):
                run.append(t, probs[k_, t])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=8)
    p.add_argument("--checkpoints", type=int, default=50)
    p.add_argument("--probe", type=int, default=1000, help="probe examples N (default 1000)")
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(args.classes), size=(args.runs, args.checkpoints, args.probe))
    probs = probs.astype(np.float32)
    times: dict[str, list[float]] = {"plain": [], "swmr": [], "journal": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):  # interleaved, so load changes hit all three alike
            for name, fn in (("plain", plain), ("swmr", swmr), ("journal", journal)):
                path = Path(tmp) / f"{name}{r}.h5"
                t0 = time.perf_counter()
                fn(path, probs)
                times[name].append(time.perf_counter() - t0)
    appends = args.runs * args.checkpoints
    best = {k: min(v) for k, v in times.items()}
    print(f"{appends} appends of ({args.probe}, {args.classes}) float32, best of {args.repeats}:")
    for name, t in best.items():
        print(f"  {name:<8} {t:7.3f} s  {1e3 * t / appends:6.2f} ms/append  "
              f"x{t / best['plain']:.2f} of plain")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
