"""Which runs and checkpoints an analysis means, and how a checkpoint becomes a vector.

A *point* is one net at one checkpoint, represented by its outputs on the whole probe set,
flattened into one vector of N x C numbers (N probe examples, C classes). :func:`select` picks
runs and checkpoints from one or several trajviz files that share a probe set (the same rules
for embeddings and divergence measures); :func:`represent` maps probabilities to the vectors
whose Euclidean distances are used; :func:`iter_checkpoint_vectors` reads them one checkpoint
at a time.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

from trajviz.errors import ConfigError, ProbeSetMismatchError
from trajviz.progress import progress_bar
from trajviz.store import DIVERGED, ExperimentFile

log = logging.getLogger(__name__)

#: representations of a checkpoint's probe outputs p (N, C)
REPRESENTATIONS = ("probs", "sqrt", "log")
#: floor applied to probabilities before the log (float32 softmax outputs can underflow to 0)
LOG_EPS = 1e-7


def represent(probabilities: np.ndarray, kind: str) -> np.ndarray:
    """Map probe probabilities (..., N, C) to the vectors whose Euclidean distances we use.

    ``probs``: p itself (the studies' choice). ``sqrt``: sqrt(p); Euclidean distance between
    two such vectors is sqrt(2) x the Hellinger distance summed over probes, tied to the
    Bhattacharyya coefficient. ``log``: log(max(p, LOG_EPS)).
    """
    p = np.asarray(probabilities, dtype=np.float32)
    if kind == "probs":
        return p
    if kind == "sqrt":
        return np.sqrt(np.clip(p, 0.0, None))
    if kind == "log":
        return np.log(np.clip(p, LOG_EPS, None))
    raise ConfigError(f"representation {kind!r}: choose one of {', '.join(REPRESENTATIONS)}")


def parse_checkpoints(text: str | slice | None) -> slice:
    """Parse a checkpoint selection ``START:STOP:STRIDE`` (Python slice over each run's
    checkpoint *index*, 0 = the checkpoint before training; negative counts from the end;
    any part may be empty) or a single index ``I``. ``None`` or ``""`` selects all."""
    if text is None or isinstance(text, slice):
        return text or slice(None)
    text = text.strip()
    if not text:
        return slice(None)
    parts = text.split(":")
    try:
        if len(parts) == 1:
            i = int(parts[0])
            return slice(i, i + 1 if i != -1 else None)
        if len(parts) > 3:
            raise ValueError
        nums = [int(p) if p.strip() else None for p in parts]
    except ValueError:
        raise ConfigError(f"checkpoints {text!r}: expected START:STOP[:STRIDE] or an index, "
                          "integers, e.g. 0:20:2 or ::5 or -1") from None
    if len(nums) == 3 and nums[2] is not None and nums[2] <= 0:
        raise ConfigError(f"checkpoints {text!r}: STRIDE must be a positive integer")
    return slice(*nums)


# --------------------------------------------------------------------------- selection


@dataclass(frozen=True)
class SelectedRun:
    """One run chosen for embedding: where it lives and which checkpoint indices to use."""

    source: int  # index into the list of files
    run_id: str
    group: str
    seed: int
    checkpoints: np.ndarray  # (T,) int, indices into the run's checkpoints
    steps: np.ndarray  # (T,) int, SGD steps of those checkpoints
    epochs: np.ndarray  # (T,) float, epochs (NaN where unknown)


def open_experiments(paths: Sequence[str | Path], stack: contextlib.ExitStack) -> list[ExperimentFile]:
    """Open trajviz files (closed by ``stack``), refusing files recorded on different probe sets."""
    if not paths:
        raise ConfigError("no input files given")
    files = [stack.enter_context(ExperimentFile(p)) for p in paths]
    first = files[0]
    for other in files[1:]:
        if other.probe_sha256 != first.probe_sha256:
            raise ProbeSetMismatchError(
                f"{first.path} and {other.path} were recorded on different probe sets "
                f"(probe_sha256 {first.probe_sha256[:12]} vs {other.probe_sha256[:12]}); "
                "only files sharing a probe set can be compared")
    return files


def _parse_where(where: Iterable[str] | Mapping[str, Any] | None) -> dict[str, set[str]]:
    if not where:
        return {}
    if isinstance(where, Mapping):
        items = [(k, v) for k, v in where.items()]
    else:
        items = []
        for cond in where:
            key, sep, value = str(cond).partition("=")
            if not sep or not key.strip():
                raise ConfigError(f"--where {cond!r}: expected KEY=VALUE[,VALUE...], e.g. seed=0,1")
            items.append((key.strip(), value))
    out = {}
    for key, value in items:
        values = value if isinstance(value, (list, tuple, set)) else str(value).split(",")
        out[key] = {str(v).strip() for v in values}
    return out


def select(files: Sequence[ExperimentFile], *, groups: Sequence[str] | None = None,
           where: Iterable[str] | Mapping[str, Any] | None = None,
           checkpoints: str | slice | None = None) -> list[SelectedRun]:
    """Choose runs and checkpoints.

    ``groups``: keep runs whose ``group`` attribute is listed (all if None). ``where``: run
    attributes that must match, e.g. ``["seed=0,1,2", "pretrain=sdae"]`` (values compared as
    strings, a comma separates alternatives). ``checkpoints``: see :func:`parse_checkpoints`.
    Runs whose status is ``diverged`` are left out with a warning naming them.
    """
    cp = parse_checkpoints(checkpoints)
    conds = _parse_where(where)
    wanted = set(groups) if groups else None
    all_groups: set[str] = set()
    chosen: list[SelectedRun] = []
    diverged: list[str] = []
    for i, f in enumerate(files):
        for info in f.runs():
            all_groups.add(info.group)
            if wanted is not None and info.group not in wanted:
                continue
            if conds:
                attrs = f.run_attrs(info.run_id)
                attrs.setdefault("group", info.group)
                attrs.setdefault("run_id", info.run_id)
                if any(key not in attrs or str(attrs[key]) not in values
                       for key, values in conds.items()):
                    continue
            if info.status == DIVERGED:
                diverged.append(info.run_id if len(files) == 1 else f"{f.path.name}:{info.run_id}")
                continue
            idx = np.arange(info.n_checkpoints)[cp]
            if idx.size == 0:
                continue
            steps = f.steps(info.run_id)[idx]
            epochs = f.epochs(info.run_id)[idx]
            chosen.append(SelectedRun(i, info.run_id, info.group, info.seed, idx, steps, epochs))
    if diverged:
        log.warning("left out %d diverged run(s): %s", len(diverged), ", ".join(diverged))
    if wanted is not None and (missing := wanted - all_groups):
        raise ConfigError(f"group(s) {', '.join(sorted(missing))} not in the input; groups there: "
                          + ", ".join(sorted(all_groups)))
    if not chosen:
        raise ConfigError("the selection (groups/where/checkpoints) matches no checkpoint; "
                          f"groups in the input: {', '.join(sorted(all_groups))}")
    return chosen


def iter_checkpoint_vectors(files: Sequence[ExperimentFile], runs: Sequence[SelectedRun],
                            representation: str, *, progress: bool = False,
                            desc: str = "reading") -> Iterator[np.ndarray]:
    """Yield each selected checkpoint as one (N*C,) float32 vector, run by run, one checkpoint in
    memory at a time."""
    total = sum(r.checkpoints.size for r in runs)
    with progress_bar(total=total, enabled=progress, desc=desc, unit="ckpt") as bar:
        for r in runs:
            for vec in run_vectors(files[r.source], r, representation):
                yield vec
                bar.update(1)


def run_vectors(f: ExperimentFile, run: SelectedRun, representation: str) -> Iterator[np.ndarray]:
    """The selected checkpoints of one run as (N*C,) float32 vectors, in order."""
    idx = run.checkpoints
    if idx.size and idx[0] == 0 and np.all(np.diff(idx) == 1):
        # sequential reads skip the store's per-call validation (~4 ms a call)
        for _, out in zip(range(idx.size), f.iter_outputs(run.run_id)):
            yield represent(out, representation).reshape(-1)
        return
    for t in idx:
        out = f.outputs(run.run_id, slice(int(t), int(t) + 1))[0]
        yield represent(out, representation).reshape(-1)
