"""The fast engine: hand-derived fused steps against the autograd reference, batched against
separate runs, determinism, the background writer, and the runner's engine.backend plumbing."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from trajviz.config import PretrainConfig, TrainConfig, config_from_dict
from trajviz.record.background import BackgroundWriter, DeferredRun
from trajviz.training.fast import FinetuneStep, SDAEStep
from trajviz.errors import ConfigError
from trajviz.training.nets import StackedMLP
from trajviz.training.sdae import pretrain_sdae
from trajviz.store import ExperimentFile
from trajviz.training.runner import finetune, record_experiment, run_streams

SIZES = [20, 16, 12, 5]


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """These nets are tiny: a second intra-op thread only adds synchronisation, which on a
    shared, loaded machine made this file 4x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
N_TRAIN = 47  # not a multiple of the batch size: the last minibatch is short


def _data(dtype: torch.dtype, n: int = N_TRAIN, d: int = SIZES[0], c: int = SIZES[-1], seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, d, generator=g, dtype=torch.float64).to(dtype)
    y = torch.randint(0, c, (n,), generator=g)
    return x, y


def _net(seeds, dtype, sizes=SIZES, device="cpu") -> StackedMLP:
    return StackedMLP.init(sizes, [run_streams(s).init for s in seeds], dtype=dtype, device=device)


def _finetune(seeds, dtype, backend, *, l2=0.0, batch=10, epochs=2, device="cpu", x=None, y=None):
    """Fine-tune nets of ``seeds`` together; returns the net and the logits on the training
    inputs at every checkpoint, (T, K, n, C)."""
    if x is None:
        x, y = _data(dtype)
    x, y = x.to(device), y.to(device)
    net = _net(seeds, dtype, device=device)
    outputs = []

    def checkpoint(step, epoch):
        outputs.append(net.logits(x).detach().cpu().clone())

    cfg = TrainConfig(epochs=epochs, lr=0.3, batch_size=batch, l2=l2)
    finetune(net, (x, y), cfg, [run_streams(s).order for s in seeds], checkpoint,
             every_steps=3, backend=backend)
    return net, torch.stack(outputs)


def _assert_nets_close(a: StackedMLP, b: StackedMLP, **tol) -> None:
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa.cpu(), pb.cpu(), **tol)


F64 = dict(rtol=1e-10, atol=1e-12)


# --------------------------------------------------------------------------- fine-tuning


@pytest.mark.parametrize("l2", [0.0, 0.01])
@pytest.mark.parametrize("one_net_per_group", [False, True])
def test_finetune_fast_equals_autograd_float64(l2, one_net_per_group, monkeypatch):
    if one_net_per_group:  # FinetuneStep.run: each net through all its updates, then the next
        monkeypatch.setattr(FinetuneStep, "CPU_GROUP_BYTES", 1)
    fast, out_fast = _finetune([0, 1, 2], torch.float64, "fast", l2=l2)
    ref, out_ref = _finetune([0, 1, 2], torch.float64, "autograd", l2=l2)
    assert out_fast.shape[0] > 5  # every_steps=3 adds checkpoints inside epochs
    torch.testing.assert_close(out_fast, out_ref, **F64)
    _assert_nets_close(fast, ref, **F64)
    # and training did something: the nets moved away from their initialization
    start = _net([0, 1, 2], torch.float64)
    assert (fast.weights[0] - start.weights[0]).abs().max() > 1e-3


def test_finetune_fast_close_to_autograd_float32():
    fast, out_fast = _finetune([0, 1], torch.float32, "fast", l2=0.001)
    ref, out_ref = _finetune([0, 1], torch.float32, "autograd", l2=0.001)
    torch.testing.assert_close(out_fast, out_ref, rtol=1e-4, atol=1e-4)
    _assert_nets_close(fast, ref, rtol=1e-4, atol=1e-5)


def test_finetune_batch_of_one_example():
    """Online SGD (minibatch 1, the studies' setting) takes the same path."""
    fast, _ = _finetune([3], torch.float64, "fast", batch=1, epochs=1)
    ref, _ = _finetune([3], torch.float64, "autograd", batch=1, epochs=1)
    _assert_nets_close(fast, ref, **F64)


