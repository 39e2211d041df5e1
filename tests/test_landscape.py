"""trajviz.landscape: directions, batched scans, flatness measures, Hessian, resume, CLI."""

from __future__ import annotations

import copy
import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from trajviz.cli import main
from trajviz.config import config_from_dict
from trajviz.data import load_dataset
from trajviz.errors import ConfigError, FormatError, OutputExistsError
from trajviz.landscape import (LandscapeResult, RunScan, ScanSettings, flatness_table, load_result,
                               loss_rise, quadratic_curvature, scan_file)
from trajviz.landscape import directions as dirs
from trajviz.landscape import scan as scan_mod
from trajviz.landscape.hessian import hutchinson_trace, hvp_operator, lanczos_top, power_iteration
from trajviz.landscape.params import ParamLayout, PointEvaluator, choose_strategy, mean_nll
from trajviz.training.nets import mlp_module
from trajviz.record import Recorder
from trajviz.store import DIVERGED, ExperimentFile, LandscapeFile
from trajviz.training.runner import record_experiment

from conftest import TINY

QUICK = dict(n_directions=2, points=7, span=1.5, hessian=False)


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    """A tiny recorded experiment (2 seeds x none/sdae) with every checkpoint's parameters."""
    d = copy.deepcopy(TINY)
    d["record"] = {"params": "all"}
    cfg = config_from_dict(d)
    path = record_experiment(cfg, tmp_path_factory.mktemp("landscape") / "tiny.h5")
    return path, cfg


def _train_tensors(cfg):
    split = load_dataset(cfg.dataset).train
    return torch.as_tensor(split.x), torch.as_tensor(split.y)


def _final(path, run_id):
    with ExperimentFile(path) as f:
        return f.params(run_id)


# --------------------------------------------------------------------------- evaluation


def test_loss_at_alpha_zero_equals_direct_evaluation(experiment, tmp_path):
    path, cfg = experiment
    res = scan_file(path, tmp_path / "ls.h5", settings=ScanSettings(directions=("gaussian",), **QUICK))
    x, y = _train_tensors(cfg)
    mid = res.alphas.size // 2
    assert res.alphas[mid] == 0.0
    for run in res.runs:
        state = _final(path, run.run_id)
        model = mlp_module(ParamLayout.from_state(state).sizes)
        model.load_state_dict({k: torch.as_tensor(v) for k, v in state.items()})
        with torch.no_grad():
            logits = model(x)
        direct_nll = float(F.cross_entropy(logits.double(), y))
        direct_err = float((logits.argmax(1) != y).double().mean())
        np.testing.assert_allclose(run.scans1d["gaussian"]["nll"][:, mid], direct_nll, rtol=1e-5)
        np.testing.assert_allclose(run.scans1d["gaussian"]["error"][:, mid], direct_err, atol=1e-12)
        np.testing.assert_allclose(run.loss_at_theta[0], direct_nll, rtol=1e-5)


@pytest.mark.parametrize("strategy", ["auto", "reuse", "plain", "batched"])
def test_batched_points_equal_one_model_copy_per_point(experiment, strategy):
    path, cfg = experiment
    x, y = _train_tensors(cfg)
    state = _final(path, "sdae-seed1")
    layout = ParamLayout.from_state(state)
    theta = layout.flatten(state)
    rng = np.random.default_rng(0)
    d = rng.standard_normal((2, layout.size)) * 0.3
    coeffs = rng.uniform(-2, 2, size=(9, 2))
    nll, err = PointEvaluator(layout, theta, d, x, y, dtype=torch.float64,
                              strategy=strategy)(coeffs, max_points=4)
    for k, c in enumerate(coeffs):
        model = mlp_module(layout.sizes).double()
        model.load_state_dict({n: torch.as_tensor(v) for n, v in layout.unflatten(theta + c @ d).items()})
        with torch.no_grad():
            logits = model(x.double())
        assert nll[k] == pytest.approx(float(F.cross_entropy(logits, y)), rel=1e-10)
        assert err[k] == pytest.approx(float((logits.argmax(1) != y).double().mean()))


