"""trajviz project (streaming PCA + openTSNE) against the straightforward way (all outputs loaded
into memory, scikit-learn's TSNE on the raw vectors), time and peak memory, measured in one run.

Workload (issue 4): ``--runs`` nets (half "none", half "sdae") x ``--checkpoints`` checkpoints x
``--probes`` probe examples x ``--classes`` classes; the full case 100 x 50 x 10,000 x 10 holds
2 GB of float32 outputs. The synthetic trajviz file has planted structure: the two groups start
apart and each net drifts along its own path.

Each side runs in its own child process; its wall time and CPU time (user + sys) and its peak
resident memory (``ru_maxrss`` from ``wait4``) are measured from outside. The sides run one after
the other in turns (``--repeats``); the fastest turn of each is kept, and ratios are printed.
As a check that both draw the picture, each reports the leave-one-out 5-NN accuracy of the
groups in its 2-D embedding.

    .venv/bin/python benchmarks/bench_project.py                    # full case (long)
    .venv/bin/python benchmarks/bench_project.py --runs 20 --checkpoints 20 --probes 2000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve()


def make_data(path: Path, runs: int, checkpoints: int, probes: int, classes: int, seed: int = 0) -> None:
    """Write the synthetic experiment file (through trajviz's store, as the runner would)."""
    from trajviz.store import ExperimentWriter, probe_sha256

    rng = np.random.default_rng(seed)
    inputs = rng.random((probes, 8)).astype(np.float32)
    base = rng.normal(size=(probes, classes)).astype(np.float32)
    shift = rng.normal(size=(probes, classes)).astype(np.float32)
    config = json.dumps({"bench": [runs, checkpoints, probes, classes, seed]})
    with ExperimentWriter(path, probe_targets=np.arange(probes) % classes,
                          probe_sha=probe_sha256(inputs), n_classes=classes, name="bench",
                          config_json=config, mode="overwrite") as w:
        for r in range(runs):
            group = "none" if r < runs // 2 else "sdae"
            sign = 1.0 if group == "none" else -1.0
            rw = w.start_run(f"{group}-{r}", seed=r, pretrain=group)
            direction = rng.normal(size=(probes, classes)).astype(np.float32)
            z0 = base + sign * 1.5 * shift + 0.3 * rng.normal(size=(probes, classes)).astype(np.float32)
            for t in range(checkpoints):
                z = z0 + 0.05 * t * direction
                z -= z.max(axis=1, keepdims=True)
                p = np.exp(z)
                p /= p.sum(axis=1, keepdims=True)
                rw.append(step=t, probabilities=p, epoch=float(t))
            rw.finish()


def _same_data(path: Path, args: argparse.Namespace) -> bool:
    from trajviz.errors import TrajvizError
    from trajviz.store import ExperimentFile

    if not path.exists():
        return False
    try:
        with ExperimentFile(path) as f:
            return f.config.get("bench") == [args.runs, args.checkpoints, args.probes, args.classes, 0]
    except TrajvizError:
        return False


def _knn_acc(coords: np.ndarray, groups: np.ndarray, k: int = 5) -> float:
    """Leave-one-out k-NN group accuracy in O(M k) memory (a full distance matrix of 5000
    points would dominate the peak memory this benchmark measures)."""
    from sklearn.neighbors import NearestNeighbors

    groups = np.asarray(groups)
    nn = NearestNeighbors(n_neighbors=k + 1).fit(coords).kneighbors(return_distance=False)[:, :k]
    votes = (groups[nn] == groups[:, None]).sum(axis=1)
    return float(np.mean(votes > k / 2))


def side_trajviz(path: Path) -> dict:
    from trajviz.trajectories.embedding import embed

    emb = embed([path], method="tsne", pca_dims=50, seed=0)
    return {"knn_accuracy": _knn_acc(emb.coords, emb.group),
            "trustworthiness": emb.attrs["quality_trustworthiness"],
            "pca_explained_variance": emb.attrs["pca_explained_variance"]}


def side_baseline(path: Path) -> dict:
    from sklearn.manifold import TSNE

    from trajviz.store import ExperimentFile

    with ExperimentFile(path) as f:
        ids = f.run_ids()
        groups = np.repeat([f.run_info(r).group for r in ids], [f.run_info(r).n_checkpoints for r in ids])
        X = np.concatenate([f.outputs(r).reshape(f.run_info(r).n_checkpoints, -1) for r in ids])
    coords = TSNE(n_components=2, perplexity=30, init="pca", random_state=0).fit_transform(X)
    return {"knn_accuracy": _knn_acc(coords, groups)}


def measure(side: str, path: Path) -> dict:
    """Run one side in a child process; wall/CPU seconds and peak RSS (MiB) from wait4."""
    cmd = [sys.executable, str(HERE), "--side", side, "--data", str(path)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    out = proc.stdout.read()
    _, status, ru = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{side} failed with exit code {proc.returncode}")
    result = json.loads(out.strip().splitlines()[-1])
    result.update(wall_s=wall, cpu_s=ru.ru_utime + ru.ru_stime, peak_mib=ru.ru_maxrss / 1024)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--checkpoints", type=int, default=50)
    ap.add_argument("--probes", type=int, default=10_000)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--data", type=Path, default=None,
                    help="file to write the synthetic experiment to (default: a temporary one)")
    ap.add_argument("--reuse-data", action="store_true",
                    help="keep --data if its recorded workload parameters match these")
    ap.add_argument("--sides", default="trajviz,baseline",
                    help="which sides to run; ratios need both")
    ap.add_argument("--side", choices=("trajviz", "baseline"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.side:  # child process
        fn = side_trajviz if args.side == "trajviz" else side_baseline
        print(json.dumps(fn(args.data)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = args.data or Path(tmp) / "bench_project.h5"
        t0 = time.perf_counter()
        if not (args.reuse_data and _same_data(path, args)):
            make_data(path, args.runs, args.checkpoints, args.probes, args.classes)
        raw_gb = args.runs * args.checkpoints * args.probes * args.classes * 4 / 1e9
        print(f"data: {args.runs} runs x {args.checkpoints} checkpoints x {args.probes} probes x "
              f"{args.classes} classes = {raw_gb:.2f} GB float32 raw, "
              f"{path.stat().st_size / 1e9:.2f} GB on disk, written in {time.perf_counter() - t0:.0f} s")
        best: dict[str, dict] = {}
        for _ in range(args.repeats):
            for side in args.sides.split(","):
                r = measure(side, path)
                print(f"  {side:8s} wall {r['wall_s']:7.1f} s  cpu {r['cpu_s']:7.1f} s  "
                      f"peak {r['peak_mib']:7.0f} MiB  5-NN group accuracy {r['knn_accuracy']:.3f}")
                if side not in best or r["wall_s"] < best[side]["wall_s"]:
                    best[side] = r
        if set(best) != {"trajviz", "baseline"}:
            return
        t, b = best["trajviz"], best["baseline"]
        print(f"ratios baseline/trajviz: wall {b['wall_s'] / t['wall_s']:.2f}x, "
              f"cpu {b['cpu_s'] / t['cpu_s']:.2f}x, peak memory {b['peak_mib'] / t['peak_mib']:.2f}x; "
              f"trajviz peak {t['peak_mib']:.0f} MiB vs {raw_gb * 1e9 / 2**20:.0f} MiB of raw outputs; "
              f"trajviz PCA keeps {100 * t['pca_explained_variance']:.1f}% of the variance, "
              f"trustworthiness {t['trustworthiness']:.3f}")


if __name__ == "__main__":
    main()