def test_batched_nets_equal_separate_runs_float64():
    seeds = [4, 5, 6]
    together, out_together = _finetune(seeds, torch.float64, "fast", l2=0.01)
    for k, seed in enumerate(seeds):
        alone, out_alone = _finetune([seed], torch.float64, "fast", l2=0.01)
        torch.testing.assert_close(out_together[:, k], out_alone[:, 0], **F64)
        _assert_nets_close(together.select([k]), alone, **F64)


def test_same_seed_same_numbers_on_rerun():
    a, out_a = _finetune([7, 8], torch.float32, "fast")
    b, out_b = _finetune([7, 8], torch.float32, "fast")
    assert torch.equal(out_a, out_b)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)


@pytest.mark.parametrize("group_bytes", [1, None, 1 << 40])
@pytest.mark.parametrize("batch", [1, 10, 40])
def test_step_and_grouped_run_equal_autograd_float64(group_bytes, batch):
    """Single updates and grouped runs of updates (one net at a time, the default grouping,
    all nets together) make the reference's updates (finetune_loss + autograd)."""
    from trajviz.training.runner import finetune_loss

    x, y = _data(torch.float64)
    stepped, grouped, ref = (_net([0, 1, 2], torch.float64) for _ in range(3))
    one = FinetuneStep(stepped, lr=0.3, l2=0.01)
    many = FinetuneStep(grouped, lr=0.3, l2=0.01, group_bytes=group_bytes)
    g = torch.Generator().manual_seed(5)
    idxs = [torch.stack([torch.randperm(N_TRAIN, generator=g)[:batch] for _ in range(3)])
            for _ in range(4)]
    for idx in idxs:
        one(x, y, idx)
        params = [p.requires_grad_(True) for p in ref.parameters()]
        grads = torch.autograd.grad(finetune_loss(ref, x[idx], y[idx], 0.01), params)
        with torch.no_grad():
            for p, gr in zip(params, grads):
                p.sub_(0.3 * gr)
    many.run(x, y, idxs)
    _assert_nets_close(stepped, ref, **F64)
    _assert_nets_close(grouped, ref, **F64)
    assert many.group_size == {1: 1, None: 3, 1 << 40: 3}[group_bytes]


def test_step_reuses_its_buffers():
    """A step allocates its activation buffers once per minibatch size, not per call."""
    x, y = _data(torch.float32)
    net = _net([0, 1], torch.float32)
    step = FinetuneStep(net, lr=0.1)
    idx = torch.arange(20).view(2, 10)
    step(x, y, idx)
    first = step._buffers[2, 10].acts[0].data_ptr()
    step(x, y, idx)
    step(x, y, idx[:, :7])
    assert step._buffers[2, 10].acts[0].data_ptr() == first
    assert sorted(step._buffers) == [(2, 7), (2, 10)]


def test_unknown_backend_is_refused():
    x, y = _data(torch.float32)
    net = _net([0], torch.float32)
    with pytest.raises(ConfigError, match="engine.backend"):
        finetune(net, (x, y), TrainConfig(epochs=1), [run_streams(0).order],
                 lambda s, e: None, backend="numpy")
    with pytest.raises(ConfigError, match="engine.backend"):
        config_from_dict({"engine": {"backend": "jit"}})


# --------------------------------------------------------------------------- pre-training


def _pretrain(seeds, dtype, backend, tied=True, device="cpu"):
    x, _ = _data(dtype)
    x = x.to(device)
    net = _net(seeds, dtype, device=device)
    cfg = PretrainConfig(epochs=2, lr=0.05, batch_size=10, corruption=0.25, tied=tied)
    history = pretrain_sdae(net, x, cfg, [run_streams(s).pretrain for s in seeds], backend=backend)
    return net, history


