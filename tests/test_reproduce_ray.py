"""trajviz reproduce --ray: seed chunks as Ray tasks give the numbers of a run without Ray, an
interrupted run resumes without redoing a finished chunk, stray shards are kept by a run without
Ray. One Ray instance (2 CPUs) is shared by the module: starting Ray is the slow part."""

from __future__ import annotations

import _thread
import dataclasses
import json
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from trajviz.cli import main
from trajviz.reproduce import reproduce
from trajviz.reproduce.chunks import SHARDS, shard_path
from trajviz.reproduce.distributed import merge_shards, record_chunk
from trajviz.reproduce.studies import load_studies, result_path
from trajviz.store import ExperimentFile
from trajviz.training.runner import record_experiment

# nets_per_batch = 1: every seed is a batch, so each setting is 3 chunks per method (6 Ray tasks);
# per-condition model selection first (2 grid points x 2 methods x 2 settings: 8 Ray tasks)
STUDY = """\
study = "depth"
findings = ["F5"]

[select]
seeds = [1000]
grid = { "train.lr" = [0.1, 0.3] }

[base]
seeds = [0, 1, 2]
engine = { nets_per_batch = 1 }
model = { width = 8 }

[base.train]
epochs = 2
lr = 0.1
batch_size = 20

[base.pretrain]
epochs = 1
lr = 0.01
methods = ["none", "sdae"]

[[settings]]
id = "depth1"
set = { "model.depth" = 1 }

[[settings]]
id = "depth2"
set = { "model.depth" = 2 }

[profiles.quick]
set = { "dataset.name" = "digits", "dataset.n_train" = 100, "dataset.n_valid" = 40, "dataset.n_test" = 40 }

[profiles.full]
set = {}
"""
N_CHUNKS = 12


@pytest.fixture(scope="module")
def studies(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("studies")
    (folder / "depth.toml").write_text(STUDY)
    return folder


@pytest.fixture(scope="module")
def plain(studies, tmp_path_factory) -> Path:
    """The reproduction without Ray, for comparison."""
    out = tmp_path_factory.mktemp("plain")
    assert main(["reproduce", "--only", "F5", "--studies", str(studies), "-o", str(out),
                 "--no-figures", "--n-boot", "200", "-q"]) == 0
    return out


@pytest.fixture(scope="module")
def ray_instance():
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'trajviz[ray]'); "
                                            "reproduce --ray cannot be tested here")
    for attempt in (1, 2):  # Ray's node start gives up after 30 s on a very busy machine
        try:
            ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
                     _node_ip_address="127.0.0.1")
            break
        except Exception:
            ray.shutdown()
            if attempt == 2:
                raise
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the tasks below
    yield ray
    ray.shutdown()


def counting_chunk(marks: str, config_json: str, shard: str) -> None:
    """record_chunk, leaving a mark named after the chunk (the shard's stem is its key)."""
    Path(marks, Path(shard).stem).touch()
    record_chunk(config_json, shard)


def slow_chunk(config_json: str, shard: str) -> None:
    """record_chunk; every training chunk but depth1's first then lingers, so an interruption
    that comes once the first shard is back finds the others unfinished."""
    record_chunk(config_json, shard)
    key = Path(shard).stem
    if not key.startswith("select--") and not key.endswith("depth1--none--seeds0-0"):
        time.sleep(4)


def _findings(out: Path) -> dict:
    return json.loads((out / "findings.json").read_text())


def _outputs(out: Path) -> dict:
    got = {}
    for setting in ("depth1", "depth2"):
        with ExperimentFile(out / "results" / "depth" / f"{setting}.h5") as f:
            for rid in f.run_ids():
                got[setting, rid] = (f.outputs(rid), f.metrics(rid)["test_error"])
    return got


def _assert_same_results(a: Path, b: Path) -> None:
    assert _findings(a) == _findings(b)
    oa, ob = _outputs(a), _outputs(b)
    assert sorted(oa) == sorted(ob) and len(oa) == 12
    for key in oa:
        np.testing.assert_array_equal(oa[key][0], ob[key][0])
        np.testing.assert_array_equal(oa[key][1], ob[key][1])


