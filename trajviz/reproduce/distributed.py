"""The reproduction on Ray: the missing study settings, cut into seed chunks, as Ray tasks.

:func:`run_missing_ray` is the distributed twin of :func:`trajviz.reproduce.run.run_missing`. Each
setting's seeds are cut into chunks of whole batches (:func:`trajviz.reproduce.chunks.chunk_seeds`;
one batch of ``engine.nets_per_batch`` seeds per chunk by default), and every chunk whose runs
are not all finished becomes one job of the sweep machinery's Ray engine
(:func:`trajviz.sweep.engines._run_ray`: retries, a worker's shard returned as bytes, so no shared
filesystem is needed). Each returned shard is written atomically to
``results/shards/<study>--<setting>--seeds<a>-<b>.h5`` as its task finishes; once the tasks are
done, each setting's shards are gathered (:func:`trajviz.store.gather`) into its result file,
the same ``results/<study>/<setting>.h5`` a run without Ray writes, and deleted.

Interrupted (Ctrl-C, a lost driver), a re-run skips every chunk whose shard is on disk or whose
runs are in the result file: no finished chunk is redone. Chunks are whole batches, so a chunk
trains the same nets in the same batch as one process would, and on CPUs the numbers are those
of a run without Ray, bit for bit.

A worker puts its chunk on its GPU when it has one (``engine.device = "auto"``; each task then
asks Ray for one GPU) and there trains all of a method's nets of the chunk in one batch, as many
as the GPU's free memory holds (:func:`nets_that_fit`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Iterable

from trajviz.config import ExperimentConfig, config_from_dict
from trajviz.reproduce.chunks import (chunk_key, chunk_seeds, expected_runs, finished_in, run_id,
                                      setting_shards, shard_path, SHARDS)
from trajviz.reproduce.run import SettingRun
from trajviz.reproduce.studies import Setting, Study, result_path

log = logging.getLogger(__name__)


def nets_that_fit(cfg: ExperimentConfig, free_bytes: int, fraction: float = 0.6) -> int:
    """How many nets of ``cfg`` train in one batch within ``fraction`` of ``free_bytes``: the
    parameters (and pre-training's copies), the step buffers, the evaluation's activations (4,096
    examples at a time) and the probe outputs per net, after the dataset's own tensors."""
    from trajviz.data import dataset_shape

    shape = dataset_shape(cfg.dataset)
    sizes = [shape.n_inputs] + [cfg.model.width] * cfg.model.depth + [shape.n_classes]
    n_params = sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))
    item = 8 if cfg.engine.dtype == "float64" else 4
    probe = cfg.probe.n or shape.sizes[("train", "valid", "test").index(cfg.probe.split)]
    per_net = item * (4 * n_params + 2 * 4096 * sum(sizes[1:])
                      + 4 * max(cfg.train.batch_size, cfg.pretrain.batch_size) * sum(sizes)
                      + probe * shape.n_classes)
    data = item * sum(shape.sizes) * (shape.n_inputs + 1)
    return max(1, int((free_bytes * fraction - data) // per_net))


def record_chunk(config_json: str, shard: str) -> None:
    """The Ray task: record one chunk (its config's seeds are the chunk's) into ``shard``.

    On a GPU (``engine.device`` "auto" or "cuda" and one visible), all the chunk's nets of a
    method train in one batch if the GPU's free memory holds them; elsewhere the config's
    ``nets_per_batch`` is kept, so the numbers are those of a run without Ray.
    """
    import torch

    from trajviz.training.runner import record_experiment, resolve_device

    cfg = config_from_dict(json.loads(config_json))
    device = resolve_device(cfg.engine.device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        n = min(len(cfg.seeds), nets_that_fit(cfg, free))
        log.info("chunk on %s: %d nets per batch", device, n)
        cfg = cfg.replace(engine=dataclasses.replace(cfg.engine, nets_per_batch=n))
    record_experiment(cfg, shard, mode="resume")


def _shard_finished(path: Path) -> set[str]:
    try:
        return finished_in(path)
    except Exception:  # noqa: BLE001 - a shard a killed writer left unreadable holds nothing
        return set()


def merge_shards(setting: Setting, results_dir: str | Path) -> int:
    """Gather the finished runs of ``setting``'s chunk shards into its result file (keeping the
    file's other finished runs), then delete the shards. Returns the number of runs gathered
    from shards (0: nothing to do)."""
    from trajviz.store import ShardSource, gather

    assert setting.config is not None
    results_dir = Path(results_dir)
    shards = setting_shards(results_dir, setting)
    if not shards:
        return 0
    out = result_path(results_dir, setting)
    expected = expected_runs(setting)
    taken: set[str] = set()
    sources = []
    for shard in shards:
        runs = (_shard_finished(shard) & expected) - taken
        if runs:
            sources.append(ShardSource(shard, runs=runs))
            taken |= runs
    if out.exists():
        kept = finished_in(out) - taken
        if kept:
            sources.insert(0, ShardSource(out, runs=kept))
    if taken:
        gather(sources, out, name=setting.config.name, config_json=setting.config.to_json(),
               overwrite=True)
        log.info("%s/%s: gathered %d runs from %d shards into %s", setting.study, setting.id,
                 len(taken), len(shards), out)
    for shard in shards:
        shard.unlink()
    return len(taken)


def _chunks_to_run(setting: Setting, results_dir: Path, chunk: int | None):
    """(seeds, key) of the chunks of ``setting`` with a run finished neither in the result file
    nor in the chunk's own shard; and the number of chunks skipped."""
    cfg = setting.config
    assert cfg is not None
    in_file = finished_in(result_path(results_dir, setting))
    todo, skipped = [], 0
    for seeds in chunk_seeds(setting, chunk):
        runs = {run_id(m, s) for m in cfg.pretrain.methods for s in seeds}
        if runs <= in_file or runs <= _shard_finished(shard_path(results_dir, setting, seeds)):
            skipped += 1
            continue
        todo.append(seeds)
    return todo, skipped


def run_missing_ray(studies: Iterable[Study], results_dir: str | Path, address: str, *,
                    workers: int | None = None, retries: int = 2, chunk: int | None = None,
                    progress: bool = False, task=record_chunk) -> tuple[list[SettingRun], dict[str, str]]:
    """Record every missing chunk of ``studies`` on Ray, then gather each setting's results.

    ``address``: ``"local"`` (a private Ray instance of ``workers`` CPUs), ``"auto"`` or
    ``"HOST:PORT"``. ``chunk``: seeds per chunk (rounded up to whole batches; default one batch).
    ``task``: what a chunk runs (tests substitute one that counts). Returns the settings (as
    :func:`~trajviz.reproduce.run.run_missing` does) and each chunk's fate by key: ``"ran"``,
    ``"skipped"`` (finished before) or ``"failed: <error>"``. Raises
    :class:`~trajviz.sweep.SweepError` naming the chunks that failed after ``retries`` extra
    attempts, once everything that finished is gathered.
    """
    from trajviz.sweep import SweepError, SweepJob
    from trajviz.sweep.engines import FAILED, _run_ray, _Tracker

    results_dir = Path(results_dir)
    studies = list(studies)
    jobs: list[SweepJob] = []
    fates: dict[str, str] = {}
    trained: list[Setting] = []
    out: list[SettingRun] = []
    for study in studies:
        for setting in study.settings:
            if setting.source is not None:
                continue
            trained.append(setting)
            todo, _ = _chunks_to_run(setting, results_dir, chunk)
            for seeds in chunk_seeds(setting, chunk):
                fates[chunk_key(setting, seeds)] = "skipped"
            for seeds in todo:
                key = chunk_key(setting, seeds)
                jobs.append(SweepJob(index=len(jobs), key=key, label="", point={}, seed=seeds[0],
                                     config=setting.config.replace(seeds=list(seeds))))
                fates[key] = "ran"
    log.info("%d chunks to run on Ray (%s), %d finished before", len(jobs), address,
             sum(f == "skipped" for f in fates.values()))
    shards = results_dir / SHARDS
    shards.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if jobs:
        tracker = _Tracker(len(jobs), progress)
        try:
            outcomes = _run_ray(jobs, shards, task, address, workers, retries, tracker, gpus=True)
        finally:
            tracker.close()
        for o in outcomes:
            if o.status == FAILED:
                fates[o.job.key] = f"failed: {o.error}"
    seconds = time.perf_counter() - t0
    for setting in trained:
        merge_shards(setting, results_dir)
    for study in studies:
        for setting in study.settings:
            path = result_path(results_dir, setting)
            if setting.source is not None:
                out.append(SettingRun(study.name, setting.id, path, "reused", 0.0, 0))
                continue
            n = len(expected_runs(setting))
            ran = any(fates.get(chunk_key(setting, s)) == "ran" for s in chunk_seeds(setting, chunk))
            out.append(SettingRun(study.name, setting.id, path, "recorded on Ray" if ran else "complete",
                                  0.0, n))
    try:
        shards.rmdir()  # empty once every shard is gathered
    except OSError:
        pass
    failed = sorted(k for k, f in fates.items() if f.startswith("failed"))
    if failed:
        raise SweepError(f"{len(failed)} of {len(jobs)} chunks failed on Ray (retried {retries} "
                         f"times): {', '.join(failed)}; {fates[failed[0]]}; the others are "
                         "gathered, rerun the same command to retry these")
    log.info("Ray: %d chunks in %.1f s", len(jobs), seconds)
    return out, fates
