"""A worked example: recording a model that returns a dict, from a plain PyTorch loop.

A small MLP learns scikit-learn's bundled 8x8 digits (no download). Its ``forward`` returns a
dict (``{"logits": ..., "embedding": ...}``), as many models do; ``trajviz.Recorder`` reads the
``"logits"`` entry by itself (``outputs_fn=`` names another). Each seed is one run of the same
file, recorded inside a ``with`` block (an exception or Ctrl-C there leaves the file valid,
the run unfinished); the probe inputs are stored in the file, so the last lines re-evaluate the
stored final parameters on them and compare with the recorded outputs.

    python examples/plain_loop.py -o out/plain_loop      # a few seconds on 2 CPU cores
    trajviz info out/plain_loop/digits_mlp.h5
    trajviz project out/plain_loop/digits_mlp.h5 -o out/plain_loop/tsne.h5

tests/test_record_models.py runs it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from torch import nn

import trajviz


class DigitsMLP(nn.Module):
    """64 -> 32 -> 10, returning the logits and the hidden embedding in a dict."""

    def __init__(self, hidden: int = 32):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(64, hidden), nn.ReLU())
        self.head = nn.Linear(hidden, 10)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.body(x)
        return {"logits": self.head(h), "embedding": h}


def load_digits(seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The 1,797 digits as (N, 64) float32 in [0, 1], split 1,297 train / 500 test by ``seed``."""
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    x, y = (bunch.data / 16.0).astype(np.float32), bunch.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(y))
    return {"train": (x[order[:1297]], y[order[:1297]]), "test": (x[order[1297:]], y[order[1297:]])}


def main(out_dir: str | Path, *, seeds: tuple[int, ...] = (0, 1), epochs: int = 5,
         lr: float = 0.1, batch_size: int = 32) -> Path:
    """Train one MLP per seed, recording every epoch; returns the trajviz file's path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "digits_mlp.h5"
    data = load_digits()
    x, y = map(torch.from_numpy, data["train"])
    probe_x, probe_y = data["test"][0][:200], data["test"][1][:200]
    for i, seed in enumerate(seeds):
        torch.manual_seed(seed)  # this script's own seeding: initial weights and batch order
        model = DigitsMLP()
        opt = torch.optim.SGD(model.parameters(), lr=lr)
        mode = "overwrite" if i == 0 else "resume"  # later seeds add runs to the same file
        with trajviz.Recorder(path, probe_x, probe_y, run_id=f"seed{seed}", seed=seed,
                              group="mlp", mode=mode) as rec:
            rec.record(model, step=0, epoch=0)
            step = 0
            for epoch in range(1, epochs + 1):
                for idx in torch.randperm(len(y)).split(batch_size):
                    loss = nn.functional.cross_entropy(model(x[idx])["logits"], y[idx])
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    step += 1
                with torch.no_grad():
                    train_nll = float(nn.functional.cross_entropy(model(x)["logits"], y))
                rec.record(model, step=step, epoch=epoch, train_nll=train_nll)
            rec.save_params(model)  # final parameters: the run is complete when the block ends
    return path


def reevaluate(path: str | Path, run_id: str) -> float:
    """Largest difference between the recorded final outputs and a fresh evaluation of the
    stored final parameters on the stored probe inputs (float rounding only)."""
    with trajviz.ExperimentFile(path) as f:
        model = DigitsMLP()
        model.load_state_dict({k: torch.from_numpy(v) for k, v in f.params(run_id).items()})
        with torch.no_grad():
            probs = torch.softmax(model(torch.from_numpy(f.probe_inputs()))["logits"], -1)
        return float(np.abs(probs.numpy() - f.outputs(run_id)[-1]).max())


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("-o", "--output", default="out/plain_loop", help="output folder")
    parser.add_argument("--epochs", type=int, default=5, help="epochs per seed")
    args = parser.parse_args()
    file = main(args.output, epochs=args.epochs)
    print(file, "re-evaluated from the file: max |difference| =", reevaluate(file, "seed0"))
