"""trajviz reproduce --plan: counts of the missing work against a small study file, finished runs
(result files and chunk shards) not counted, the calibrated estimate, the CLI."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from trajviz.cli import main
from trajviz.reproduce.chunks import shard_path
from trajviz.reproduce.plan import Calibration, plan_reproduction
from trajviz.reproduce.studies import load_studies, result_path
from trajviz.training.runner import record_experiment

# digits: 120 train / 40 valid / 40 test examples; probe = the 40 test examples
STUDY = """\
study = "depth"
findings = ["F1", "F2", "F3", "F5"]

[base]
seeds = [0, 1, 2]
engine = { nets_per_batch = 2 }
model = { width = 8 }

[base.train]
epochs = 2
lr = 0.1
batch_size = 20

[base.pretrain]
epochs = 3
lr = 0.01
batch_size = 40
methods = ["none", "sdae"]

[[settings]]
id = "depth1"
set = { "model.depth" = 1 }

[[settings]]
id = "depth2"
set = { "model.depth" = 2, "train.epochs" = 5 }

[profiles.quick]
set = { "dataset.name" = "digits", "dataset.n_train" = 120, "dataset.n_valid" = 40, "dataset.n_test" = 40 }

[profiles.full]
set = {}
"""


@pytest.fixture
def studies(tmp_path):
    folder = tmp_path / "studies"
    folder.mkdir()
    (folder / "depth.toml").write_text(STUDY)
    return folder


def _counts(plan):
    return {s.key: (s.runs, s.net_epochs, s.updates, s.pretrain_layer_epochs, s.pretrain_updates,
                    s.eval_examples) for s in plan.settings}


def test_selection_runs_are_counted(studies, tmp_path):
    """A study that selects per condition trains its grid points on the selection seeds first:
    the plan counts them in a row of their own, before the setting's."""
    (studies / "depth.toml").write_text(STUDY.replace(
        "[base]", '[select]\nseeds = [7, 8]\ngrid = { "train.lr" = [0.1, 0.3], "pretrain.lr" = [0.01, 0.1] }\n\n[base]'))
    plan = plan_reproduction(only="F5", output=tmp_path / "out", studies_dir=studies, devices=())
    rows = {s.key: s for s in plan.settings}
    assert list(rows) == ["depth/depth1 (select)", "depth/depth1", "depth/depth2 (select)",
                          "depth/depth2"]
    sel = rows["depth/depth2 (select)"]
    # none tries 2 points (pretrain.* does not vary for it), sdae 2 x 2; 2 seeds each
    assert sel.runs == (2 + 4) * 2 and sel.net_epochs == (2 + 4) * 2 * 5
    assert sel.pretrain_layer_epochs == 4 * 2 * 2 * 3
    assert rows["depth/depth2"].runs == 6  # the training itself, as without selection


def test_counts_match_the_study_file(studies, tmp_path):
    plan = plan_reproduction(only="F5", output=tmp_path / "out", studies_dir=studies, devices=())
    # 3 seeds x 2 methods = 6 runs; 120 / 20 = 6 updates per epoch; pre-training: 120 / 40 = 3
    # updates per layer-epoch, 3 epochs per layer, only the 3 sdae nets, `depth` layers each;
    # evaluation: (epochs + 1) checkpoints x (120 + 40 + 40 examples + 40 probe) per net
    assert _counts(plan) == {
        "depth/depth1": (6, 6 * 2, 6 * 2 * 6, 3 * 1 * 3, 3 * 1 * 3 * 3, 6 * 3 * 240),
        "depth/depth2": (6, 6 * 5, 6 * 5 * 6, 3 * 2 * 3, 3 * 2 * 3 * 3, 6 * 6 * 240),
    }
    assert plan.total("updates") == 72 + 180 and plan.devices == []
    text = plan.format()
    assert "depth/depth2" in text and "180" in text and "no time estimate" in text


