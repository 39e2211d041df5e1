"""Write the frozen files of tests/data/ and the numbers they hold (expected.json).

Run once per format change, from the repository root (a few seconds each):

    PYTHONPATH=. OMP_NUM_THREADS=1 python tests/data/freeze.py [--old-landscape OLD_TREE]
        [--old-experiment OLD_EXP_TREE]

``OLD_TREE``: a checkout of the commit before 43b92e4 (``git worktree add --detach /tmp/old
43b92e4^``), whose landscape writer used neither the HDF5 1.10 formats nor Fletcher-32;
``OLD_EXP_TREE``: two commits before 8528b91 (``8528b91~2``; its parent does not import), whose
experiment writer used plain h5py (no journal, no checksums). Each old writer runs in a subprocess with that tree on its
PYTHONPATH. A frozen file is never rewritten once committed (``--force`` to overwrite): the
point is that files written by earlier versions keep reading. expected.json is computed here
with plain h5py, not with trajviz's readers, which tests/test_frozen_files.py then checks.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np

HERE = Path(__file__).resolve().parent
TINY = {
    "name": "frozen", "seeds": [0],
    "dataset": {"name": "shapeset", "n_train": 40, "n_valid": 10, "n_test": 10},
    "model": {"depth": 1, "width": 4},
    "pretrain": {"methods": ["none", "sdae"], "epochs": 1},
    "train": {"epochs": 2, "batch_size": 10},
    "probe": {"n": 8},
}
SCAN = dict(directions=("sgd", "gaussian"), n_directions=2, points=5, span=1.0, n_examples=20,
            hessian=True, hessian_iters=3, hutchinson_probes=2)
SWEEP = {**TINY, "pretrain": {"methods": ["none"], "epochs": 1},
         "sweep": {"model.width": [3, 4]}}


#: datasets up to this many elements are stored whole in expected.json
SMALL = 64


def _plain(value):
    """An HDF5 value as JSON: arrays as (nested) lists of exact floats/ints/strings."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "OS":
            return [_plain(v) for v in value.tolist()]
        return value.astype(np.float64 if value.dtype.kind == "f" else value.dtype).tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def describe(path: Path) -> dict:
    """Every attribute and dataset (small ones whole, large ones by head and sum), read with
    plain h5py."""
    out: dict = {"attrs": {}, "datasets": {}}
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            for k, v in obj.attrs.items():
                out["attrs"][f"/{name}@{k}"] = _plain(v)
            if isinstance(obj, h5py.Dataset):
                value = obj[()]
                entry = {"dtype": obj.dtype.str, "shape": list(obj.shape)}
                if np.size(value) <= SMALL or obj.dtype.kind in "OS":
                    entry["value"] = _plain(value)
                else:  # large arrays (weights, directions): the first values and the sum
                    flat = np.asarray(value, dtype=np.float64).ravel()
                    entry["head"], entry["sum"] = flat[:SMALL].tolist(), float(flat.sum())
                out["datasets"]["/" + name] = entry
        for k, v in f.attrs.items():
            out["attrs"][f"/@{k}"] = _plain(v)
        f.visititems(visit)
    return out


def _fresh(path: Path, force: bool) -> bool:
    if path.exists() and not force:
        print(f"keeping {path.name} (frozen; --force to rewrite)")
        return False
    path.unlink(missing_ok=True)
    return True


def write_current(force: bool) -> None:
    from trajviz.config import config_from_dict
    from trajviz.landscape import ScanSettings, scan_file
    from trajviz.sweep import run_sweep, sweep_from_dict
    from trajviz.trajectories import embed
    from trajviz.training.runner import record_experiment

    exp = HERE / "experiment-v1.h5"
    if _fresh(exp, force):
        record_experiment(config_from_dict(TINY), exp)
    land = HERE / "landscape-v1.h5"
    if _fresh(land, force):
        scan_file(exp, land, settings=ScanSettings(**SCAN))
    emb = HERE / "embedding-v1.h5"
    if _fresh(emb, force):
        embed([exp], method="pca", pca_dims=4, seed=0).save(emb)
    swp = HERE / "sweep-gathered-v1.h5"
    if _fresh(swp, force):
        import shutil
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            run_sweep(sweep_from_dict(SWEEP), swp, workers=1, shards_dir=Path(tmp) / "shards")
        shutil.rmtree(swp.with_name(swp.name + ".shards"), ignore_errors=True)


def _run_old(tree: Path, code: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-c", code], env=env, check=True, cwd=tree)


def write_old_landscape(tree: Path, force: bool) -> None:
    out = HERE / "landscape-v1-before-checksums.h5"
    if _fresh(out, force):
        import tempfile

        # the old scanner reads its own version's experiment files (today's config has keys it
        # does not know), so the old tree records the scanned experiment too
        with tempfile.TemporaryDirectory() as tmp:
            exp = str(Path(tmp) / "experiment.h5")
            _run_old(tree, "from trajviz.config import config_from_dict; "
                           "from trajviz.train import record_experiment; "
                           "from trajviz.landscape import ScanSettings, scan_file; "
                           f"record_experiment(config_from_dict({TINY!r}), {exp!r}); "
                           f"scan_file({exp!r}, {str(out)!r}, settings=ScanSettings(**{SCAN!r}))")


def write_old_experiment(tree: Path, force: bool) -> None:
    out = HERE / "experiment-v1-before-checksums.h5"
    if _fresh(out, force):
        _run_old(tree, "from trajviz.config import config_from_dict; "
                       "from trajviz.train import record_experiment; "
                       f"record_experiment(config_from_dict({TINY!r}), {str(out)!r})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--old-landscape", type=Path, help="checkout of 43b92e4^")
    parser.add_argument("--old-experiment", type=Path, help="checkout of 8528b91~2")
    parser.add_argument("--force", action="store_true", help="rewrite existing frozen files")
    args = parser.parse_args()
    write_current(args.force)
    if args.old_landscape:
        write_old_landscape(args.old_landscape, args.force)
    if args.old_experiment:
        write_old_experiment(args.old_experiment, args.force)
    expected = {p.name: describe(p) for p in sorted(HERE.glob("*.h5"))}
    (HERE / "expected.json").write_text(json.dumps(expected, indent=1, sort_keys=True) + "\n")
    for p in sorted(HERE.glob("*.h5")):
        print(f"{p.name}: {p.stat().st_size} bytes")


if __name__ == "__main__":
    main()
