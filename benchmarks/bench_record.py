"""Training as a user times it: ``trajviz record`` against a plain PyTorch script doing the
same work, each a whole process (imports, data, training, evaluation, writes), CPU time
(user + sys of the child, from ``getrusage(RUSAGE_CHILDREN)``), and the CPU time of the
training steps alone (each side times its own step loop), one torch thread each
(``OMP_NUM_THREADS=1``), alternating rounds, best of ``--rounds`` kept.

Workload (issue 17): K = 8 nets 784-800-800-10 sigmoid, no pre-training, SGD lr 0.05 at
minibatch ``--batch`` (10; the studies' own protocol is 1), 2 epochs over 3,000 MNIST-like
images; at step 0 and after every epoch the train (3,000), valid (1,000) and test (1,000) NLL
and error of every net and its softmax outputs on a 1,000-example probe set (the test split's
first 1,000), stored in HDF5. There is no MNIST here: the images are synthetic 28 x 28 uint8
IDX files (10 class prototypes plus noise), read by trajviz's MNIST loader; the plain script
reads the same files with numpy.

Baseline (what a competent user writes): per net, ``nn.Sequential`` of Linear/Sigmoid layers
+ ``torch.optim.SGD``, minibatches sliced from a tensor by a per-net permutation, evaluation
under ``torch.no_grad`` over whole splits, outputs written with h5py (gzip), one net after
the other.

    .venv/bin/python benchmarks/bench_record.py [--batch 10] [--rounds 3] [--n-train 3000]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

from trajviz.data.mnist import FILES, write_idx

PLAIN = textwrap.dedent('''
    import sys, time
    import numpy as np
    import torch, torch.nn as nn, torch.nn.functional as F
    import h5py
    torch.set_num_threads(1)
    data, out, n_train, n_eval, batch, epochs, nets = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:8])

    def idx(name):
        raw = open(f"{data}/{name}", "rb").read()
        nd = raw[3]
        shape = np.frombuffer(raw[4:4 + 4 * nd], dtype=">u4")
        return np.frombuffer(raw[4 + 4 * nd:], dtype=np.uint8).reshape(shape)

    tx, ty = idx("train-images-idx3-ubyte"), idx("train-labels-idx1-ubyte")
    sx, sy = idx("t10k-images-idx3-ubyte"), idx("t10k-labels-idx1-ubyte")
    f = lambda a: torch.as_tensor(a.reshape(len(a), -1).astype(np.float32) / 255)
    cut = len(tx) - len(tx) // 6
    splits = {"train": (f(tx[:n_train]), torch.as_tensor(ty[:n_train].astype(np.int64))),
              "valid": (f(tx[cut:cut + n_eval]), torch.as_tensor(ty[cut:cut + n_eval].astype(np.int64))),
              "test": (f(sx[:n_eval]), torch.as_tensor(sy[:n_eval].astype(np.int64)))}
    probe = splits["test"][0][:n_eval]
    x, y = splits["train"]
    step_cpu = 0.0
    with h5py.File(out, "w") as h5:
        for seed in range(nets):
            torch.manual_seed(seed)
            model = nn.Sequential(nn.Linear(784, 800), nn.Sigmoid(), nn.Linear(800, 800), nn.Sigmoid(),
                                  nn.Linear(800, 10))
            opt = torch.optim.SGD(model.parameters(), lr=0.05)
            g = h5.create_group(f"run{seed}")
            outs = g.create_dataset("outputs", (epochs + 1, n_eval, 10), dtype="f4",
                                    compression="gzip")
            metrics = g.create_dataset("metrics", (epochs + 1, 6), dtype="f8")
            gen = torch.Generator().manual_seed(seed)

            def checkpoint(t):
                with torch.no_grad():
                    row = []
                    for sx_, sy_ in splits.values():
                        logits = model(sx_)
                        row += [float(F.cross_entropy(logits, sy_)),
                                float((logits.argmax(1) != sy_).float().mean())]
                    metrics[t] = row
                    outs[t] = torch.softmax(model(probe), 1).numpy()

            checkpoint(0)
            for epoch in range(epochs):
                c = time.process_time()
                order = torch.randperm(n_train, generator=gen)
                for s in range(0, n_train, batch):
                    i = order[s:s + batch]
                    loss = F.cross_entropy(model(x[i]), y[i])
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                step_cpu += time.process_time() - c
                checkpoint(epoch + 1)
            for name, p in model.state_dict().items():
                g.create_dataset(f"params/{name}", data=p.numpy())
    print(f"steps CPU {step_cpu:.3f}")
''')

#: ``trajviz record`` as the CLI runs it, plus the CPU time spent inside the fused SGD steps
#: (``FinetuneStep.run``; a few hundred calls, so timing them costs nothing measurable)
TRAJVIZ = textwrap.dedent('''
    import sys, time
    from trajviz.training import fast
    spent = [0.0]
    run = fast.FinetuneStep.run
    def timed_run(self, *a, **k):
        c = time.process_time()
        try:
            return run(self, *a, **k)
        finally:
            spent[0] += time.process_time() - c
    fast.FinetuneStep.run = timed_run
    from trajviz.cli import main
    rc = main(sys.argv[1:])
    print(f"steps CPU {spent[0]:.3f}")
    sys.exit(rc)
''')

CONFIG = textwrap.dedent('''
    name = "bench_record"
    seeds = [{seeds}]
    [dataset]
    name = "mnist"
    n_train = {n_train}
    n_valid = {n_eval}
    n_test = {n_eval}
    path = "{data}"
    [model]
    depth = 2
    width = 800
    [pretrain]
    methods = ["none"]
    [train]
    epochs = {epochs}
    lr = 0.05
    batch_size = {batch}
    [probe]
    split = "test"
    n = {n_eval}
    [engine]
    nets_per_batch = {nets}
''')


def make_data(directory: Path, n_pool: int, n_test: int, seed: int = 0) -> None:
    """MNIST-shaped IDX files: 10 smooth class prototypes, each image a prototype plus noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:28, 0:28]
    protos = []
    for _ in range(10):
        img = np.zeros((28, 28))
        for cy, cx, r in rng.uniform([6, 6, 2], [22, 22, 6], (4, 3)):
            img += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
        protos.append(img / img.max())
    protos = np.stack(protos)

    def images(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.integers(0, 10, n).astype(np.uint8)
        im = protos[labels] * rng.uniform(0.6, 1.0, (n, 1, 1)) + rng.normal(0, 0.15, (n, 28, 28))
        return (np.clip(im, 0, 1) * 255).astype(np.uint8), labels

    (tx, ty), (sx, sy) = images(n_pool), images(n_test)
    for name, arr in zip(FILES, (tx, ty, sx, sy)):
        write_idx(directory / name, arr)


def run_child(cmd: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """(CPU seconds, peak RSS MiB, stdout) of one child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode:
        raise SystemExit(f"{cmd[:3]} failed:\n{proc.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return cpu, after.ru_maxrss / 1024, proc.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=10, help="minibatch size (the studies: 1)")
    ap.add_argument("--nets", type=int, default=8)
    ap.add_argument("--n-train", type=int, default=3000)
    ap.add_argument("--n-eval", type=int, default=1000, help="valid, test and probe examples")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", choices=("trajviz", "plain"), help="time one side only")
    args = ap.parse_args()

    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    root = Path(__file__).resolve().parents[1]
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(root), env.get("PYTHONPATH", "")) if p)
    with tempfile.TemporaryDirectory(prefix="bench_record") as tmp:
        tmp = Path(tmp)
        data = tmp / "mnist"
        data.mkdir()
        n_pool = 6 * max(args.n_eval, -(-args.n_train // 5))  # the loader keeps 1/6 for valid
        make_data(data, n_pool, args.n_eval)
        cfg = tmp / "bench.toml"
        cfg.write_text(CONFIG.format(seeds=", ".join(map(str, range(args.nets))), n_train=args.n_train,
                                     n_eval=args.n_eval, data=data, epochs=args.epochs,
                                     batch=args.batch, nets=args.nets))
        plain = tmp / "plain.py"
        plain.write_text(PLAIN)
        wrapper = tmp / "trajviz_record.py"
        wrapper.write_text(TRAJVIZ)
        sides = {
            "trajviz record": [sys.executable, str(wrapper), "record", str(cfg), "-o",
                               str(tmp / "t.h5"), "--overwrite", "--quiet"],
            "plain loop": [sys.executable, str(plain), str(data), str(tmp / "p.h5"),
                           str(args.n_train), str(args.n_eval), str(args.batch), str(args.epochs),
                           str(args.nets)],
        }
        if args.only:
            sides = {k: v for k, v in sides.items() if k.startswith(args.only)}
        best = {k: np.inf for k in sides}
        steps = {k: np.inf for k in sides}
        for r in range(args.rounds):
            order = list(sides) if r % 2 == 0 else list(sides)[::-1]
            for name in order:
                t = time.perf_counter()
                cpu, rss, out = run_child(sides[name], env)
                print(f"round {r + 1}: {name:<15} CPU {cpu:7.2f} s  wall {time.perf_counter() - t:7.1f} s"
                      f"  {out.strip()}", flush=True)
                best[name] = min(best[name], cpu)
                steps[name] = min(steps[name], float(out.split("steps CPU")[-1]))
    print(f"\n{args.nets} nets 784-800-800-10, minibatch {args.batch}, {args.epochs} epochs x "
          f"{args.n_train} examples, eval {args.n_eval}/split, 1 thread, best of {args.rounds} "
          "alternating rounds, whole-process CPU (user+sys)")
    for name in sides:
        print(f"{name:<15} whole process {best[name]:8.2f} s CPU, training steps {steps[name]:8.2f} s")
    if len(sides) == 2:
        p, t = "plain loop", "trajviz record"
        print(f"plain / trajviz: whole process {best[p] / best[t]:.2f}x, steps only "
              f"{steps[p] / steps[t]:.2f}x")


if __name__ == "__main__":
    main()
