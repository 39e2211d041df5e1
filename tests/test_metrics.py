"""Divergence measures (trajviz.trajectories.divergence) on planted trajectories."""

from __future__ import annotations

import json

import numpy as np
import pytest
from synthetic_trajectories import diverging_group, two_groups, write_experiment

from trajviz.cli import main
from trajviz.trajectories.divergence import (divergence_table, divergence_time, knn_accuracy,
                             pairwise_rms_distances, spread)


def test_rms_distance_reference_values():
    # two nets, 2 probes x 2 classes: per-probe distances sqrt(0.5) and 0 -> RMS sqrt(0.25)
    a = np.array([[1.0, 0.0], [0.5, 0.5]]).reshape(-1)
    b = np.array([[0.5, 0.5], [0.5, 0.5]]).reshape(-1)
    d = pairwise_rms_distances(np.stack([a, b]), n_probe=2)
    assert d[0, 1] == pytest.approx(0.5)
    assert d[0, 0] == 0.0 and d[1, 0] == pytest.approx(0.5)


def test_spread_leaves_out_self_pairs():
    d = np.array([[0, 1, 2], [1, 0, 3], [2, 3, 0]], dtype=float)
    assert spread(d) == pytest.approx(2.0)
    assert spread(d, np.array([0, 0, 1])) == pytest.approx(1.0)  # pairs (0,1) only


def test_divergence_time_definition():
    flat_then_up = np.array([1.0, 1.01, 0.99, 1.0, 1.0, 2.0, 3.0, 4.0])
    assert divergence_time(flat_then_up) == 4
    down_then_up = np.array([3.0, 2.0, 1.0, 1.5, 2.5, 3.0])
    assert divergence_time(down_then_up) == 2
    assert divergence_time(np.array([3.0, 2.0, 1.0, 0.5])) is None  # shrinks: no divergence
    assert divergence_time(np.array([1.0, 2.0, 1.0])) is None  # back at its minimum at the end


def test_knn_accuracy_ties_go_to_nearest():
    pos = np.array([0.0, 3.0, 4.0, 1.0, 8.0, 9.0])  # x, x, x, y, y, y on a line
    d = np.abs(pos[:, None] - pos[None, :])
    # k = 2: x@0 ties (y@1 nearer: wrong), y@1 has two x neighbours (wrong), the rest right
    assert knn_accuracy(d, list("xxxyyy"), k=2) == pytest.approx(4 / 6)
    assert np.isnan(knn_accuracy(d, list("xxxxxx")))
    assert np.isnan(knn_accuracy(d, list("xxxxxy")))  # a group of one run has no own neighbour


def test_two_groups_starting_apart_separate(tmp_path):
    path = write_experiment(tmp_path / "two.h5", two_groups())
    table = divergence_table([path], n_boot=50)
    assert table.groups == ["a", "b"]
    assert np.all(table.knn_accuracy >= 0.95)
    cd = table.centroid_distance["a|b"]
    assert np.all(cd > 2 * np.maximum(table.spread["a"], table.spread["b"]) / 2)


@pytest.mark.parametrize("t0", [3, 7])
def test_planted_divergence_time_within_one_checkpoint(tmp_path, t0):
    runs = {**diverging_group(t0), **diverging_group(100, group="e", seed=2)}  # "e" never parts
    path = write_experiment(tmp_path / "div.h5", runs)
    table = divergence_table([path], n_boot=200, seed=0)
    d = table.divergence["d"]
    assert abs(d.checkpoint - t0) <= 1
    assert d.ci_low <= t0 + 1 and d.ci_high >= t0 - 1
    assert d.epoch == pytest.approx(d.checkpoint)  # the writer's epoch = checkpoint index
    assert table.divergence["e"].checkpoint is None


def test_checkpoint_stride_reports_checkpoint_indices(tmp_path):
    path = write_experiment(tmp_path / "div.h5", diverging_group(6))
    table = divergence_table([path], checkpoints="::2", n_boot=50)
    assert table.checkpoint.tolist() == list(range(0, 14, 2))
    assert table.divergence["d"].checkpoint in (4, 6, 8)


def test_table_saves_json_and_csv_and_refuses_overwrite(tmp_path):
    path = write_experiment(tmp_path / "two.h5", two_groups(n_runs=3, T=4))
    table = divergence_table([path], n_boot=20)
    out = table.save(tmp_path / "t.json")
    data = json.loads(out.read_text())
    assert set(data["divergence_time"]) == {"a", "b"} and len(data["per_checkpoint"]) == 4
    csv_text = table.save(tmp_path / "t.csv").read_text().splitlines()
    assert csv_text[0].startswith("checkpoint,epoch,step,spread[a]") and len(csv_text) == 5
    from trajviz.errors import OutputExistsError

    with pytest.raises(OutputExistsError):
        table.save(tmp_path / "t.json")


def test_cli_divergence(tmp_path, capsys):
    path = write_experiment(tmp_path / "two.h5", two_groups(n_runs=3, T=4))
    assert main(["divergence", str(path), "--n-boot", "20", "-k", "3", "--groups", "a,b",
                 "--representation", "sqrt", "-q"]) == 0
    out = capsys.readouterr().out
    assert "knn_accuracy" in out and "divergence time" in out
    saved = json.loads((tmp_path / "two.divergence.json").read_text())
    assert saved["attrs"]["representation"] == "sqrt" and saved["attrs"]["k_requested"] == 3
    assert saved["attrs"]["k"] == 1  # 3 runs per group: at most 2 other runs of one's own group
    # existing output: refused, exit 1, one line
    assert main(["divergence", str(path), "-q"]) == 1
    err = capsys.readouterr().err
    assert "exists" in err and len(err.strip().splitlines()) == 1
    assert main(["divergence", str(path), "-o", str(tmp_path / "x.txt"), "-q"]) == 1
    assert ".json or .csv" in capsys.readouterr().err
    assert main(["divergence", str(path), "--tau", "2", "-o", str(tmp_path / "y.json"), "-q"]) == 1
    assert "tau" in capsys.readouterr().err
