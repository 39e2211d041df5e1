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
:class:`SweepJob` objects. A job is one :func:`trajviz.train.record_experiment` call on the base
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
"""

from __future__ import annotations

import itertools
import json
import logging
import multiprocessing
import os
import re
import shutil
import tempfile
import tomllib
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from trajviz.config import ExperimentConfig, config_from_dict, parse_override
from trajviz.errors import ConfigError, OutputExistsError, TrajvizError
from trajviz.progress import progress_bar

log = logging.getLogger(__name__)

#: job outcomes
DONE, SKIPPED, FAILED = "done", "skipped", "failed"

#: ``task(config_json, shard_path)`` trains one job and writes its shard; must be picklable
#: (a module-level function) so that worker processes can import it.
JobTask = Callable[[str, str], None]


class SweepError(ConfigError):
    """The ``[sweep]`` table, or a sweep's outputs, are not as they must be."""


# --------------------------------------------------------------------------- spec and expansion


@dataclass(frozen=True)
class SweepSpec:
    """A validated sweep: the base experiment config (as a plain dict, ``--set`` applied) and the
    grid, dotted key -> list of values, in file order."""

    base: dict[str, Any]
    grid: dict[str, list[Any]]

    @property
    def base_config(self) -> ExperimentConfig:
        return config_from_dict(self.base)


@dataclass(frozen=True)
class SweepJob:
    """One grid point x one seed: a single ``record_experiment`` call writing one shard."""

    index: int
    key: str                 # unique, file-name safe: "<label>-seed<seed>" ("seed<seed>" if no grid)
    label: str               # the grid point, e.g. "width=20;methods=sdae" ("" if no grid)
    point: dict[str, Any]    # dotted key -> value of this grid point
    seed: int
    config: ExperimentConfig  # base config with the point's values and seeds = [seed]

    @property
    def methods(self) -> list[str]:
        return list(self.config.pretrain.methods)


