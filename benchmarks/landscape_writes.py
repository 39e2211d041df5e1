"""Cost of crash safety for landscape files: the writes of a scan through the journaled
``trajviz.store.LandscapeWriter`` against the previous design (plain h5py, each row written
then flushed), measured in one run, alternating, reported as a ratio (docs/reliability.md).

The writes are those of ``trajviz landscape --grid`` on 4 runs: per run its attributes, a
(7, P) float32 directions array, a 7-row 1-D table and a 51-row grid table, rows of 51 alphas.

    .venv/bin/python benchmarks/landscape_writes.py            # 7 repetitions, P = 20000
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

A, N_DIR, RUNS = 51, 7, 4


class PlainWriter:
    """The landscape writer before the journal: plain h5py, flush after every change."""

    def __init__(self, path: Path):
        self._f = h5py.File(path, "w")
        self._f.attrs["format"] = "trajviz-landscape"
        self._f.flush()

    def write_array(self, key, data, **attrs):
        ds = self._f.create_dataset(key, data=data)
        for k, v in attrs.items():
            ds.attrs[k] = v
        self._f.flush()

    def set_attrs(self, key, **attrs):
        node = self._f.require_group(key) if key not in self._f else self._f[key]
        for k, v in attrs.items():
            node.attrs[k] = v
        self._f.flush()

    def require_rows(self, key, n_rows, row_shape, columns):
        g = self._f.create_group(key)
        for col in columns:
            g.create_dataset(col, shape=(n_rows, *row_shape), dtype="f8", fillvalue=np.nan)
        g.create_dataset("done", shape=(n_rows,), dtype="u1", fillvalue=0)
        self._f.flush()

    def done_rows(self, key):
        return np.asarray(self._f[f"{key}/done"][()], dtype=bool)

    def write_row(self, key, index, **columns):
        g = self._f[key]
        for col, value in columns.items():
            g[col][index] = value
        g["done"][index] = 1
        self._f.flush()

    def close(self):
        self._f.close()


def scan_writes(w, n_params: int, rng: np.random.Generator) -> int:
    """The writes of a 4-run scan; returns the number of rows written."""
    rows = 0
    w.write_array("alphas", np.linspace(-2.5, 2.5, A))
    w.set_attrs("/", probe_sha256="p")
    for r in range(RUNS):
        key = f"runs/r{r}"
        w.set_attrs(key, status="running", seed=r)
        w.write_array(f"{key}/directions/sgd",
                      rng.normal(size=(N_DIR, n_params)).astype(np.float32), kind="sgd")
        for table, n in ((f"{key}/scan1d/sgd", N_DIR), (f"{key}/scan2d/sgd", A)):
            w.require_rows(table, n, (A,), ("nll", "error"))
            w.done_rows(table)
            for i in range(n):
                w.write_row(table, i, nll=rng.random(A), error=rng.random(A))
                rows += 1
        w.set_attrs(key, status="complete")
    return rows


def once(kind: str, path: Path, n_params: int) -> tuple[float, int]:
    from trajviz.store import LandscapeWriter

    path.unlink(missing_ok=True)
    t0 = time.perf_counter()
    w = PlainWriter(path) if kind == "plain" else LandscapeWriter(path, config_json="{}")
    rows = scan_writes(w, n_params, np.random.default_rng(0))
    w.close()
    return time.perf_counter() - t0, rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reps", type=int, default=7, help="repetitions of each writer (default 7)")
    p.add_argument("--params", type=int, default=20000, help="P, parameters per direction")
    args = p.parse_args(argv)
    times: dict[str, list[float]] = {"plain": [], "journal": []}
    with tempfile.TemporaryDirectory() as tmp:
        once("journal", Path(tmp) / "warm.h5", args.params)  # imports, page cache
        for _ in range(args.reps):
            for kind in times:
                dt, rows = once(kind, Path(tmp) / f"{kind}.h5", args.params)
                times[kind].append(dt)
    med = {k: statistics.median(v) for k, v in times.items()}
    for kind, v in times.items():
        print(f"{kind:>8}: median {med[kind]:.3f} s = {1000 * med[kind] / rows:.2f} ms per row "
              f"({rows} rows + {RUNS} direction arrays); runs " + " ".join(f"{x:.3f}" for x in v))
    print(f"journal / plain: x{med['journal'] / med['plain']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
