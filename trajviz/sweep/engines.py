"""Running sweep jobs: the job task, a job's state from its shard, and the two engines (a local
spawn-context process pool, and Ray remote tasks), both retrying failed jobs."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import tempfile
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from trajviz.config import config_from_dict
from trajviz.errors import TrajvizError
from trajviz.progress import progress_bar
from trajviz.sweep.spec import SweepError, SweepJob

log = logging.getLogger(__name__)

DONE, SKIPPED, FAILED = "done", "skipped", "failed"

#: ``task(config_json, shard_path)`` trains one job and writes its shard; must be picklable
#: (a module-level function) so that worker processes can import it.
JobTask = Callable[[str, str], None]


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
        # config matches, so counting finished runs suffices; run naming stays the runner's (trajviz.training.runner).
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


# --------------------------------------------------------------------------- tasks


#: torch threads of a local pool worker (set by the pool's initializer; None: torch's default)
_WORKER_THREADS: int | None = None


def record_job(config_json: str, shard: str) -> None:
    """The default job task: record one job's experiment into its shard (resuming a partial one)."""
    import torch

    from trajviz.training.runner import record_experiment

    if _WORKER_THREADS is not None:
        torch.set_num_threads(_WORKER_THREADS)  # N workers x all cores each would oversubscribe
    record_experiment(config_from_dict(json.loads(config_json)), shard, mode="resume")


def _init_worker(threads: int) -> None:
    global _WORKER_THREADS
    _WORKER_THREADS = threads


def _worker_ready() -> None:
    """A no-op task: the pool's workers are up once one has run per worker."""


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
    from trajviz.store.journal import journal_path

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

    Only ``workers`` jobs are ever submitted, so each one in flight is really running. A job that
    raises is charged one failed attempt. When a worker process dies the pool breaks and every job
    in flight fails with it, and the pool cannot say whose worker died: if one job was in flight
    it is charged; if several, none is, and each becomes a *suspect* that from then on runs alone,
    so that its next crash (if any) is its own. Jobs are resubmitted, resuming their shards, on a
    fresh pool, unless their shard is complete (the job finished before its pool broke). A job is
    failed once charged ``retries + 1`` times.
    """
    outcomes: dict[str, JobOutcome] = {}
    submitted = {job.key: 0 for job in jobs}
    charged = {job.key: 0 for job in jobs}
    suspects: set[str] = set()
    pending = deque(jobs)
    threads = max(1, (os.cpu_count() or 1) // workers)
    ctx = multiprocessing.get_context("spawn")

    def new_pool() -> ProcessPoolExecutor:
        nonlocal others
        others = set(multiprocessing.active_children())  # children that are not this pool's
        fresh = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                                    initargs=(threads,))
        # Start every worker before the first job: CPython's executor (3.11) spawns workers on
        # submit and watches only those it had when its manager thread last woke, so a worker
        # spawned later could die unnoticed (its job's crash seen only when another job ends).
        try:
            for ready in [fresh.submit(_worker_ready) for _ in range(workers)]:
                ready.result()
        except BrokenProcessPool:
            fresh.shutdown(wait=True, cancel_futures=True)
            raise SweepError(f"the local pool's {workers} worker processes could not start "
                             "(out of memory or processes?); try fewer --workers") from None
        return fresh

    def replace_broken_pool() -> ProcessPoolExecutor:
        # CPython's executor stops a broken pool's workers with SIGTERM, then joins them, and
        # waits forever on one it did not stop (seen once in CI, Python 3.11.7, when workers
        # were still spawned on submit). Every job in flight has failed already, so kill this
        # pool's workers before joining them.
        for child in multiprocessing.active_children():
            if child not in others:
                child.kill()
        pool.shutdown(wait=True, cancel_futures=True)
        return new_pool()

    def may_start(job: SweepJob) -> bool:
        if job.key in suspects:
            return not inflight
        return not any(j.key in suspects for j in inflight.values())

    others: set[multiprocessing.process.BaseProcess] = set()
    pool = new_pool()
    inflight: dict[Future, SweepJob] = {}
    try:
        while pending or inflight:
            while pending and len(inflight) < workers and may_start(pending[0]):
                job = pending.popleft()
                shard = shards / f"{job.key}.h5"
                state = job_state(job, shard)
                if state == "complete":  # it finished, but its pool broke before saying so
                    outcomes[job.key] = JobOutcome(job, DONE, submitted[job.key], shard=shard)
                    tracker.update(DONE)
                    continue
                if state == "unreadable":
                    _set_aside(shard)
                try:
                    future = pool.submit(task, job.config.to_json(), str(shard))
                except BrokenProcessPool:  # a worker died since the last wait
                    pending.appendleft(job)
                    if not inflight:  # else the wait below returns the jobs it failed
                        pool = replace_broken_pool()
                    break
                submitted[job.key] += 1
                inflight[future] = job
            done, _ = wait(inflight, return_when=FIRST_COMPLETED)
            if any(isinstance(f.exception(), BrokenProcessPool) for f in done):
                done, _ = wait(inflight)  # a broken pool fails every job in flight
                pool = replace_broken_pool()
            crashed = [f for f in done if isinstance(f.exception(), BrokenProcessPool)]
            for fut in done:
                job = inflight.pop(fut)
                exc = fut.exception()
                if exc is None:
                    outcomes[job.key] = JobOutcome(job, DONE, submitted[job.key],
                                                   shard=shards / f"{job.key}.h5")
                    tracker.update(DONE)
                    continue
                if isinstance(exc, BrokenProcessPool) and len(crashed) > 1:
                    log.warning("a worker died while %d jobs ran; job %s will rerun alone to "
                                "find out whether it was the cause", len(crashed), job.key)
                    suspects.add(job.key)
                    pending.appendleft(job)
                    continue
                charged[job.key] += 1
                error = ("its worker process died" if isinstance(exc, BrokenProcessPool)
                         else _describe(exc))
                if charged[job.key] <= retries:
                    log.warning("job %s failed (%s); retry %d of %d", job.key, error,
                                charged[job.key], retries)
                    pending.appendleft(job)
                else:
                    log.error("job %s failed after %d attempts: %s", job.key, submitted[job.key],
                              error)
                    outcomes[job.key] = JobOutcome(job, FAILED, submitted[job.key], error=error)
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


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail fast on a HOST:PORT nobody listens at (``ray.init`` would retry for minutes)."""
    import socket

    host, sep, port = address.rpartition(":")
    if address.startswith("ray://") or not sep or not port.isdigit():
        return  # Ray client addresses and anything else: let ray.init judge
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise SweepError(f"--ray {address}: no Ray head answers there ({exc}); start one with "
                         "`ray start --head --port=PORT`, or use --ray local") from None


