"""Landscape scan speed: trajviz's :class:`~trajviz.landscape.params.PointEvaluator` against
the best plain loop, in one process, taking turns, best of several rounds, CPU time (one torch
thread; the fair clock on a shared machine).

Baseline (what a competent user writes): one ``nn.Sequential`` model; for every alpha, set its
weights to ``theta + alpha d`` in place (one ``torch.add(..., out=p)`` per tensor, no copies),
then evaluate NLL and error over the data by slicing the tensors in batches (no DataLoader: it
only adds per-batch cost). Every batch size of ``--loop-batches`` is timed and the fastest kept.
trajviz: one ``PointEvaluator`` per direction, all alphas of the direction per call, as
``scan_file`` calls it, with each strategy of ``--strategies`` ("auto" = what scans use).
Same model, same data, same alphas; the script prints each strategy's largest relative NLL
difference from the loop.

FLOPs per point are the forward matmuls of one model, 2 N sum(fan_in fan_out); the peak is the
best float32 1024^3 torch.mm of the same run.

    .venv/bin/python benchmarks/bench_landscape.py --inputs 784 --width 800 --depth 2 --classes 10
    .venv/bin/python benchmarks/bench_landscape.py --inputs 64 --width 32 --depth 1 --classes 10 --directions 7
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F

from trajviz.landscape.params import STRATEGIES, ParamLayout, PointEvaluator
from trajviz.training.nets import StackedMLP, layer_sizes


def matmul_peak(size: int = 1024, repeats: int = 5) -> float:
    """Best float32 GFLOP/s per CPU second of a size x size matmul."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    cpu = float("inf")
    for _ in range(repeats):
        c = time.process_time()
        torch.mm(a, b)
        cpu = min(cpu, time.process_time() - c)
    return 2 * size ** 3 / cpu / 1e9


def cpu_timed(fn) -> tuple[float, object]:
    c = time.process_time()
    out = fn()
    return time.process_time() - c, out


@torch.no_grad()
def loop_baseline(model: torch.nn.Module, theta: list[torch.Tensor], dirs: list[list[torch.Tensor]],
                  alphas: np.ndarray, x: torch.Tensor, y: torch.Tensor, batch: int) -> np.ndarray:
    """(directions, alphas) mean NLL: weights set in place per alpha, data sliced in batches."""
    params = list(model.parameters())
    n = x.shape[0]
    out = np.empty((len(dirs), alphas.size))
    for i, direction in enumerate(dirs):
        for j, a in enumerate(alphas):
            for p, p0, d in zip(params, theta, direction):
                torch.add(p0, d, alpha=float(a), out=p.data)
            total = torch.zeros((), dtype=torch.float64)
            wrong = torch.zeros((), dtype=torch.long)
            for s in range(0, n, batch):
                logits = model(x[s:s + batch])
                yb = y[s:s + batch]
                total += F.cross_entropy(logits, yb, reduction="sum")
                wrong += (logits.argmax(1) != yb).sum()
            out[i, j] = float(total) / n
    for p, p0 in zip(params, theta):
        p.data.copy_(p0)
    return out


def ours(layout: ParamLayout, theta: np.ndarray, d: np.ndarray, alphas: np.ndarray, x, y,
         strategy: str) -> np.ndarray:
    """(directions, alphas) mean NLL, one evaluator per direction as scan_file does."""
    return np.stack([PointEvaluator(layout, theta, d[i:i + 1], x, y, strategy=strategy)(alphas[:, None])[0]
                     for i in range(d.shape[0])])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10000, help="examples (the studies' scans: 10,000)")
    ap.add_argument("--inputs", type=int, default=784)
    ap.add_argument("--width", type=int, default=800)
    ap.add_argument("--depth", type=int, default=2)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--directions", type=int, default=1,
                    help="directions (the studies: 7; every direction is the same work)")
    ap.add_argument("--points", type=int, default=51, help="alphas per direction")
    ap.add_argument("--loop-batches", default="500",
                    help="comma-separated batch sizes of the loop; the fastest is the baseline")
    ap.add_argument("--strategies", default="auto",
                    help=f"comma-separated PointEvaluator strategies, of {', '.join(STRATEGIES)}")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds (best kept)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)  # a benchmark script, not the library: may set it

    rng = np.random.default_rng(args.seed)
    x = torch.as_tensor(rng.uniform(0, 1, (args.n, args.inputs)), dtype=torch.float32)
    y = torch.as_tensor(rng.integers(0, args.classes, args.n))
    sizes = layer_sizes(args.inputs, args.depth, args.width, args.classes)
    net = StackedMLP.init(sizes, [torch.Generator().manual_seed(args.seed)])
    state = {k: v.numpy() for k, v in net.state_dict(0).items()}
    layout = ParamLayout.from_state(state)
    theta = layout.flatten(state)
    d = rng.standard_normal((args.directions, layout.size))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    alphas = 2.5 * np.linspace(-1, 1, args.points)

    model = net.to_module(0)
    theta_t = [p.detach().clone() for p in model.parameters()]
    dirs_t = [[torch.as_tensor(v, dtype=torch.float32) for v in layout.unflatten(row).values()]
              for row in d]  # same order as model.parameters()
    batches = [int(b) for b in args.loop_batches.split(",")]
    strategies = [s.strip() for s in args.strategies.split(",")]
    methods = {f"loop, batch {b}": (lambda b=b: loop_baseline(model, theta_t, dirs_t, alphas, x, y, b))
               for b in batches}
    methods.update({f"PointEvaluator {s}": (lambda s=s: ours(layout, theta, d, alphas, x, y, s))
                    for s in strategies})
    best = {name: np.inf for name in methods}
    results = {}
    peak = 0.0
    for _ in range(args.rounds):  # alternating, so load changes hit all alike; best kept
        peak = max(peak, matmul_peak())
        for name, fn in methods.items():
            t, results[name] = cpu_timed(fn)
            best[name] = min(best[name], t)
    loops = [name for name in methods if name.startswith("loop")]
    base = min(loops, key=best.get)
    ref = results[base]
    n_points = args.directions * args.points
    flops = 2 * args.n * sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))
    print(f"net {sizes}, {layout.size} params, {args.n} examples, {args.directions} directions x "
          f"{args.points} alphas, torch threads {torch.get_num_threads()}, best of {args.rounds} "
          f"alternating rounds, CPU seconds of this process")
    print(f"forward FLOPs per point {flops / 1e9:.3f} GFLOP; matmul peak {peak:.1f} GFLOP/s per CPU s")
    print(f"{'method':<28} {'CPU s':>8} {'points/s':>9} {'GFLOP/s':>8} {'of peak':>8} "
          f"{'x baseline':>10} {'max rel NLL diff':>17}")
    for name in methods:
        rate = n_points / best[name]
        diff = float(np.max(np.abs(results[name] - ref) / np.abs(ref)))
        print(f"{name:<28} {best[name]:8.3f} {rate:9.2f} {rate * flops / 1e9:8.1f} "
              f"{rate * flops / 1e9 / peak:8.1%} {best[base] / best[name]:10.2f} {diff:17.1e}")
    print(f"baseline: {base} (fastest loop)")


if __name__ == "__main__":
    main()
