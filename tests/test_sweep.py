"""trajviz.sweep: expansion of [sweep] tables, gathering shards, the local pool and Ray engines,
retries of failed and crashed jobs, and re-runs that do no work.

Most engine tests use ``fake_record``, a task that writes a shard the way ``record_job`` does but
without torch, so that worker processes start fast; the tests marked "real" train tiny nets.
Task functions live at module level so that spawned (or Ray) workers can import them.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from trajviz import sweep
from trajviz.cli import main
from trajviz.errors import ConfigError, FormatError, OutputExistsError
from trajviz.store import ExperimentFile, ExperimentWriter, ShardSource, gather, probe_sha256

TINY_SWEEP = {
    "name": "tinysweep",
    "seeds": [0, 1],
    "dataset": {"name": "shapeset", "n_train": 200, "n_valid": 40, "n_test": 40},
    "model": {"depth": 2, "width": 10},
    "pretrain": {"methods": ["none"], "epochs": 1},
    "train": {"epochs": 1, "batch_size": 20},
    "probe": {"n": 30},
    "sweep": {"model.width": [10, 12]},
}

TINY_TOML = """\
name = "tinysweep"
seeds = [0]
[dataset]
name = "shapeset"
n_train = 200
n_valid = 40
n_test = 40
[model]
width = 10
[pretrain]
methods = ["none"]
epochs = 1
[train]
epochs = 1
batch_size = 20
[probe]
n = 30
[sweep]
model.width = [10, 12]        # unquoted dotted key: a nested table, flattened
"""


# --------------------------------------------------------------------------- task functions


def fake_record(config_json: str, shard: str) -> None:
    """Write a job's shard as record_job would (one run per method), without training:
    the outputs are a deterministic function of seed, width and method."""
    cfg = json.loads(config_json)
    seed, width = cfg["seeds"][0], cfg["model"]["width"]
    probe = np.eye(6, dtype=np.float32)
    with ExperimentWriter(shard, probe_targets=np.arange(6) % 2, probe_sha=probe_sha256(probe),
                          n_classes=2, name=cfg["name"], config_json=config_json,
                          mode="resume") as w:
        for k, method in enumerate(cfg["pretrain"]["methods"]):
            run = w.start_run(f"{method}-seed{seed}", seed=seed, pretrain=method, group=method)
            for step in range(3):
                p = (seed + width + k + step) % 7 / 7.0
                probs = np.tile(np.array([p, 1 - p], dtype=np.float32), (6, 1))
                run.append(step, probs, {"train_nll": float(p)})
            run.finish()


def crash_once(marker_dir: str, config_json: str, shard: str) -> None:
    """Kill the worker process (no exception, no cleanup) on the first attempt of seed 0's jobs."""
    cfg = json.loads(config_json)
    marker = Path(marker_dir) / f"{Path(shard).stem}.crashed"
    if cfg["seeds"][0] == 0 and not marker.exists():
        marker.touch()
        os._exit(13)
    fake_record(config_json, shard)


def crash_seed0(config_json: str, shard: str) -> None:
    """Kill the worker process on every attempt of seed 0's jobs; record the others."""
    if json.loads(config_json)["seeds"][0] == 0:
        os._exit(13)
    fake_record(config_json, shard)


def fail_seed1(config_json: str, shard: str) -> None:
    """Raise on every attempt of seed 1's jobs; record the others."""
    if json.loads(config_json)["seeds"][0] == 1:
        raise RuntimeError("planted failure")
    fake_record(config_json, shard)


def crash_beside_a_stalled_job(marker_dir: str, config_json: str, shard: str) -> None:
    """width 10: seed 1's first attempt stalls for 60 s; seed 0's first attempt kills its
    worker once seed 1 is stalling; every other attempt records."""
    cfg = json.loads(config_json)
    marker = Path(marker_dir) / f"{Path(shard).stem}.first"
    stalling = Path(marker_dir) / "stalling"
    if cfg["model"]["width"] == 10 and not marker.exists():
        marker.touch()
        if cfg["seeds"][0] == 1:
            stalling.touch()
            time.sleep(60.0)
        deadline = time.monotonic() + 30
        while not stalling.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        os._exit(13)
    fake_record(config_json, shard)


