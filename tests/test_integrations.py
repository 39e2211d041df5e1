"""The Lightning and Hugging Face callbacks (trajviz.integrations), run with the real packages
on tiny models built in code (the worked examples in examples/ among them); the files they
write are read back with the store's reader. Where an extra is missing its tests skip, naming
it; `make test` installs the extras (and there such a skip fails: tests/conftest.py)."""

from __future__ import annotations

import importlib
import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from torch import nn

from trajviz.errors import MissingExtraError
from trajviz.store import ExperimentFile

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _integration(name: str) -> ModuleType:
    """trajviz.integrations.<name>, or a skip whose reason names the extra to install."""
    try:
        return importlib.import_module(f"trajviz.integrations.{name}")
    except MissingExtraError as exc:
        pytest.skip(str(exc))


def _example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

# --------------------------------------------------------------------------- Lightning


def _lightning_setup():
    import lightning.pytorch as pl

    class Classifier(pl.LightningModule):
        def __init__(self, fail_at_step: int | None = None):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3))
            self.fail_at_step = fail_at_step

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, batch_idx):
            if self.fail_at_step is not None and self.global_step == self.fail_at_step:
                raise RuntimeError("planted failure")
            x, y = batch
            loss = nn.functional.cross_entropy(self(x), y)
            self.log("train/loss", loss)
            return loss

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.2, momentum=0.9)

    rng = np.random.default_rng(0)
    x = torch.tensor(rng.normal(size=(64, 5)), dtype=torch.float32)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)
    return pl, Classifier, x, y, loader


def _trainer(pl, callbacks, **kw):
    return pl.Trainer(max_epochs=3, accelerator="cpu", devices=1, logger=False,
                      enable_progress_bar=False, enable_model_summary=False,
                      callbacks=callbacks, **kw)