@pytest.mark.parametrize("tied", [True, False])
@pytest.mark.parametrize("one_net_per_group", [False, True])
def test_sdae_fast_equals_autograd_float64(tied, one_net_per_group, monkeypatch):
    if one_net_per_group:  # SDAEStep.run: each net through the epoch, then the next
        monkeypatch.setattr(FinetuneStep, "CPU_GROUP_BYTES", 1)
    fast, hist_fast = _pretrain([0, 1], torch.float64, "fast", tied)
    ref, hist_ref = _pretrain([0, 1], torch.float64, "autograd", tied)
    np.testing.assert_allclose(hist_fast, hist_ref, rtol=1e-10)
    _assert_nets_close(fast, ref, **F64)
    start = _net([0, 1], torch.float64)
    assert (fast.weights[1] - start.weights[1]).abs().max() > 1e-4  # both layers trained
    assert hist_fast[0][1] < hist_fast[0][0]  # reconstruction improves


def test_sdae_fast_close_to_autograd_float32():
    fast, hist_fast = _pretrain([2, 3], torch.float32, "fast")
    ref, hist_ref = _pretrain([2, 3], torch.float32, "autograd")
    np.testing.assert_allclose(hist_fast, hist_ref, rtol=1e-5)
    _assert_nets_close(fast, ref, rtol=1e-4, atol=1e-5)


def test_sdae_step_returns_the_reference_loss():
    from trajviz.training.sdae import sdae_loss

    g = torch.Generator().manual_seed(1)
    w = torch.randn(2, 6, 4, generator=g, dtype=torch.float64)
    b, c = torch.randn(2, 1, 4, dtype=torch.float64), torch.randn(2, 1, 6, dtype=torch.float64)
    clean = torch.rand(2, 3, 6, generator=g, dtype=torch.float64)
    corrupted = clean * (torch.rand(2, 3, 6, generator=g, dtype=torch.float64) > 0.3)
    expected = sdae_loss(clean, corrupted, w, b, w.transpose(1, 2), c)
    got = SDAEStep(w.clone(), b.clone(), c.clone(), None, lr=0.1)(clean, corrupted)
    torch.testing.assert_close(got, expected, **F64)


# --------------------------------------------------------------------------- device


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_fast_engine_on_cuda_matches_cpu_float64():
    cpu, out_cpu = _finetune([0, 1], torch.float64, "fast", l2=0.01)
    gpu, out_gpu = _finetune([0, 1], torch.float64, "fast", l2=0.01, device="cuda")
    assert gpu.weights[0].device.type == "cuda"
    torch.testing.assert_close(out_gpu, out_cpu, rtol=1e-9, atol=1e-10)
    _assert_nets_close(gpu, cpu, rtol=1e-9, atol=1e-10)
    for tied in (True, False):  # SDAEStep, both decoders
        cpu, hist_cpu = _pretrain([0, 1], torch.float64, "fast", tied=tied)
        gpu, hist_gpu = _pretrain([0, 1], torch.float64, "fast", tied=tied, device="cuda")
        np.testing.assert_allclose(hist_gpu, hist_cpu, rtol=1e-9)
        _assert_nets_close(gpu, cpu, rtol=1e-9, atol=1e-10)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_whole_record_on_cuda_matches_cpu_float64(tiny_dict, tmp_path):
    """A whole experiment recorded on the GPU (fused fine-tuning and SDAE steps, RBM, histogram
    init, evaluation, probe outputs, parameters) gives the CPU's numbers, in float64."""
    tiny_dict["pretrain"]["methods"] = ["none", "sdae", "sdae+hist", "rbm"]
    tiny_dict["record"] = {"params": "all"}
    paths = {}
    for device in ("cpu", "cuda"):
        tiny_dict["engine"] = {"dtype": "float64", "device": device}
        paths[device] = record_experiment(config_from_dict(tiny_dict), tmp_path / f"{device}.h5")
    with ExperimentFile(paths["cuda"]) as gpu, ExperimentFile(paths["cpu"]) as cpu:
        assert gpu.run_ids() == cpu.run_ids() and len(cpu.run_ids()) == 8
        for rid in cpu.run_ids():
            np.testing.assert_allclose(gpu.outputs(rid), cpu.outputs(rid), rtol=1e-6, atol=1e-7)
            for name, values in cpu.metrics(rid).items():
                np.testing.assert_allclose(gpu.metrics(rid)[name], values, rtol=1e-8, atol=1e-10)
            for name, values in cpu.params(rid, "trajectory").items():
                np.testing.assert_allclose(gpu.params(rid, "trajectory")[name], values,
                                           rtol=1e-6, atol=1e-7)


