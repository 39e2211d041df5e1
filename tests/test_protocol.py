"""The studies' training protocol (issue 3): method specs, RBM/DBN pre-training, histogram init,
partial pre-training, L2, model selection, the experiment configs in runs/, `trajviz data fetch`."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from trajviz.cli import main
from trajviz.config import (PRETRAIN_METHODS, ConfigError, PretrainConfig, config_from_dict,
                            load_config, parse_method, show_defaults)
from trajviz.data import mnist
from trajviz.training.initialization import PRETRAINERS, apply_method, histogram_init, method_attrs
from trajviz.training.nets import StackedMLP
from trajviz.training.rbm import cd_step, pretrain_rbm, reconstruction_error
from trajviz.training.selection import BestCheckpoint, select_from_metrics
from trajviz.store import ExperimentFile
from trajviz.training.runner import finetune, finetune_loss, record_experiment, run_streams

ROOT = Path(__file__).resolve().parents[1]
RUN_CONFIGS = ["mnist_sdae", "mnist_rbm", "histogram_init", "partial_pretrain",
               "l2_model_selection", "shapeset3x2"]


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny matrices: intra-op threads only add synchronization (14x slower on a busy 2-core
    machine); restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def gens(seeds) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(1000 + s) for s in seeds]


def structured_data(n: int = 400, d: int = 36, seed: int = 0) -> torch.Tensor:
    """Binary-ish inputs in [0, 1] from 4 prototypes plus flips: structure an RBM can model."""
    rng = np.random.default_rng(seed)
    protos = rng.random((4, d)) < 0.4
    x = protos[rng.integers(0, 4, n)] ^ (rng.random((n, d)) < 0.05)
    return torch.as_tensor(x, dtype=torch.float32)


def init_net(seeds, sizes=(36, 24, 16, 3)) -> StackedMLP:
    return StackedMLP.init(list(sizes), gens(seeds))


def pcfg(**kw) -> PretrainConfig:
    base = dict(epochs=2, lr=0.01, batch_size=20, corruption=0.25, cd_k=1, rbm_lr=0.1)
    base.update(kw)
    return PretrainConfig(**base)


# --------------------------------------------------------------------------- method specs


def test_pretrainers_match_config():
    assert set(PRETRAINERS) | {"none"} == set(PRETRAIN_METHODS)


@pytest.mark.parametrize("text, canonical", [
    ("none", "none"), ("rbm", "rbm"), ("sdae+hist", "sdae+hist"),
    ("sdae+reinit=2,1", "sdae+reinit=1,2"), ("sdae + hist + layers=1", "sdae+layers=1+hist"),
])
def test_method_spec_canonical(text, canonical):
    assert parse_method(text).spec == canonical
    cfg = config_from_dict({"pretrain": {"methods": [text]}})
    assert cfg.pretrain.methods == [canonical]


@pytest.mark.parametrize("methods, match", [
    (["magic"], r"pretrain\.methods\[0\].*unknown method 'magic'.*BASE\[\+layers=K\]"),
    (["none+hist"], "'none' takes no modifiers"),
    (["sdae+reinit=0"], "positive integer"),
    (["sdae+layers=x"], "positive integer"),
    (["sdae+bogus"], "unknown modifier 'bogus'"),
    (["sdae+hist+hist"], "given twice"),
    (["sdae+layers=1+reinit=2"], "not pre-trained"),
    (["sdae+reinit=3"], r"hidden layer 3, but model\.depth = 2"),
    (["sdae+hist", "sdae + hist"], "distinct"),
])
def test_method_spec_rejected(methods, match):
    with pytest.raises(ConfigError, match=match):
        config_from_dict({"model": {"depth": 2}, "pretrain": {"methods": methods}})


def test_method_attrs():
    assert method_attrs("sdae+layers=1", 3)["pretrain_layers"] == 1
    a = method_attrs("rbm+reinit=2+hist", 2)
    assert a["method"] == "rbm+reinit=2+hist" and a["histogram_init"]
    assert list(a["reinit_layers"]) == [2] and a["pretrain_layers"] == 2
    assert method_attrs("none", 2)["pretrain_layers"] == 0


# --------------------------------------------------------------------------- RBM


def test_cd_lowers_reconstruction_error():
    x = structured_data()
    w = torch.stack([StackedMLP.init([36, 24], gens([s])).weights[0][0] for s in (0, 1)])
    b = torch.zeros(2, 1, 24)
    c = torch.zeros(2, 1, 36)
    before = reconstruction_error(x, w, b, c)
    g = gens([0, 1])
    for epoch in range(10):
        for start in range(0, 400, 20):
            cd_step(x[start:start + 20].expand(2, -1, -1), w, b, c, 1, 0.2, g)
    after = reconstruction_error(x, w, b, c)
    assert torch.all(after < 0.5 * before), (before, after)


def test_pretrain_rbm_history_and_cd_k():
    x = structured_data()
    for k in (1, 3):
        net = init_net([0, 1])
        w0 = [w.clone() for w in net.weights]
        hist = pretrain_rbm(net, x, pcfg(epochs=4, cd_k=k, rbm_lr=0.2), gens([0, 1]))
        assert len(hist) == 2 and all(len(h) == 4 for h in hist)
        assert hist[0][-1] < 0.7 * hist[0][0]
        assert not torch.equal(net.weights[0], w0[0]) and not torch.equal(net.weights[1], w0[1])
        assert torch.equal(net.weights[2], w0[2])  # the softmax layer is not pre-trained
        assert net.biases[0].abs().sum() > 0  # hidden biases initialize the MLP too


def test_rbm_net_independent_of_batch_mates():
    x = structured_data(120)
    pair = init_net([0, 1])
    pretrain_rbm(pair, x, pcfg(epochs=2), gens([0, 1]))
    alone = init_net([1])
    pretrain_rbm(alone, x, pcfg(epochs=2), gens([1]))
    for wp, wa in zip(pair.weights, alone.weights):
        torch.testing.assert_close(wp[1], wa[0])


# --------------------------------------------------------------------------- histogram init


def test_histogram_init_keeps_marginals_not_arrangement():
    x = structured_data(100)
    pre = init_net([0, 1], sizes=(36, 64, 64, 3))
    apply_method(pre, "sdae", x, pcfg(epochs=2), gens([0, 1]))
    hist = init_net([0, 1], sizes=(36, 64, 64, 3))
    apply_method(hist, "sdae+hist", x, pcfg(epochs=2), gens([0, 1]))
    for layer in range(2):
        for k in range(2):
            w_pre = pre.weights[layer][k].flatten().numpy()
            w_new = hist.weights[layer][k].flatten().numpy()
            assert stats.ks_2samp(w_pre, w_new).pvalue > 0.01
            assert abs(np.corrcoef(w_pre, w_new)[0, 1]) < 0.1  # the arrangement is new
            assert w_new.min() >= w_pre.min() - 1e-6 and w_new.max() <= w_pre.max() + 1e-6
            b_pre, b_new = pre.biases[layer][k, 0].numpy(), hist.biases[layer][k, 0].numpy()
            assert stats.ks_2samp(b_pre, b_new).pvalue > 0.01
            assert not np.allclose(b_pre, b_new)
    torch.testing.assert_close(hist.weights[2], pre.weights[2])  # softmax layer untouched


def test_histogram_of_a_planted_distribution():
    """A layer of bimodal weights stays bimodal, with its two modes' masses kept."""
    g = torch.Generator().manual_seed(3)
    w = torch.cat([torch.randn(3000, generator=g) * 0.1 - 2, torch.randn(1000, generator=g) * 0.1 + 2])
    net = StackedMLP([w.view(1, 40, 100).clone(), torch.zeros(1, 100, 2)],
                     [torch.zeros(1, 1, 100), torch.zeros(1, 1, 2)])
    histogram_init(net, [0], [torch.Generator().manual_seed(4)], bins=100)
    new = net.weights[0].flatten()
    assert abs(float((new > 0).float().mean()) - 0.25) < 0.03
    assert float((new.abs() < 1).float().mean()) < 0.01  # nothing drawn from the empty middle
    assert torch.equal(net.biases[0], torch.zeros(1, 1, 100))  # constant biases stay constant