def test_finished_runs_in_results_and_shards_are_not_counted(studies, tmp_path):
    results = tmp_path / "out" / "results"
    st = load_studies(studies, "quick")["depth"]
    depth1, depth2 = st.setting("depth1"), st.setting("depth2")
    record_experiment(depth1.config, result_path(results, depth1))          # all of depth1
    for method in ("none", "sdae"):                                          # depth2's first batch
        chunk = depth2.config.replace(seeds=[0, 1])
        chunk = chunk.replace(pretrain=dataclasses.replace(chunk.pretrain, methods=[method]))
        shard = shard_path(results, depth2, method, [0, 1])
        shard.parent.mkdir(parents=True, exist_ok=True)
        record_experiment(chunk, shard)
    plan = plan_reproduction(only="F5", output=tmp_path / "out", studies_dir=studies, devices=())
    counts = _counts(plan)
    assert counts["depth/depth1"] == (0, 0, 0, 0, 0, 0)
    # seeds 0 and 1 are done for both methods: seed 2 remains, a batch of its own
    assert counts["depth/depth2"] == (2, 2 * 5, 2 * 5 * 6, 1 * 2 * 3, 1 * 2 * 3 * 3, 2 * 6 * 240)


def test_estimate_is_calibrated_and_scales_with_the_work(studies, tmp_path):
    plan = plan_reproduction(only="F5", output=tmp_path / "out", studies_dir=studies, devices=["cpu"],
                             calibration_seconds=0.005)
    s1, s2 = (s.seconds["cpu"] for s in plan.settings)
    assert 0 < s1 < s2 < 60  # depth2 trains deeper nets for more epochs
    assert plan.seconds("cpu") == pytest.approx(s1 + s2)
    assert "estimate on cpu" in plan.format()


def test_calibration_costs_grow_with_the_net():
    cal = Calibration("cpu", seconds=0.005)
    small = cal.finetune_update([64, 8, 10], batch=10, k=2)
    big = cal.finetune_update([64, 512, 512, 10], batch=10, k=2)
    assert 0 < small < big
    assert cal.sdae_update([64, 256, 256, 10], 1, batch=10, k=2, tied=True) > \
        cal.sdae_update([64, 256, 256, 10], 0, batch=10, k=2, tied=True) * 0.5


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_plan_estimates_on_cuda(studies, tmp_path):
    plan = plan_reproduction(only="F5", output=tmp_path / "out", studies_dir=studies, devices=None)
    assert plan.devices == ["cpu", "cuda"]
    assert all(s.seconds["cuda"] > 0 for s in plan.settings)
    assert "estimate on cuda" in plan.format()


def test_cli_plan_trains_nothing(studies, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["reproduce", "--plan", "--only", "F5", "--studies", str(studies), "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "depth/depth1" in text and "depth/depth2" in text and "estimate on cpu" in text
    assert "180" in text  # depth2's updates
    assert not out.exists()


# --------------------------------------------------------------------------- the medium profile


def _totals(profile):
    return plan_reproduction(profile=profile, output="/nonexistent", devices=()).to_dict()["totals"]


def test_medium_profile_lies_between_quick_and_full():
    from trajviz.reproduce.findings import FINDINGS

    studies = load_studies(None, "medium")
    assert {s for f in FINDINGS.values() for s in f.studies} <= set(studies)
    depth4 = studies["depth"].setting("depth4").config
    assert depth4.dataset.name == "mnist" and depth4.engine.device == "auto"
    plan = plan_reproduction(profile="medium", output="/nonexistent", devices=())
    per_net = {s.key: s.updates // s.nets for s in plan.settings}
    assert per_net["depth/depth4"] >= 100_000  # 4 layers without pre-training need many updates
    quick, medium, full = (_totals(p) for p in ("quick", "medium", "full"))
    assert quick["updates"] < medium["updates"] < full["updates"] / 50


def test_medium_without_mnist_refuses_in_one_line(tmp_path, monkeypatch, capsys):
    empty = tmp_path / "data"
    empty.mkdir()
    monkeypatch.setenv("TRAJVIZ_DATA", str(empty))
    out = tmp_path / "out"
    assert main(["reproduce", "--profile", "medium", "--only", "F6", "-o", str(out)]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "train-images-idx3-ubyte" in err and "t10k-labels-idx1-ubyte" in err
    assert "trajviz data fetch mnist" in err and str(empty) in err
    assert not out.exists()  # refused before anything was written
