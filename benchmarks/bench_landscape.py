"""Landscape scan speed: points per second of trajviz's batched evaluation against the
straightforward loop, and both as a fraction of this machine's measured matmul peak, in one run.

Baseline (what most landscape code does): one ``nn.Sequential`` model; for every alpha, copy the
weights, add alpha times the direction in place, evaluate NLL and error over the data through a
``DataLoader``, restore the weights. trajviz: :class:`trajviz.landscape.params.PointEvaluator`,
all alphas of a direction in one pass (first layer linear in alpha, later layers as batched
products). Same model, same data, same alphas; the script checks both give the same losses.

FLOPs per point are counted as the forward matmuls, 2 N sum(fan_in fan_out); the peak is the best
of several float32 square matmuls (torch.mm) measured in the same run.

    .venv/bin/python benchmarks/bench_landscape.py                       # default experiment's net
    .venv/bin/python benchmarks/bench_landscape.py --n 2000 --width 800 --depth 3 --inputs 784
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from trajviz.landscape.params import ParamLayout, PointEvaluator
from trajviz.training.nets import StackedMLP, layer_sizes


def matmul_peak(size: int = 1024, repeats: int = 7) -> tuple[float, float]:
    """Best float32 GFLOP/s of a size x size matmul: (per wall second, per CPU second)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    wall = cpu = float("inf")
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        torch.mm(a, b)
        wall, cpu = min(wall, time.perf_counter() - t), min(cpu, time.process_time() - c)
    return 2 * size ** 3 / wall / 1e9, 2 * size ** 3 / cpu / 1e9


def timed(fn) -> tuple[float, float, object]:
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - t, time.process_time() - c, out


@torch.no_grad()
def loop_baseline(model: torch.nn.Module, direction: list[torch.Tensor], alphas: np.ndarray,
                  loader: DataLoader, n: int) -> np.ndarray:
    params = list(model.parameters())
    out = []
    for a in alphas:
        saved = [p.detach().clone() for p in params]  # copy the weights
        for p, d in zip(params, direction):
            p.add_(float(a) * d)
        total = 0.0
        wrong = 0.0
        for xb, yb in loader:
            logits = model(xb)
            total += float(F.cross_entropy(logits, yb, reduction="sum"))
            wrong += float((logits.argmax(1) != yb).sum())
        out.append(total / n)
        for p, s in zip(params, saved):  # restore
            p.copy_(s)
    return np.asarray(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10000, help="examples (the default experiment's train split)")
    ap.add_argument("--inputs", type=int, default=100, help="input units (Shapeset 10x10)")
    ap.add_argument("--width", type=int, default=200)
    ap.add_argument("--depth", type=int, default=2)
    ap.add_argument("--classes", type=int, default=2)
    ap.add_argument("--points", type=int, default=51, help="alphas per direction")
    ap.add_argument("--loader-batch", type=int, default=500, help="baseline DataLoader batch size")
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats of each method (best kept)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)  # a benchmark script, not the library: may set it

    rng = np.random.default_rng(args.seed)
    x = torch.as_tensor(rng.uniform(0, 1, (args.n, args.inputs)), dtype=torch.float32)
    y = torch.as_tensor(rng.integers(0, args.classes, args.n))
    sizes = layer_sizes(args.inputs, args.depth, args.width, args.classes)
    g = torch.Generator().manual_seed(args.seed)
    net = StackedMLP.init(sizes, [g])
    state = {k: v.numpy() for k, v in net.state_dict(0).items()}
    layout = ParamLayout.from_state(state)
    theta = layout.flatten(state)
    d = rng.standard_normal(layout.size)
    d /= np.linalg.norm(d)
    alphas = np.linspace(-2.5, 2.5, args.points)

    model = net.to_module(0)
    direction = [torch.as_tensor(v, dtype=torch.float32)
                 for v in layout.unflatten(d).values()]  # same order as model.parameters()
    loader = DataLoader(TensorDataset(x, y), batch_size=args.loader_batch, shuffle=False)
    evaluator = PointEvaluator(layout, theta, d[None], x, y)

    flops_per_point = 2 * args.n * sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))
    peak = np.array(matmul_peak())
    loop_t = np.full(2, np.inf)
    ours_t = np.full(2, np.inf)
    for _ in range(args.repeats):  # interleaved, so load changes hit both alike; best kept
        w, c, ref = timed(lambda: loop_baseline(model, direction, alphas, loader, args.n))
        loop_t = np.minimum(loop_t, [w, c])
        w, c, (ours, _) = timed(lambda: evaluator(alphas[:, None]))
        ours_t = np.minimum(ours_t, [w, c])
    peak = np.maximum(peak, matmul_peak())
    max_rel = float(np.max(np.abs(ours - ref) / np.abs(ref)))
    print(f"net {sizes}, {layout.size} params, {args.n} examples, {args.points} alphas, "
          f"torch threads {torch.get_num_threads()}")
    print(f"forward FLOPs per point: {flops_per_point / 1e9:.3f} GFLOP")
    for i, clock in enumerate(("wall", "CPU")):
        print(f"-- per {clock} second (CPU time is the fair clock on a shared machine with 1 thread)")
        print(f"matmul peak (float32 1024^3 mm, best of 14): {peak[i]:.1f} GFLOP/s")
        for name, t in (("loop (copy, add, DataLoader, restore)", loop_t[i]),
                        ("trajviz PointEvaluator (all alphas/pass)", ours_t[i])):
            rate = args.points / t
            print(f"{name:<42} {rate:8.2f} points/s = {rate * flops_per_point / 1e9:6.1f} GFLOP/s "
                  f"= {rate * flops_per_point / 1e9 / peak[i]:6.1%} of peak")
        print(f"speed-up: {loop_t[i] / ours_t[i]:.2f}x")
    print(f"max relative NLL difference between the two: {max_rel:.1e}")


if __name__ == "__main__":
    main()
