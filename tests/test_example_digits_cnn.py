"""examples/digits_cnn.py, run as a user would: a CNN with batch norm on the bundled digits,
recorded by Recorder, projected by `trajviz project`, scanned by scan_model; the scan is
checked against plain PyTorch evaluations of the same perturbed model."""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from trajviz.cli import main as cli
from trajviz.landscape.modules import ModuleLayout
from trajviz.store import ExperimentFile, LandscapeFile, read_embedding

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "digits_cnn.py"


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    spec = importlib.util.spec_from_file_location("digits_cnn", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = module.main(tmp_path_factory.mktemp("digits_cnn"), seeds=(0, 1), epochs=3, points=7,
                      scanned=(0,), hessian_iters=4, quiet=True)
    return out


def _plain_loss(model: nn.Module, layout: ModuleLayout, step: np.ndarray, x, y) -> float:
    """Loss of a copy of ``model`` whose parameters moved by ``step`` (P,), evaluated the
    plain way: load the moved parameters, eval mode, forward, mean cross-entropy."""
    m = copy.deepcopy(model)
    moved = layout.views(torch.as_tensor(step, dtype=torch.float32))
    with torch.no_grad():
        for name, p in m.named_parameters():
            p.add_(moved[name])
    m.eval()
    with torch.no_grad():
        return float(nn.functional.cross_entropy(m(x), y))


def test_recorded_and_projected(example):
    with ExperimentFile(example["record"]) as f:
        runs = {r.run_id: r for r in f.runs()}
        assert set(runs) == {"seed0", "seed1"} and all(r.status == "complete" for r in runs.values())
        traj = f.params("seed0", "trajectory")
        assert traj["features.0.weight"].shape[0] == 4  # epochs 0..3
        assert "features.1.running_mean" in traj  # the batch-norm statistics were recorded too
    emb = read_embedding(example["embedding"])
    assert emb["coords"].shape == (2 * 4, 2)
    assert set(emb["points"]["run"]) == {"seed0", "seed1"}


def test_scan_equals_plain_pytorch_at_three_points(example):
    model = example["models"][0]
    x, y = example["data"]["train"]
    layout = ModuleLayout.of(model)
    res = example["result"]
    run = res.run("seed0")
    a = list(res.alphas)
    with LandscapeFile(example["landscape"]) as f:
        d = {k: f.array(f"runs/seed0/directions/{k}").astype(np.float64) for k in ("filter", "pca")}
    checks = [(run.scans1d["filter"]["nll"][0, 0], a[0] * d["filter"][0]),
              (run.scans1d["pca"]["nll"][1, 6], a[6] * d["pca"][1]),
              (run.scans2d["filter"]["nll"][1, 5], a[1] * d["filter"][0] + a[5] * d["filter"][1])]
    values = []
    for scanned, step in checks:
        plain = _plain_loss(model, layout, step, x, y)
        assert scanned == pytest.approx(plain, rel=1e-5)
        values.append(plain)
    assert len(set(values)) == 3 and min(values) > run.loss_at_theta[0]  # three distinct points
    assert model.training is False  # main() left its models in eval mode; the scan kept that


def test_filter_directions_have_each_output_channels_norm(example):
    model = example["models"][0]
    layout = ModuleLayout.of(model)
    with LandscapeFile(example["landscape"]) as f:
        rows = f.array("runs/seed0/directions/filter").astype(np.float64)
    params = dict(model.named_parameters())
    for row in rows:
        parts = layout.views(torch.as_tensor(row))
        for name, p in params.items():
            w = p.detach().double()
            if p.ndim >= 2:  # conv (out, in, 3, 3) and linear (out, in): one norm per output row
                np.testing.assert_allclose(parts[name].flatten(1).norm(dim=1),
                                           w.flatten(1).norm(dim=1), rtol=1e-5, err_msg=name)
            else:  # biases and batch-norm weights and biases: zeroed (Li et al.'s biasbn)
                assert not parts[name].any(), name


def test_flatness_table_and_the_cli_refusing_the_recorder_file(example, tmp_path, capsys):
    text = example["table"].format()
    assert "curvature[filter]" in text and "top_eig" in text
    rc = cli(["landscape", str(example["record"]), "-o", str(tmp_path / "l.h5"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 1 and len(err.strip().splitlines()) == 1 and "scan_model" in err