# --------------------------------------------------------------------------- partial pre-training


@pytest.mark.parametrize("base", ["sdae", "rbm"])
def test_reinit_layers_fresh_others_untouched(base):
    x = structured_data(100)
    initial = init_net([0, 1])
    full = init_net([0, 1])
    apply_method(full, base, x, pcfg(epochs=2), gens([0, 1]))
    part = init_net([0, 1])
    apply_method(part, f"{base}+reinit=2", x, pcfg(epochs=2), gens([0, 1]))
    # layer 1: exactly the pre-trained one; layer 2: back to its random initial weights
    torch.testing.assert_close(part.weights[0], full.weights[0])
    torch.testing.assert_close(part.biases[0], full.biases[0])
    torch.testing.assert_close(part.weights[1], initial.weights[1])
    assert torch.equal(part.biases[1], torch.zeros_like(part.biases[1]))
    assert not torch.allclose(part.weights[1], full.weights[1])
    bound = 1 / np.sqrt(24)
    assert float(part.weights[1].abs().max()) <= bound
    torch.testing.assert_close(part.weights[2], initial.weights[2])


def test_pretrain_bottom_layers_only():
    x = structured_data(100)
    initial = init_net([0, 1])
    full = init_net([0, 1])
    apply_method(full, "sdae", x, pcfg(epochs=2), gens([0, 1]))
    bottom = init_net([0, 1])
    hist = apply_method(bottom, "sdae+layers=1", x, pcfg(epochs=2), gens([0, 1]))
    assert len(hist) == 1
    torch.testing.assert_close(bottom.weights[0], full.weights[0])
    torch.testing.assert_close(bottom.weights[1], initial.weights[1])
    torch.testing.assert_close(bottom.biases[1], initial.biases[1])


