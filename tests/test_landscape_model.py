"""trajviz.landscape.scan_model: landscapes of any nn.Module (a tiny CNN with batch norm here)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from trajviz.errors import ConfigError
from trajviz.landscape import ScanSettings, flatness_table, load_result, scan_model
from trajviz.landscape import directions as dirs
from trajviz.landscape.modules import ModuleLayout
from trajviz.store import LandscapeFile


class TinyCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)
        self.fc = nn.Linear(3 * 4 * 4, 3)

    def forward(self, x):
        h = torch.relu(self.bn(self.conv(x)))
        return self.fc(nn.functional.max_pool2d(h, 2).flatten(1))


def _model(seed: int = 0) -> TinyCNN:
    g = torch.Generator().manual_seed(seed)
    m = TinyCNN()
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        # running statistics far from 0/1, so using (or updating) them shows in the loss
        m.bn.running_mean.copy_(torch.randn(3, generator=g))
        m.bn.running_var.copy_(torch.rand(3, generator=g) + 0.5)
    return m


def _data(n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 8, 8, generator=g), torch.randint(0, 3, (n,), generator=g)


def _plain_loss(model: nn.Module, params: dict[str, torch.Tensor], x, y) -> float:
    """The loss of a copy of ``model`` with ``params`` loaded, evaluated the plain way."""
    m = copy.deepcopy(model)
    m.load_state_dict({**m.state_dict(), **params})
    m.eval()
    with torch.no_grad():
        return float(nn.functional.cross_entropy(m(x), y))


def _snapshot(model: nn.Module) -> dict:
    return {k: v.clone() for k, v in model.state_dict().items()}


QUICK = dict(n_directions=2, points=5, span=1.0, hessian=False)


def test_scan_equals_plain_evaluation_and_leaves_the_model_as_it_was(tmp_path):
    model, (x, y) = _model(), _data(50, 1)
    model.train()
    model.fc.eval()  # a mixed mode, restored exactly
    before = _snapshot(model)
    res = scan_model(model, nn.CrossEntropyLoss(), (x, y), tmp_path / "m.h5", batch_size=16,
                     settings=ScanSettings(directions=("filter", "gaussian"), grid=True, **QUICK))
    assert model.training and model.conv.training and model.bn.training and not model.fc.training
    after = model.state_dict()
    for k, v in before.items():
        assert torch.equal(v, after[k]), k  # running stats, num_batches_tracked, parameters
    layout = ModuleLayout.of(model)
    with LandscapeFile(tmp_path / "m.h5") as f:
        d = {kind: f.array(f"runs/model/directions/{kind}") for kind in ("filter", "gaussian")}
    (run,) = res.runs
    a = res.alphas
    base = dict(model.named_parameters())
    points = [("filter", 0, a[0], None), ("gaussian", 1, a[3], None), ("filter", None, a[1], a[4])]
    for kind, row, alpha, beta in points:
        if beta is None:
            got = run.scans1d[kind]["nll"][row, list(a).index(alpha)]
            step = {n: alpha * torch.as_tensor(v) for n, v in layout.views(torch.as_tensor(d[kind][row])).items()}
        else:  # grid point theta + alpha d0 + beta d1
            got = run.scans2d[kind]["nll"][list(a).index(alpha), list(a).index(beta)]
            v0, v1 = (layout.views(torch.as_tensor(d[kind][i])) for i in (0, 1))
            step = {n: alpha * v0[n] + beta * v1[n] for n in v0}
        params = {n: base[n].detach() + step[n] for n in layout.names}
        assert got == pytest.approx(_plain_loss(model, params, x, y), rel=1e-5), (kind, alpha, beta)
    assert run.loss_at_theta[0] == pytest.approx(_plain_loss(model, {}, x, y), rel=1e-5)
    with torch.no_grad():
        err = float((copy.deepcopy(model).eval()(x).argmax(1) != y).double().mean())
    assert run.loss_at_theta[1] == pytest.approx(err)
    assert run.label == "model"


def test_filter_directions_match_each_output_channel_and_biases_follow_bias_bn(tmp_path):
    model = _model()
    x, y = _data(20, 2)
    for bias_bn in ("zero", "keep"):
        scan_model(model, nn.CrossEntropyLoss(), (x, y), tmp_path / f"{bias_bn}.h5", bias_bn=bias_bn,
                   settings=ScanSettings(directions=("filter", "gaussian"), **QUICK))
        with LandscapeFile(tmp_path / f"{bias_bn}.h5") as f:
            layout = ModuleLayout.of(model)
            for kind in ("filter", "gaussian"):
                for row in f.array(f"runs/model/directions/{kind}").astype(np.float64):
                    parts = layout.views(torch.as_tensor(row))
                    for name, p in model.named_parameters():
                        w = p.detach().double()
                        if p.ndim >= 2 and kind == "filter":  # conv: per output channel
                            np.testing.assert_allclose(parts[name].flatten(1).norm(dim=1),
                                                       w.flatten(1).norm(dim=1), rtol=1e-6)
                        elif p.ndim <= 1 and bias_bn == "zero":  # conv/fc bias, bn weight/bias
                            assert not parts[name].any(), (kind, name)
                        elif p.ndim <= 1 and kind == "filter":
                            np.testing.assert_allclose(parts[name], w, rtol=1e-6)
    with pytest.raises(ConfigError, match="bias_bn 'all'"):
        scan_model(model, nn.CrossEntropyLoss(), (x, y), tmp_path / "x.h5", bias_bn="all")


def test_sgd_and_hessian_use_the_training_data_whatever_is_scanned(tmp_path):
    model = _model()
    train, valid, other = _data(40, 3), _data(30, 4), _data(30, 5)
    settings = ScanSettings(directions=("sgd", "hessian"), n_directions=2, points=5, span=1.0,
                            hessian=True, hessian_iters=4, hutchinson_probes=3, sgd_batch_size=8)
    res = {}
    for name, data in (("valid", valid), ("other", other)):
        res[name] = scan_model(model, nn.CrossEntropyLoss(), data, tmp_path / f"{name}.h5",
                               train_data=train, settings=settings)
    with LandscapeFile(tmp_path / "valid.h5") as fa, LandscapeFile(tmp_path / "other.h5") as fb:
        for kind in ("sgd", "hessian"):
            key = f"runs/model/directions/{kind}"
            np.testing.assert_array_equal(fa.array(key), fb.array(key))
        sgd = fa.array("runs/model/directions/sgd").astype(np.float64)
    a, b = res["valid"].runs[0], res["other"].runs[0]
    assert (a.top_eigenvalue, a.hessian_trace) == (b.top_eigenvalue, b.hessian_trace)
    assert a.loss_at_theta[0] != b.loss_at_theta[0]
    # the first sgd direction is the unit gradient on the minibatch the seeded stream draws
    rng = dirs.direction_rng(0, "model", "sgd")
    idx = torch.as_tensor(rng.choice(40, size=8, replace=False))
    m = copy.deepcopy(model).double().eval()
    loss = nn.functional.cross_entropy(m(train[0][idx].double()), train[1][idx])
    g = torch.cat([p.reshape(-1) for p in torch.autograd.grad(loss, list(m.parameters()))])
    np.testing.assert_allclose(sgd[0], (g / g.norm()).numpy(), atol=1e-6)


def test_hessian_measures_match_the_full_hessian_of_a_small_model(tmp_path):
    torch.manual_seed(0)  # test-only: the tiny model's initial weights
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Tanh(), nn.Linear(3, 2))
    with torch.no_grad():
        model[1].running_mean.uniform_(-1, 1)
    x, y = torch.randn(30, 4), torch.randint(0, 2, (30,))
    layout = ModuleLayout.of(model)
    model.eval()
    theta = torch.cat([p.detach().double().reshape(-1) for p in model.parameters()])
    m64 = copy.deepcopy(model).double()

    def loss(th):
        params = layout.views(th)
        return nn.functional.cross_entropy(torch.func.functional_call(m64, params, (x.double(),)), y)

    full = torch.autograd.functional.hessian(loss, theta).numpy()
    evals = np.linalg.eigvalsh(full)
    model.train()
    res = scan_model(model, nn.CrossEntropyLoss(), (x, y), tmp_path / "h.h5", batch_size=16,
                     settings=ScanSettings(directions=("hessian",), n_directions=1, points=5, span=1.0,
                                           hessian=True, hessian_iters=layout.size,
                                           hutchinson_probes=40))
    assert model.training
    run = res.runs[0]
    assert run.top_eigenvalue == pytest.approx(evals[-1], rel=1e-6)
    assert abs(run.hessian_trace - np.trace(full)) < 4 * run.hessian_trace_sem
    with LandscapeFile(tmp_path / "h.h5") as f:
        eig = f.attrs("runs/model/directions/hessian")["eigenvalues"]
    assert eig[0] == pytest.approx(evals[-1], rel=1e-6)


def test_dataloader_toward_and_pca(tmp_path):
    model, other = _model(0), _model(1)
    x, y = _data(24, 6)
    trajectory = [_model(s) for s in (2, 3, 4)] + [model]
    kw = dict(settings=ScanSettings(directions=("gaussian", "sgd", "toward:other", "pca"), n_directions=2,
                                    points=5, span=1.0, hessian=False),
              toward={"other": other}, trajectory=trajectory)
    by_tensors = scan_model(model, nn.CrossEntropyLoss(), (x, y), tmp_path / "t.h5", **kw)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=5)
    by_loader = scan_model(model, nn.CrossEntropyLoss(), loader, tmp_path / "l.h5", **kw)
    for kind in ("gaussian", "sgd", "toward:other", "pca"):
        np.testing.assert_allclose(by_loader.runs[0].scans1d[kind]["nll"],
                                   by_tensors.runs[0].scans1d[kind]["nll"], rtol=1e-5)
    with LandscapeFile(tmp_path / "t.h5") as ft, LandscapeFile(tmp_path / "l.h5") as fl:
        # the loader's minibatches are its dataset's items, drawn as the tensors' are
        np.testing.assert_allclose(fl.array("runs/model/directions/sgd"),
                                   ft.array("runs/model/directions/sgd"), atol=1e-6)
    one = list(by_tensors.alphas).index(1.0)
    # alpha = 1 reaches the other model's parameters; buffers (batch-norm statistics) stay
    reached = {n: p.detach() for n, p in other.named_parameters()}
    assert by_tensors.runs[0].scans1d["toward:other"]["nll"][0, one] == pytest.approx(
        _plain_loss(model, reached, x, y), rel=1e-5)
    with LandscapeFile(tmp_path / "t.h5") as f:
        pcs = f.array("runs/model/directions/pca").astype(np.float64)
    np.testing.assert_allclose(pcs @ pcs.T, np.eye(2), atol=1e-5)
    # the trajectory's differences to the model lie in the span of all its principal directions
    layout = ModuleLayout.of(model)
    theta = layout.flatten(dict(model.named_parameters()))
    diffs = np.stack([layout.flatten(dict(m.named_parameters())) for m in trajectory[:3]]) - theta
    full = dirs.pca_directions(np.vstack([diffs + theta, theta]), 3)[0]
    np.testing.assert_allclose(np.abs(full[:2] @ pcs.T), np.eye(2), atol=1e-5)


def test_bad_arguments_are_one_line_errors_naming_them(tmp_path):
    model, data = _model(), _data(10, 7)
    loss = nn.CrossEntropyLoss()
    for kw, message in (({"settings": ScanSettings(split="valid")}, "settings.split"),
                        ({"settings": ScanSettings(directions=("pca",))}, "trajectory="),
                        ({"settings": ScanSettings(directions=("toward:b",))}, "toward="),
                        ({"train_data": (data[0], data[1][:3])}, "10 inputs but 3 targets")):
        with pytest.raises(ConfigError, match=message):
            scan_model(model, loss, data, tmp_path / "x.h5", **kw)
    with pytest.raises(ConfigError, match=r"\(inputs, targets\) or a DataLoader"):
        scan_model(model, loss, data[0], tmp_path / "x.h5")
    assert not (tmp_path / "x.h5").exists()


def test_flatness_table_and_resume_take_scan_model_files(tmp_path):
    model, data = _model(), _data(20, 8)
    settings = ScanSettings(directions=("gaussian",), n_directions=3, points=5, span=1.0, hessian=False)
    a = scan_model(model, nn.CrossEntropyLoss(), data, tmp_path / "a.h5", settings=settings,
                   run_id="cnn", group="cnn")
    again = scan_model(model, nn.CrossEntropyLoss(), data, tmp_path / "a.h5", settings=settings,
                       run_id="cnn", group="cnn", mode="resume")
    np.testing.assert_array_equal(a.runs[0].scans1d["gaussian"]["nll"],
                                  again.runs[0].scans1d["gaussian"]["nll"])
    table = flatness_table(load_result(tmp_path / "a.h5"), fit_radius=0.5, rise_radius=0.5, n_boot=50)
    assert table.groups[0].label == "cnn" and "curvature[gaussian]" in table.format()
    from trajviz.cli import main

    assert main(["plot", "landscape", str(tmp_path / "a.h5"), "-o", str(tmp_path / "a.png"), "-q"]) == 0
    assert (tmp_path / "a.png").stat().st_size > 1000


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_model_on_cuda_is_scanned_there_to_the_cpu_numbers(tmp_path):
    """The scan runs on the model's device (data given on the CPU are moved batch by batch)."""
    model, data = _model(), _data(40, 9)
    settings = ScanSettings(directions=("filter", "sgd"), n_directions=2, points=5, span=1.0,
                            grid=True, hessian=True, hessian_iters=4, hutchinson_probes=3)
    cpu = scan_model(model, nn.CrossEntropyLoss(), data, tmp_path / "cpu.h5", settings=settings)
    gpu_model = copy.deepcopy(model).cuda()
    gpu = scan_model(gpu_model, nn.CrossEntropyLoss(), data, tmp_path / "gpu.h5", settings=settings)
    assert next(gpu_model.parameters()).is_cuda
    for kind in ("filter", "sgd"):
        np.testing.assert_allclose(gpu.runs[0].scans1d[kind]["nll"], cpu.runs[0].scans1d[kind]["nll"],
                                   rtol=1e-4)
    np.testing.assert_allclose(gpu.runs[0].scans2d["filter"]["nll"], cpu.runs[0].scans2d["filter"]["nll"],
                               rtol=1e-4)
    assert gpu.runs[0].top_eigenvalue == pytest.approx(cpu.runs[0].top_eigenvalue, rel=1e-6)


class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 3), nn.Linear(2, 3)

    def forward(self, first, second):
        return self.a(first) + self.b(second)


def test_models_with_several_inputs_take_a_tuple_or_a_dict(tmp_path):
    torch.manual_seed(0)  # test-only: the tiny model's initial weights
    model = TwoInputs()
    g = torch.Generator().manual_seed(1)
    first, second, y = torch.randn(12, 4, generator=g), torch.randn(12, 2, generator=g), torch.arange(12) % 3
    with torch.no_grad():
        plain = float(nn.functional.cross_entropy(model(first, second), y))
    settings = ScanSettings(directions=("gaussian",), n_directions=1, points=3, span=1.0, hessian=False)
    for name, inputs in (("tuple", (first, second)), ("dict", {"first": first, "second": second})):
        res = scan_model(model, nn.CrossEntropyLoss(), (inputs, y), tmp_path / f"{name}.h5",
                         settings=settings, batch_size=5)
        assert res.runs[0].loss_at_theta[0] == pytest.approx(plain, rel=1e-6), name