def finish_then_linger(marker_dir: str, config_json: str, shard: str) -> None:
    """width 10: seed 1 records, leaves a marker per call and lingers 5 s before returning;
    seed 0's first attempt kills its worker once seed 1 has recorded (during its lingering)."""
    cfg = json.loads(config_json)
    if cfg["model"]["width"] == 10 and cfg["seeds"][0] == 1:
        fake_record(config_json, shard)
        (Path(marker_dir) / f"call-{time.monotonic_ns()}").touch()
        time.sleep(5.0)
        return
    if cfg["model"]["width"] == 10:
        deadline = time.monotonic() + 30
        while not any(Path(marker_dir).glob("call-*")) and time.monotonic() < deadline:
            time.sleep(0.02)
    crash_once(marker_dir, config_json, shard)


def must_not_run(config_json: str, shard: str) -> None:
    raise AssertionError("a job ran although its shard was complete")


def _outputs(path: Path) -> dict[str, np.ndarray]:
    with ExperimentFile(path) as f:
        return {r: f.outputs(r) for r in f.run_ids()}


# --------------------------------------------------------------------------- expansion


def test_expand_grid_times_seeds():
    spec = sweep.sweep_from_dict({**TINY_SWEEP, "seeds": [0, 1, 2],
                                  "sweep": {"model.width": [10, 20],
                                            "pretrain.methods": [["none"], ["none", "sdae"]]}})
    jobs = sweep.expand(spec)
    assert len(jobs) == 2 * 2 * 3
    assert len({j.key for j in jobs}) == len(jobs)
    assert [j.index for j in jobs] == list(range(12))
    first = jobs[0]
    assert first.label == "width=10;methods=none" and first.key == "width=10;methods=none-seed0"
    assert first.config.seeds == [0] and first.config.model.width == 10
    last = jobs[-1]
    assert last.point == {"model.width": 20, "pretrain.methods": ["none", "sdae"]}
    assert last.config.pretrain.methods == ["none", "sdae"] and last.seed == 2
    assert last.label == "width=20;methods=none+sdae"


def test_labels_disambiguate_keys_with_the_same_last_part():
    spec = sweep.sweep_from_dict({**TINY_SWEEP, "sweep": {"train.epochs": [1], "pretrain.epochs": [2]}})
    assert sweep.expand(spec)[0].label == "train.epochs=1;pretrain.epochs=2"


def test_no_grid_is_one_job_per_seed():
    spec = sweep.sweep_from_dict({k: v for k, v in TINY_SWEEP.items() if k != "sweep"})
    assert [j.key for j in sweep.expand(spec)] == ["seed0", "seed1"]