def _flatten(table: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"model": {"width": [..]}}`` -> ``{"model.width": [..]}`` (unquoted TOML dotted keys)."""
    flat: dict[str, Any] = {}
    for key, value in table.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    node = data
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise SweepError(f"[sweep] {key!r}: {part!r} is not a config table")
        node = child
    node[parts[-1]] = value


def sweep_from_dict(data: Mapping[str, Any], overrides: Sequence[str] = ()) -> SweepSpec:
    """Split a sweep file's contents into base config and grid, and validate both.

    ``overrides`` are ``--set KEY=VALUE`` strings: they change the base config, or the grid when
    KEY starts with ``sweep.`` (``--set sweep.model.width=[10,20]``). Every expanded config is
    validated here, so a bad value fails before any job starts.
    """
    base = json.loads(json.dumps({k: v for k, v in data.items() if k != "sweep"}))
    raw_grid = data.get("sweep", {})
    if not isinstance(raw_grid, Mapping):
        raise SweepError("[sweep] must be a table mapping dotted config keys to lists of values, "
                         'e.g. "model.width" = [20, 40]')
    grid = _flatten(raw_grid)
    for text in overrides:
        key, value = parse_override(text)
        if key.startswith("sweep."):
            grid[key[len("sweep."):]] = value
        else:
            _set_dotted(base, key, value)
    for key, values in grid.items():
        if key == "seeds":
            raise SweepError("[sweep] 'seeds': the seeds are the sweep's other axis; set the "
                             "top-level seeds list instead")
        if key == "name":
            raise SweepError("[sweep] 'name': the experiment name cannot be swept")
        if not isinstance(values, list) or not values:
            raise SweepError(f"[sweep] {key!r} = {values!r}: expected a non-empty list of values "
                             "(a list of lists for a list-valued key such as pretrain.methods)")
        if any(isinstance(v, Mapping) for v in values):
            raise SweepError(f"[sweep] {key!r}: values must be numbers, strings, booleans or lists")
        texts = [json.dumps(v, sort_keys=True) for v in values]
        if len(set(texts)) != len(texts):
            raise SweepError(f"[sweep] {key!r} = {values!r}: values must be distinct")
    spec = SweepSpec(base=base, grid=grid)
    expand(spec)  # validates every expanded config
    return spec


def load_sweep(path: str | Path, overrides: Sequence[str] = ()) -> SweepSpec:
    """Read a sweep file: an experiment config TOML with an optional ``[sweep]`` table."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise SweepError(f"sweep file {str(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SweepError(f"sweep file {str(path)!r} cannot be read: {exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SweepError(f"{path}: not valid TOML: {exc}") from None
    return sweep_from_dict(data, overrides)


def _format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "+".join(_format_value(v) for v in value)
    return str(value)


def _short_keys(keys: Sequence[str]) -> dict[str, str]:
    """The shortest dotted suffix of each key that no other key shares."""
    short = {}
    for key in keys:
        parts = key.split(".")
        for n in range(1, len(parts) + 1):
            cand = ".".join(parts[-n:])
            if not any(other != key and (other == cand or other.endswith("." + cand)) for other in keys):
                break
        short[key] = cand
    return short


def point_label(point: Mapping[str, Any], short: Mapping[str, str]) -> str:
    """A readable, file-name and HDF5-name safe label of a grid point, e.g. ``width=20;lr=0.1``."""
    text = ";".join(f"{short[k]}={_format_value(v)}" for k, v in point.items())
    return re.sub(r"[^A-Za-z0-9._+=;-]", "_", text)


def expand(spec: SweepSpec) -> list[SweepJob]:
    """Every (grid point, seed) job, grid points in file order (last key fastest), then seeds.

    Each job's config is validated with :func:`trajviz.config.config_from_dict`; a value that is
    not allowed raises :class:`~trajviz.errors.ConfigError` naming the grid point.
    """
    try:
        base_cfg = config_from_dict(spec.base)
    except ConfigError as exc:
        raise ConfigError(f"base config: {exc}") from None
    keys = list(spec.grid)
    short = _short_keys(keys)
    jobs: list[SweepJob] = []
    labels: set[str] = set()
    for values in itertools.product(*(spec.grid[k] for k in keys)):
        point = dict(zip(keys, values))
        label = point_label(point, short)
        if label in labels:  # two points that sanitize alike
            label = f"{label}~{len(labels)}"
        labels.add(label)
        data = json.loads(json.dumps(spec.base))
        for key, value in point.items():
            _set_dotted(data, key, value)
        for seed in base_cfg.seeds:
            data["seeds"] = [seed]
            try:
                cfg = config_from_dict(data)
            except ConfigError as exc:
                where = f"sweep point {label}" if label else "config"
                raise ConfigError(f"{where}: {exc}") from None
            key = f"{label}-seed{seed}" if label else f"seed{seed}"
            jobs.append(SweepJob(index=len(jobs), key=key, label=label, point=point, seed=seed,
                                 config=cfg))
    return jobs


def check_probe_sets(jobs: Sequence[SweepJob]) -> None:
    """Check, before any job runs, that every job records on the same probe set, so that their
    shards can be gathered into one file. Only needed (and only done: it builds each distinct
    dataset once, here) when the grid changes a ``dataset.*`` or ``probe.*`` key."""
    import dataclasses

    if not any(k.startswith(("dataset.", "probe.")) for job in jobs for k in job.point):
        return
    from trajviz.data import load_dataset
    from trajviz.store import probe_sha256

    seen: dict[str, str] = {}
    first: tuple[str, str] | None = None
    for job in jobs:
        cfg = job.config
        ident = json.dumps([dataclasses.asdict(cfg.dataset), dataclasses.asdict(cfg.probe)],
                           sort_keys=True)
        if ident in seen:
            continue
        log.info("checking the probe set of sweep point %s", job.label)
        split = load_dataset(cfg.dataset).split(cfg.probe.split)
        if cfg.probe.n > len(split):
            raise ConfigError(f"sweep point {job.label}: probe.n = {cfg.probe.n} exceeds the "
                              f"{len(split)} examples of the {cfg.probe.split} split")
        sha = seen[ident] = probe_sha256((split.head(cfg.probe.n) if cfg.probe.n else split).x)
        if first is None:
            first = (sha, job.label)
        elif sha != first[0]:
            raise SweepError(f"sweep points {first[1]} and {job.label} have different probe sets, "
                             "so their runs cannot share one file; keep the probe inputs fixed "
                             "(dataset.name/seed, the probe split's size, probe.*) across the "
                             "grid, or run separate sweeps")


def default_shards_dir(output: str | Path) -> Path:
    """Where the shards of a sweep writing ``output`` live: ``OUT.shards`` next to it."""
    return Path(output).with_suffix(".shards")


# --------------------------------------------------------------------------- job state


def _config_differs(recorded: Mapping[str, Any], planned: Mapping[str, Any]) -> str | None:
    """First difference between two config dicts, ignoring the engine section."""
    for key in sorted(set(recorded) | set(planned)):
        if key == "engine":
            continue
        a, b = recorded.get(key), planned.get(key)
        if a != b:
            return f"{key}: {a!r} in the shard, {b!r} now"
    return None


def job_state(job: SweepJob, shard: Path) -> str:
    """``"complete"`` (every run of the job complete or diverged), ``"partial"``, ``"absent"``
    or ``"unreadable"`` (the shard cannot be opened: a worker died while creating it).

    Raises :class:`SweepError` when the shard was recorded from a different config.
    """
    from trajviz.store import COMPLETE, DIVERGED, ExperimentFile

    if not shard.exists():
        return "absent"
    try:
        f = ExperimentFile(shard)
    except TrajvizError:
        return "unreadable"
    with f:
        diff = _config_differs(f.config, json.loads(job.config.to_json()))
        if diff is not None:
            raise SweepError(f"shard {shard} was recorded with a different config ({diff}); "
                             "pass --overwrite to redo the sweep or choose another -o")
        # A shard only ever holds its own job's runs (one per method, this seed), and the
        # config matches, so counting finished runs suffices; run naming stays train.py's.
        finished = [i for i in f.runs() if i.status in (COMPLETE, DIVERGED) and i.seed == job.seed]
    return "complete" if len(finished) >= len(job.methods) else "partial"


@dataclass
class JobOutcome:
    """What became of one job. ``attempts`` is 0 for a skipped job and None where the engine
    does not report it (a job that succeeded on Ray)."""

    job: SweepJob
    status: str
    attempts: int | None = 0
    error: str = ""
    shard: Path | None = None


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


# --------------------------------------------------------------------------- tasks


#: torch threads of a local pool worker (set by the pool's initializer; None: torch's default)
_WORKER_THREADS: int | None = None


def record_job(config_json: str, shard: str) -> None:
    """The default job task: record one job's experiment into its shard (resuming a partial one)."""
    import torch

    from trajviz.train import record_experiment

    if _WORKER_THREADS is not None:
        torch.set_num_threads(_WORKER_THREADS)  # N workers x all cores each would oversubscribe
    record_experiment(config_from_dict(json.loads(config_json)), shard, mode="resume")


def _init_worker(threads: int) -> None:
    global _WORKER_THREADS
    _WORKER_THREADS = threads


def _ray_job(task: JobTask, config_json: str, key: str) -> bytes:
    """Run ``task`` on a Ray worker into a node-local temporary shard and return its bytes."""
    with tempfile.TemporaryDirectory(prefix="trajviz-sweep-") as tmp:
        path = Path(tmp) / f"{key}.h5"
        task(config_json, str(path))
        return path.read_bytes()


def _describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip().splitlines()
    return text[0] if text else type(exc).__name__


# --------------------------------------------------------------------------- engines


class _Tracker:
    """One progress bar for the whole sweep, and the outcome of every job."""

    def __init__(self, total: int, progress: bool):
        self.bar = progress_bar(total=total, enabled=progress, desc="sweep", unit="job")
        self.done = self.failed = 0
        self.total = total

    def update(self, status: str) -> None:
        if status == FAILED:
            self.failed += 1
        else:
            self.done += 1
        self.bar.set_postfix(done=self.done, failed=self.failed,
                             left=self.total - self.done - self.failed, refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


def _set_aside(shard: Path) -> None:
    """Keep an unreadable shard (never delete data) but out of the way of the retry."""
    from trajviz.lock import journal_path

    n = 0
    while (aside := shard.with_name(f"{shard.name}.broken{n}")).exists():
        n += 1
    shard.rename(aside)
    if journal_path(shard).exists():
        journal_path(shard).rename(journal_path(aside))
    log.warning("shard %s cannot be read (its worker died while writing it); moved it to %s",
                shard, aside.name)


def _run_local(jobs: list[SweepJob], shards: Path, task: JobTask, workers: int, retries: int,
               tracker: _Tracker) -> list[JobOutcome]:
    """Run jobs on a spawn-context process pool, at most ``workers`` at a time.

    Only ``workers`` jobs are ever submitted, so each one in flight is really running. When a
    worker process dies the pool breaks and every job in flight fails with it: each is charged an
    attempt (the pool cannot tell which one killed it) and resubmitted, resuming its shard, on a
    fresh pool.
    """
    outcomes: dict[str, JobOutcome] = {}
    attempts = {job.key: 0 for job in jobs}
    pending = deque(jobs)
    threads = max(1, (os.cpu_count() or 1) // workers)
    ctx = multiprocessing.get_context("spawn")

    def new_pool() -> ProcessPoolExecutor:
        return ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                                   initargs=(threads,))

    pool = new_pool()
    inflight: dict[Future, SweepJob] = {}
    try:
        while pending or inflight:
            while pending and len(inflight) < workers:
                job = pending.popleft()
                shard = shards / f"{job.key}.h5"
                if shard.exists() and job_state(job, shard) == "unreadable":
                    _set_aside(shard)
                attempts[job.key] += 1
                inflight[pool.submit(task, job.config.to_json(), str(shard))] = job
            done, _ = wait(inflight, return_when=FIRST_COMPLETED)
            if any(isinstance(f.exception(), BrokenProcessPool) for f in done):
                done, _ = wait(inflight)  # a broken pool fails every job in flight
                pool.shutdown(wait=True, cancel_futures=True)
                pool = new_pool()
            for fut in done:
                job = inflight.pop(fut)
                exc = fut.exception()
                if exc is None:
                    outcomes[job.key] = JobOutcome(job, DONE, attempts[job.key],
                                                   shard=shards / f"{job.key}.h5")
                    tracker.update(DONE)
                    continue
                error = ("its worker process died" if isinstance(exc, BrokenProcessPool)
                         else _describe(exc))
                if attempts[job.key] <= retries:
                    log.warning("job %s failed (%s); retry %d of %d", job.key, error,
                                attempts[job.key], retries)
                    pending.appendleft(job)
                else:
                    log.error("job %s failed after %d attempts: %s", job.key, attempts[job.key], error)
                    outcomes[job.key] = JobOutcome(job, FAILED, attempts[job.key], error=error)
                    tracker.update(FAILED)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return [outcomes[job.key] for job in jobs]


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise SweepError("--ray needs Ray, which is not installed; install it with "
                         "pip install 'trajviz[ray]' (or pip install 'ray[default]')") from None
    return ray


def _run_ray(jobs: list[SweepJob], shards: Path, task: JobTask, address: str, workers: int | None,
             retries: int, tracker: _Tracker) -> list[JobOutcome]:
    """Run jobs as Ray tasks. Ray retries a task whose worker dies (``max_retries``) or that
    raises (``retry_exceptions``); each returns its shard's bytes, written here atomically."""
    ray = _import_ray()
    started = False
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"log_to_driver": False,
                                  "logging_level": max(logging.WARNING, log.getEffectiveLevel())}
        if address == "local":
            kwargs.update(address="local", include_dashboard=False)
            if workers:
                kwargs["num_cpus"] = workers
        else:
            kwargs["address"] = address
        log.info("connecting to Ray (%s)", address)
        try:
            ray.init(**kwargs)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            raise SweepError(f"--ray {address}: cannot start or join a Ray cluster: "
                             f"{_describe(exc)}") from None
        started = True
    else:
        log.info("using the Ray instance this process already started")
    outcomes: dict[str, JobOutcome] = {}
    try:
        remote = ray.remote(num_cpus=1, max_retries=retries, retry_exceptions=True)(_ray_job)
        refs = {remote.remote(task, job.config.to_json(), job.key): job for job in jobs}
        while refs:
            ready, _ = ray.wait(list(refs), num_returns=1)
            for ref in ready:
                job = refs.pop(ref)
                try:
                    data = ray.get(ref)
                except Exception as exc:  # RayTaskError, WorkerCrashedError, ...: retries spent
                    error = _describe(getattr(exc, "cause", None) or exc)
                    log.error("job %s failed after %d attempts: %s", job.key, retries + 1, error)
                    outcomes[job.key] = JobOutcome(job, FAILED, retries + 1, error=error)
                    tracker.update(FAILED)
                    continue
                shard = shards / f"{job.key}.h5"
                tmp = shard.with_name(f".{shard.name}.tmp")
                tmp.write_bytes(data)
                os.replace(tmp, shard)
                outcomes[job.key] = JobOutcome(job, DONE, None, shard=shard)
                tracker.update(DONE)
    finally:
        if started:
            ray.shutdown()
    return [outcomes[job.key] for job in jobs]


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
