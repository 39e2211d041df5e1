"""Crash safety, locking, live reading, disk full and diverging training (docs/reliability.md).

The SIGKILL suite is the short version of benchmarks/fault_injection.py (same code, fewer
kills); crashes inside HDF5 writes are also injected deterministically, at every write of a
small writing scenario, in forked processes that die half-way through a write.
"""

from __future__ import annotations

import errno
import importlib.util
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from trajviz.errors import FileLockedError, StoreWriteError
from trajviz.store.journal import OWNER_LEN, JournaledFile, WriteSession, journal_path, read_hot_journal
from trajviz.store import ExperimentFile, ExperimentWriter, LandscapeFile, LandscapeWriter

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("fault_injection", ROOT / "benchmarks" / "fault_injection.py")
fi = importlib.util.module_from_spec(_spec)
sys.modules["fault_injection"] = fi
_spec.loader.exec_module(fi)

TARGETS = np.array([0, 1, 2, 1, 0, 2])
RUNS = ("a", "b", "c")


def scenario(path: Path, mode: str = "create") -> None:
    """A small deterministic recording: three runs, four checkpoints each, run b keeping its
    parameter trajectory; a resume skips complete runs and redoes the rest."""
    with ExperimentWriter(path, probe_targets=TARGETS, probe_sha="p", n_classes=3, name="s",
                          config_json='{"a": 1}', mode=mode) as w:
        done = w.completed_runs()
        for i, rid in enumerate(RUNS):
            if rid in done:
                continue
            rng = np.random.default_rng(i)
            probs = rng.dirichlet(np.ones(3), size=(4, 6)).astype(np.float32)
            run = w.start_run(rid, seed=i, pretrain="none")
            for t in range(4):
                run.append(10 * t, probs[t], {"train_nll": 1.0 / (t + 1), "test_error": 0.1 * t},
                           epoch=float(t),
                           params={"w": rng.normal(size=(3, 2))} if rid == "b" else None)
            run.write_params({"w": np.full((3, 2), i, dtype=np.float32)})
            run.finish()


