"""A worked example: recording a Hugging Face ``Trainer`` run with ``TrajectoryCallback``.

A tiny BERT sequence classifier is built from a config (no download from any hub) and learns
a synthetic task: is token 7 among a sequence's ten token ids? The probe set is a dict of
integer ``input_ids`` and ``attention_mask`` (fed as ``model(**batch)``, kept integer); the
model returns an object whose ``.logits`` the recorder reads. The callback records step 0, the
end of every epoch and the end of training with the final parameters, with the trainer's
latest logged values (``loss``, ``learning_rate``, ``grad_norm``). Needs the extra:
``pip install 'trajviz[huggingface]'``.

    python examples/huggingface_tiny_bert.py -o out/hf      # seconds on 2 CPU cores
    trajviz info out/hf/tiny_bert.h5

tests/test_integrations.py runs it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments

from trajviz.integrations.huggingface import TrajectoryCallback

VOCAB, LENGTH = 40, 10


class ContainsSeven(torch.utils.data.Dataset):
    """Sequences of token ids (1..39); label 1 when token 7 occurs."""

    def __init__(self, n: int, seed: int):
        rng = np.random.default_rng(seed)
        self.input_ids = rng.integers(1, VOCAB, size=(n, LENGTH))
        self.attention_mask = np.ones_like(self.input_ids)
        self.labels = (self.input_ids == 7).any(1).astype(np.int64)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": torch.as_tensor(self.input_ids[i]),
                "attention_mask": torch.as_tensor(self.attention_mask[i]),
                "labels": torch.as_tensor(self.labels[i])}


def tiny_bert(seed: int) -> BertForSequenceClassification:
    torch.manual_seed(seed)  # this script's own seeding: the initial weights
    config = BertConfig(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=32,
                        max_position_embeddings=LENGTH, num_labels=2)
    return BertForSequenceClassification(config)


def main(out_dir: str | Path, *, epochs: int = 2, seed: int = 0, n_train: int = 64,
         quiet: bool = False) -> tuple[Path, BertForSequenceClassification, ContainsSeven]:
    """Train and record into ``out_dir/tiny_bert.h5``; returns its path, the trained model and
    the probe set."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "tiny_bert.h5"
    train, probe = ContainsSeven(n_train, seed=1000 + seed), ContainsSeven(48, seed=1)
    recording = TrajectoryCallback(
        path, {"input_ids": probe.input_ids, "attention_mask": probe.attention_mask},
        probe.labels, run_id=f"seed{seed}", seed=seed, group="tiny-bert", mode="overwrite")
    args = TrainingArguments(output_dir=str(out_dir / "trainer"), num_train_epochs=epochs,
                             per_device_train_batch_size=16, learning_rate=2e-3, seed=seed,
                             save_strategy="no", report_to=[], logging_steps=1,
                             disable_tqdm=quiet, log_level="error" if quiet else "passive",
                             use_cpu=True)
    model = tiny_bert(seed)
    Trainer(model=model, args=args, train_dataset=train, callbacks=[recording]).train()
    return path, model, probe


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("-o", "--output", default="out/hf", help="output folder")
    parser.add_argument("--epochs", type=int, default=2, help="epochs to train")
    args = parser.parse_args()
    print(main(args.output, epochs=args.epochs)[0])
