"""Sweeps: an experiment config times a grid of config values times its seeds, run as many
independent jobs on a local process pool or a Ray cluster, then gathered into one trajviz file.

A sweep file is an experiment config (TOML) plus a ``[sweep]`` table that maps dotted config keys
to lists of values::

    seeds = [0, 1, 2]
    [model]
    depth = 2
    [sweep]
    "model.width" = [20, 40]
    "pretrain.methods" = [["none"], ["sdae"]]   # a grid over a list-valued key: a list of lists

The grid (every combination of the listed values, in file order) times the seeds expands into
:class:`SweepJob` objects. A job is one :func:`trajviz.training.runner.record_experiment` call on the base
config with the grid point's values and a single seed; it writes its own *shard*
(``<shards>/<job key>.h5``), holding one run per pre-training method. When the jobs are done the
shards are merged by :func:`trajviz.store.gather` into one experiment file in which

- run ids are ``<point label>:<run id of the shard>`` (e.g. ``width=20:none-seed0``),
- the run group is ``<method> <point label>`` (e.g. ``none width=20``), so each grid point is a
  group of its own for ``info``, ``project`` and ``landscape``,
- each run carries ``sweep_point`` (JSON: dotted key -> value) and its full ``config``.

Robustness: a job whose shard already holds all its runs complete is skipped (so re-running a
sweep does no work); a job that raises or whose worker process dies is retried up to
``retries`` times and then reported failed in :class:`SweepResult`, never dropped.

Engines: a local :class:`concurrent.futures.ProcessPoolExecutor` (spawn context), or Ray remote
tasks (``ray_address``: ``"local"`` starts a private instance, ``"auto"`` or ``"HOST:PORT"``
joins a cluster). Ray tasks write their shard on the worker's node and return its bytes, so a
multi-node cluster needs no shared filesystem (docs/sweep.md).

Modules: :mod:`trajviz.sweep.spec` (sweep files, expansion, checks before any job starts),
:mod:`trajviz.sweep.engines` (the job task, job state, local pool and Ray); this package holds
:func:`run_sweep`, which ties them together and gathers the shards.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from trajviz.errors import OutputExistsError, TrajvizError
from trajviz.sweep.engines import (DONE, FAILED, SKIPPED, JobOutcome, JobTask, _import_ray, _run_local,
                                   _run_ray, _Tracker, job_state, record_job)
from trajviz.sweep.spec import (SweepError, SweepJob, SweepSpec, check_probe_sets,
                                default_shards_dir, expand, load_sweep, point_label,
                                sweep_from_dict)

__all__ = ["DONE", "FAILED", "SKIPPED", "JobOutcome", "JobTask", "SweepError", "SweepJob",
           "SweepResult", "SweepSpec", "check_probe_sets", "default_shards_dir", "expand",
           "job_state", "load_sweep", "point_label", "record_job", "run_sweep", "sweep_from_dict"]

log = logging.getLogger(__name__)


@dataclass
class SweepResult:
    output: Path
    shards_dir: Path
    outcomes: list[JobOutcome]
    gathered: bool = False   # False when the output was already up to date (or nothing to gather)
    n_runs: int = 0          # runs in the gathered output

    @property
    def failed(self) -> list[JobOutcome]:
        return [o for o in self.outcomes if o.status == FAILED]

    @property
    def ran(self) -> list[JobOutcome]:
        return [o for o in self.outcomes if o.status == DONE]

    @property
    def skipped(self) -> list[JobOutcome]:
        return [o for o in self.outcomes if o.status == SKIPPED]

    @property
    def ok(self) -> bool:
        return not self.failed

    def format(self) -> str:
        lines = [f"{len(self.outcomes)} jobs: {len(self.ran)} ran, {len(self.skipped)} already "
                 f"complete, {len(self.failed)} failed; "
                 + (f"gathered {self.n_runs} runs into {self.output}" if self.gathered
                    else f"{self.output} is up to date" if self.n_runs
                    else "nothing gathered")]
        for o in self.failed:
            lines.append(f"FAILED {o.job.key} after {o.attempts} attempts: {o.error}")
        return "\n".join(lines)


# --------------------------------------------------------------------------- the sweep


def _sweep_attrs(spec: SweepSpec, gathered_keys: Sequence[str]) -> dict[str, str]:
    return {"sweep_grid": json.dumps(spec.grid, sort_keys=True),
            "sweep_base": json.dumps(spec.base, sort_keys=True),
            "sweep_jobs": json.dumps(sorted(gathered_keys))}


def _output_state(output: Path, attrs: Mapping[str, str]) -> str:
    """``"absent"``, ``"current"`` (gathered from exactly these jobs of this sweep), ``"stale"``
    (an earlier gather of this sweep, from other jobs) or ``"foreign"`` (anything else)."""
    from trajviz.store import read_root_attrs

    if not output.exists():
        return "absent"
    try:
        got = read_root_attrs(output)
    except TrajvizError:
        return "foreign"
    if got.get("sweep_grid") != attrs["sweep_grid"] or got.get("sweep_base") != attrs["sweep_base"]:
        return "foreign"
    return "current" if got.get("sweep_jobs") == attrs["sweep_jobs"] else "stale"


def run_sweep(spec: SweepSpec, output: str | Path, *, workers: int | None = None,
              ray_address: str | None = None, retries: int = 2, shards_dir: str | Path | None = None,
              only: Sequence[int] | None = None, overwrite: bool = False, progress: bool = False,
              task: JobTask = record_job) -> SweepResult:
    """Run every job of a sweep that is not already complete, then gather the shards.

    Args:
        spec: from :func:`load_sweep` or :func:`sweep_from_dict`.
        output: the gathered experiment file; shards go to ``shards_dir`` (default ``OUT.shards``).
        workers: local processes (default: the CPU count); with ``ray_address="local"``, the
            CPUs of the private Ray instance.
        ray_address: None for the local pool; ``"local"``, ``"auto"`` or ``"HOST:PORT"`` for Ray.
        retries: extra attempts of a failed job before it is reported failed.
        only: job indices to run (e.g. one SLURM array task each); nothing is gathered then.
        overwrite: delete existing shards and output first.
        task: what a job runs, ``task(config_json, shard_path)``; the default records the job's
            experiment. Tests substitute one that crashes.

    Returns a :class:`SweepResult`; failed jobs are listed there (and not gathered), not raised.
    """
    from trajviz.store import ShardSource, gather

    if retries < 0:
        raise SweepError(f"retries = {retries}: must be >= 0")
    if workers is not None and workers < 1:
        raise SweepError(f"workers = {workers}: must be >= 1")
    if only is not None and overwrite:
        raise SweepError("--only cannot be combined with --overwrite: it would delete the shards "
                         "of the other jobs; remove the shard folder yourself to redo a sweep")
    if ray_address:
        _import_ray()  # a missing Ray fails here, before --overwrite deletes or a shard folder is made
    output = Path(output)
    shards = Path(shards_dir) if shards_dir is not None else default_shards_dir(output)
    jobs = expand(spec)
    if only is not None:
        bad = [i for i in only if not 0 <= i < len(jobs)]
        if bad:
            raise SweepError(f"--only {bad[0]}: this sweep has jobs 0..{len(jobs) - 1}")
        selected = [jobs[i] for i in sorted(set(only))]
    else:
        selected = jobs
    check_probe_sets(jobs)
    if overwrite:
        if shards.exists():
            shutil.rmtree(shards)
        if output.exists() and only is None:
            output.unlink()
    elif only is None and _output_state(output, _sweep_attrs(spec, [])) == "foreign":
        raise OutputExistsError(f"{output} exists and was not written by this sweep; pass "
                                "--overwrite to replace it or choose another -o")
    shards.mkdir(parents=True, exist_ok=True)

    skipped, todo = [], []
    for job in selected:
        state = job_state(job, shards / f"{job.key}.h5")
        (skipped if state == "complete" else todo).append(job)
    log.info("%d jobs: %d already complete, %d to run", len(selected), len(skipped), len(todo))
    tracker = _Tracker(len(selected), progress)
    for _ in skipped:
        tracker.update(SKIPPED)
    try:
        if not todo:
            ran: list[JobOutcome] = []
        elif ray_address:
            ran = _run_ray(todo, shards, task, ray_address, workers, retries, tracker)
        else:
            n = min(workers or os.cpu_count() or 1, len(todo))
            ran = _run_local(todo, shards, task, n, retries, tracker)
    finally:
        tracker.close()
    by_key = {o.job.key: o for o in ran}
    by_key.update({j.key: JobOutcome(j, SKIPPED, 0, shard=shards / f"{j.key}.h5") for j in skipped})
    outcomes = [by_key[j.key] for j in selected]
    result = SweepResult(output=output, shards_dir=shards, outcomes=outcomes)
    if only is not None:
        return result

    complete = [o for o in outcomes if o.status != FAILED]
    if not complete:
        return result
    attrs = _sweep_attrs(spec, [o.job.key for o in complete])
    n_runs = sum(len(o.job.methods) for o in complete)
    result.n_runs = n_runs
    if _output_state(output, attrs) == "current" and not _newer(complete, output):
        return result
    base = spec.base_config
    sources = [ShardSource(path=o.shard or shards / f"{o.job.key}.h5",
                           run_prefix=f"{o.job.label}:" if o.job.label else "",
                           group_suffix=f" {o.job.label}" if o.job.label else "",
                           run_attrs={"sweep_point": json.dumps(o.job.point, sort_keys=True),
                                      "sweep_job": o.job.key})
               for o in complete]
    gather(sources, output, name=base.name, config_json=base.to_json(), root_attrs=attrs,
           overwrite=True)
    result.gathered = True
    return result


def _newer(outcomes: Sequence[JobOutcome], output: Path) -> bool:
    """Whether any shard was written after the output (a job was redone since the last gather)."""
    mtime = output.stat().st_mtime
    return any(o.shard is not None and o.shard.exists() and o.shard.stat().st_mtime > mtime
               for o in outcomes)
