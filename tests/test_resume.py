"""Resume inside a run (trajviz/training/resume.py, docs/reliability.md "Resume inside a run"):
a recording stopped after checkpoint k continues from that checkpoint, not from epoch 0, and
ends bit-identical to an uninterrupted one; the state lives in the file under /resume while a
batch trains and is gone once it completes."""

from __future__ import annotations

import copy
import importlib.util
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from trajviz.config import config_from_dict
from trajviz.store import ExperimentFile, ExperimentWriter
from trajviz.store.journal import journal_path
from trajviz.training import runner

from conftest import TINY

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("fault_injection", ROOT / "benchmarks" / "fault_injection.py")
fi = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("fault_injection", fi)
_spec.loader.exec_module(fi)

# 3 seeds in batches of 2: per method a batch of 2 nets and one of 1; checkpoints every 7
# updates (mid-epoch) and at epoch ends: 8 per run, so 9 batch writes (8 checkpoints + the
# final one) per batch, 36 in all
CONFIG = copy.deepcopy(TINY)
CONFIG.update(seeds=[0, 1, 2], record={"every_steps": 7, "params": "all"},
              engine={"nets_per_batch": 2})
WRITES = 36


def _config(**engine):
    d = copy.deepcopy(CONFIG)
    d["engine"].update(engine)
    return config_from_dict(d)


class Stop(Exception):
    pass


def _count(monkeypatch, stop_after: int | None = None) -> list[int]:
    """Count the runner's batch writes (one per checkpoint of a batch, one when it ends) and
    the pre-trainings; raise Stop right after the ``stop_after``-th write is committed."""
    calls = {"writes": 0, "pretrain": 0}
    write, pretrain = runner._write_together, runner.apply_method

    def counting_write(*args, **kwargs):
        write(*args, **kwargs)
        calls["writes"] += 1
        if calls["writes"] == stop_after:
            raise Stop

    def counting_pretrain(net, method, *args, **kwargs):
        calls["pretrain"] += method != "none"
        return pretrain(net, method, *args, **kwargs)

    monkeypatch.setattr(runner, "_write_together", counting_write)
    monkeypatch.setattr(runner, "apply_method", counting_pretrain)
    return calls


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    return runner.record_experiment(_config(), tmp_path_factory.mktemp("ref") / "ref.h5")


def _resume_keys(path: Path) -> dict:
    with ExperimentFile(path) as f:
        return f.resume_states()


# write k: 1 = checkpoint 0 of the first batch, 8 = its last checkpoint (only the final write
# missing), 20 = the sdae batch's first mid-epoch checkpoint (its pre-training done)
@pytest.mark.parametrize("k", [1, 8, 20])
def test_stopped_after_checkpoint_k_resumes_there_and_ends_bit_identical(tmp_path, reference,
                                                                         monkeypatch, k):
    path = tmp_path / "stopped.h5"
    _count(monkeypatch, stop_after=k)
    with pytest.raises(Stop):
        runner.record_experiment(_config(), path)
    states = _resume_keys(path)
    assert len(states) == 1
    (meta,) = states.values()
    with ExperimentFile(path) as f:  # the state's checkpoint count is each of its runs'
        for rid in meta["runs"]:
            assert f.run_info(rid).n_checkpoints == meta["n_checkpoints"]
    from trajviz.store.summary import summarize  # what `trajviz info` prints

    assert f"{', '.join(meta['runs'])} at step {meta['step']}" in summarize(path).format()
    calls = _count(monkeypatch)
    runner.record_experiment(_config(), path, mode="resume")
    assert calls["writes"] == WRITES - k  # nothing done before the stop is done again
    # the sdae batch of seeds 0, 1 was pre-trained before write 19: not again
    assert calls["pretrain"] == (2 if k < 19 else 1)
    assert fi.differences(path, reference) == []
    assert _resume_keys(path) == {}
    with h5py.File(path) as f:
        assert "resume" not in f
    assert not journal_path(path).exists()


