"""Sweep engines against each other and against recording in one process, in one run.

Runs the same sweep (default: runs/sweep_example.toml, a 2 x 2 grid x 3 seeds = 12 jobs)
1. on the local process pool (``trajviz sweep --workers W``),
2. on a private local Ray instance (``trajviz sweep --ray local --workers W``; includes ray.init),
3. baseline: in this process, one ``record_experiment`` per grid point with all seeds batched
   (what ``trajviz record`` per grid point does), with torch's default thread count, then with 1,
then checks that pool and Ray give identical outputs for every run (they must: each job draws
its randomness from its seed alone), reports the largest difference to the in-process baseline
(batched nets: same streams, float rounding may differ), times each, and prints ratios.

    .venv/bin/python benchmarks/sweep_engines.py [CONFIG] [--workers 2] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from trajviz.config import config_from_dict
from trajviz.store.summary import summarize
from trajviz.store import ExperimentFile
from trajviz.sweep import expand, load_sweep, run_sweep


def outputs(path: Path) -> dict[str, np.ndarray]:
    with ExperimentFile(path) as f:
        return {r: f.outputs(r) for r in f.run_ids()}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", nargs="?", default="runs/sweep_example.toml")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", type=Path, default=None, help="work folder (default: a temporary one)")
    p.add_argument("--no-ray", action="store_true", help="skip the Ray engine")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    out = args.out or Path(tempfile.mkdtemp(prefix="trajviz-sweep-bench-"))
    out.mkdir(parents=True, exist_ok=True)
    spec = load_sweep(args.config)
    jobs = expand(spec)
    points = {j.label: j for j in jobs}
    print(f"{args.config}: {len(points)} grid points x {len(spec.base_config.seeds)} seeds = "
          f"{len(jobs)} jobs, {args.workers} workers; work folder {out}")

    times: dict[str, float] = {}
    t = time.perf_counter()
    pool = run_sweep(spec, out / "pool.h5", workers=args.workers, overwrite=True)
    times["local pool"] = time.perf_counter() - t
    assert pool.ok, pool.format()

    if not args.no_ray:
        t = time.perf_counter()
        ray = run_sweep(spec, out / "ray.h5", ray_address="local", workers=args.workers, overwrite=True)
        times["Ray (local, incl. ray.init)"] = time.perf_counter() - t
        assert ray.ok, ray.format()

    import torch  # imported before timing: the baseline does not pay for it, the engines do

    from trajviz.training.runner import record_experiment

    default_threads = torch.get_num_threads()
    seq_outputs: dict[str, np.ndarray] = {}
    for threads in dict.fromkeys((default_threads, 1)):
        torch.set_num_threads(threads)
        t = time.perf_counter()
        seq = out / f"sequential-{threads}"
        shutil.rmtree(seq, ignore_errors=True)
        for label, job in points.items():
            data = json.loads(json.dumps(spec.base))
            cfg = config_from_dict(data, [f"{k}={json.dumps(v)}" for k, v in job.point.items()])
            record_experiment(cfg, seq / f"{label}.h5")
            seq_outputs.update({f"{label}:{r}": o for r, o in outputs(seq / f"{label}.h5").items()})
        times[f"in-process, {threads} torch thread(s)"] = time.perf_counter() - t
    torch.set_num_threads(default_threads)

    pool_outputs = outputs(out / "pool.h5")
    print(f"\n{'engine':<36} {'wall s':>8} {'x baseline':>10}")
    base = times[f"in-process, {default_threads} torch thread(s)"]
    for name, secs in times.items():
        print(f"{name:<36} {secs:8.1f} {secs / base:10.2f}")
    print(f"\nruns in the gathered file: {len(pool_outputs)}")
    if not args.no_ray:
        ray_outputs = outputs(out / "ray.h5")
        same = sum(np.array_equal(pool_outputs[r], ray_outputs.get(r)) for r in pool_outputs)
        print(f"pool vs Ray: {same} of {len(pool_outputs)} runs have identical outputs arrays "
              f"(run ids equal: {sorted(pool_outputs) == sorted(ray_outputs)})")
    diffs = [float(np.abs(pool_outputs[r] - seq_outputs[r]).max()) for r in pool_outputs]
    print(f"pool vs in-process batched baseline: max |difference| of outputs {max(diffs):.2e}")
    print("\n" + summarize(out / "pool.h5").format())
    if not args.no_ray and same != len(pool_outputs):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
