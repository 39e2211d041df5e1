"""A worked example: your own model and training loop, end to end with trajviz.

A small CNN with batch norm learns scikit-learn's bundled 8x8 digits (no download) in a plain
PyTorch loop; ``trajviz.Recorder`` records its outputs on a probe set (and its parameters) at
every epoch, for two seeds; ``trajviz project`` embeds the two trajectories jointly; and
``trajviz.landscape.scan_model`` scans the training loss around each final model along
filter-normalized directions (a 1-D scan and a 2-D grid) and the principal directions of its
own parameter trajectory, with the Hessian's top eigenvalue and trace, then prints the
flatness table.

    python examples/digits_cnn.py -o out/digits_cnn          # about a minute on 2 CPU cores
    trajviz plot landscape out/digits_cnn/landscape.h5 --view contour -o grid.png

tests/test_example_digits_cnn.py runs it and checks the scan against plain PyTorch.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

import trajviz
from trajviz.landscape import ScanSettings, flatness_table, scan_model
from trajviz.store import ExperimentFile


class DigitsCNN(nn.Module):
    """Two 3x3 convolutions with batch norm and max pooling, then a linear layer: 8x8 -> 10."""

    def __init__(self, channels: int = 8):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(channels, 2 * channels, 3, padding=1), nn.BatchNorm2d(2 * channels), nn.ReLU(),
            nn.MaxPool2d(2))
        self.classifier = nn.Linear(2 * channels * 2 * 2, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


def load_digits(seed: int = 0) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The 1,797 digits as (N, 1, 8, 8) images in [0, 1], split 1,297 train / 500 test by ``seed``."""
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    x = torch.as_tensor(bunch.images / 16.0, dtype=torch.float32)[:, None]
    y = torch.as_tensor(bunch.target, dtype=torch.long)
    order = torch.as_tensor(np.random.default_rng(seed).permutation(len(y)))
    train, test = order[:1297], order[1297:]
    return {"train": (x[train], y[train]), "test": (x[test], y[test])}


def train_and_record(path: Path, data: dict, *, seeds: tuple[int, ...], epochs: int,
                     lr: float = 0.05, batch_size: int = 32) -> dict[int, DigitsCNN]:
    """Train one CNN per seed with plain SGD; record every epoch into ``path``."""
    x, y = data["train"]
    probe_x, probe_y = data["test"][0][:200], data["test"][1][:200]
    models = {}
    with trajviz.Recorder(path, probe_x, probe_y, n_classes=10, name="digits-cnn",
                          mode="overwrite") as rec:
        for seed in seeds:
            torch.manual_seed(seed)  # this script's own seeding: initial weights and batch order
            model = DigitsCNN()
            opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
            run = rec.start_run(f"seed{seed}", seed=seed, group="cnn")
            run.record(model, step=0, epoch=0, store_params=True)
            step = 0
            for epoch in range(1, epochs + 1):
                model.train()
                for idx in torch.randperm(len(y)).split(batch_size):
                    loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    step += 1
                run.record(model, step=step, epoch=epoch, store_params=True, train_nll=loss.item())
            run.save_params(model)
            run.finish()
            models[seed] = model.eval()
    return models


def main(out: Path, *, seeds: tuple[int, ...] = (0, 1), epochs: int = 6, points: int = 21,
         scanned: tuple[int, ...] | None = None, hessian_iters: int = 10,
         quiet: bool = False) -> dict:
    """Train and record ``seeds``, project them, scan the models of ``scanned`` (default: all)."""
    out.mkdir(parents=True, exist_ok=True)
    data = load_digits()
    record = out / "record.h5"
    models = train_and_record(record, data, seeds=seeds, epochs=epochs)

    # the trajectories, embedded jointly (the same as typing the command in a shell)
    embedding = out / "embedding.h5"
    subprocess.run([sys.executable, "-m", "trajviz", "project", str(record), "-o", str(embedding),
                    "--method", "pca", "--overwrite", "--quiet"], check=True)

    # the landscape around each final model, on the training data
    settings = ScanSettings(directions=("filter", "pca"), n_directions=2, span=1.0, points=points,
                            grid=True, hessian=True, hessian_iters=hessian_iters,
                            hutchinson_probes=5)
    landscape = out / "landscape.h5"
    results = []
    for i, seed in enumerate(seeds if scanned is None else scanned):
        model = models[seed]
        with ExperimentFile(record) as f:  # the parameters Recorder stored at every epoch
            trajectory = f.params(f"seed{seed}", "trajectory")
        results.append(scan_model(model, nn.CrossEntropyLoss(), data["train"], landscape,
                                  settings=settings, trajectory=trajectory, run_id=f"seed{seed}",
                                  group="cnn", mode="overwrite" if i == 0 else "resume",
                                  progress=not quiet))
    step = 2 * settings.span / (points - 1)  # the quadratic fit needs 3 alphas: 0 and +-step
    table = flatness_table(results[-1], fit_radius=max(0.2, step), rise_radius=0.5, n_boot=200)
    if not quiet:
        print(table.format())
        print(f"wrote {record}, {embedding}, {landscape}")
    return {"record": record, "embedding": embedding, "landscape": landscape, "models": models,
            "data": data, "result": results[-1], "table": table}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("-o", "--output", type=Path, default=Path("out/digits_cnn"), help="folder to write")
    parser.add_argument("--epochs", type=int, default=6, help="training epochs per seed")
    parser.add_argument("--points", type=int, default=21, help="alphas per direction (odd)")
    parser.add_argument("--quiet", action="store_true", help="print nothing")
    args = parser.parse_args()
    main(args.output, epochs=args.epochs, points=args.points, quiet=args.quiet)
