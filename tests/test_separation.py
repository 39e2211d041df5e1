"""Separation tests of two groups of trajectories (trajviz.trajectories.separation), on planted
files written by an independent program (plain h5py) and on null data."""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import pytest
from synthetic_trajectories import apart_together_parting, write_plain_h5py

from trajviz.cli import main
from trajviz.trajectories.divergence import divergence_table
from trajviz.trajectories.separation import (ALPHA, INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED,
                                             choose_k, end_spread_ratio, knn_correct,
                                             knn_neighbours, permutation_test_knn, seed_pairs,
                                             separation, separation_verdict)


def test_k_is_capped_by_the_smallest_group():
    assert choose_k([10, 10]) == (5, "")
    assert choose_k([4, 9]) == (3, "")  # 3 other runs in the smaller group
    assert choose_k([3, 3]) == (1, "")  # 2 others: largest odd k <= 2
    assert choose_k([10, 10], 2) == (2, "")  # a valid k is kept
    k, msg = choose_k([3, 3], 5)
    assert k == 1 and "k = 5" in msg and "using k = 1" in msg and "\n" not in msg
    with pytest.raises(Exception, match="at least 2 runs"):
        choose_k([1, 5])


def _brute_knn_correct(dist: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Leave-one-out k-NN majority vote written out plainly (ties: nearest tied group)."""
    out = []
    for i in range(len(labels)):
        d = dist[i].copy()
        d[i] = np.inf
        nn = np.argsort(d, kind="stable")[:k]
        votes = {}
        for j in nn:
            votes[labels[j]] = votes.get(labels[j], 0) + 1
        best = max(votes.values())
        out.append(next(labels[j] for j in nn if votes[labels[j]] == best) == labels[i])
    return np.array(out)


@pytest.mark.parametrize("n_groups,k", [(2, 1), (2, 3), (2, 4), (3, 3), (3, 2)])
def test_knn_vote_matches_a_plain_implementation(n_groups, k):
    rng = np.random.default_rng(n_groups * 10 + k)
    x = rng.normal(size=(15, 4))
    dist = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))
    labels = rng.integers(0, n_groups, 15)
    got = knn_correct(knn_neighbours(dist, k)[None], labels)[0]
    np.testing.assert_array_equal(got, _brute_knn_correct(dist, labels, k))


def _separated(n_a: int, n_b: int, t_len: int = 3, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(t_len, n_a + n_b, 5)) * 0.1
    x[:, n_a:, 0] += 10.0
    return np.sqrt(((x[:, :, None] - x[:, None]) ** 2).sum(-1))


def test_exact_permutation_p_values_of_perfect_separation():
    dist = _separated(4, 4)
    in_b = np.arange(8) >= 4
    nbrs = knn_neighbours(dist, 3)
    res = permutation_test_knn(nbrs, in_b)  # 70 splits of 8 runs into 4 + 4: exact
    assert res.exact and res.n_relabellings == 70
    np.testing.assert_allclose(res.accuracy, 1.0)
    np.testing.assert_allclose(res.p_value, 2 / 70)  # the split and its mirror image
    assert res.p_min == pytest.approx(2 / 70) and res.stay_p_value == pytest.approx(2 / 70)
    paired = permutation_test_knn(nbrs, in_b, [(i, i + 4) for i in range(4)])
    assert paired.exact and paired.n_relabellings == 16
    np.testing.assert_allclose(paired.p_value, 2 / 16)
    # 4 pairs cannot reach 5%: inconclusive, never "not reproduced"
    assert separation_verdict(float(paired.p_value[0]), paired.p_min) == INCONCLUSIVE


def test_verdict_rule():
    assert separation_verdict(0.01, 0.002) == REPRODUCED
    assert separation_verdict(ALPHA, 0.002) == REPRODUCED
    assert separation_verdict(0.2, 0.002) == INCONCLUSIVE
    assert separation_verdict(0.7, 0.002) == NOT_REPRODUCED
    assert separation_verdict(0.01, 0.1) == INCONCLUSIVE  # a test that cannot reach alpha
    assert separation_verdict(math.nan, 0.002) == INCONCLUSIVE


def test_seed_pairs():
    assert seed_pairs([0, 1, 2], [2, 0, 1]) == [(0, 1), (1, 2), (2, 0)]
    assert seed_pairs([0, 1, 2], [0, 1, 3]) is None
    assert seed_pairs([0, 1], [0, 1, 2]) is None
    assert seed_pairs([-1, -1], [-1, -1]) is None  # unknown seeds pair nothing


def test_null_p_values_are_valid_and_spread_out():
    """Both groups from one distribution: first-checkpoint p-values over 40 draws are not too
    small (P(p <= u) <= u, with some slack) and not stuck at one value."""
    ps = []
    for seed in range(40):
        rng = np.random.default_rng(seed)
        x = rng.normal(size=(1, 12, 6))
        dist = np.sqrt(((x[:, :, None] - x[:, None]) ** 2).sum(-1))
        in_b = np.arange(12) >= 6
        ps.append(permutation_test_knn(knn_neighbours(dist, 3), in_b, n_permutations=999,
                                       seed=seed).p_value[0])
    ps = np.array(ps)
    for u in (0.05, 0.25, 0.5):
        assert np.mean(ps <= u) <= u + 0.1, (u, np.sort(ps))
    assert np.mean(ps <= 0.5) >= 0.2 and np.ptp(ps) > 0.5


def test_end_spread_ratio_interval_contains_its_value():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(size=(10, 20)), 0.5 * rng.normal(size=(10, 20))])
    dist = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))
    e = end_spread_ratio(dist, np.arange(20) >= 10, n_boot=500, seed=1)
    assert 0.35 < e.value < 0.65 and e.ci_low <= e.value <= e.ci_high < 1.0 and not e.note


def test_fewer_than_three_runs_gives_nulls_and_one_warning(caplog):
    dist = _separated(2, 5)
    with caplog.at_level(logging.WARNING):
        s = separation(dist, ["A"] * 2 + ["B"] * 5, ["A", "B"])
    d = s.to_dict()
    assert d["start_apart"] == {"p_value": None, "verdict": INCONCLUSIVE}
    assert d["end_spread_ratio"] == {"value": None, "ci_low": None, "ci_high": None}
    assert all(r["p_value"] is None for r in d["per_checkpoint"])
    msgs = [r.getMessage() for r in caplog.records if "no separation test" in r.getMessage()]
    assert len(msgs) == 1 and "\n" not in msgs[0] and "2 run" in msgs[0]


# --------------------------------------------------------------------------- files and the CLI


def _run_cli(tmp_path, runs, *extra):
    path = write_plain_h5py(tmp_path / "f.h5", runs)
    out = tmp_path / "out.json"
    assert main(["divergence", str(path), "--groups", "A,B", "-o", str(out), "--n-boot", "200",
                 "--permutations", "999", "-q", *extra]) == 0
    return json.loads(out.read_text())


def test_planted_start_apart_stay_apart_and_parting(tmp_path):
    """Two groups that start apart, move together, then part at checkpoint 6 (B parts more
    slowly, so it ends in a smaller region)."""
    t0 = 6
    data = _run_cli(tmp_path, apart_together_parting(t0, rate_b=0.25))
    sep = data["separation"]
    assert set(sep) == {"per_checkpoint", "start_apart", "stay_apart", "end_spread_ratio"}
    assert [set(r) for r in sep["per_checkpoint"]] == [{"checkpoint", "knn_accuracy", "p_value"}] * 12
    assert [r["checkpoint"] for r in sep["per_checkpoint"]] == list(range(12))
    assert all(r["knn_accuracy"] == 1.0 and r["p_value"] <= ALPHA for r in sep["per_checkpoint"])
    assert sep["start_apart"]["verdict"] == REPRODUCED and sep["start_apart"]["p_value"] <= ALPHA
    assert sep["stay_apart"]["verdict"] == REPRODUCED and sep["stay_apart"]["p_value"] <= ALPHA
    end = sep["end_spread_ratio"]
    assert end["ci_low"] <= end["value"] <= end["ci_high"] < 1.0
    for g in ("A", "B"):
        d = data["divergence_time"][g]
        assert d["checkpoint"] == t0 and d["ci_low"] <= t0 <= d["ci_high"]
    assert data["attrs"]["separation"]["paired"] is True  # same seeds in both groups
    assert data["attrs"]["separation"]["twin_nearest"] == 0.0  # planted nets share no init
    assert data["attrs"]["k"] == 5


def test_null_file_is_not_called_separated(tmp_path):
    data = _run_cli(tmp_path, apart_together_parting(6, same_distribution=True,
                                                     paired_seeds=False))
    sep = data["separation"]
    assert data["attrs"]["separation"]["paired"] is False
    assert sep["start_apart"]["verdict"] != REPRODUCED
    assert sep["stay_apart"]["verdict"] != REPRODUCED
    assert sep["start_apart"]["p_value"] > ALPHA


def test_k_too_large_for_groups_of_three_warns_in_one_line(tmp_path, caplog):
    runs = apart_together_parting(3, n_runs=3, T=5)
    with caplog.at_level(logging.WARNING):
        data = _run_cli(tmp_path, runs, "-k", "5")
    lines = [r.getMessage() for r in caplog.records if "k = 5" in r.getMessage()]
    assert len(lines) == 1 and "using k = 1" in lines[0] and "\n" not in lines[0]
    assert data["attrs"]["k"] == 1 and data["attrs"]["k_requested"] == 5
    acc = [r["knn_accuracy"] for r in data["separation"]["per_checkpoint"]]
    assert min(acc) == 1.0  # 5 neighbours would have voted these well-separated groups wrong
    # 3 + 3 paired runs cannot reach 5%: the report says so, the verdicts are inconclusive
    assert data["separation"]["start_apart"]["verdict"] == INCONCLUSIVE
    assert any("cannot reach" in n for n in data["attrs"]["separation"]["notes"])


def test_pairing_option_reaches_the_test(tmp_path, capsys):
    runs = apart_together_parting(3, n_runs=4, T=4)
    path = write_plain_h5py(tmp_path / "p.h5", runs)
    assert main(["divergence", str(path), "--permutations", "0", "-o", str(tmp_path / "x.json"),
                 "-q"]) == 1
    err = capsys.readouterr().err
    assert "n_permutations 0" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.json").exists()
    data = _run_cli(tmp_path, runs, "--pairing", "independent")
    assert data["attrs"]["separation"]["paired"] is False
    assert data["attrs"]["separation"]["n_relabellings"] == 70  # C(8, 4): exact


def test_pairing_follows_the_files_config(tmp_path):
    """pretrain.shared_init = false: independent nets even though the seeds pair; a trajviz
    config without the key (recorded before it existed): paired."""
    runs = apart_together_parting(3, n_runs=4, T=4)
    for cfg, paired in (({"pretrain": {"shared_init": False}}, False),
                        ({"pretrain": {"methods": ["A", "B"]}}, True)):
        path = write_plain_h5py(tmp_path / f"{paired}.h5", runs, config=cfg)
        table = divergence_table([path], n_boot=20, n_permutations=99)
        assert table.separation.paired is paired


def test_more_than_two_groups_without_a_choice_writes_null(tmp_path, caplog):
    runs = {**apart_together_parting(3, n_runs=3, T=4),
            **apart_together_parting(3, n_runs=3, T=4, names=("C", "D"), seed=1)}
    path = write_plain_h5py(tmp_path / "four.h5", runs)
    with caplog.at_level(logging.WARNING):
        table = divergence_table([path], n_boot=10, n_permutations=99)
    assert table.separation is None and table.to_dict()["separation"] is None
    assert any("exactly two groups" in r.getMessage() for r in caplog.records)
    assert np.isfinite(table.knn_accuracy).all()  # the k-NN accuracy over all four groups
    two = divergence_table([path], groups=["D", "A"], n_boot=10, n_permutations=99)
    assert two.separation.groups == ("D", "A")  # the order given: ratio A's spread over D's