@pytest.mark.parametrize("grid, message", [
    ({"seeds": [[0], [1]]}, "seeds are the sweep's other axis"),
    ({"model.width": 10}, "expected a non-empty list"),
    ({"model.width": []}, "expected a non-empty list"),
    ({"model.width": [10, 10]}, "must be distinct"),
    ({"model.widht": [10]}, "unknown config key 'model.widht'"),
    ({"model.width": [10, 0]}, "sweep point width=0: model.width = 0: must be >= 1"),
    ({"pretrain.methods": ["none"]}, "pretrain.methods = 'none': expected a list"),
])
def test_bad_sweep_tables_fail_before_any_job(grid, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        sweep.sweep_from_dict({**TINY_SWEEP, "sweep": grid})


def test_load_sweep_flattens_tables_and_applies_set(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(TINY_TOML)
    spec = sweep.load_sweep(path, ["train.epochs=2", "sweep.train.lr=[0.1, 0.2]"])
    assert spec.grid == {"model.width": [10, 12], "train.lr": [0.1, 0.2]}
    jobs = sweep.expand(spec)
    assert len(jobs) == 4 and all(j.config.train.epochs == 2 for j in jobs)
    assert jobs[1].label == "width=10;lr=0.2"
    with pytest.raises(ConfigError, match="does not exist"):
        sweep.load_sweep(tmp_path / "missing.toml")


# --------------------------------------------------------------------------- gather


def _shard(path: Path, seed: int, probe_value: float = 1.0) -> Path:
    cfg = {"name": "x", "seeds": [seed], "model": {"width": 3}, "pretrain": {"methods": ["none", "sdae"]}}
    fake_record(json.dumps(cfg), str(path))
    if probe_value != 1.0:  # a shard recorded on another probe set
        with ExperimentWriter(path.with_suffix(".other.h5"), probe_targets=np.zeros(6),
                              probe_sha=probe_sha256(np.full(6, probe_value)), n_classes=2) as w:
            w.start_run("none-seed0", seed=0, pretrain="none").finish()
        return path.with_suffix(".other.h5")
    return path


def test_gather_copies_runs_renamed_with_attrs(tmp_path):
    a, b = _shard(tmp_path / "a.h5", 0), _shard(tmp_path / "b.h5", 1)
    out = gather([ShardSource(a, "p1:", " p1", {"sweep_point": '{"k": 1}'}), ShardSource(b, "p2:", " p2")],
                 tmp_path / "all.h5", name="merged", config_json='{"name": "merged"}',
                 root_attrs={"extra": "yes"})
    with ExperimentFile(out) as f:
        assert f.run_ids() == ["p1:none-seed0", "p1:sdae-seed0", "p2:none-seed1", "p2:sdae-seed1"]
        assert f.name == "merged" and f.config == {"name": "merged"}
        info = f.run_info("p1:sdae-seed0")
        assert (info.group, info.seed, info.status) == ("sdae p1", 0, "complete")
        attrs = f.run_attrs("p1:none-seed0")
        assert attrs["sweep_point"] == '{"k": 1}' and attrs["source_shard"] == "a.h5"
        assert json.loads(attrs["config"])["seeds"] == [0]  # the shard's config, per run
        with ExperimentFile(b) as src:
            np.testing.assert_array_equal(f.outputs("p2:sdae-seed1"), src.outputs("sdae-seed1"))
            np.testing.assert_array_equal(f.probe_targets(), src.probe_targets())
    with pytest.raises(OutputExistsError):
        gather([a], out)
    assert not list(tmp_path.glob(".*tmp"))


def test_gather_refuses_other_probe_sets_and_duplicate_ids(tmp_path):
    a = _shard(tmp_path / "a.h5", 0)
    other = _shard(tmp_path / "c.h5", 0, probe_value=0.5)
    with pytest.raises(FormatError, match="different probe set"):
        gather([a, other], tmp_path / "x.h5")
    with pytest.raises(FormatError, match="occurs in both"):
        gather([a, a], tmp_path / "x.h5")
    assert not (tmp_path / "x.h5").exists()


# --------------------------------------------------------------------------- engines (fake jobs)


def test_crashed_worker_is_retried_and_rerun_does_no_work(tmp_path):
    spec = sweep.sweep_from_dict(TINY_SWEEP)
    out = tmp_path / "out.h5"
    task = functools.partial(crash_once, str(tmp_path))
    result = sweep.run_sweep(spec, out, workers=2, retries=2, task=task)
    assert result.ok and result.gathered
    assert sorted(p.name for p in tmp_path.glob("*.crashed")) == ["width=10-seed0.crashed",
                                                                   "width=12-seed0.crashed"]
    attempts = {o.job.key: o.attempts for o in result.outcomes}
    assert attempts["width=10-seed0"] >= 2 and attempts["width=12-seed0"] >= 2
    with ExperimentFile(out) as f:
        assert f.run_ids() == ["width=10:none-seed0", "width=10:none-seed1",
                               "width=12:none-seed0", "width=12:none-seed1"]
        assert f.run_info("width=12:none-seed1").group == "none width=12"
        assert json.loads(f.run_attrs("width=12:none-seed1")["sweep_point"]) == {"model.width": 12}
    before = out.stat().st_mtime_ns
    again = sweep.run_sweep(spec, out, workers=2, task=must_not_run)
    assert again.ok and not again.ran and len(again.skipped) == 4 and not again.gathered
    assert out.stat().st_mtime_ns == before


def test_a_broken_pool_is_replaced_without_waiting_for_workers_it_did_not_stop(tmp_path,
                                                                            monkeypatch):
    """When a worker dies, CPython's executor SIGTERMs the pool's other workers and joins them;
    a worker it fails to stop (simulated: terminate() does nothing) must not make the sweep
    wait for it: the stalled job's worker is killed and the job reruns at once."""
    import multiprocessing.process

    monkeypatch.setattr(multiprocessing.process.BaseProcess, "terminate", lambda self: None)
    spec = sweep.sweep_from_dict(TINY_SWEEP)
    task = functools.partial(crash_beside_a_stalled_job, str(tmp_path))
    start = time.monotonic()
    result = sweep.run_sweep(spec, tmp_path / "out.h5", workers=2, retries=2, task=task)
    elapsed = time.monotonic() - start
    assert result.ok and result.gathered
    assert elapsed < 30, f"waited {elapsed:.0f} s for a worker of the broken pool"


def test_a_job_whose_shard_is_complete_is_not_rerun_when_its_pool_breaks(tmp_path):
    """A job that wrote its whole shard but whose pool broke before its result came back is
    done: rerunning it would redo finished work (and record_job refuses complete runs)."""
    spec = sweep.sweep_from_dict(TINY_SWEEP)
    task = functools.partial(finish_then_linger, str(tmp_path))
    result = sweep.run_sweep(spec, tmp_path / "out.h5", workers=2, retries=2, task=task)
    assert result.ok and result.gathered
    assert len(list(tmp_path.glob("call-*"))) == 1  # seed 1 of width 10 ran once


def test_a_job_that_always_kills_its_worker_fails_alone(tmp_path):
    # seed 0 and seed 1 run together when seed 0's worker dies: the crash cannot be pinned on
    # either, so neither is charged; each reruns alone and only seed 0 keeps crashing.
    spec = sweep.sweep_from_dict({**TINY_SWEEP, "sweep": {"model.width": [10]}})
    result = sweep.run_sweep(spec, tmp_path / "out.h5", workers=2, retries=0, task=crash_seed0)
    status = {o.job.key: (o.status, o.error) for o in result.outcomes}
    assert status == {"width=10-seed0": ("failed", "its worker process died"),
                      "width=10-seed1": ("done", "")}
    assert list(_outputs(tmp_path / "out.h5")) == ["width=10:none-seed1"]


def test_failed_jobs_are_listed_and_the_rest_gathered(tmp_path):
    spec = sweep.sweep_from_dict(TINY_SWEEP)
    out = tmp_path / "out.h5"
    result = sweep.run_sweep(spec, out, workers=1, retries=1, task=fail_seed1)
    assert not result.ok
    assert sorted(o.job.key for o in result.failed) == ["width=10-seed1", "width=12-seed1"]
    assert all(o.attempts == 2 and "planted failure" in o.error for o in result.failed)
    assert "FAILED width=10-seed1 after 2 attempts: RuntimeError: planted failure" in result.format()
    with ExperimentFile(out) as f:
        assert f.run_ids() == ["width=10:none-seed0", "width=12:none-seed0"]
    # once the cause is gone, re-running does only the failed jobs and re-gathers
    fixed = sweep.run_sweep(spec, out, workers=1, task=fake_record)
    assert fixed.ok and sorted(o.job.key for o in fixed.ran) == ["width=10-seed1", "width=12-seed1"]
    assert fixed.gathered and len(_outputs(out)) == 4


def test_cli_exit_code_names_failed_jobs(tmp_path, monkeypatch, capsys):
    path = tmp_path / "s.toml"
    path.write_text(TINY_TOML.replace("seeds = [0]", "seeds = [0, 1]"))
    monkeypatch.setattr(sweep, "run_sweep", functools.partial(sweep.run_sweep, task=fail_seed1))
    rc = main(["sweep", str(path), "-o", str(tmp_path / "o.h5"), "--workers", "1",
               "--retries", "0", "-q"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "2 of 4 jobs failed (retried 0 times): width=10-seed1, width=12-seed1" in err
    assert "Traceback" not in err


def test_foreign_output_is_never_overwritten(tmp_path):
    out = _shard(tmp_path / "other.h5", 0)
    before = out.read_bytes()
    with pytest.raises(OutputExistsError, match="not written by this sweep"):
        sweep.run_sweep(sweep.sweep_from_dict(TINY_SWEEP), out, workers=1, task=must_not_run)
    assert out.read_bytes() == before


def test_shard_from_another_config_is_refused(tmp_path):
    out = tmp_path / "out.h5"
    first = sweep.run_sweep(sweep.sweep_from_dict(TINY_SWEEP), out, workers=1, only=[0],
                            task=fake_record)
    assert [o.job.key for o in first.ran] == ["width=10-seed0"]
    assert not first.gathered and not out.exists()  # --only (SLURM arrays) gathers nothing
    changed = sweep.sweep_from_dict({**TINY_SWEEP, "train": {"epochs": 2}})
    with pytest.raises(ConfigError, match="different config .train"):
        sweep.run_sweep(changed, out, workers=1, task=must_not_run)


def test_cli_options_reach_the_library(tmp_path, monkeypatch):
    seen = {}

    def fake_run_sweep(spec, output, **kwargs):
        seen.update(spec=spec, output=output, **kwargs)
        return sweep.SweepResult(output=output, shards_dir=tmp_path, outcomes=[])

    monkeypatch.setattr(sweep, "run_sweep", fake_run_sweep)
    path = _write(tmp_path, TINY_TOML)
    assert main(["sweep", str(path), "-o", str(tmp_path / "o.h5"), "--workers", "3", "--ray", "auto",
                 "--retries", "5", "--shards", str(tmp_path / "sh"), "--only", "1", "--only", "0",
                 "--overwrite", "--set", "train.epochs=2", "--set", "sweep.train.lr=[0.1]", "-q"]) == 0
    assert seen["output"] == tmp_path / "o.h5" and seen["shards_dir"] == tmp_path / "sh"
    assert (seen["workers"], seen["ray_address"], seen["retries"]) == (3, "auto", 5)
    assert seen["only"] == [1, 0] and seen["overwrite"] and not seen["progress"]
    assert seen["spec"].base["train"]["epochs"] == 2 and seen["spec"].grid["train.lr"] == [0.1]


def test_cli_dry_run_lists_jobs(tmp_path, capsys):
    path = tmp_path / "s.toml"
    path.write_text(TINY_TOML)
    assert main(["sweep", str(path), "-o", str(tmp_path / "o.h5"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "width=10-seed0" in out and "width=12-seed0" in out and "2 jobs" in out
    assert not (tmp_path / "o.h5").exists()


def test_cli_bad_input_is_one_line(tmp_path, capsys):
    path = tmp_path / "s.toml"
    path.write_text(TINY_TOML.replace("[10, 12]", "[10, -1]"))
    assert main(["sweep", str(path), "-o", str(tmp_path / "o.h5")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "model.width = -1: must be >= 1" in err


def test_cli_unreachable_ray_head_fails_fast(tmp_path, capsys):
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'trajviz[ray]')")
    import ray

    if ray.is_initialized():
        pytest.skip("this process already runs Ray, whose instance --ray would use")
    path = _write(tmp_path, TINY_TOML)
    assert main(["sweep", str(path), "-o", str(tmp_path / "o.h5"), "--ray", "127.0.0.1:1", "-q"]) == 1
    assert "no Ray head answers there" in capsys.readouterr().err


# --------------------------------------------------------------------------- real training


@pytest.fixture(scope="module")
def pool_sweep(tmp_path_factory) -> Path:
    """The tiny sweep (2 widths x 1 seed, 1 epoch) trained on the local pool via the CLI."""
    tmp = tmp_path_factory.mktemp("pool")
    cfg = tmp / "s.toml"
    cfg.write_text(TINY_TOML)
    out = tmp / "out.h5"
    assert main(["sweep", str(cfg), "-o", str(out), "--workers", "2", "-q"]) == 0
    return out


def test_pool_sweep_real_training_gathers_shards(pool_sweep, capsys):
    outputs = _outputs(pool_sweep)
    assert sorted(outputs) == ["width=10:none-seed0", "width=12:none-seed0"]
    assert all(o.shape == (2, 30, 2) for o in outputs.values())  # step 0 and epoch 1
    assert not np.array_equal(outputs["width=10:none-seed0"], outputs["width=12:none-seed0"])
    shards = pool_sweep.with_suffix(".shards")
    np.testing.assert_array_equal(_outputs(shards / "width=12-seed0.h5")["none-seed0"],
                                  outputs["width=12:none-seed0"])
    assert main(["info", str(pool_sweep)]) == 0
    text = capsys.readouterr().out
    assert "none width=10" in text and "none width=12" in text


# --------------------------------------------------------------------------- Ray


@pytest.fixture(scope="module")
def ray_instance():
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'trajviz[ray]'); "
                                            "the Ray engine cannot be tested here")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             _node_ip_address="127.0.0.1")
    # workers cannot import this test module by name: send its task functions by value
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield ray
    ray.shutdown()


def test_ray_sweep_gives_the_pool_results(ray_instance, pool_sweep, tmp_path):
    out = tmp_path / "ray.h5"
    spec = sweep.load_sweep(_write(tmp_path, TINY_TOML))
    result = sweep.run_sweep(spec, out, ray_address="local")
    assert result.ok and result.gathered and len(result.ran) == 2
    ray_outputs, pool_outputs = _outputs(out), _outputs(pool_sweep)
    assert sorted(ray_outputs) == sorted(pool_outputs)
    for run in pool_outputs:
        np.testing.assert_array_equal(ray_outputs[run], pool_outputs[run])
    again = sweep.run_sweep(spec, out, ray_address="local", task=must_not_run)
    assert not again.ran and not again.gathered


def test_ray_retries_a_crashed_worker(ray_instance, tmp_path):
    spec = sweep.sweep_from_dict({**TINY_SWEEP, "sweep": {"model.width": [10]}})
    result = sweep.run_sweep(spec, tmp_path / "out.h5", ray_address="local", retries=2,
                             task=functools.partial(crash_once, str(tmp_path)))
    assert result.ok and [p.name for p in tmp_path.glob("*.crashed")] == ["width=10-seed0.crashed"]
    assert len(_outputs(tmp_path / "out.h5")) == 2


def test_ray_lists_jobs_that_keep_failing(ray_instance, tmp_path):
    result = sweep.run_sweep(sweep.sweep_from_dict(TINY_SWEEP), tmp_path / "out.h5",
                             ray_address="local", retries=1, task=fail_seed1)
    assert sorted(o.job.key for o in result.failed) == ["width=10-seed1", "width=12-seed1"]
    assert all(o.attempts == 2 and "planted failure" in o.error for o in result.failed)
    assert len(_outputs(tmp_path / "out.h5")) == 2


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "s.toml"
    path.write_text(text)
    return path


def test_grid_that_changes_the_probe_set_fails_before_any_job(tmp_path):
    same = sweep.sweep_from_dict({**TINY_SWEEP, "sweep": {"dataset.n_train": [100, 200]}})
    sweep.check_probe_sets(sweep.expand(same))  # the train size leaves the test split as it is
    changed = sweep.sweep_from_dict({**TINY_SWEEP, "sweep": {"dataset.seed": [0, 1]}})
    with pytest.raises(ConfigError, match="seed=0 and seed=1 have different probe sets"):
        sweep.run_sweep(changed, tmp_path / "o.h5", workers=1, task=must_not_run)
    assert not (tmp_path / "o.shards").exists()


def test_cli_ray_without_ray_names_the_extra(tmp_path):
    """Without Ray installed (simulated: importing it fails), --ray is one line naming the extra
    to install, and nothing is written or, under --overwrite, deleted."""
    import subprocess

    path = _write(tmp_path, TINY_TOML)

    def sweep_without_ray(*extra: str) -> subprocess.CompletedProcess:
        code = ("import sys; sys.modules['ray'] = None  # `import ray` now raises ImportError\n"
                "from trajviz.cli import main\n"
                f"sys.exit(main(['sweep', {str(path)!r}, '-o', {str(tmp_path / 'o.h5')!r}, "
                f"'--ray', 'local', '-q', *{list(extra)!r}]))")
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=120, cwd=tmp_path)

    res = sweep_without_ray()
    assert res.returncode == 1, res.stderr
    err = res.stderr.strip()
    assert err.count("\n") == 0 and "pip install 'trajviz[ray]'" in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no shard folder
    kept = tmp_path / "o.shards" / "width=10-seed0.h5"
    kept.parent.mkdir()
    kept.write_bytes(b"an earlier shard")
    res = sweep_without_ray("--overwrite")
    assert res.returncode == 1 and "trajviz[ray]" in res.stderr
    assert kept.read_bytes() == b"an earlier shard"
