"""A worked example: recording a Lightning training with ``TrajectoryCallback``.

A small MLP ``LightningModule`` learns scikit-learn's bundled 8x8 digits (no download). The
callback records its outputs on 200 test digits at step 0, at the end of every epoch, and at
the end of training with the final parameters; the trainer's logged metrics (``train/loss``,
stored as ``train.loss``) go with each checkpoint. A ``ModelCheckpoint`` saves the trainer
every epoch: ``trainer.fit(..., ckpt_path=...)`` from one of them continues the same recording
(the callback's state is in the checkpoint). Needs the extra: ``pip install 'trajviz[lightning]'``.

    python examples/lightning_digits.py -o out/lightning      # seconds on 2 CPU cores
    python examples/lightning_digits.py -o out/lightning --resume-from out/lightning/checkpoints/epoch=1-step=82.ckpt
    trajviz info out/lightning/lightning_digits.h5

tests/test_integrations.py runs it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from torch import nn

from trajviz.integrations.lightning import TrajectoryCallback


class DigitsClassifier(pl.LightningModule):
    """64 -> 32 -> 10 with SGD and momentum."""

    def __init__(self, hidden: int = 32, lr: float = 0.1):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))
        self.lr = lr

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = nn.functional.cross_entropy(self(x), y)
        self.log("train/loss", loss, on_step=False, on_epoch=True)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)


def load_digits(seed: int = 0) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The 1,797 digits as (N, 64) float32 in [0, 1], split 1,297 train / 500 test by ``seed``."""
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    x = torch.as_tensor(bunch.data / 16.0, dtype=torch.float32)
    y = torch.as_tensor(bunch.target, dtype=torch.long)
    order = torch.as_tensor(np.random.default_rng(seed).permutation(len(y)))
    return {"train": (x[order[:1297]], y[order[:1297]]), "test": (x[order[1297:]], y[order[1297:]])}


def main(out_dir: str | Path, *, epochs: int = 4, seed: int = 0, resume_from: str | Path | None = None,
         quiet: bool = False) -> Path:
    """Train with the callback recording into ``out_dir/lightning_digits.h5`` (continuing the
    recording when resuming from a trainer checkpoint); returns the file's path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "lightning_digits.h5"
    data = load_digits()
    train = torch.utils.data.TensorDataset(*data["train"])
    pl.seed_everything(seed, verbose=False)  # this script's own seeding: weights and batch order
    loader = torch.utils.data.DataLoader(train, batch_size=32, shuffle=True)
    recording = TrajectoryCallback(path, data["test"][0][:200], data["test"][1][:200],
                                   run_id=f"seed{seed}", seed=seed, group="mlp",
                                   mode="resume" if resume_from else "overwrite")
    checkpoints = pl.callbacks.ModelCheckpoint(dirpath=out_dir / "checkpoints", save_top_k=-1,
                                               every_n_epochs=1)
    trainer = pl.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, logger=False,
                         callbacks=[recording, checkpoints], enable_progress_bar=not quiet,
                         enable_model_summary=not quiet)
    trainer.fit(DigitsClassifier(), loader, ckpt_path=resume_from)
    return path


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("-o", "--output", default="out/lightning", help="output folder")
    parser.add_argument("--epochs", type=int, default=4, help="epochs to train")
    parser.add_argument("--resume-from", default=None, help="a trainer checkpoint to resume from")
    args = parser.parse_args()
    print(main(args.output, epochs=args.epochs, resume_from=args.resume_from))