def test_a_killed_process_resumes_from_its_last_checkpoint(tmp_path, reference):
    """A real process that dies (os._exit: no cleanup, no close, as under SIGKILL) right after
    its 13th batch write; then `trajviz record --resume`. (Random SIGKILLs, inside HDF5 writes
    too: test_reliability.py's fault injection, which resumes from these states as well.)"""
    path, toml = tmp_path / "killed.h5", tmp_path / "c.toml"
    d = copy.deepcopy(CONFIG)
    toml.write_text("\n".join(f"{k} = {json.dumps(v)}" for k, v in d.items() if not isinstance(v, dict))
                    + "\n" + "\n".join(f"[{k}]\n" + "\n".join(f"{kk} = {json.dumps(vv)}" for kk, vv in v.items())
                                       for k, v in d.items() if isinstance(v, dict)) + "\n")
    script = f"""
import os, sys
from trajviz.training import runner
from trajviz.config import load_config
write, n = runner._write_together, [0]
def dying(*a, **kw):
    write(*a, **kw); n[0] += 1
    if n[0] == 13:
        os._exit(77)
runner._write_together = dying
runner.record_experiment(load_config({str(toml)!r}), {str(path)!r})
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert proc.returncode == 77, proc.stderr[-2000:]
    states = _resume_keys(path)
    assert [m["n_checkpoints"] for m in states.values()] == [4]  # batch 2 (none-seed2), 4th checkpoint
    from trajviz.cli import main

    assert main(["record", str(toml), "-o", str(path), "--resume", "-q"]) == 0
    assert fi.differences(path, reference) == []
    assert _resume_keys(path) == {}


def test_resume_state_off_keeps_no_state_and_redoes_the_batch(tmp_path, reference, monkeypatch):
    path = tmp_path / "off.h5"
    _count(monkeypatch, stop_after=5)
    with pytest.raises(Stop):
        runner.record_experiment(_config(resume_state=False), path)
    assert _resume_keys(path) == {}
    calls = _count(monkeypatch)
    runner.record_experiment(_config(resume_state=False), path, mode="resume")
    assert calls["writes"] == WRITES  # the first batch again from epoch 0
    assert fi.differences(path, reference, ignore_engine=True) == []


def test_a_state_for_other_engine_settings_or_a_damaged_one_is_dropped(tmp_path, reference,
                                                                     monkeypatch, caplog):
    """Resuming with another dtype: the state would not give the bits of either setting, so the
    batch starts over (and ends as an uninterrupted float64 run). A damaged state: the same."""
    ref64 = runner.record_experiment(_config(dtype="float64"), tmp_path / "ref64.h5")
    path = tmp_path / "changed.h5"
    _count(monkeypatch, stop_after=5)
    with pytest.raises(Stop):
        runner.record_experiment(_config(), path)
    calls = _count(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="trajviz.training.runner"):
        runner.record_experiment(_config(dtype="float64"), path, mode="resume")
    assert "written with engine settings" in caplog.text and "starts over" in caplog.text
    assert calls["writes"] == WRITES
    assert fi.differences(path, ref64, ignore_engine=True) == []

    damaged = tmp_path / "damaged.h5"
    _count(monkeypatch, stop_after=5)
    with pytest.raises(Stop):
        runner.record_experiment(_config(), damaged)
    with h5py.File(damaged, "r+") as f:
        (key,) = f["resume"].keys()
        del f[f"resume/{key}/rng/order"]
        f[f"resume/{key}/rng/order"] = np.zeros((3, 7), dtype=np.uint8)  # wrong shape
    caplog.clear()
    calls = _count(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="trajviz.training.runner"):
        runner.record_experiment(_config(), damaged, mode="resume")
    assert "rng/order" in caplog.text and "starts over" in caplog.text
    assert calls["writes"] == WRITES
    assert fi.differences(damaged, reference) == []
    assert _resume_keys(damaged) == {}


def test_finetune_split_at_any_checkpoint_continues_exactly():
    """The training loop alone, both backends: stop at a mid-epoch checkpoint, continue from its
    position (parameters and order generators as they were) and end with the same bits."""
    import torch

    from trajviz.config import TrainConfig
    from trajviz.training.nets import StackedMLP
    from trajviz.training.resume import FinetunePosition
    from trajviz.training.runner import finetune, run_streams

    gen = torch.Generator().manual_seed(0)
    x = torch.rand(53, 6, generator=gen)
    y = torch.randint(0, 3, (53,), generator=gen)
    cfg = TrainConfig(epochs=3, lr=0.3, batch_size=5)
    for backend in ("fast", "autograd"):
        def fresh():
            streams = [run_streams(s) for s in (4, 5)]
            return StackedMLP.init([6, 8, 3], [s.init for s in streams]), [s.order for s in streams]

        net, order = fresh()
        seen = {}
        finetune(net, (x, y), cfg, order, lambda step, epoch: seen.setdefault(
            step, [p.clone() for p in net.parameters()]), every_steps=4, backend=backend)
        for stop in (4, 11, 16, 28):  # mid-epoch and epoch-end checkpoints (11 updates/epoch)
            net, order = fresh()
            position = FinetunePosition()
            saved = {}

            def at(step, epoch):
                if step == stop:
                    saved.update(params=[p.clone() for p in net.parameters()],
                                 states=[s.clone() for s in position.order_states])
                    raise Stop

            with pytest.raises(Stop):
                finetune(net, (x, y), cfg, order, at, every_steps=4, backend=backend,
                         position=position)
            net, order = fresh()
            with torch.no_grad():
                for p, v in zip(net.parameters(), saved["params"]):
                    p.copy_(v)
            for g, s in zip(order, saved["states"]):
                g.set_state(s)
            after = {}
            finetune(net, (x, y), cfg, order, lambda step, epoch: after.setdefault(
                step, [p.clone() for p in net.parameters()]), every_steps=4, backend=backend,
                position=FinetunePosition(stop, saved["states"], taken=True))
            assert stop not in after and min(after) > stop
            for step, params in after.items():
                assert all(torch.equal(a, b) for a, b in zip(params, seen[step])), (backend, stop, step)


# --------------------------------------------------------------------------- the store side


def _writer(path: Path, mode: str = "create") -> ExperimentWriter:
    return ExperimentWriter(path, probe_targets=np.array([0, 1]), probe_sha="p", n_classes=2,
                            mode=mode)


def test_resume_state_round_trips_bit_for_bit_and_is_overwritten_in_place(tmp_path):
    path = tmp_path / "s.h5"
    rng = np.random.default_rng(0)
    with _writer(path) as w:
        for i in range(12):
            arrays = {"weights/0": rng.normal(size=(3, 40, 50)),
                      "weights/1": rng.normal(size=(3, 50, 2)).astype(np.float32),
                      "rng/order": rng.integers(0, 256, size=(3, 5056), dtype=np.uint8),
                      "alive": np.array([1, 0, 1], dtype=np.uint8)}
            w.write_resume_state("b0", arrays, {"step": i, "x": [1.5, "a"]})
            if i == 1:
                w.flush()
                size_after_two = path.stat().st_size
        got, meta = w.read_resume_state("b0")
        assert meta == {"step": 11, "x": [1.5, "a"]}
        assert set(got) == set(arrays)
        for name, arr in arrays.items():
            assert got[name].dtype == arr.dtype and got[name].tobytes() == arr.tobytes()
        assert w.resume_state_keys() == ["b0"]
        w.flush()
        assert path.stat().st_size == size_after_two  # rewrites reuse the same space
        w.delete_resume_state("b0")
        assert w.read_resume_state("b0") is None
    with h5py.File(path) as f:
        assert "resume" not in f


def test_atomic_writes_all_of_a_block_or_nothing(tmp_path):
    """Changes submitted inside `atomic()` are one transaction: an exception in the block
    writes none of them; a crash at any HDF5 write of the block leaves none or all."""
    path = tmp_path / "a.h5"
    with _writer(path) as w:
        run = w.start_run("r", seed=0, pretrain="none")
        run.append(0, np.full((2, 2), 0.5))
        with pytest.raises(Stop):
            with w.atomic():
                run.append(1, np.full((2, 2), 0.5))
                w.write_resume_state("b", {"a": np.ones(3)}, {"step": 1})
                raise Stop
        run._n = 1  # the failed block's append never happened
        assert w.resume_state_keys() == []
    with ExperimentFile(path) as f:
        assert f.run_info("r").n_checkpoints == 1 and f.resume_states() == {}

    def block(p: Path) -> None:
        with _writer(p, mode="resume") as w:
            run = w.start_run("r", seed=0, pretrain="none")
            with w.atomic():
                for t in range(3):
                    run.append(t, np.full((2, 2), 0.5))
                w.write_resume_state("b", {"a": np.arange(3000.0)}, {"step": 2})

    from test_reliability import _count_writes, _die_at_write  # the crash-at-write harness

    n_writes = _count_writes(pytest.MonkeyPatch(), lambda: block(tmp_path / "count.h5"))
    for k in range(2, n_writes + 1, max(1, n_writes // 8)):
        p = tmp_path / f"crash{k}.h5"
        _writer(p).close()
        with _writer(p, mode="resume") as w:
            w.start_run("r", seed=0, pretrain="none")
        assert _die_at_write(k, "half", lambda: block(p)) == 77
        with ExperimentFile(p) as f:
            n, states = f.run_info("r").n_checkpoints, f.resume_states()
        assert (n, list(states)) in ((0, []), (3, ["b"])), (k, n, states)


def test_a_state_of_runs_another_config_plans_is_left_alone(tmp_path, monkeypatch):
    """trajviz reproduce records each method of a setting with its own config into one file: a
    record of one method must not drop the resume state of another's interrupted batch."""
    import dataclasses

    both = _config()
    only = {m: both.replace(pretrain=dataclasses.replace(both.pretrain, methods=[m]))
            for m in ("none", "sdae")}
    path = tmp_path / "shared.h5"
    _count(monkeypatch, stop_after=2)
    with pytest.raises(Stop):
        runner.record_experiment(only["sdae"], path, file_config=both)
    _count(monkeypatch)
    runner.record_experiment(only["none"], path, mode="resume", file_config=both)
    assert list(_resume_keys(path)) == ["sdae-seed0"]
    calls = _count(monkeypatch)
    runner.record_experiment(only["sdae"], path, mode="resume", file_config=both)
    assert calls["writes"] == 18 - 2 and _resume_keys(path) == {}