@pytest.fixture(scope="module")
def expected(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ref") / "ref.h5"
    scenario(path)
    return path


def _count_writes(monkeypatch, run: Callable[[], None]) -> int:
    """How many journaled HDF5 writes ``run`` makes."""
    calls = [0]
    orig = JournaledFile.write

    def counting(self, data):
        calls[0] += 1
        return orig(self, data)

    monkeypatch.setattr(JournaledFile, "write", counting)
    run()
    monkeypatch.setattr(JournaledFile, "write", orig)
    return calls[0]


def _crash_child(path: Path, k: int, how: str) -> int:
    """Fork; the child runs the scenario and dies (os._exit) at its k-th HDF5 write: after
    writing half of it ('half') or all of it ('after'). Returns the child's exit code."""
    return _die_at_write(k, how, lambda: scenario(path, mode="resume"))


def _die_at_write(k: int, how: str, run: Callable[[], None]) -> int:
    """Fork; the child calls ``run`` and dies (os._exit(77)) at its k-th journaled HDF5 write,
    after writing half of it ('half') or all of it ('after'); exit 0 if ``run`` returns first,
    3 if it raises. Returns the child's exit code."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            calls = [0]
            orig = JournaledFile.write

            def crashing(self, data):
                calls[0] += 1
                if calls[0] == k:
                    data = bytes(data)
                    if how == "half":
                        pos = self.tell()
                        self._journal.save_pages(self.fd, pos, pos + len(data))
                        os.pwrite(self.fd, data[:len(data) // 2], pos)
                    else:
                        orig(self, data)
                    os._exit(77)
                return orig(self, data)

            JournaledFile.write = crashing
            run()
            os._exit(0)
        except BaseException:
            os._exit(3)
    _, status = os.waitpid(pid, 0)
    return os.WEXITSTATUS(status)


def test_a_crash_at_any_hdf5_write_leaves_a_readable_prefix_and_resume_completes_it(
        tmp_path, expected, monkeypatch):
    n_writes = _count_writes(monkeypatch, lambda: scenario(tmp_path / "count.h5"))
    assert n_writes > 20
    ks = sorted(set(np.linspace(1, n_writes, 14).astype(int)))
    hot = 0
    for i, k in enumerate(ks):
        how = ("half", "after")[i % 2]
        path = tmp_path / f"crash{k}.h5"
        assert _crash_child(path, k, how) == 77, f"the child did not reach write {k}"
        hot += read_hot_journal(path) is not None
        problems = fi.prefix_problems(path, expected)  # opens, verifies, compares checkpoints
        assert not problems, (k, how, problems)
        scenario(path, mode="resume")
        assert fi.differences(path, expected) == [], (k, how)
        assert not journal_path(path).exists()
    assert hot >= len(ks) // 2  # most crashes did land inside a transaction


@pytest.fixture(scope="module")
def server():
    s = fi.ForkServer()
    yield s
    s.close()


def test_sigkill_at_random_moments_then_resume_is_bit_identical(tmp_path, server):
    """The CI version of benchmarks/fault_injection.py: 3 SIGKILLs of `trajviz record`."""
    report = fi.inject(3, tmp_path, seed=3, epochs=2, n_train=80, in_write_fraction=0.7,
                       log=lambda *a: None, server=server, plain_run=False,
                       reference_delay=0.003)
    assert report.failures == []
    assert report.kills_tried == report.kills_survived == 3
    assert report.identical
    assert report.live_reads >= 1  # `info`'s library twin read the reference as it recorded


def test_disk_full_says_so_and_keeps_the_complete_checkpoints(tmp_path, server):
    cfg = tmp_path / "fault.toml"
    cfg.write_text(fi.TINY_TOML.format(epochs=2, n_train=80))
    out = tmp_path / "full.h5"
    rc = server.run(["record", str(cfg), "-o", str(out), "-q"], cwd=tmp_path,
                    log=tmp_path / "full.log", fsize=160 * 1024)
    err = (tmp_path / "full.log").read_text().strip().splitlines()
    assert rc == 1, err
    assert len(err) == 1 and "Traceback" not in err[0], err
    assert "file-size limit" in err[0] and "--resume" in err[0]
    with ExperimentFile(out) as f:
        f.verify()
        assert sum(f.run_info(r).n_checkpoints for r in f.run_ids()) >= 1
    rc = server.run(["record", str(cfg), "-o", str(out), "--resume", "-q"], cwd=tmp_path,
                    log=tmp_path / "resume.log")
    assert rc == 0, (tmp_path / "resume.log").read_text()
    with ExperimentFile(out) as f:
        assert {f.run_info(r).status for r in f.run_ids()} == {"complete"}


@pytest.mark.parametrize("persistent", [False, True])
def test_a_failed_write_is_rolled_back_and_reported(tmp_path, monkeypatch, expected, persistent):
    """Disk full at the 60th write: once (the rollback then succeeds in-process), or for
    good (the rollback fails too; readers see the rolled-back state, --resume completes it)."""
    path = tmp_path / "f.h5"
    orig = os.pwrite
    calls = [0]

    def failing(fd, data, offset):
        calls[0] += 1
        if calls[0] == 60 or (persistent and calls[0] > 60):
            raise OSError(errno.ENOSPC, "No space left on device")
        return orig(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", failing)
    with pytest.raises(StoreWriteError, match="disk is full.*reopen it with mode=.resume."):
        scenario(path)
    monkeypatch.setattr(os, "pwrite", orig)
    assert not fi.prefix_problems(path, expected)
    scenario(path, mode="resume")
    assert fi.differences(path, expected) == []


# --------------------------------------------------------------------------- locking


def _writer(path: Path, mode: str = "resume") -> ExperimentWriter:
    return ExperimentWriter(path, probe_targets=TARGETS, probe_sha="p", n_classes=3,
                            config_json='{"a": 1}', mode=mode)


def test_a_second_writer_is_refused_naming_the_first(tmp_path):
    path = tmp_path / "f.h5"
    first = _writer(path, "create")
    try:
        with pytest.raises(FileLockedError, match=rf"being written by .*pid {os.getpid()}"):
            _writer(path)
        assert path.exists()
    finally:
        first.close()
    assert not journal_path(path).exists()
    _writer(path).close()  # free again


def test_record_refuses_a_file_being_written(tmp_path, capsys):
    from trajviz.cli import main

    cfg = tmp_path / "fault.toml"
    cfg.write_text(fi.TINY_TOML.format(epochs=1, n_train=40))
    out = tmp_path / "busy.h5"
    holder = _writer(out, "create")
    try:
        rc = main(["record", str(cfg), "-o", str(out), "--resume", "-q"])
    finally:
        holder.close()
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1, err
    # the holder is in this very process here; another process's is named the same way
    assert "being written by a writer of this very process" in err[0] and "Traceback" not in err[0]


def test_a_killed_writer_leaves_no_lock_behind(tmp_path, expected):
    """The lock is an flock: the kernel drops it with the process. The journal (and its owner
    block naming the dead pid) stays, and the next writer takes over at once."""
    path = tmp_path / "f.h5"
    scenario(path)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child holds the file open, then is killed
        held = _writer(path)  # referenced: a writer nobody holds is closed when collected
        os.kill(os.getpid(), signal.SIGSTOP)
        os._exit(0 if held else 1)
    os.waitpid(pid, os.WUNTRACED)
    try:
        with pytest.raises(FileLockedError, match=f"pid {pid}"):
            _writer(path)
    finally:  # never leave the stopped child behind, even if the check fails
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    assert journal_path(path).stat().st_size >= OWNER_LEN  # stale journal left behind
    t0 = time.monotonic()
    _writer(path).close()
    assert time.monotonic() - t0 < 5
    assert fi.differences(path, expected) == []


# --------------------------------------------------------------------------- live reading


def test_readers_see_committed_state_and_writers_queue_meanwhile(tmp_path):
    path = tmp_path / "f.h5"
    w = _writer(path, "create")
    run = w.start_run("a", seed=0, pretrain="none")
    probs = np.full((6, 3), 1 / 3, dtype=np.float32)
    run.append(0, probs, {"train_nll": 1.0})
    reader = ExperimentFile(path)
    assert reader.run_info("a").n_checkpoints == 1
    t0 = time.monotonic()
    for t in range(1, 4):  # the reader holds the file: appends queue, they do not wait
        run.append(t, probs, {"train_nll": 1.0})
    assert time.monotonic() - t0 < 1.0
    assert run.n_checkpoints == 4 and reader.run_info("a").n_checkpoints == 1
    reader.close()
    run.finish()  # the reader is gone: the queue is written
    with ExperimentFile(path) as f:
        assert f.steps("a").tolist() == [0, 1, 2, 3]
        assert f.run_info("a").status == "complete"
    w.close()


# --------------------------------------------------------------------------- landscape files


def landscape_scenario(path: Path, mode: str = "create", on_row=None) -> None:
    """A small deterministic landscape file as `trajviz landscape` writes one: two runs, each
    with attributes, a directions array, a 4-row table and Hessian attributes; a resume keeps
    finished rows and writes the rest. ``on_row(table, i)`` is called after each row is written."""
    with LandscapeWriter(path, config_json='{"points": 5}', source="src.h5", mode=mode) as w:
        if not w.has("alphas"):
            w.write_array("alphas", np.linspace(-1.0, 1.0, 5))
            w.set_attrs("/", probe_sha256="p")
        for i, rid in enumerate(("a", "b")):
            rng = np.random.default_rng(i)
            directions = rng.normal(size=(4, 300)).astype(np.float32)
            values = rng.random((2, 4, 5))
            key = f"runs/{rid}"
            if w.get_attrs(key).get("status") == "complete":
                continue
            if not w.has(key):
                w.set_attrs(key, seed=i, status="running")
            if not w.has(f"{key}/directions/sgd"):
                w.write_array(f"{key}/directions/sgd", directions, kind="sgd")
            table = f"{key}/scan1d/sgd"
            w.require_rows(table, 4, (5,), ("nll", "error"))
            done = w.done_rows(table)
            for t in range(4):
                if not done[t]:
                    w.write_row(table, t, nll=values[0, t], error=values[1, t])
                    if on_row is not None:
                        on_row(table, t)
            w.set_attrs(f"{key}/hessian", top_eigenvalue=float(i), trace=2.0 * i)
            w.set_attrs(key, status="complete")


@pytest.fixture(scope="module")
def expected_landscape(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ref") / "ref.landscape.h5"
    landscape_scenario(path)
    return path


def _crash_landscape_child(path: Path, k: int, how: str, rows_log: Path) -> int:
    """As _crash_child, for the landscape scenario; every row whose write_row returned (so
    whose transaction committed) is appended to ``rows_log`` first."""
    def run() -> None:
        fd = os.open(rows_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        landscape_scenario(path, mode="resume",
                           on_row=lambda table, t: os.write(fd, f"{table} {t}\n".encode()))

    return _die_at_write(k, how, run)


def test_a_crash_at_any_hdf5_write_of_a_landscape_file_keeps_every_finished_row(
        tmp_path, expected_landscape, monkeypatch):
    """LandscapeWriter writes through the journal: a process dying at any HDF5 write leaves a
    file that LandscapeFile reads (before any repair) with every row written so far, nothing
    else, and whose resume ends equal to an uninterrupted run."""
    n_writes = _count_writes(monkeypatch, lambda: landscape_scenario(tmp_path / "count.h5"))
    assert n_writes > 20  # also fails if the writer bypasses JournaledFile
    ks = sorted(set(np.linspace(1, n_writes, 12).astype(int)))
    hot = 0
    for i, k in enumerate(ks):
        how = ("half", "after")[i % 2]
        path, rows_log = tmp_path / f"crash{k}.h5", tmp_path / f"crash{k}.rows"
        assert _crash_landscape_child(path, k, how, rows_log) == 77, f"no write {k}"
        hot += read_hot_journal(path) is not None
        assert not fi.landscape_prefix_problems(path, expected_landscape), (k, how)
        finished = rows_log.read_text().split("\n")[:-1] if rows_log.exists() else []
        with LandscapeFile(path) as f:
            for line in finished:
                table, t = line.split()
                assert f.array(f"{table}/done")[int(t)] == 1, (k, how, line)
            n_done = sum(int(f.array(f"runs/{r}/scan1d/sgd/done").sum())
                         for r in f.keys("runs") if f.has(f"runs/{r}/scan1d/sgd/done"))
        assert n_done == len(finished), (k, how)  # and no row is marked done half-written
        landscape_scenario(path, mode="resume")
        assert fi.landscape_differences(path, expected_landscape) == [], (k, how)
        assert not journal_path(path).exists()
    assert hot >= len(ks) // 2  # most crashes did land inside a transaction


def test_sigkill_of_trajviz_landscape_keeps_finished_rows_and_resume_gives_the_same_numbers(
        tmp_path, server):
    """The CI version of `benchmarks/fault_injection.py --landscape`: `trajviz landscape
    --resume` SIGKILLed inside HDF5 writes (a hot journal each time), the file read after each
    kill, then resumed to the end; compared with an uninterrupted scan, bit for bit."""
    report = fi.inject_landscape(3, tmp_path, seed=1, log=lambda *a: None, server=server)
    assert report.failures == []
    assert report.kills_tried == report.kills_survived == 3
    assert report.inside_write >= 2
    assert report.rows_seen and report.rows_seen[-1] >= 1
    assert report.identical


def test_a_landscape_reader_sees_finished_rows_while_the_writer_queues(tmp_path):
    path = tmp_path / "l.h5"
    w = LandscapeWriter(path, config_json="{}")
    w.require_rows("t", 3, (2,), ("nll",))
    w.write_row("t", 0, nll=np.array([1.0, 2.0]))
    reader = LandscapeFile(path)
    t0 = time.monotonic()
    w.write_row("t", 1, nll=np.array([3.0, 4.0]))  # queued: the reader holds the file
    w.set_attrs("/", status="x")
    assert time.monotonic() - t0 < 1.0
    assert reader.array("t/done").tolist() == [1, 0, 0]
    reader.close()
    w.write_row("t", 2, nll=np.array([5.0, 6.0]))
    w.close()
    with LandscapeFile(path) as f:
        assert f.array("t/done").tolist() == [1, 1, 1]
        assert f.array("t/nll").tolist() == [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]
        assert f.attrs("/")["status"] == "x"
    with pytest.raises(FileLockedError, match="being written"):
        with LandscapeWriter(path, config_json="{}", mode="resume"):
            LandscapeWriter(path, config_json="{}", mode="resume")


def _damage_landscape(src: Path, dst: Path, how: str) -> Path:
    import shutil

    import h5py

    if how == "truncated":
        dst.write_bytes(src.read_bytes()[:src.stat().st_size // 2])
        return dst
    shutil.copy(src, dst)
    with h5py.File(dst, "r+") as f:
        if how == "runs a dataset":
            del f["runs"]
            f["runs"] = [1, 2]
        elif how == "alphas strings":
            del f["alphas"]
            f["alphas"] = np.array([b"a", b"b"])
        elif how == "config a list":
            f.attrs["config"] = "[1, 2]"
        elif how == "version 99":
            f.attrs["format_version"] = 99
    return dst


@pytest.mark.parametrize("how", ["truncated", "runs a dataset", "alphas strings", "config a list",
                                 "version 99"])
def test_a_damaged_landscape_file_is_refused_in_one_line(tmp_path, expected_landscape, how):
    from trajviz.errors import FormatError
    from trajviz.landscape import load_result

    path = _damage_landscape(expected_landscape, tmp_path / "bad.h5", how)
    with pytest.raises(FormatError) as err:
        load_result(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("kind", ["experiment", "landscape"])
def test_replacing_a_crashed_file_uses_up_its_journal_first(tmp_path, kind, monkeypatch):
    """--overwrite of a file whose writer was killed mid-change: if this writer dies right after
    putting the new file in place, the old journal must not be applied to the new file."""
    path = tmp_path / "f.h5"
    child = _crash_child if kind == "experiment" else (
        lambda p, k, how: _crash_landscape_child(p, k, how, tmp_path / "rows"))
    assert child(path, 30, "half") == 77
    assert read_hot_journal(path) is not None

    def dies(self):
        raise KeyboardInterrupt  # as if killed between the rename and opening the new file

    monkeypatch.setattr(WriteSession, "open_main", dies)
    with pytest.raises(KeyboardInterrupt):
        if kind == "experiment":
            _writer(path, "overwrite")
        else:
            LandscapeWriter(path, config_json="{}", mode="overwrite")
    assert read_hot_journal(path) is None
    reader = ExperimentFile if kind == "experiment" else LandscapeFile
    with reader(path):
        pass


# --------------------------------------------------------------------------- diverging


def test_a_diverged_net_stops_while_the_others_train_exactly_as_alone():
    import torch

    from trajviz.config import TrainConfig
    from trajviz.training.nets import StackedMLP
    from trajviz.training.runner import finetune, run_streams

    x = torch.as_tensor(np.random.default_rng(0).normal(size=(40, 5)), dtype=torch.float32)
    y = torch.as_tensor(np.arange(40) % 2)
    cfg = TrainConfig(epochs=2, lr=0.1, batch_size=10)

    def train(seeds, poison=None):
        st = [run_streams(s) for s in seeds]
        net = StackedMLP.init([5, 4, 2], [s.init for s in st])
        active = np.ones(len(seeds), dtype=bool)
        if poison is not None:
            with torch.no_grad():
                for w in net.weights:
                    w[poison] = float("nan")
            active[poison] = False
        finetune(net, (x, y), cfg, [s.order for s in st], lambda step, epoch: None,
                 active=active, backend="autograd")
        return net

    both = train([0, 1], poison=1)
    alone = train([0])
    for wb, wa in zip(both.parameters(), alone.parameters()):
        assert torch.equal(wb[0], wa[0])
    assert all(torch.isnan(w[1]).all() for w in both.weights)  # untouched, no update


def test_a_huge_learning_rate_is_flagged_diverged_and_info_shows_it(tmp_path, tiny_dict):
    from trajviz.config import config_from_dict
    from trajviz.store.summary import summarize
    from trajviz.training.runner import record_experiment

    tiny_dict.update(seeds=[0])
    tiny_dict["pretrain"].update(methods=["none"])
    tiny_dict["train"].update(lr=1e38, epochs=3)  # representable in float32
    out = record_experiment(config_from_dict(tiny_dict), tmp_path / "div.h5")
    with ExperimentFile(out) as f:
        (rid,) = f.run_ids()
        info, attrs = f.run_info(rid), f.run_attrs(rid)
        assert info.status == "diverged" and attrs["diverged_step"] > 0
        assert info.n_checkpoints >= 1
        assert np.isfinite(f.metrics(rid)["train_nll"]).all()  # recorded only while finite
    summary = summarize(out)
    assert summary.diverged == {rid: int(attrs["diverged_step"])}
    assert f"{rid} at step {attrs['diverged_step']}" in summary.format()
