import numpy as np
import pytest

from trajviz.config import TrainConfig, config_from_dict
from trajviz.store import ExperimentFile
from trajviz.training.runner import checkpoint_steps, record_experiment, run_id


def test_checkpoint_schedule():
    per_epoch, steps = checkpoint_steps(95, TrainConfig(epochs=2, batch_size=10), 0)
    assert per_epoch == 10 and steps == [0, 10, 20]
    _, steps = checkpoint_steps(95, TrainConfig(epochs=2, batch_size=10), 4)
    assert steps == [0, 4, 8, 10, 12, 16, 20]


def test_finetuning_lowers_nll_on_shapeset(tmp_path, tiny_dict):
    tiny_dict.update(seeds=[0])
    tiny_dict["dataset"].update(n_train=2000, n_test=400)
    tiny_dict["model"].update(depth=1, width=32)
    tiny_dict["train"].update(epochs=5, lr=0.5)
    tiny_dict["pretrain"].update(methods=["none"])
    out = record_experiment(config_from_dict(tiny_dict), tmp_path / "a.h5")
    with ExperimentFile(out) as f:
        m = f.metrics(run_id("none", 0))
        assert m["train_nll"][-1] < m["train_nll"][0] - 0.05
        assert m["train_nll"].min() < np.log(2) - 0.01  # below chance: it learnt the task
        assert m["test_error"].min() < 0.45
        assert f.steps(run_id("none", 0)).tolist() == [200 * e for e in range(6)]


def test_same_config_and_seed_give_same_numbers(tmp_path, tiny_config):
    a = record_experiment(tiny_config, tmp_path / "a.h5")
    b = record_experiment(tiny_config, tmp_path / "b.h5")
    with ExperimentFile(a) as fa, ExperimentFile(b) as fb:
        assert fa.run_ids() == fb.run_ids() == ["none-seed0", "none-seed1", "sdae-seed0", "sdae-seed1"]
        for rid in fa.run_ids():
            np.testing.assert_array_equal(fa.outputs(rid), fb.outputs(rid))
            for name, arr in fa.params(rid).items():
                np.testing.assert_array_equal(arr, fb.params(rid)[name])


def test_run_does_not_depend_on_batch_mates(tmp_path, tiny_dict):
    """A run's numbers come from its own seed alone, whoever shares its batch."""
    together = record_experiment(config_from_dict(tiny_dict), tmp_path / "t.h5")
    tiny_dict["seeds"] = [1]
    alone = record_experiment(config_from_dict(tiny_dict), tmp_path / "s.h5")
    with ExperimentFile(together) as ft, ExperimentFile(alone) as fs:
        for method in ("none", "sdae"):
            np.testing.assert_allclose(ft.outputs(run_id(method, 1)), fs.outputs(run_id(method, 1)),
                                       rtol=0, atol=1e-5)


def test_pretraining_changes_the_start_but_not_the_seed_streams(tmp_path, tiny_config):
    out = record_experiment(tiny_config, tmp_path / "a.h5")
    with ExperimentFile(out) as f:
        none0, sdae0 = f.outputs("none-seed0", 0), f.outputs("sdae-seed0", 0)
        assert not np.allclose(none0, sdae0)
        assert f.run_info("sdae-seed0").pretrain == "sdae"


def test_probe_larger_than_split_is_refused(tmp_path, tiny_dict):
    from trajviz.errors import ConfigError

    tiny_dict["probe"]["n"] = 61
    with pytest.raises(ConfigError, match="probe.n = 61 exceeds the 60 examples"):
        record_experiment(config_from_dict(tiny_dict), tmp_path / "a.h5")
    assert not (tmp_path / "a.h5").exists()


@pytest.mark.parametrize("split, n", [("valid", 30), ("train", 0)])
def test_probe_outputs_are_the_nets_softmax_on_the_probe_rows(tmp_path, tiny_dict, split, n):
    """The probe outputs come from the forward pass of their split (its first n rows, or all
    of it): they are each net's softmax on exactly those inputs, at every checkpoint."""
    import torch

    from trajviz.data import load_dataset
    from trajviz.training.nets import mlp_module

    tiny_dict.update(seeds=[0, 1])
    tiny_dict["pretrain"].update(methods=["none"])
    tiny_dict["probe"] = {"split": split, "n": n}
    tiny_dict["record"] = {"params": "all"}
    cfg = config_from_dict(tiny_dict)
    out = record_experiment(cfg, tmp_path / "a.h5")
    rows = load_dataset(cfg.dataset).split(split).x
    x = torch.as_tensor(rows[:n] if n else rows)
    with ExperimentFile(out) as f:
        for rid in f.run_ids():
            traj = f.params(rid, "trajectory")
            for t in range(f.outputs(rid).shape[0]):
                state = {k: torch.as_tensor(v[t]) for k, v in traj.items()}
                model = mlp_module([x.shape[1], 16, 16, 2])
                model.load_state_dict(state)
                with torch.no_grad():
                    expected = torch.softmax(model(x), -1).numpy()
                np.testing.assert_allclose(f.outputs(rid, t), expected, rtol=0, atol=2e-6)
