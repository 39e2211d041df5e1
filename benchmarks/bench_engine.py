"""The fast engine against a plain PyTorch loop, the machine's matmul peak, and the cost of
recording, all measured in one run.

Workload: the studies' trajectory net (784-800-800-10, sigmoid hidden layers, softmax output),
K nets, one pass over ``n`` synthetic MNIST-shaped examples per net (each net its own example
order), minibatch 10 and minibatch 100, float32. Rows:

- ``peak``: float32 matmul of two large square matrices (GFLOP/s), the ceiling;
- ``plain``: the baseline: ``nn.Sequential`` + ``torch.optim.SGD``, one net at a time, the same
  initial weights, example order and learning rate;
- ``autograd``: trajviz's reference backend (K nets batched, autograd, manual SGD);
- ``fast``: trajviz's engine (hand-derived fused updates, ``trajviz/training/fast.py``) as the runner drives
  it: the updates between checkpoints in one ``FinetuneStep.run``, net-group by net-group;
- ``fast/step``: the same updates one step at a time, all K nets in every batched product;
- ``compiled`` (with ``--compile``): the autograd step under ``torch.compile``.

Variants are timed in turns, ``--repeats`` rounds, and the fastest round of each is kept, so a
burst of load from other processes hits all of them alike; ratios within one run are what to
compare. The final weights of ``fast`` and ``plain`` are compared to show it is the same work.

Recording (minibatch 10): train only, + the probe forward pass (all nets in one batched
forward), + HDF5 writes through the background writer, + HDF5 writes done synchronously. The
overhead of each is reported next to the probe forward's share of the FLOPs.

    .venv/bin/python benchmarks/bench_engine.py [--threads T] [--nets 8] [--repeats 3] [--compile]
    .venv/bin/python benchmarks/bench_engine.py --device cuda [--nets 50]   # on a GPU (wall clock)

``--device cuda`` puts every variant's tensors (and the matmul peak) on the GPU and synchronizes
before each clock reading.
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from trajviz.record.background import BackgroundWriter, DeferredRun
from trajviz.training.fast import FinetuneStep
from trajviz.training.nets import StackedMLP
from trajviz.record import Recorder
from trajviz.training.runner import finetune_loss, probabilities, run_streams

SIZES = [784, 800, 800, 10]
LR = 0.05


def matmul_peak(n: int = 2048, repeats: int = 5) -> float:
    """float32 GFLOP/s of (n, n) @ (n, n), best of ``repeats``."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=g).to(DEVICE), torch.randn(n, n, generator=g).to(DEVICE)
    out = torch.empty(n, n, device=DEVICE)
    torch.mm(a, b, out=out)
    best = min(_timed(lambda: torch.mm(a, b, out=out)) for _ in range(repeats))
    return 2 * n ** 3 / best / 1e9


#: the clock of every measurement: wall time (``time.perf_counter``), or this process's CPU time
#: (``time.process_time``: all its threads; steadier on a machine shared with other work, where
#: wall time also counts the time slices other processes got). Set by ``--clock``.
CLOCK: Callable[[], float] = time.perf_counter
#: where every variant runs (``--device``)
DEVICE = torch.device("cpu")


def _sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)


def _timed(fn: Callable[[], object]) -> float:
    _sync()
    t0 = CLOCK()
    fn()
    _sync()
    return CLOCK() - t0


def train_flops_per_example(sizes: list[int]) -> float:
    """Multiply-adds x 2 of one SGD example: forward (2P), input gradients of every layer but
    the first (2(P - d0 h1)), weight gradients (2P); biases and elementwise work left out."""
    p = sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))
    return 2.0 * (3 * p - sizes[0] * sizes[1])


def forward_flops_per_example(sizes: list[int]) -> float:
    return 2.0 * sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))