def test_strategy_rule_follows_the_measured_costs():
    cpu = torch.device("cpu")
    big = [784, 800, 800, 10]
    assert choose_strategy(big, 10000, 51, 1, cpu) == "reuse"      # wide first layer, many points
    assert choose_strategy(big, 10000, 1, 1, cpu) == "plain"       # one point: no reuse to pay for
    assert choose_strategy([64, 32, 10], 1000, 51, 1, cpu) == "batched"  # tiny points
    assert choose_strategy(big, 10000, 51, 1, torch.device("cuda")) == "batched"
    with pytest.raises(ValueError, match="strategy 'fast'"):
        PointEvaluator(ParamLayout.from_state({"0.weight": np.zeros((2, 3)), "0.bias": np.zeros(2)}),
                       np.zeros(8), np.zeros((1, 8)), torch.zeros(1, 3), torch.zeros(1),
                       strategy="fast")


# --------------------------------------------------------------------------- flatness measures


def test_quadratic_fit_recovers_the_known_second_derivative():
    alphas = np.linspace(-2.5, 2.5, 51)
    k = np.array([0.3, 2.0, 7.5])
    losses = 1.3 - 0.4 * alphas + 0.5 * k[:, None] * alphas ** 2  # exact quadratics
    np.testing.assert_allclose(quadratic_curvature(alphas, losses, radius=0.5), k, rtol=1e-10)
    np.testing.assert_allclose(quadratic_curvature(alphas, losses, radius=2.5), k, rtol=1e-10)
    # rise at radius r of c + b a + k a^2 / 2 is k r^2 / 2 (the linear term cancels)
    np.testing.assert_allclose(loss_rise(alphas, losses, radius=1.0), k / 2, rtol=1e-10)
    with pytest.raises(ConfigError, match="at least 3"):
        quadratic_curvature(alphas, losses, radius=0.05)
    with pytest.raises(ConfigError, match="outside"):
        loss_rise(alphas, losses, radius=3.0)


def test_scan_curvature_matches_the_hessian_along_the_direction(experiment):
    """On a real net, the fitted curvature at small radius is d^T H d (H from double backward)."""
    path, cfg = experiment
    x, y = _train_tensors(cfg)
    state = _final(path, "none-seed0")
    layout = ParamLayout.from_state(state)
    theta = layout.flatten(state)
    d = dirs.gaussian_directions(layout, 1, np.random.default_rng(1))
    alphas = np.linspace(-0.05, 0.05, 11)
    nll, _ = PointEvaluator(layout, theta, d, x, y, dtype=torch.float64)(alphas[:, None])
    hd = hvp_operator(layout, theta, x, y)(torch.as_tensor(d[0]))
    expected = float(torch.as_tensor(d[0]) @ hd)
    assert quadratic_curvature(alphas, nll, radius=0.05) == pytest.approx(expected, rel=1e-3)


def _result(values: dict[str, list[float]], n_dirs: int = 5, noise: float = 0.1) -> LandscapeResult:
    """Synthetic scans: group -> per-run curvatures, each direction an exact quadratic + jitter."""
    alphas = np.linspace(-1, 1, 21)
    rng = np.random.default_rng(0)
    runs = []
    for group, curvatures in values.items():
        for s, k in enumerate(curvatures):
            ks = k + noise * rng.standard_normal(n_dirs)
            nll = 0.1 + 0.5 * ks[:, None] * alphas ** 2
            runs.append(RunScan(f"{group}-seed{s}", group, group, s, 2, 10, True,
                                scans1d={"sgd": {"nll": nll, "error": np.zeros_like(nll)}}))
    return LandscapeResult(path=__import__("pathlib").Path("synthetic.h5"), settings={}, alphas=alphas,
                           runs=runs)