def test_lightning_example_records_every_epoch(tmp_path):
    """examples/lightning_digits.py: step 0, every epoch, the final parameters."""
    _integration("lightning")
    example = _example("lightning_digits")
    path = example.main(tmp_path, epochs=3, quiet=True)
    steps_per_epoch = -(-1297 // 32)
    with ExperimentFile(path) as f:
        f.verify()
        info = f.run_info("seed0")
        assert (info.status, info.group, info.seed) == ("complete", "mlp", 0)
        assert f.steps("seed0").tolist() == [0, steps_per_epoch, 2 * steps_per_epoch,
                                             3 * steps_per_epoch]
        assert f.epochs("seed0").tolist() == [0, 1, 2, 3]
        loss = f.metrics("seed0")["train.loss"]  # logged as train/loss
        assert np.isnan(loss[0]) and loss[3] < loss[2] < loss[1]
        probs, targets = f.outputs("seed0"), f.probe_targets()
        assert (probs[-1].argmax(1) == targets).mean() > 0.85  # it learned
        model = example.DigitsClassifier()  # the final parameters reproduce the last outputs
        model.load_state_dict({k: torch.from_numpy(v) for k, v in f.params("seed0").items()})
        with torch.no_grad():
            again = torch.softmax(model(torch.from_numpy(f.probe_inputs())), -1).numpy()
        np.testing.assert_allclose(again, probs[-1], atol=1e-6)
    ckpts = sorted((tmp_path / "checkpoints").glob("*.ckpt"))
    assert len(ckpts) == 3
    state = torch.load(ckpts[0], weights_only=False)["callbacks"]
    (key,) = [k for k in state if "TrajectoryCallback" in k]
    assert state[key]["n_checkpoints"] == 2 and state[key]["run_id"] == "seed0"


def test_lightning_run_resumed_from_its_checkpoint_continues_the_recording(tmp_path):
    """Training dies at step 7; the recording then holds steps 0..6, but the last trainer
    checkpoint is from step 4. Resumed from it, the recording drops step 6, continues, and
    ends identical to an uninterrupted run's."""
    TrajectoryCallback = _integration("lightning").TrajectoryCallback
    pl, Classifier, x, y, loader = _lightning_setup()
    probe = (x[:20].numpy(), y[:20].numpy())

    def fit(path: Path, model, ckpt_dir: Path | None = None, ckpt_path=None, mode="create"):
        callback = TrajectoryCallback(path, *probe, run_id="s0", every_n_steps=2, mode=mode)
        callbacks = [callback]
        if ckpt_dir is not None:
            callbacks.append(pl.callbacks.ModelCheckpoint(dirpath=ckpt_dir, save_top_k=-1,
                                                          every_n_epochs=1, save_last=False))
        trainer = _trainer(pl, callbacks, enable_checkpointing=ckpt_dir is not None)
        trainer.fit(model, loader, ckpt_path=ckpt_path)

    torch.manual_seed(0)
    fit(tmp_path / "whole.h5", Classifier())

    torch.manual_seed(0)
    path = tmp_path / "resumed.h5"
    with pytest.raises(RuntimeError, match="planted failure"):
        fit(path, Classifier(fail_at_step=7), ckpt_dir=tmp_path / "ckpt")
    with ExperimentFile(path) as f:
        assert f.steps("s0").tolist() == [0, 2, 4, 6] and f.run_info("s0").status == "running"
    (ckpt,) = sorted((tmp_path / "ckpt").glob("*.ckpt"))  # end of epoch 1: step 4
    fit(path, Classifier(), ckpt_dir=tmp_path / "ckpt", ckpt_path=ckpt, mode="resume")

    with ExperimentFile(tmp_path / "whole.h5") as whole, ExperimentFile(path) as resumed:
        resumed.verify()
        assert resumed.run_info("s0").status == "complete"
        assert resumed.steps("s0").tolist() == whole.steps("s0").tolist() == list(range(0, 13, 2))
        np.testing.assert_allclose(resumed.outputs("s0"), whole.outputs("s0"), atol=1e-6)


# --------------------------------------------------------------------------- Hugging Face


def test_huggingface_example_records_a_trainer_run(tmp_path):
    """examples/huggingface_tiny_bert.py: a tiny BERT from a config, integer token ids."""
    _integration("huggingface")
    path, model, probe = _example("huggingface_tiny_bert").main(tmp_path, epochs=2, quiet=True)
    with ExperimentFile(path) as f:
        f.verify()
        assert f.run_info("seed0").status == "complete"
        assert f.steps("seed0").tolist() == [0, 4, 8]  # 64 examples / 16 per step, 2 epochs
        np.testing.assert_allclose(f.epochs("seed0"), [0, 1, 2])
        assert np.isfinite(f.metrics("seed0")["loss"][1:]).all()
        model.eval()
        with torch.no_grad():
            logits = model(input_ids=torch.as_tensor(probe.input_ids),
                           attention_mask=torch.as_tensor(probe.attention_mask)).logits
        np.testing.assert_allclose(f.outputs("seed0")[-1], torch.softmax(logits, -1).numpy(),
                                   atol=1e-5)
        stored = f.probe_inputs()
        assert stored["input_ids"].dtype == np.int64
        np.testing.assert_array_equal(stored["input_ids"], probe.input_ids)
        assert "classifier.weight" in f.params("seed0")


def test_huggingface_run_resumed_from_its_checkpoint_continues_the_recording(tmp_path):
    """A Trainer run dies after step 6 with a trainer checkpoint at step 4; resumed from it,
    the recording drops what came after step 4 and ends like an uninterrupted run."""
    hf = _integration("huggingface")
    example = _example("huggingface_tiny_bert")
    from transformers import Trainer, TrainerCallback, TrainingArguments

    train, probe = example.ContainsSeven(64, seed=5), example.ContainsSeven(24, seed=1)
    inputs = {"input_ids": probe.input_ids, "attention_mask": probe.attention_mask}

    class Die(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 6:
                raise RuntimeError("planted failure")

    def train_run(path: Path, out: Path, *, die: bool = False, resume: str | None = None):
        callback = hf.TrajectoryCallback(path, inputs, probe.labels, run_id="s0", every_n_steps=2,
                                         mode="resume" if resume else "create")
        args = TrainingArguments(output_dir=str(out), num_train_epochs=2,
                                 per_device_train_batch_size=16, learning_rate=2e-3, seed=0,
                                 save_strategy="steps", save_steps=4, report_to=[],
                                 disable_tqdm=True, log_level="error", use_cpu=True,
                                 dataloader_num_workers=0)
        trainer = Trainer(model=example.tiny_bert(0), args=args, train_dataset=train,
                          callbacks=[callback] + ([Die()] if die else []))
        trainer.train(resume_from_checkpoint=resume)

    train_run(tmp_path / "whole.h5", tmp_path / "whole")
    path = tmp_path / "resumed.h5"
    with pytest.raises(RuntimeError, match="planted failure"):
        train_run(path, tmp_path / "ckpt", die=True)
    with ExperimentFile(path) as f:
        assert f.steps("s0").tolist() == [0, 2, 4, 6] and f.run_info("s0").status == "running"
    train_run(path, tmp_path / "ckpt", resume=str(tmp_path / "ckpt" / "checkpoint-4"))
    with ExperimentFile(tmp_path / "whole.h5") as whole, ExperimentFile(path) as resumed:
        resumed.verify()
        assert resumed.run_info("s0").status == "complete"
        assert resumed.steps("s0").tolist() == whole.steps("s0").tolist() == [0, 2, 4, 6, 8]
        np.testing.assert_allclose(resumed.outputs("s0"), whole.outputs("s0"), atol=1e-5)


# --------------------------------------------------------------------------- missing extras


@pytest.mark.parametrize("module,package,extra", [("lightning", "lightning", "lightning"),
                                                  ("huggingface", "transformers", "huggingface")])
def test_a_missing_framework_is_one_line_naming_the_extra(module, package, extra):
    code = (f"import sys; sys.modules[{package!r}] = None\n"
            "try:\n"
            f"    import trajviz.integrations.{module}\n"
            "except ImportError as exc:\n"
            "    print(type(exc).__name__, exc)\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    out = res.stdout.strip()
    assert res.returncode == 0 and len(out.splitlines()) == 1, (out, res.stderr)
    assert out.startswith("MissingExtraError") and f"pip install 'trajviz[{extra}]'" in out