def test_none_leaves_random_init():
    net = init_net([0])
    w = [t.clone() for t in net.weights]
    assert apply_method(net, "none", structured_data(), pcfg(), gens([0])) == []
    assert all(torch.equal(a, b) for a, b in zip(w, net.weights))


# --------------------------------------------------------------------------- L2 and selection


def test_l2_penalty_reference_value_and_effect(tiny_config):
    net = init_net([0, 1], sizes=(36, 8, 3))
    x = structured_data(30)
    y = torch.arange(30) % 3
    xb, yb = x.expand(2, -1, -1), y.expand(2, -1)
    plain = finetune_loss(net, xb, yb, 0.0)
    sq = sum(float((w * w).sum()) for w in net.weights)
    assert float(finetune_loss(net, xb, yb, 0.01)) == pytest.approx(float(plain) + 0.01 * sq, rel=1e-5)
    net.biases[0] += 5.0  # biases are not penalized
    assert float(finetune_loss(net, xb, yb, 0.01) - finetune_loss(net, xb, yb, 0.0)) == \
        pytest.approx(0.01 * sq, rel=1e-5)

    norms = {}
    for l2 in (0.0, 0.5):
        net = init_net([0], sizes=(36, 8, 3))
        cfg = dataclasses.replace(tiny_config.train, epochs=3, l2=l2, lr=0.1)
        finetune(net, (x, y), cfg, gens([0]), lambda step, epoch: None)
        norms[l2] = sum(float((w * w).sum()) for w in net.weights)
    assert norms[0.5] < 0.8 * norms[0.0]


def test_best_checkpoint_selection_rules():
    best = BestCheckpoint(3)
    metrics = lambda ve, te: {"valid_error": np.array(ve), "valid_nll": np.array(ve) + 1,
                              "test_error": np.array(te), "test_nll": np.array(te) + 1}
    best.update(0, 0.0, metrics([0.5, 0.5, np.nan], [0.6, 0.6, 0.6]))
    best.update(10, 1.0, metrics([0.3, 0.5, 0.2], [0.4, 0.1, 0.2]), nets=np.array([1, 1, 0], bool))
    best.update(20, 2.0, metrics([0.3, 0.4, 0.1], [0.9, 0.3, 0.1]))
    a0, a1, a2 = best.attrs(0), best.attrs(1), best.attrs(2)
    assert (a0["best_step"], a0["test_error_at_best"]) == (10, 0.4)  # ties: the earliest wins
    assert (a1["best_step"], a1["best_epoch"], a1["test_error_at_best"]) == (20, 2.0, 0.3)
    assert a1["best_valid_nll"] == pytest.approx(1.4) and a1["test_nll_at_best"] == pytest.approx(1.3)
    assert a2["best_step"] == 20  # step 10 did not count for net 2 (masked), step 0 was NaN
    assert BestCheckpoint(1).attrs(0) == {}