def test_flatness_table_separates_planted_groups_and_says_which_is_flatter():
    res = _result({"none": [2.0, 2.2, 1.9, 2.1], "sdae": [1.0, 1.1, 0.9, 1.05]})
    table = flatness_table(res, fit_radius=0.5, rise_radius=0.5, n_boot=500, seed=1)
    stats = {g.group: g.stats["curvature[sgd]"] for g in table.groups}
    assert stats["none"][0] == pytest.approx(2.05, abs=0.1)
    assert stats["sdae"][0] == pytest.approx(1.01, abs=0.1)
    (diff,) = [d for d in table.differences if d.measure == "curvature[sgd]"]
    assert diff.ci_high < 0 and diff.verdict == "depth 2, sdae flatter"
    assert diff.ci_low < diff.diff < diff.ci_high
    # equal groups: the CI covers 0
    same = flatness_table(_result({"none": [1.0, 1.1, 0.9], "sdae": [1.0, 0.95, 1.05]}), n_boot=500)
    (d2,) = [d for d in same.differences if d.measure == "curvature[sgd]"]
    assert d2.ci_low < 0 < d2.ci_high and d2.verdict == "no clear difference"
    text = table.format()
    assert "curvature[sgd]" in text and "depth 2, sdae flatter" in text


# --------------------------------------------------------------------------- directions


def test_filter_normalized_rows_have_the_norms_of_the_weight_rows(experiment):
    path, _ = experiment
    state = _final(path, "sdae-seed0")
    layout = ParamLayout.from_state(state)
    theta = layout.flatten(state)
    (d,) = dirs.filter_directions(layout, theta, 1, np.random.default_rng(3))
    parts = layout.unflatten(d)
    for name, w in state.items():
        if name.endswith(".weight"):
            np.testing.assert_allclose(np.linalg.norm(parts[name], axis=1),
                                       np.linalg.norm(w.astype(np.float64), axis=1),
                                       rtol=1e-10)
        else:
            assert not parts[name].any()  # biases get no component (Li et al. 2018)


def test_pca_directions_find_a_planted_line():
    rng = np.random.default_rng(0)
    u = rng.standard_normal(50)
    u /= np.linalg.norm(u)
    traj = np.outer(np.linspace(3, 0, 8), u) + 0.01 * rng.standard_normal((8, 50))
    vecs, explained = dirs.pca_directions(traj, 3)
    assert vecs.shape == (3, 50)
    np.testing.assert_allclose(vecs @ vecs.T, np.eye(3), atol=1e-10)
    assert abs(vecs[0] @ u) > 0.999 and explained[0] > 0.99


def test_sgd_directions_are_unit_and_repeat_from_their_seed(experiment):
    path, cfg = experiment
    x, y = _train_tensors(cfg)
    state = _final(path, "none-seed1")
    layout = ParamLayout.from_state(state)
    theta = layout.flatten(state)
    a = dirs.sgd_directions(layout, theta, x, y, 3, dirs.direction_rng(0, "none-seed1", "sgd"))
    b = dirs.sgd_directions(layout, theta, x, y, 3, dirs.direction_rng(0, "none-seed1", "sgd"))
    c = dirs.sgd_directions(layout, theta, x, y, 3, dirs.direction_rng(1, "none-seed1", "sgd"))
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_parse_kind_rejects_unknown_kinds():
    assert dirs.parse_kind("toward:none-seed1") == ("toward", "none-seed1")
    for bad in ("sgdd", "toward", "sgd:3"):
        with pytest.raises(ConfigError):
            dirs.parse_kind(bad)


# --------------------------------------------------------------------------- Hessian


def test_lanczos_power_iteration_and_hutchinson_match_the_full_hessian():
    torch.manual_seed(0)  # test-only: the tiny problem's data
    layout = ParamLayout.from_state({"0.weight": np.zeros((3, 4)), "0.bias": np.zeros(3),
                                     "2.weight": np.zeros((2, 3)), "2.bias": np.zeros(2)})
    rng = np.random.default_rng(0)
    theta = torch.as_tensor(rng.standard_normal(layout.size) * 1.5)
    x = torch.as_tensor(rng.uniform(0, 1, (30, 4)))
    y = torch.as_tensor(rng.integers(0, 2, 30))
    full = torch.autograd.functional.hessian(lambda th: mean_nll(layout, th, x, y), theta).numpy()
    evals, evecs = np.linalg.eigh(full)
    hvp = hvp_operator(layout, theta.numpy(), x, y)
    top, vecs = lanczos_top(hvp, layout.size, 3, n_iter=layout.size, rng=np.random.default_rng(1))
    np.testing.assert_allclose(top, evals[::-1][:3], rtol=1e-8, atol=1e-10)
    assert abs(vecs[0] @ evecs[:, -1]) > 1 - 1e-8
    few, _ = lanczos_top(hvp, layout.size, 1, n_iter=12, rng=np.random.default_rng(1))
    assert few[0] == pytest.approx(evals[-1], rel=1e-4)
    biggest = evals[np.argmax(np.abs(evals))]
    assert power_iteration(hvp, layout.size, n_iter=200, rng=np.random.default_rng(2),
                           tol=1e-12) == pytest.approx(biggest, rel=1e-4)
    trace, sem = hutchinson_trace(hvp, layout.size, n_probes=100, rng=np.random.default_rng(3))
    assert abs(trace - np.trace(full)) < 4 * sem and sem < 0.2 * abs(np.trace(full))


