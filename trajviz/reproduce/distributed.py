"""The reproduction on Ray: the missing study settings, cut into seed chunks, as Ray tasks.

:func:`run_missing_ray` is the distributed twin of :func:`trajviz.reproduce.run.run_missing`. Each
setting's seeds are cut into chunks of whole batches (:func:`trajviz.reproduce.chunks.chunk_seeds`;
one batch of ``engine.nets_per_batch`` seeds per chunk by default), and every chunk whose runs
are not all finished becomes one job of the sweep machinery's Ray engine
(:func:`trajviz.sweep.engines._run_ray`: retries, a worker's shard returned as bytes, so no shared
filesystem is needed). Each returned shard is written atomically to
``results/shards/<study>--<setting>--<method>--seeds<a>-<b>.h5`` as its task finishes; once the tasks are
done, each setting's shards are gathered (:func:`trajviz.store.gather`) into its result file,
the same ``results/<study>/<setting>.h5`` a run without Ray writes, and deleted. A study that
selects hyper-parameters per condition (:mod:`trajviz.reproduce.selection`) first sends its
selection runs as tasks of their own (one per grid point of each condition), written to the
selection files a run without Ray writes; the conditions then choose exactly as without Ray.

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
from trajviz.reproduce.chunks import (SHARDS, chunk_key, chunk_seeds, expected_runs, finished_in,
                                      run_id, setting_shards, shard_path)
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


def _selection_jobs(study: Study, setting: Setting, results_dir: Path) -> list[tuple[str, ExperimentConfig, Path]]:
    """(key, config, selection file) of every selection grid point of ``setting`` whose runs
    are not all finished (:mod:`trajviz.reproduce.selection`)."""
    from trajviz.reproduce.selection import _scores, _selection_config, point_name, selection_file

    plan = study.select
    if plan is None:
        return []
    out = []
    assert setting.config is not None
    for method in setting.config.pretrain.methods:
        for point in plan.points(method):
            path = selection_file(results_dir, study, setting, method, point)
            if _scores(path, plan.seeds, method) is None:
                key = f"select--{study.name}--{setting.id}--{method}--{point_name(point)}"
                out.append((key, _selection_config(setting, method, point, plan.seeds), path))
    return out


def _chunk_jobs(study: Study, setting: Setting, results_dir: Path, chunk: int | None,
                progress: bool) -> tuple[list[tuple[str, ExperimentConfig]], list[str]]:
    """(key, config) of every chunk of ``setting`` with a run finished neither in the result file
    nor in the chunk's shard, and the keys of the chunks skipped. Each method trains at its own
    config (the selected point, when the study selects: by then every selection file is done)."""
    from trajviz.reproduce.run import method_configs

    configs = method_configs(study, setting, results_dir, progress=progress)
    in_file = finished_in(result_path(results_dir, setting))
    todo, skipped = [], []
    for method, cfg in configs.items():
        for seeds in chunk_seeds(setting, chunk):
            key = chunk_key(setting, method, seeds)
            runs = {run_id(method, s) for s in seeds}
            if runs <= in_file or runs <= _shard_finished(
                    shard_path(results_dir, setting, method, seeds)):
                skipped.append(key)
            else:
                todo.append((key, cfg.replace(seeds=list(seeds))))
    return todo, skipped


def _run_jobs(jobs: list[tuple[str, ExperimentConfig]], folder: Path, task, address: str,
              workers: int | None, retries: int, progress: bool, what: str) -> dict[str, str]:
    """Run (key, config) jobs on Ray into ``folder/<key>.h5``; key -> ``"ran"`` or ``"failed: ..."``."""
    from trajviz.sweep import SweepJob
    from trajviz.sweep.engines import FAILED, _run_ray, _Tracker

    if not jobs:
        return {}
    folder.mkdir(parents=True, exist_ok=True)
    sweep_jobs = [SweepJob(index=i, key=key, label="", point={}, seed=cfg.seeds[0], config=cfg)
                  for i, (key, cfg) in enumerate(jobs)]
    log.info("Ray: %d %s tasks", len(jobs), what)
    tracker = _Tracker(len(jobs), progress)
    try:
        outcomes = _run_ray(sweep_jobs, folder, task, address, workers, retries, tracker, gpus=True)
    finally:
        tracker.close()
    return {o.job.key: (f"failed: {o.error}" if o.status == FAILED else "ran") for o in outcomes}


def run_missing_ray(studies: Iterable[Study], results_dir: str | Path, address: str, *,
                    workers: int | None = None, retries: int = 2, chunk: int | None = None,
                    progress: bool = False, task=record_chunk) -> tuple[list[SettingRun], dict[str, str]]:
    """Record every missing chunk of ``studies`` on Ray, then gather each setting's results.

    Two rounds of tasks: first the model-selection runs of the studies that select per
    condition (each grid point of each condition one task, written to its selection file), then,
    with every condition's point chosen as a run without Ray chooses it, the chunks (one
    method's runs of one batch of seeds each).

    ``address``: ``"local"`` (a private Ray instance of ``workers`` CPUs), ``"auto"`` or
    ``"HOST:PORT"``. ``chunk``: seeds per chunk (rounded up to whole batches; default one batch).
    ``task``: what a task runs (tests substitute one that counts). Returns the settings (as
    :func:`~trajviz.reproduce.run.run_missing` does) and each task's fate by key: ``"ran"``,
    ``"skipped"`` (finished before) or ``"failed: <error>"``. Raises
    :class:`~trajviz.sweep.SweepError` naming the tasks that failed after ``retries`` extra
    attempts, once everything that finished is gathered.
    """
    from trajviz.sweep import SweepError
    from trajviz.sweep.engines import _connect_ray

    results_dir = Path(results_dir)
    studies = list(studies)
    trained = [(st, s) for st in studies for s in st.settings if s.source is None]
    fates: dict[str, str] = {}
    t0 = time.perf_counter()
    scratch = results_dir / SHARDS / "select"
    ray = None  # started only when there is a task: a finished reproduction analyses at once
    try:
        # round 1: model selection (selection runs an interrupted round left in the scratch
        # folder are moved into place first, not redone)
        selection = []
        for key, cfg, path in (j for st, s in trained for j in _selection_jobs(st, s, results_dir)):
            if (scratch / f"{key}.h5").exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                (scratch / f"{key}.h5").replace(path)
                fates[key] = "skipped"
                continue
            selection.append((key, cfg, path))
        if selection:
            ray, started = _connect_ray(address, workers)  # one instance for both rounds
        fates.update(_run_jobs([(k, c) for k, c, _ in selection], scratch, task, address,
                               workers, retries, progress, "model-selection"))
        for key, _, path in selection:
            if fates.get(key) == "ran":
                path.parent.mkdir(parents=True, exist_ok=True)
                (scratch / f"{key}.h5").replace(path)
        failed = sorted(k for k, f in fates.items() if f.startswith("failed"))
        if failed:
            raise SweepError(f"{len(failed)} model-selection tasks failed on Ray (retried "
                             f"{retries} times): {', '.join(failed)}; {fates[failed[0]]}; rerun "
                             "the same command to retry them")
        # round 2: the chunks, at each condition's chosen point
        jobs: list[tuple[str, ExperimentConfig]] = []
        for st, s in trained:
            todo, skipped = _chunk_jobs(st, s, results_dir, chunk, progress)
            jobs += todo
            fates.update({k: "skipped" for k in skipped})
        if jobs and ray is None:
            ray, started = _connect_ray(address, workers)
        fates.update(_run_jobs(jobs, results_dir / SHARDS, task, address, workers, retries,
                               progress, "training"))
    finally:
        if ray is not None and started:
            ray.shutdown()
    for _, s in trained:
        merge_shards(s, results_dir)
    out: list[SettingRun] = []
    for study in studies:
        for setting in study.settings:
            path = result_path(results_dir, setting)
            if setting.source is not None:
                out.append(SettingRun(study.name, setting.id, path, "reused", 0.0, 0))
                continue
            prefix = f"{setting.study}--{setting.id}--"
            ran = any(f == "ran" for k, f in fates.items() if k.startswith(prefix))
            out.append(SettingRun(study.name, setting.id, path,
                                  "recorded on Ray" if ran else "complete", 0.0,
                                  len(expected_runs(setting))))
    for folder in (results_dir / SHARDS / "select", results_dir / SHARDS):
        try:
            folder.rmdir()  # empty once everything is gathered
        except OSError:
            pass
    failed = sorted(k for k, f in fates.items() if f.startswith("failed"))
    if failed:
        raise SweepError(f"{len(failed)} of {len(jobs)} chunks failed on Ray (retried {retries} "
                         f"times): {', '.join(failed)}; {fates[failed[0]]}; the others are "
                         "gathered, rerun the same command to retry these")
    log.info("Ray: done in %.1f s", time.perf_counter() - t0)
    return out, fates