def test_run_attrs_record_model_selection(tmp_path, tiny_dict):
    tiny_dict["train"]["epochs"] = 4
    tiny_dict["dataset"].update(n_train=60, n_valid=30, n_test=30)
    tiny_dict["probe"]["n"] = 20
    tiny_dict["model"]["width"] = 8
    tiny_dict["pretrain"]["methods"] = ["none"]
    cfg = config_from_dict(tiny_dict)
    out = record_experiment(cfg, tmp_path / "sel.h5")
    with ExperimentFile(out) as f:
        for rid in f.run_ids():
            a, m = f.run_attrs(rid), f.metrics(rid)
            t = int(np.argmin(m["valid_error"]))  # argmin returns the first of ties
            assert a["best_step"] == f.steps(rid)[t] and a["best_epoch"] == f.epochs(rid)[t]
            assert a["best_valid_error"] == m["valid_error"][t]
            assert a["test_error_at_best"] == m["test_error"][t]
            assert a["test_nll_at_best"] == m["test_nll"][t]
            recomputed = select_from_metrics(f.steps(rid), f.epochs(rid), m)
            assert recomputed == pytest.approx({k: a[k] for k in recomputed})


# --------------------------------------------------------------------------- end to end


def fake_mnist(directory: Path, n_train: int = 120, n_test: int = 40, seed: int = 0) -> Path:
    """Tiny learnable IDX files: 10 random class prototypes plus noise."""
    rng = np.random.default_rng(seed)
    protos = rng.random((10, 28, 28)) < 0.2
    for (img, lab), n in (((mnist.TRAIN_IMAGES, mnist.TRAIN_LABELS), n_train),
                          ((mnist.TEST_IMAGES, mnist.TEST_LABELS), n_test)):
        y = rng.integers(0, 10, n).astype(np.uint8)
        x = np.clip(protos[y] * 200 + rng.normal(0, 60, (n, 28, 28)), 0, 255).astype(np.uint8)
        mnist.write_idx(directory / (img + ".gz"), x)
        mnist.write_idx(directory / (lab + ".gz"), y)
    return directory


SHRINK = ["seeds=[0]", "dataset.n_train=60", "dataset.n_valid=20", "dataset.n_test=20",
          "probe.n=20", "model.width=8", "pretrain.epochs=1", "train.epochs=1"]


@pytest.mark.parametrize("name", RUN_CONFIGS)
def test_run_configs_record_end_to_end(name, tmp_path, monkeypatch, capsys):
    """Each config of runs/ records (shrunk further) a file `trajviz info` reads, showing the
    method of every run group, and the model selection column."""
    monkeypatch.setenv("TRAJVIZ_DATA", str(fake_mnist(tmp_path)))
    path = ROOT / "runs" / f"{name}.toml"
    cfg = load_config(path)
    out = tmp_path / f"{name}.h5"
    args = ["record", str(path), "-q", "-o", str(out)] + [a for s in SHRINK for a in ("--set", s)]
    assert main(args) == 0
    assert main(["info", str(out), "-o", str(tmp_path / "info.json")]) == 0
    text = capsys.readouterr().out
    summary = json.loads((tmp_path / "info.json").read_text())
    assert set(summary["groups"]) == set(cfg.pretrain.methods)
    assert all(len(g["test_error_at_best"]) == 1 for g in summary["groups"].values())
    assert "test err @ best valid" in text
    for method in cfg.pretrain.methods:
        line = next(l for l in text.splitlines() if l.split(" ")[0] == method)
        assert re.search(rf"^{re.escape(method)}\s+{method.split('+')[0]}\s+1\s", line), line
    with ExperimentFile(out) as f:
        assert {f.run_attrs(r)["method"] for r in f.run_ids()} == set(cfg.pretrain.methods)
    assert main(["info", "--runs", str(out)]) == 0
    text = capsys.readouterr().out
    for method in cfg.pretrain.methods:  # one line per run, naming its method
        assert re.search(rf"^{re.escape(method)}-seed0\s+{re.escape(method)}\s+0\s", text, re.M)


