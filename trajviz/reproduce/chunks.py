"""Which runs of a study setting are finished, which nets still train, and how a setting's seeds
split into chunks (one chunk = one Ray task, :mod:`trajviz.reproduce.distributed`).

A setting's runs train in batches: per pre-training method, its seeds in consecutive groups of
``engine.nets_per_batch`` (:func:`trajviz.training.runner.record_experiment`), and a batch with
any run missing is retrained whole (a net's last bits depend on its batch). Chunks are cut on
the same boundaries (a chunk is one or more whole batches), so a chunk recorded on its own gives
the numbers of the same runs recorded in one process.

A chunk holds one pre-training method's runs (a study that selects hyper-parameters per
condition trains each method at its own point, :mod:`trajviz.reproduce.selection`). Finished runs
live in the setting's result file and, while a distributed reproduction is under way or was
interrupted, in chunk shards under ``results/shards/``. Torch-free.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from trajviz.reproduce.studies import Setting, result_path
from trajviz.store import COMPLETE, DIVERGED, ExperimentFile

#: folder of chunk shards, under the results directory
SHARDS = "shards"


def run_id(method: str, seed: int) -> str:
    """``<method>-seed<seed>``, as :func:`trajviz.training.runner.run_id` names a run."""
    return f"{method}-seed{seed}"


def finished_in(path: Path) -> set[str]:
    """Run ids that are complete (or diverged: finished, flagged) in a trajviz file."""
    if not path.exists():
        return set()
    with ExperimentFile(path) as f:
        return {r.run_id for r in f.runs() if r.status in (COMPLETE, DIVERGED)}


def chunk_seeds(setting: Setting, chunk: int | None = None) -> list[list[int]]:
    """The setting's seeds cut into chunks of ``chunk`` seeds (default: ``nets_per_batch``),
    rounded up to a whole number of batches so chunks never split a batch."""
    cfg = setting.config
    assert cfg is not None
    per_batch = cfg.engine.nets_per_batch
    size = per_batch if not chunk else -(-chunk // per_batch) * per_batch
    seeds = list(cfg.seeds)
    return [seeds[i:i + size] for i in range(0, len(seeds), size)]


def chunk_key(setting: Setting, method: str, seeds: list[int]) -> str:
    """A chunk's name (one method's runs of some seeds of a setting), unique in a reproduction
    and safe as a file name."""
    return f"{setting.study}--{setting.id}--{method}--seeds{seeds[0]}-{seeds[-1]}"


def shard_path(results_dir: str | Path, setting: Setting, method: str, seeds: list[int]) -> Path:
    return Path(results_dir) / SHARDS / f"{chunk_key(setting, method, seeds)}.h5"


def setting_shards(results_dir: str | Path, setting: Setting) -> list[Path]:
    """Chunk shards of ``setting`` present on disk (any chunk size)."""
    folder = Path(results_dir) / SHARDS
    if not folder.is_dir():
        return []
    return sorted(folder.glob(f"{setting.study}--{setting.id}--*.h5"))


def finished_runs(setting: Setting, results_dir: str | Path) -> set[str]:
    """Finished runs of a setting: in its result file or in any of its chunk shards."""
    done = finished_in(result_path(Path(results_dir), setting))
    for shard in setting_shards(results_dir, setting):
        try:
            done |= finished_in(shard)
        except Exception:  # a shard a killed worker left half-written: nothing finished there
            continue
    return done & expected_runs(setting)


def expected_runs(setting: Setting) -> set[str]:
    cfg = setting.config
    assert cfg is not None
    return {run_id(m, s) for m in cfg.pretrain.methods for s in cfg.seeds}


def batches_to_train(setting: Setting, finished: Iterable[str]) -> list[tuple[str, list[int]]]:
    """(method, seeds) of every batch that has a run not in ``finished``: what still trains."""
    cfg = setting.config
    assert cfg is not None
    finished = set(finished)
    n = cfg.engine.nets_per_batch
    seeds = list(cfg.seeds)
    return [(m, seeds[i:i + n]) for m in cfg.pretrain.methods for i in range(0, len(seeds), n)
            if any(run_id(m, s) not in finished for s in seeds[i:i + n])]