# --------------------------------------------------------------------------- scans and files


class _Interrupt(Exception):
    pass


def test_interrupted_scan_resumes_to_the_same_numbers(experiment, tmp_path, monkeypatch):
    path, _ = experiment
    settings = ScanSettings(directions=("sgd", "filter"), n_directions=2, points=5, span=1.0,
                            grid=True, hessian=True, hessian_iters=4, hutchinson_probes=3)
    whole = scan_file(path, tmp_path / "whole.h5", settings=settings, runs=["none-seed0", "sdae-seed0"])

    calls = {"n": 0}
    original = scan_mod.PointEvaluator.__call__

    def flaky(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 13:
            raise _Interrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(scan_mod.PointEvaluator, "__call__", flaky)
    with pytest.raises(_Interrupt):
        scan_file(path, tmp_path / "part.h5", settings=settings, runs=["none-seed0", "sdae-seed0"])
    monkeypatch.setattr(scan_mod.PointEvaluator, "__call__", original)
    partial = load_result(tmp_path / "part.h5")
    assert not all(r.complete for r in partial.runs)
    with pytest.raises(OutputExistsError):
        scan_file(path, tmp_path / "part.h5", settings=settings)
    with pytest.raises(FormatError, match="different settings"):
        scan_file(path, tmp_path / "part.h5", settings=ScanSettings(points=9), mode="resume")
    resumed = scan_file(path, tmp_path / "part.h5", settings=settings, runs=["none-seed0", "sdae-seed0"],
                        mode="resume")
    assert [r.run_id for r in resumed.runs] == [r.run_id for r in whole.runs]
    for a, b in zip(whole.runs, resumed.runs):
        assert b.complete
        for kind in ("sgd", "filter"):
            for col in ("nll", "error"):
                np.testing.assert_array_equal(a.scans1d[kind][col], b.scans1d[kind][col])
                np.testing.assert_array_equal(a.scans2d[kind][col], b.scans2d[kind][col])
        assert (a.top_eigenvalue, a.hessian_trace) == (b.top_eigenvalue, b.hessian_trace)
    with LandscapeFile(tmp_path / "whole.h5") as fa, LandscapeFile(tmp_path / "part.h5") as fb:
        for rid in ("none-seed0", "sdae-seed0"):
            for kind in ("sgd", "filter"):
                key = f"runs/{rid}/directions/{kind}"
                np.testing.assert_array_equal(fa.array(key), fb.array(key))


def test_grid_axes_agree_with_the_1d_scans(experiment, tmp_path):
    path, _ = experiment
    res = scan_file(path, tmp_path / "g.h5", runs=["sdae-seed1"],
                    settings=ScanSettings(directions=("filter",), grid=True, **QUICK))
    (run,) = res.runs
    mid = res.alphas.size // 2
    grid, line = run.scans2d["filter"]["nll"], run.scans1d["filter"]["nll"]
    np.testing.assert_allclose(grid[:, mid], line[0], rtol=1e-5)
    np.testing.assert_allclose(grid[mid, :], line[1], rtol=1e-5)


def test_toward_reaches_the_other_run_pca_and_hessian_directions(experiment, tmp_path):
    path, _ = experiment
    settings = ScanSettings(directions=("toward:none-seed1", "pca", "hessian"), n_directions=2, points=5,
                            span=2.0, hessian=False)
    res = scan_file(path, tmp_path / "t.h5", settings=settings, runs=["none-seed0", "none-seed1"])
    a, b = res.run("none-seed0"), res.run("none-seed1")
    one = list(res.alphas).index(1.0)
    assert a.scans1d["toward:none-seed1"]["nll"][0, one] == pytest.approx(b.loss_at_theta[0], rel=1e-5)
    assert "toward:none-seed1" not in b.scans1d  # a run is not scanned toward itself
    assert a.scans1d["pca"]["nll"].shape == (2, 5)
    with LandscapeFile(tmp_path / "t.h5") as f:
        pcs = f.array("runs/none-seed0/directions/pca").astype(np.float64)
        hess = f.array("runs/none-seed0/directions/hessian").astype(np.float64)
        eigs = f.attrs("runs/none-seed0/directions/hessian")["eigenvalues"]
    np.testing.assert_allclose(pcs @ pcs.T, np.eye(2), atol=1e-5)
    np.testing.assert_allclose(hess @ hess.T, np.eye(2), atol=1e-5)
    assert eigs[0] >= eigs[1] > 0
    # the loss curves more along the top eigenvector than along the second
    curv = quadratic_curvature(res.alphas, a.scans1d["hessian"]["nll"], radius=2.0)
    assert curv[0] > curv[1] > 0


def test_checkpoint_option_scans_a_stored_checkpoint(experiment, tmp_path):
    path, _ = experiment
    res = scan_file(path, tmp_path / "c.h5", runs=["none-seed0"],
                    settings=ScanSettings(directions=("gaussian",), checkpoint=0, **QUICK))
    with ExperimentFile(path) as f:
        first_nll = f.metrics("none-seed0")["train_nll"][0]
    assert res.runs[0].loss_at_theta[0] == pytest.approx(first_nll, rel=1e-4)
    with pytest.raises(ConfigError, match="stores 3 checkpoints"):
        scan_file(path, tmp_path / "c2.h5", runs=["none-seed0"],
                  settings=ScanSettings(directions=("gaussian",), checkpoint=3, **QUICK))


def test_diverged_runs_are_left_out_with_a_warning(experiment, tmp_path, caplog):
    import shutil

    path, cfg = experiment
    copy_path = tmp_path / "with_diverged.h5"
    shutil.copy(path, copy_path)
    data = load_dataset(cfg.dataset)
    probe = data.split(cfg.probe.split).head(cfg.probe.n)
    with Recorder(copy_path, probe.x, probe.y, n_classes=data.n_classes, name=cfg.name,
                  config=cfg.to_json(), mode="resume") as rec:
        run = rec.start_run("none-seed9", seed=9, pretrain="none", group="none")
        run.append(np.full((len(probe), data.n_classes), 0.5, dtype=np.float32), 0)
        run.finish(DIVERGED)
    with caplog.at_level(logging.WARNING, logger="trajviz"):
        res = scan_file(copy_path, tmp_path / "d.h5", settings=ScanSettings(directions=("gaussian",), **QUICK))
    assert "none-seed9" in caplog.text and "diverged" in caplog.text
    assert "none-seed9" not in [r.run_id for r in res.runs]


# --------------------------------------------------------------------------- CLI


def test_cli_options_reach_the_scan_and_bad_input_is_one_line(experiment, tmp_path, capsys):
    path, _ = experiment
    out = tmp_path / "cli.h5"
    rc = main(["landscape", str(path), "-o", str(out), "--directions", "gaussian", "filter",
               "--n-directions", "2", "--points", "5", "--span", "1.0", "--n-examples", "50",
               "--seed", "3", "--runs", "none-seed0", "sdae-seed0", "--no-hessian", "--split", "valid",
               "--quiet"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "curvature[gaussian]" in printed and "sdae - depth 2, none" in printed
    res = load_result(out)
    s = res.settings
    assert (s["directions"], s["n_directions"], s["points"], s["span"], s["n_examples"], s["seed"],
            s["split"], s["hessian"]) == (["gaussian", "filter"], 2, 5, 1.0, 50, 3, "valid", False)
    assert [r.run_id for r in res.runs] == ["none-seed0", "sdae-seed0"]
    before = out.read_bytes()
    for bad, message in ((["--points", "4"], "points = 4"), (["--directions", "nope"], "'nope'"),
                         (["--runs", "ghost"], "'ghost'"), (["--checkpoint", "x"], "--checkpoint"),
                         (["--bootstrap", "0"], "--bootstrap"), (["--device", "gpu9"], "'gpu9'"),
                         (["--points", "5"], "fit radius 0.5 covers 1"),
                         ([], "exists")):
        rc = main(["landscape", str(path), "-o", str(out), "--quiet", *bad])
        err = capsys.readouterr().err
        assert rc == 1 and message in err and len(err.strip().splitlines()) == 1, (bad, err)
    assert out.read_bytes() == before


def test_plots_draw_on_the_given_axes_and_cli_writes_figures(experiment, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from trajviz.plots.landscape import plot_scan_grid, plot_scans_1d

    path, _ = experiment
    out = tmp_path / "p.h5"
    res = scan_file(path, out, settings=ScanSettings(directions=("filter",), grid=True, **QUICK))
    fig, (a1, a2) = plt.subplots(1, 2)
    assert plot_scans_1d(a1, res.alphas, res.runs, "filter") is a1
    assert len(a1.lines) == 2 * len(res.runs) + 1 + 1  # thin lines, mean, alpha = 0 marker
    assert plot_scan_grid(a2, res.alphas, res.runs[0].scans2d["filter"]["nll"]) is a2
    plt.close(fig)
    for view, name in (("lines", "l.pdf"), ("contour", "c.png")):
        assert main(["plot", "landscape", str(out), "--view", view, "-o", str(tmp_path / name), "-q"]) == 0
        assert (tmp_path / name).stat().st_size > 1000
    assert main(["plot", "landscape", str(out), "--kind", "sgd", "-o", str(tmp_path / "x.pdf"), "-q"]) == 1


def test_lines_view_of_a_scan_in_progress_draws_the_mean_of_scanned_rows_without_warnings():
    """Unscanned rows are NaN and a kind may have no rows yet: the mean is over the scanned
    rows (NaN points leave gaps), and no 'Mean of empty slice' warning reaches the user."""
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from trajviz.plots.landscape import plot_scans_1d

    alphas = np.linspace(-1.0, 1.0, 5)
    nan = np.nan

    def run(rows):
        return RunScan("r", "g", "none", 0, 1, 4, False, scans1d={"sgd": {"nll": np.array(rows)}})

    fig, ax = plt.subplots()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plot_scans_1d(ax, alphas, [run([[nan] * 5] * 2)], "sgd")          # nothing scanned yet
        assert len(ax.lines) == 2 + 1                                      # no mean, marker
        plot_scans_1d(ax, alphas, [run(np.zeros((0, 5)))], "sgd")          # a kind with no rows
        ax.cla()
        plot_scans_1d(ax, alphas, [run([[1, 2, 3, 2, 1], [3, 4, nan, 4, 3], [nan] * 5])], "sgd")
    mean_line = ax.lines[3]
    np.testing.assert_allclose(mean_line.get_ydata(), [2, 3, 3, 3, 2])  # unscanned row left out
    plt.close(fig)


# --------------------------------------------------------------------------- the project's own files


FROZEN = __import__("pathlib").Path(__file__).parent / "data" / "scan-numbers-v1"


def test_project_files_scan_to_the_numbers_of_the_old_code(tmp_path):
    """tests/data/scan-numbers-v1: a tiny `trajviz record` file and what every kind of scan gave on
    it before scan_model existed (make.py): the project's own files keep their numbers."""
    import json

    frozen = json.loads((FROZEN / "expected.json").read_text())
    for name, kw in frozen["scans"].items():
        res = scan_file(FROZEN / "tiny.h5", tmp_path / f"{name}.h5", settings=ScanSettings(**kw))
        expected = frozen["expected"][name]
        assert [r.run_id for r in res.runs] == list(expected)
        for run in res.runs:
            want = expected[run.run_id]
            np.testing.assert_allclose(run.loss_at_theta, want["loss_at_theta"], rtol=1e-6)
            for dim, got in (("scans1d", run.scans1d), ("scans2d", run.scans2d)):
                assert sorted(got) == sorted(want[dim])
                for kind, table in got.items():
                    for col in ("nll", "error"):
                        np.testing.assert_allclose(table[col], want[dim][kind][col], rtol=1e-5,
                                                   atol=1e-7, err_msg=f"{name} {run.run_id} {kind}")
            np.testing.assert_allclose([run.top_eigenvalue, run.hessian_trace, run.hessian_trace_sem],
                                       want["hessian"], rtol=1e-6)


def test_valid_split_scans_keep_the_training_directions_and_hessian(experiment, tmp_path):
    """sgd and hessian directions and the Hessian measures come from the training data
    whatever split the loss is scanned on; only the scanned losses change."""
    path, _ = experiment
    kw = dict(directions=("sgd", "hessian"), n_directions=2, points=5, span=1.0, hessian=True,
              hessian_iters=4, hutchinson_probes=3)
    res = {split: scan_file(path, tmp_path / f"{split}.h5", runs=["none-seed0"],
                            settings=ScanSettings(split=split, **kw)) for split in ("train", "valid")}
    with LandscapeFile(tmp_path / "train.h5") as ft, LandscapeFile(tmp_path / "valid.h5") as fv:
        for kind in ("sgd", "hessian"):
            key = f"runs/none-seed0/directions/{kind}"
            np.testing.assert_array_equal(ft.array(key), fv.array(key))
    t, v = res["train"].runs[0], res["valid"].runs[0]
    assert (t.top_eigenvalue, t.hessian_trace) == (v.top_eigenvalue, v.hessian_trace)
    assert t.loss_at_theta[0] != v.loss_at_theta[0]  # the losses are on other examples


def test_cli_refuses_files_of_other_models_in_one_line(experiment, tmp_path, capsys):
    """A Recorder file (no project config; or the project's config but another model) gets no
    numbers from `trajviz landscape`: one line that points to scan_model, exit 1, no output."""
    import json

    path, cfg = experiment
    data = load_dataset(cfg.dataset)
    probe = data.split(cfg.probe.split).head(cfg.probe.n)
    relu = torch.nn.Sequential(torch.nn.Linear(probe.x.shape[1], 5), torch.nn.ReLU(),
                               torch.nn.Linear(5, data.n_classes))
    cases = {"no-config": (None, relu), "project-config-other-model": (json.loads(cfg.to_json()), relu)}
    for name, (config, model) in cases.items():
        rec_path = tmp_path / f"{name}.h5"
        with Recorder(rec_path, probe.x, probe.y, n_classes=data.n_classes, config=config) as rec:
            rec.record(model, 0)
            rec.save_params(model)
        out = tmp_path / f"{name}.landscape.h5"
        rc = main(["landscape", str(rec_path), "-o", str(out), "--n-directions", "1", "--points", "5", "--span", "1",
                   "--no-hessian", "--quiet"])
        err = capsys.readouterr().err
        assert rc == 1 and len(err.strip().splitlines()) == 1, (name, err)
        assert "scan_model" in err and ("trajviz record" in err or "MLP" in err), err
        assert not out.exists()


def test_sweep_files_scan_each_run_with_its_own_architecture(tmp_path):
    """A gathered sweep over model.width (tests/data/sweep-gathered-v1.h5): each run is
    rebuilt from its own config, so both widths scan, and its width is stored with it."""
    path = FROZEN.parent / "sweep-gathered-v1.h5"
    res = scan_file(path, tmp_path / "s.h5", settings=ScanSettings(directions=("gaussian",), **QUICK))
    with ExperimentFile(path) as f:
        cfg = config_from_dict(f.config)
    x, y = _train_tensors(cfg)
    assert sorted(r.width for r in res.runs) == [3, 4]
    for run in res.runs:
        state = _final(path, run.run_id)
        model = mlp_module(ParamLayout.from_state(state).sizes)
        model.load_state_dict({k: torch.as_tensor(v) for k, v in state.items()})
        assert model[0].out_features == run.width
        with torch.no_grad():
            direct = float(F.cross_entropy(model(x).double(), y))
        assert run.loss_at_theta[0] == pytest.approx(direct, rel=1e-5)
    with pytest.raises(ConfigError, match="another architecture"):
        scan_file(path, tmp_path / "t.h5", settings=ScanSettings(
            directions=("toward:width=4:none-seed0",), **QUICK))