# --------------------------------------------------------------------------- CLI data, docs


def test_data_fetch_without_network(tmp_path, capsys):
    code = main(["data", "fetch", "mnist", "-q", "-o", str(tmp_path / "d"),
                 "--base-url", "http://127.0.0.1:9/", "--timeout", "5"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "cannot download" in err and "train-images-idx3-ubyte" in err
    assert not any((tmp_path / "d").iterdir())  # no partial file left behind


def test_data_fetch_default_dir(monkeypatch):
    from trajviz.cli import build_parser

    monkeypatch.setenv("TRAJVIZ_DATA", "/somewhere/mnist")
    args = build_parser().parse_args(["data", "fetch", "mnist"])
    assert args.output == Path("/somewhere/mnist")
    monkeypatch.delenv("TRAJVIZ_DATA")
    assert build_parser().parse_args(["data", "fetch", "mnist"]).output == Path("data")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["data", "fetch", "cifar"])


def test_every_config_key_documented(capsys):
    doc = (ROOT / "docs" / "config.md").read_text()
    section = ""
    for line in show_defaults().splitlines():
        if line.startswith("["):
            section = line.strip("[]") + "."
        elif "=" in line:
            name, _, rest = line.partition(" = ")
            key, default = section + name.strip(), rest.split("  # ")[0]
            assert f"| `{key}` | `{default}` |" in doc, \
                f"{key} (default {default}) is missing or has another default in docs/config.md"
    assert main(["config", "--show-defaults", "--markdown"]) == 0
    assert capsys.readouterr().out in doc, \
        "docs/config.md is stale: paste `trajviz config --show-defaults --markdown` at its end"


# --------------------------------------------------------------------------- paired vs independent


@pytest.mark.parametrize("shared", [True, False])
def test_shared_init_pairs_runs_of_one_seed_or_draws_them_independently(tmp_path, tiny_dict, shared):
    """shared_init: a none and an sdae run of one seed (sdae with 0 pre-training epochs, so its
    net is its initial draw) start from the same weights and see the same order, hence give
    the same outputs throughout; without it they differ, and each (seed, method) is still
    reproducible."""
    tiny_dict["train"]["epochs"] = 2
    tiny_dict["dataset"].update(n_train=60, n_valid=30, n_test=30)
    tiny_dict["probe"]["n"] = 10
    tiny_dict["model"]["width"] = 8
    tiny_dict["seeds"] = [0, 1]
    tiny_dict["pretrain"].update(methods=["none", "sdae"], epochs=0, shared_init=shared)
    cfg = config_from_dict(tiny_dict)
    a, b = record_experiment(cfg, tmp_path / "a.h5"), record_experiment(cfg, tmp_path / "b.h5")
    with ExperimentFile(a) as fa, ExperimentFile(b) as fb:
        for s in (0, 1):
            none, sdae = fa.outputs(f"none-seed{s}"), fa.outputs(f"sdae-seed{s}")
            assert np.array_equal(none, sdae) == shared
            np.testing.assert_array_equal(sdae, fb.outputs(f"sdae-seed{s}"))
        assert not np.array_equal(fa.outputs("none-seed0"), fa.outputs("none-seed1"))
    # the streams themselves: method-free when paired, distinct per method otherwise
    draw = lambda st: torch.rand(3, generator=st.init)  # noqa: E731
    assert torch.equal(draw(run_streams(3)), draw(run_streams(3)))
    assert not torch.equal(draw(run_streams(3, "none")), draw(run_streams(3, "sdae")))
    assert torch.equal(draw(run_streams(3, "sdae")), draw(run_streams(3, "sdae")))