# --------------------------------------------------------------------------- background writes


def test_background_writer_keeps_order_and_overlaps():
    done: list[int] = []
    main = threading.get_ident()
    threads = set()

    def write(i):
        time.sleep(0.002)
        threads.add(threading.get_ident())
        done.append(i)

    with BackgroundWriter(max_pending=4) as writer:
        for i in range(20):
            writer.submit(write, i)
        writer.flush()
        assert done == list(range(20))
    assert main not in threads


def test_background_writer_reraises_a_failed_write_and_drops_later_ones():
    done = []

    def fail():
        raise OSError("disk full")

    writer = BackgroundWriter()
    writer.submit(fail)
    writer.submit(done.append, 1)  # queued after the failure: dropped
    with pytest.raises(OSError, match="disk full"):
        writer.flush()
    writer.close()
    assert done == []


def test_background_writer_lets_a_polling_reader_in_during_a_backlog():
    """Each write holds a lock (as a write transaction holds the file's lock); a reader polling
    for it must get a turn while a backlog drains, not only after the last write."""
    lock = threading.Lock()
    done = []

    def write(i):
        with lock:
            time.sleep(0.003)
            done.append(i)

    got_in_after = []

    def reader():
        while not got_in_after and len(done) < 40:
            if lock.acquire(blocking=False):
                got_in_after.append(len(done))
                lock.release()
            time.sleep(0.0005)

    with BackgroundWriter() as writer:
        for i in range(40):
            writer.submit(write, i)
        thread = threading.Thread(target=reader)
        thread.start()
        writer.flush()
        thread.join()
    assert got_in_after and got_in_after[0] < 40


def test_deferred_run_forwards_every_call():
    calls = []

    class Run:
        run_id = "r"

        def append(self, *a, **k):
            calls.append(("append", a, k))

        def save_params(self, *a, **k):
            calls.append(("save_params", a, k))

        def set_attrs(self, **k):
            calls.append(("set_attrs", (), k))

        def finish(self, *a, **k):
            calls.append(("finish", a, k))

    with BackgroundWriter() as writer:
        run = DeferredRun(Run(), writer)
        run.append("p", 3, epoch=1.0, train_nll=0.5)
        run.save_params({"w": 1})
        run.set_attrs(a=1)
        run.finish("complete")
    assert [c[0] for c in calls] == ["append", "save_params", "set_attrs", "finish"]
    assert calls[0] == ("append", ("p", 3), {"epoch": 1.0, "train_nll": 0.5})
    assert run.run_id == "r"


# --------------------------------------------------------------------------- the runner


def test_runner_backends_agree_float64(tiny_dict, tmp_path):
    """engine.backend reaches fine-tuning and SDAE pre-training: in float64 the two backends
    record the same outputs and metrics."""
    tiny_dict["engine"] = {"dtype": "float64"}
    tiny_dict["record"] = {"params": "all", "every_steps": 4}
    tiny_dict["dataset"]["n_train"] = 100
    tiny_dict["train"]["epochs"] = 1
    paths = {}
    for backend in ("fast", "autograd"):
        tiny_dict["engine"]["backend"] = backend
        paths[backend] = record_experiment(config_from_dict(tiny_dict), tmp_path / f"{backend}.h5")
    with ExperimentFile(paths["fast"]) as fast, ExperimentFile(paths["autograd"]) as ref:
        assert fast.run_ids() == ref.run_ids() and len(fast.run_ids()) == 4
        for rid in fast.run_ids():
            np.testing.assert_allclose(fast.outputs(rid), ref.outputs(rid), rtol=1e-6, atol=1e-7)
            for name, values in ref.metrics(rid).items():
                np.testing.assert_allclose(fast.metrics(rid)[name], values, rtol=1e-9, atol=1e-12)
            for name, values in ref.params(rid, "trajectory").items():
                np.testing.assert_allclose(fast.params(rid, "trajectory")[name], values,
                                           rtol=1e-6, atol=1e-7)
            assert fast.run_attrs(rid)["status"] == "complete"