class Workload:
    """K nets' initial weights, the data and each net's example order for one pass."""

    def __init__(self, n_nets: int, n: int, batch: int, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.rand(n, SIZES[0], generator=g).to(DEVICE)
        self.y = torch.randint(0, SIZES[-1], (n,), generator=g).to(DEVICE)
        streams = [run_streams(s) for s in range(n_nets)]
        self.net0 = StackedMLP.init(SIZES, [s.init for s in streams], device=DEVICE)
        self.perms = torch.stack([torch.randperm(n, generator=s.order) for s in streams]).to(DEVICE)
        self.batch, self.n, self.k = batch, n, n_nets

    def fresh_net(self) -> StackedMLP:
        return StackedMLP([w.clone() for w in self.net0.weights], [b.clone() for b in self.net0.biases])

    def minibatches(self):
        for start in range(0, self.n, self.batch):
            yield self.perms[:, start:start + self.batch]


def plain_modules(wl: Workload) -> list[torch.nn.Sequential]:
    """The K nets' initial weights as plain modules (built outside the timed region)."""
    return [wl.net0.to_module(k).to(DEVICE) for k in range(wl.k)]


def run_plain(wl: Workload, modules: list[torch.nn.Sequential]) -> list[torch.nn.Sequential]:
    """The baseline: each net alone, nn.Sequential + torch.optim.SGD."""
    for k, module in enumerate(modules):
        opt = torch.optim.SGD(module.parameters(), lr=LR)
        order = wl.perms[k]
        for start in range(0, wl.n, wl.batch):
            idx = order[start:start + wl.batch]
            opt.zero_grad()
            F.cross_entropy(module(wl.x[idx]), wl.y[idx]).backward()
            opt.step()
    return modules


def run_fast(wl: Workload, net: StackedMLP) -> StackedMLP:
    """The engine as :func:`trajviz.training.runner.finetune` drives it: the updates between two
    checkpoints in one grouped run."""
    FinetuneStep(net, LR).run(wl.x, wl.y, list(wl.minibatches()))
    return net


def run_fast_steps(wl: Workload, net: StackedMLP) -> StackedMLP:
    """The engine one update at a time, all K nets batched in every product."""
    step = FinetuneStep(net, LR)
    for idx in wl.minibatches():
        step(wl.x, wl.y, idx)
    return net


def _autograd_step(net: StackedMLP, xb: torch.Tensor, yb: torch.Tensor) -> None:
    params = net.parameters()
    grads = torch.autograd.grad(finetune_loss(net, xb, yb, 0.0), params)
    with torch.no_grad():
        for p, g in zip(params, grads):
            p.sub_(LR * g)


def run_autograd(wl: Workload, net: StackedMLP, step_fn=_autograd_step) -> StackedMLP:
    for p in net.parameters():
        p.requires_grad_(True)
    for idx in wl.minibatches():
        step_fn(net, wl.x[idx], wl.y[idx])
    return net


def max_weight_difference(net: StackedMLP, modules: list[torch.nn.Sequential]) -> float:
    worst = 0.0
    for k, module in enumerate(modules):
        ref = module.state_dict()
        for name, value in net.state_dict(k).items():
            worst = max(worst, float((value - ref[name]).abs().max()))
    return worst


def bench_training(n_nets: int, n: int, batch: int, repeats: int, peak: float,
                   compile_step: bool) -> dict[str, float]:
    wl = Workload(n_nets, n, batch)
    # variant name -> (untimed setup giving fresh initial weights, timed training on them)
    variants: dict[str, tuple[Callable[[], object], Callable[[object], object]]] = {
        "plain": (lambda: plain_modules(wl), lambda m: run_plain(wl, m)),
        "autograd": (wl.fresh_net, lambda net: run_autograd(wl, net)),
        "fast": (wl.fresh_net, lambda net: run_fast(wl, net)),
        "fast/step": (wl.fresh_net, lambda net: run_fast_steps(wl, net)),
    }
    if compile_step:
        compiled = torch.compile(_autograd_step, dynamic=False)
        t0 = time.perf_counter()
        run_autograd(wl, wl.fresh_net(), compiled)  # compiles (and warms up)
        print(f"  torch.compile warm-up: {time.perf_counter() - t0:.1f} s")
        variants["compiled"] = (wl.fresh_net, lambda net: run_autograd(wl, net, compiled))
    # warm-up round (allocator, MKL/oneDNN kernels), then timed rounds in turns
    small = Workload(n_nets, 4 * batch, batch)
    run_plain(small, plain_modules(small))
    run_autograd(small, small.fresh_net())
    run_fast(small, small.fresh_net())
    best = {name: float("inf") for name in variants}
    for _ in range(repeats):
        peak = max(peak, matmul_peak(repeats=2))  # the ceiling, re-measured under today's load
        for name, (setup, fn) in variants.items():
            state = setup()
            best[name] = min(best[name], _timed(lambda: fn(state)))
    diff = max_weight_difference(run_fast(wl, wl.fresh_net()), run_plain(wl, plain_modules(wl)))
    flops = n_nets * n * train_flops_per_example(SIZES)
    print(f"\n784-800-800-10 sigmoid, K = {n_nets} nets, minibatch {batch}, {n} examples per net; "
          f"peak {peak:.1f} GFLOP/s")
    print(f"  {'variant':<10} {'s':>8} {'ex/s/net':>10} {'GFLOP/s':>9} {'x plain':>8} {'of peak':>8}")
    for name, t in best.items():
        gflops = flops / t / 1e9
        print(f"  {name:<10} {t:8.3f} {n / t:10.1f} {gflops:9.2f} {best['plain'] / t:8.2f} "
              f"{gflops / peak:8.1%}")
    print(f"  max |fast - plain| final weight difference (float32): {diff:.2e}")
    return best


class _TimedRun:
    """A run whose every write adds its thread's CPU time (or wall time) to ``spent[0]``."""

    def __init__(self, run, spent: list[float], clock: Callable[[], float]):
        self._run, self._spent, self._clock = run, spent, clock
        self.run_id = run.run_id

    def _timed_call(self, fn, *args, **kwargs):
        t0 = self._clock()
        try:
            return fn(*args, **kwargs)
        finally:
            self._spent[0] += self._clock() - t0

    def append(self, *args, **kwargs):
        self._timed_call(self._run.append, *args, **kwargs)

    def finish(self, *args, **kwargs):
        self._run.finish(*args, **kwargs)


def bench_recording(n_nets: int, n: int, batch: int, epochs: int, n_probe: int,
                    repeats: int) -> None:
    """Train ``epochs`` passes with a checkpoint at step 0 and after each epoch.

    Two estimates of what recording costs. *Difference*: whole runs with and without recording
    (opening the file and starting the runs, once per experiment, left out; every checkpoint's
    forward pass and writes and the wait for the last write in). It carries the run-to-run noise
    of the whole training. *Accounting*: within the recording runs, the time the training thread
    spends in checkpoints, plus (background writer) the writer thread's own time in the writes,
    over the training thread's time outside checkpoints. Both are set against the probe
    forward's share of the FLOPs.
    """
    wl = Workload(n_nets, n, batch)
    g = torch.Generator().manual_seed(1)
    probe_x = torch.rand(n_probe, SIZES[0], generator=g).to(DEVICE)
    probe_y = np.zeros(n_probe, dtype=np.int64)
    tmp = Path(tempfile.mkdtemp(prefix="bench_engine_"))
    steps_per_epoch = -(-n // batch)
    # per-thread clock for the accounting (process CPU time would mix the two threads)
    thread_clock = time.thread_time if CLOCK is time.process_time else time.perf_counter

    def train(net: StackedMLP, checkpoint: Callable[[StackedMLP, int], None]) -> None:
        step = FinetuneStep(net, LR)
        checkpoint(net, 0)
        for epoch in range(epochs):
            step.run(wl.x, wl.y, list(wl.minibatches()))
            checkpoint(net, epoch + 1)

    def forward_only(net: StackedMLP, epoch: int) -> None:
        probabilities(net, probe_x)

    def record(background: bool) -> tuple[float, float]:
        path = tmp / "rec.h5"
        rec = Recorder(path, probe_x.cpu().numpy(), probe_y, n_classes=SIZES[-1], mode="overwrite")
        write_time = [0.0]
        runs = [_TimedRun(rec.start_run(f"r{k}", seed=k), write_time, thread_clock)
                for k in range(n_nets)]
        net = wl.fresh_net()
        in_checkpoints = 0.0
        with BackgroundWriter() as writer:
            if background:
                runs = [DeferredRun(r, writer) for r in runs]

            def checkpoint(net: StackedMLP, epoch: int) -> None:
                nonlocal in_checkpoints
                t0 = thread_clock()
                probs = probabilities(net, probe_x)
                for k, run in enumerate(runs):
                    run.append(probs[k], epoch * steps_per_epoch, epoch=float(epoch), train_nll=0.0)
                in_checkpoints += thread_clock() - t0

            t0, m0 = CLOCK(), thread_clock()
            train(net, checkpoint)
            t1 = thread_clock()
            writer.flush()
            in_checkpoints += thread_clock() - t1  # waiting for the last writes
            elapsed, main = CLOCK() - t0, thread_clock() - m0
        rec.close()
        path.unlink()
        extra = in_checkpoints + (write_time[0] if background else 0.0)
        return elapsed, extra / (main - in_checkpoints)

    def plain(checkpoint) -> tuple[float, float]:
        net = wl.fresh_net()
        inside = 0.0

        def timed_checkpoint(net: StackedMLP, epoch: int) -> None:
            nonlocal inside
            t0 = thread_clock()
            checkpoint(net, epoch)
            inside += thread_clock() - t0

        m0 = thread_clock()
        elapsed = _timed(lambda: train(net, timed_checkpoint))
        return elapsed, inside / (thread_clock() - m0 - inside)

    variants = {"train only": lambda: plain(lambda net, epoch: None),
                "+ probe forward": lambda: plain(forward_only),
                "+ forward + writes (background)": lambda: record(True),
                "+ forward + writes (synchronous)": lambda: record(False)}
    best = {name: float("inf") for name in variants}
    accounted: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            t, share_measured = fn()
            best[name] = min(best[name], t)
            accounted[name].append(share_measured)
    tmp.rmdir()
    n_ckpt = epochs + 1
    share = (n_ckpt * n_probe * forward_flops_per_example(SIZES)
             / (epochs * n * train_flops_per_example(SIZES)))
    base = best["train only"]
    print(f"\nrecording: K = {n_nets}, minibatch {batch}, {epochs} x {n} examples, "
          f"{n_ckpt} checkpoints of a {n_probe}-example probe set")
    print(f"  probe forward's share of the FLOPs: {share:.1%}")
    print(f"  {'':<34} {'s':>7}   {'difference':>10} {'beyond':>7}   {'accounting':>10} {'beyond':>7}")
    for name, t in best.items():
        extra = t / base - 1
        acc = float(np.median(accounted[name]))
        cells = "" if name == "train only" else (f"   {extra:+10.1%} {extra - share:+7.1%}"
                                                 f"   {acc:+10.1%} {acc - share:+7.1%}")
        print(f"  {name:<34} {t:7.3f}{cells}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads")
    p.add_argument("--nets", type=int, default=8, help="nets trained (K)")
    p.add_argument("--n10", type=int, default=400, help="examples per net at minibatch 10")
    p.add_argument("--n100", type=int, default=2000, help="examples per net at minibatch 100")
    p.add_argument("--n-record", type=int, default=1500,
                   help="examples per net and epoch in the recording benchmark (2 epochs, "
                        "a probe set of n/8 examples)")
    p.add_argument("--repeats", type=int, default=3, help="timed rounds; the fastest is kept")
    p.add_argument("--compile", action="store_true", help="also time the torch.compile'd autograd step")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="wall time, or this process's CPU time (steadier when the machine is shared)")
    p.add_argument("--skip-recording", action="store_true", help="leave out the recording benchmark")
    p.add_argument("--device", default="cpu",
                   help="torch device of every variant: cpu, cuda, cuda:N (wall clock on a GPU)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    global CLOCK, DEVICE
    DEVICE = torch.device(args.device)
    if DEVICE.type == "cuda":
        if not torch.cuda.is_available():
            p.error(f"--device {args.device}: torch sees no CUDA device here")
        args.clock = "wall"  # a CPU clock does not see the GPU's work
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    peak = matmul_peak()
    where = torch.cuda.get_device_name(DEVICE) if DEVICE.type == "cuda" else "cpu"
    print(f"torch {torch.__version__} on {where}, {torch.get_num_threads()} threads, {args.clock} clock; "
          f"float32 matmul peak (2048^2): {peak:.1f} GFLOP/s")
    bench_training(args.nets, args.n10, 10, args.repeats, peak, args.compile)
    bench_training(args.nets, args.n100, 100, args.repeats, peak, args.compile)
    if not args.skip_recording:
        bench_recording(args.nets, args.n_record, 10, epochs=2, n_probe=args.n_record // 8,
                        repeats=args.repeats)


if __name__ == "__main__":
    main()