def test_ray_gives_the_numbers_of_a_run_without_ray(ray_instance, studies, plain, tmp_path):
    out = tmp_path / "ray"
    assert main(["reproduce", "--only", "F5", "--studies", str(studies), "-o", str(out),
                 "--no-figures", "--n-boot", "200", "-q", "--ray", "local"]) == 0
    _assert_same_results(out, plain)
    assert not (out / "results" / SHARDS).exists()  # gathered, then removed
    with ExperimentFile(out / "results" / "depth" / "depth2.h5") as f:  # one file per setting
        assert f.run_attrs("sdae-seed2")["source_shard"] == "depth--depth2--sdae--seeds2-2.h5"
    assert (out / "results" / "depth" / "select" / "depth2.json").exists()


def test_an_interrupted_ray_run_redoes_no_finished_chunk(ray_instance, studies, plain, tmp_path):
    out = tmp_path / "ray"
    shards = out / "results" / SHARDS

    def interrupt_once_a_shard_is_back():
        deadline = time.monotonic() + 300
        while not list(shards.glob("*.h5")) and time.monotonic() < deadline:
            time.sleep(0.05)
        _thread.interrupt_main()  # Ctrl-C in the driver

    watcher = threading.Thread(target=interrupt_once_a_shard_is_back, daemon=True)
    watcher.start()
    with pytest.raises(KeyboardInterrupt):
        reproduce(only="F5", studies_dir=studies, output=out, figures=False, n_boot=200,
                  ray="local", task=slow_chunk)
        time.sleep(60)  # not reached unless the interruption came late; it lands here then
    watcher.join()
    before = {p.stem for p in shards.glob("*.h5")}
    assert 1 <= len(before) < N_CHUNKS  # stopped midway, the finished chunks on disk
    marks = tmp_path / "marks"
    marks.mkdir()
    import functools

    res = reproduce(only="F5", studies_dir=studies, output=out, figures=False, n_boot=200,
                    ray="local", task=functools.partial(counting_chunk, str(marks)))
    ran = {p.name for p in marks.iterdir()}
    assert ran and not ran & before  # no finished chunk redone
    assert len(ran | before) == N_CHUNKS
    assert {s.status for s in res.settings} <= {"recorded on Ray", "complete"}
    _assert_same_results(out, plain)


def test_a_run_without_ray_keeps_the_shards_of_an_interrupted_ray_run(studies, plain, tmp_path):
    out = tmp_path / "out"
    results = out / "results"
    setting = load_studies(studies, "quick")["depth"].setting("depth2")
    shard = shard_path(results, setting, "none", [1])
    shard.parent.mkdir(parents=True)
    # the run at the point the selection will choose (the plain run's stored choice)
    chosen = json.loads((plain / "results" / "depth" / "select" / "depth2.json").read_text())
    lr = chosen["methods"]["none"]["chosen"]["train.lr"]
    cfg = setting.config.replace(seeds=[1])
    cfg = cfg.replace(train=dataclasses.replace(cfg.train, lr=lr),
                      pretrain=dataclasses.replace(cfg.pretrain, methods=["none"]))
    record_experiment(cfg, shard)
    assert merge_shards(setting, results) == 1  # none-seed1
    assert not shard.exists()
    with ExperimentFile(result_path(results, setting)) as f:
        assert f.run_ids() == ["none-seed1"]
    reproduce(only="F5", studies_dir=studies, output=out, figures=False, n_boot=200)
    _assert_same_results(out, plain)


def test_cli_ray_flags_are_checked(studies, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["reproduce", "--studies", str(studies), "-o", str(out), "--chunk", "4"]) == 1
    assert "--chunk apply to --ray" in capsys.readouterr().err
    assert main(["reproduce", "--studies", str(studies), "-o", str(out), "--ray", "local",
                 "--workers", "0"]) == 1
    assert "--workers 0: must be >= 1" in capsys.readouterr().err
    assert not out.exists()
