"""The public Recorder, driven from a plain PyTorch loop as a user would."""

import numpy as np
import torch
from torch import nn

from trajviz import Recorder
from trajviz.cli import main
from trajviz.store import ExperimentFile


class TinyConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.head = nn.Linear(4 * 4 * 4, 10)

    def forward(self, x):
        h = torch.relu(self.conv(x.view(-1, 1, 8, 8)))
        h = nn.functional.max_pool2d(h, 2)
        return self.head(h.flatten(1))


def test_convnet_on_digits_in_a_plain_loop(tmp_path, capsys):
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.data / 16, dtype=torch.float32)
    y = torch.tensor(digits.target)
    torch.manual_seed(0)  # test code may seed globally; the library never does
    model = TinyConvNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    path = tmp_path / "conv.h5"
    rec = Recorder(path, x[:200], y[:200], run_id="conv-seed0", seed=0, group="conv")
    rec.record(model, step=0)
    step = 0
    for epoch in range(3):
        for i in range(200, 1797, 32):
            loss = nn.functional.cross_entropy(model(x[i:i + 32]), y[i:i + 32])
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
        with torch.no_grad():
            nll = float(nn.functional.cross_entropy(model(x[200:]), y[200:]))
        rec.record(model, step=step, epoch=epoch + 1, train_nll=nll)
    rec.save_params(model)
    rec.close()

    with ExperimentFile(path) as f:
        assert f.run_ids() == ["conv-seed0"]
        info = f.run_info("conv-seed0")
        assert info.group == "conv" and info.status == "complete" and info.n_checkpoints == 4
        probs = f.outputs("conv-seed0")
        np.testing.assert_allclose(probs.sum(-1), 1, atol=1e-5)
        assert f.steps("conv-seed0")[-1] == step
        nll = f.metrics("conv-seed0")["train_nll"]
        assert np.isnan(nll[0]) and nll[-1] < nll[1]
        assert "conv.weight" in f.params("conv-seed0")
    assert main(["info", str(path)]) == 0
    assert "conv" in capsys.readouterr().out


def test_several_runs_and_append_mode(tmp_path):
    x = np.random.default_rng(0).random((20, 5)).astype(np.float32)
    path = tmp_path / "r.h5"
    for seed in range(2):
        torch.manual_seed(seed)
        model = nn.Linear(5, 3)
        with Recorder(path, x, run_id=f"lin{seed}", seed=seed, mode="resume" if seed else "create") as rec:
            rec.record(model, step=0)
            rec.record(model, step=1)
    with ExperimentFile(path) as f:
        assert f.run_ids() == ["lin0", "lin1"]
        assert f.probe_targets().tolist() == [-1] * 20


def test_info_flags_groups_still_on_the_chance_plateau(tmp_path, capsys):
    """A group whose runs end at train NLL ~ ln C gets a note; a group that learned does not."""
    import json

    from trajviz.store.summary import summarize

    x = torch.rand(20, 3)
    model = nn.Linear(3, 2)
    path = tmp_path / "plateau.h5"
    finals = {"stuck": [0.70, 0.69], "learned": [0.30, 0.69]}
    for i, (group, values) in enumerate(finals.items()):
        for seed, final in enumerate(values):
            with Recorder(path, x, run_id=f"{group}{seed}", seed=seed, group=group,
                          mode="resume" if (i or seed) else "create") as rec:
                rec.record(model, step=0, train_nll=0.70)
                rec.record(model, step=10, train_nll=final)
    summary = summarize(path)
    assert summary.groups["stuck"].at_chance(2) == 2
    assert summary.groups["learned"].at_chance(2) == 1
    text = summary.format()
    assert "note: 2/2 runs of group 'stuck'" in text
    assert "note: 1/2 runs of group 'learned'" in text
    assert main(["info", str(path), "-o", str(tmp_path / "s.json"), "--quiet"]) == 0
    data = json.loads((tmp_path / "s.json").read_text())
    assert data["groups"]["stuck"]["runs_at_chance"] == 2
    capsys.readouterr()

    path2 = tmp_path / "learned.h5"
    with Recorder(path2, x, run_id="a", seed=0) as rec:
        rec.record(model, step=0, train_nll=0.70)
        rec.record(model, step=10, train_nll=0.40)
    assert "plateau" not in summarize(path2).format()


def test_a_run_is_complete_only_with_its_final_parameters(tmp_path, caplog):
    """docs/format.md: a complete run has params/final; close() without them leaves it running."""
    import logging

    import pytest

    x = np.random.default_rng(0).random((10, 3)).astype(np.float32)
    model = nn.Linear(3, 2)
    path = tmp_path / "p.h5"
    with caplog.at_level(logging.WARNING, logger="trajviz"):
        with Recorder(path, x, run_id="noparams") as rec:
            rec.record(model, step=0)
    assert "'noparams' left 'running'" in caplog.text
    with Recorder(path, x, run_id="withparams", mode="resume") as rec:
        rec.record(model, step=0)
        rec.save_params(model)
    with ExperimentFile(path) as f:
        assert f.run_info("noparams").status == "running"
        assert f.run_info("withparams").status == "complete"
        assert "weight" in f.params("withparams")
    with Recorder(path, x, n_classes=2, mode="resume") as rec:
        run = rec.start_run("explicit", seed=1)
        run.append(np.full((10, 2), 0.5, dtype=np.float32), 0)
        with pytest.raises(ValueError, match="save_params"):
            run.finish()
        run.finish("diverged")  # a diverged run needs no parameters
    with ExperimentFile(path) as f:
        assert f.run_info("explicit").status == "diverged"