def _connect_ray(address: str, workers: int | None) -> tuple[Any, bool]:
    """Ray, initialized: joined or started at ``address``, unless this process already did.
    Returns the module and whether this call started it (the caller then shuts it down)."""
    ray = _import_ray()
    if ray.is_initialized():
        log.info("using the Ray instance this process already started")
        return ray, False
    kwargs: dict[str, Any] = {"log_to_driver": False,
                              "logging_level": max(logging.WARNING, log.getEffectiveLevel())}
    if address == "local":
        kwargs.update(address="local", include_dashboard=False)
        if workers:
            kwargs["num_cpus"] = workers
    else:
        _check_reachable(address)
        kwargs["address"] = address
    log.info("connecting to Ray (%s)", address)
    try:
        ray.init(**kwargs)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise SweepError(f"--ray {address}: cannot start or join a Ray cluster: "
                         f"{_describe(exc)}") from None
    return ray, True


def _run_ray(jobs: list[SweepJob], shards: Path, task: JobTask, address: str, workers: int | None,
             retries: int, tracker: _Tracker, gpus: bool = False) -> list[JobOutcome]:
    """Run jobs as Ray tasks. Ray retries a task whose worker dies (``max_retries``) or that
    raises (``retry_exceptions``); each returns its shard's bytes, written here atomically.

    ``gpus``: when the cluster has GPUs, each task asks for one (Ray hides the GPUs from tasks
    that ask for none), so ``engine.device = "auto"`` finds it."""
    ray, started = _connect_ray(address, workers)
    outcomes: dict[str, JobOutcome] = {}
    try:
        num_gpus = 1 if gpus and ray.cluster_resources().get("GPU", 0) >= 1 else 0
        if num_gpus:
            log.info("the cluster has %g GPUs: one per task", ray.cluster_resources()["GPU"])
        remote = ray.remote(num_cpus=1, num_gpus=num_gpus, max_retries=retries,
                            retry_exceptions=True)(_ray_job)
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
