"""Experiment files (docs/format.md), write side, and what the store's submodules share.

Format constants, run status values, :func:`probe_sha256`; :class:`ExperimentWriter` (one per
file) hands out :class:`RunWriter` objects that append checkpoints. Every change (an append, a
run start, an attribute) is one transaction of a rollback journal (:mod:`trajviz.store.journal`), so a
process killed at any moment, even inside an HDF5 write, leaves the file as the last complete
change left it (docs/reliability.md). Also the private helpers the other submodules use.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Mapping

import h5py
import numpy as np

from trajviz.errors import FormatError, InputFileNotFoundError, OutputExistsError
from trajviz.store.journaled import JournaledWriter
from trajviz.store import resume as _resume

log = logging.getLogger("trajviz.store")

FORMAT = "trajviz"
FORMAT_VERSION = 1
SPLITS = ("train", "valid", "test")
METRIC_NAMES = tuple(f"{s}_{m}" for s in SPLITS for m in ("nll", "error"))

#: run status values (attribute ``status`` of each run group)
RUNNING, COMPLETE, DIVERGED = "running", "complete", "diverged"


def probe_sha256(inputs: np.ndarray) -> str:
    """Identity of a probe set: SHA-256 of its shape and float32 C-order bytes."""
    arr = np.ascontiguousarray(np.asarray(inputs, dtype=np.float32))
    digest = hashlib.sha256(repr(arr.shape).encode())
    digest.update(arr.tobytes())
    return digest.hexdigest()


def _str_attr(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _first_difference(old: Any, new: Any, ignore: tuple[str, ...] = (), prefix: str = "") -> str | None:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new)):
            if not prefix and key in ignore:
                continue
            d = _first_difference(old.get(key), new.get(key), (), f"{prefix}{key}.")
            if d is not None:
                return d
        return None
    if old != new:
        return f"{prefix.rstrip('.')}: {old!r} in the file, {new!r} now"
    return None


def _check_readable(path: Path) -> None:
    if not path.exists():
        raise InputFileNotFoundError(f"{path} does not exist")
    if path.is_dir():
        raise FormatError(f"{path} is a directory, not a trajviz file")
    try:
        hdf5 = h5py.is_hdf5(str(path))
    except OSError as exc:
        raise FormatError(f"{path} cannot be read: {exc}") from None
    if not hdf5:
        raise FormatError(f"{path} is not an HDF5 file (and so not a trajviz file)")



_READ_ERRORS = (OSError, KeyError, ValueError, RuntimeError, TypeError, IndexError,
                AttributeError, OverflowError, MemoryError, UnicodeDecodeError, SystemError)


def check_format_attrs(path: Path, attrs: Any, expected: str, max_version: int,
                       kind: str = "") -> None:
    """Refuse a file whose root attributes ``format`` / ``format_version`` are not ``expected``
    / 1..``max_version``; ``kind`` ("landscape", "embedding") names the file type in errors."""
    what = f"trajviz {kind} file" if kind else "trajviz file"
    fmt = _str_attr(attrs.get("format", ""))
    if fmt != expected:
        raise FormatError(f"{path} is not a {what} (root attribute 'format' is {fmt[:40]!r}, "
                          f"expected {expected!r})")
    version = attrs.get("format_version")
    if not isinstance(version, (int, np.integer)) or not 1 <= int(version) <= max_version:
        raise FormatError(f"{path}: {kind + ' ' if kind else ''}format_version {version!r} is "
                          f"not supported (this trajviz reads 1..{max_version}); upgrade trajviz")


def _natural_key(text: str) -> list[Any]:
    import re

    return [int(tok) if tok.isdigit() else tok for tok in re.split(r"(\d+)", text)]



#: HDF5 format versions the writer uses: 1.10 objects carry checksums on all metadata
#: (superblock, object headers, chunk indexes), so a flipped bit is detected, not misread
LIBVER = ("v110", "v110")
_CHECKSUMMED = dict(fletcher32=True)  # data chunks carry a Fletcher-32 checksum


class RunWriter:
    """Appends checkpoints of one run. Obtain it from :meth:`ExperimentWriter.start_run`.

    Each call is one transaction of the owner's journal (docs/reliability.md): it is in the
    file whole or not at all, whenever the process dies.
    """

    def __init__(self, owner: "ExperimentWriter", run_id: str, n_checkpoints: int = 0):
        self._owner = owner
        self.run_id = run_id
        self._n = n_checkpoints

    @property
    def _g(self) -> h5py.Group:
        return self._owner._f["runs"][self.run_id]

    @property
    def n_checkpoints(self) -> int:
        """Checkpoints appended so far (including any still queued for a busy file)."""
        return self._n

    def append(self, step: int, probabilities: np.ndarray,
               metrics: Mapping[str, float] | None = None, epoch: float | None = None,
               params: Mapping[str, np.ndarray] | None = None) -> None:
        """Append one checkpoint: ``probabilities`` (N, C) on the probe set, scalar metrics,
        and optionally the parameters at this checkpoint (stored under params/trajectory)."""
        probs = np.array(probabilities, dtype=np.float32, copy=True)
        expected = (self._owner.n_probe, self._owner.n_classes)
        if probs.shape != expected:
            raise FormatError(f"run {self.run_id!r}: outputs of shape {probs.shape}, "
                              f"but the probe set needs {expected}")
        values = {str(k): float(v) for k, v in (metrics or {}).items()}
        arrays = (None if params is None else
                  {str(k): np.array(v, dtype=np.float32, copy=True) for k, v in params.items()})
        t = self._n
        self._n += 1
        nbytes = probs.nbytes + sum(a.nbytes for a in (arrays or {}).values())
        self._owner._submit(lambda: self._write_checkpoint(t, int(step), probs, values, epoch,
                                                           arrays), nbytes)

    def _write_checkpoint(self, t: int, step: int, probs: np.ndarray, metrics: dict[str, float],
                          epoch: float | None, params: dict[str, np.ndarray] | None) -> None:
        g = self._g
        _append(g["outputs"], t, probs)
        _append(g["epochs"], t, np.nan if epoch is None else float(epoch))
        mg = g["metrics"]
        for name, value in metrics.items():
            if name not in mg:
                ds = mg.create_dataset(name, shape=(t,), maxshape=(None,), dtype="f8",
                                       chunks=(256,), fillvalue=np.nan, **_CHECKSUMMED)
                ds[:] = np.nan
            _append(mg[name], t, value)
        for name in mg:  # metrics not given at this checkpoint stay NaN
            if mg[name].shape[0] < t + 1:
                _append(mg[name], t, np.nan)
        if params is not None:
            pg = g.require_group("params/trajectory")
            for name, arr in params.items():
                if name not in pg:
                    pg.create_dataset(name, shape=(0, *arr.shape), maxshape=(None, *arr.shape),
                                      dtype="f4", chunks=(1, *arr.shape), **_CHECKSUMMED)
                _append(pg[name], t, arr)
        _append(g["steps"], t, step)  # last: its length counts complete checkpoints

    def write_params(self, params: Mapping[str, np.ndarray], which: str = "final") -> None:
        """Store a set of named parameter arrays under ``params/<which>``."""
        arrays = {str(k): np.array(v, dtype=np.float32, copy=True) for k, v in params.items()}

        def op() -> None:
            pg = self._g.require_group("params")
            if which in pg:
                del pg[which]
            sub = pg.create_group(which)
            for name, arr in arrays.items():
                sub.create_dataset(name, data=arr, **_CHECKSUMMED)

        self._owner._submit(op, sum(a.nbytes for a in arrays.values()))

    def set_attrs(self, **attrs: Any) -> None:
        def op() -> None:
            for key, value in attrs.items():
                self._g.attrs[key] = value

        self._owner._submit(op, 0)

    def finish(self, status: str = COMPLETE) -> None:
        self.set_attrs(status=status)


def _append(ds: h5py.Dataset, t: int, value: Any) -> None:
    ds.resize(t + 1, axis=0)
    ds[t] = value


def _skeleton(f: h5py.File, targets: np.ndarray, probe_sha: str, n_classes: int, name: str,
              config_json: str, probe_inputs: "ProbeInputsRecord | None" = None) -> None:
    """What a new experiment file holds before its first run."""
    f.attrs["format"] = FORMAT
    f.attrs["format_version"] = FORMAT_VERSION
    f.attrs["probe_sha256"] = probe_sha
    f.attrs["n_classes"] = int(n_classes)
    f.attrs["name"] = name
    f.attrs["config"] = config_json
    probe = f.create_group("probe")
    probe.create_dataset("targets", data=targets)
    if probe_inputs is not None:
        probe_inputs.write(probe)
    f.create_group("runs")


class ProbeInputsRecord:
    """The probe inputs as a file keeps them (docs/format.md, "Probe inputs"): their layout
    (``structure``: ``"tensor"``, ``"tuple"`` or ``"dict"``; each entry's name, shape and
    dtype) always, the arrays themselves when ``store`` is true.

    ``arrays``: entry name -> array (``""`` for one tensor, ``"0"``, ``"1"``... for a tuple, the
    keys of a dict)."""

    def __init__(self, structure: str, arrays: Mapping[str, np.ndarray], store: bool):
        if structure not in ("tensor", "tuple", "dict"):
            raise ValueError(f"structure {structure!r}: choose tensor, tuple or dict")
        for name in arrays:
            if "/" in name or name in (".", ".."):
                raise FormatError(f"probe input name {name!r}: must not contain '/'")
        self.structure = structure
        self.arrays = dict(arrays)
        self.store = bool(store)

    def layout(self) -> dict[str, Any]:
        return {"structure": self.structure, "stored": self.store,
                "entries": [{"name": k, "shape": list(v.shape), "dtype": str(v.dtype)}
                            for k, v in self.arrays.items()]}

    def write(self, probe: h5py.Group) -> None:
        probe.attrs["inputs"] = json.dumps(self.layout())
        if not self.store:
            return
        if self.structure == "tensor":
            probe.create_dataset("inputs", data=self.arrays[""], **_stored_array(self.arrays[""]))
            return
        g = probe.create_group("inputs")
        for name, arr in self.arrays.items():
            g.create_dataset(name, data=arr, **_stored_array(arr))


def _stored_array(arr: np.ndarray) -> dict[str, Any]:
    """Chunked, gzip-compressed and checksummed (a scalar per example cannot be chunked less)."""
    if arr.ndim == 0 or arr.size == 0:
        return {}
    return dict(compression="gzip", compression_opts=1, shuffle=True, **_CHECKSUMMED)


class ExperimentWriter(JournaledWriter):
    """Creates or reopens a trajviz file for writing.

    ``mode``: ``"create"`` refuses an existing file; ``"resume"`` reopens one written with the
    same probe set (and creates it if absent); ``"overwrite"`` replaces it.

    Crash safety (docs/reliability.md): every change is a transaction of a rollback journal
    (:mod:`trajviz.store.journal`), so a process killed at any moment leaves the file as it was after
    the last complete change, and the next writer rolls back the unfinished one. A second
    writer is refused with :class:`~trajviz.errors.FileLockedError`. While readers
    (:class:`ExperimentFile`) hold the file, changes queue in memory (up to
    ``MAX_PENDING_BYTES``) rather than wait. A failed write (disk full) is rolled back and
    raised as :class:`~trajviz.errors.StoreWriteError`; the writer is unusable afterwards.
    ``durable=True`` also fsyncs, for safety against power loss (slower).
    """

    _unit = "checkpoint"
    _reader_name = "an ExperimentFile"

    def __init__(self, path: str | Path, *, probe_targets: np.ndarray, probe_sha: str,
                 n_classes: int | None, name: str = "", config_json: str = "{}",
                 mode: str = "create", durable: bool = False,
                 probe_inputs: ProbeInputsRecord | None = None):
        targets = np.asarray(probe_targets, dtype=np.int64)
        self.n_probe = int(targets.shape[0])
        self.n_classes = -1 if n_classes is None else int(n_classes)
        self._start_session(path, durable, mode)  # FileLockedError if taken
        try:
            if mode == "resume":
                self._session.recover()
            if mode == "resume" and self.path.exists() and self.path.stat().st_size > 0:
                _check_readable(self.path)
                self._open_file(LIBVER, lambda: self._check_compatible(
                    probe_sha, targets, n_classes, config_json))
            elif n_classes is None:
                raise ValueError(f"{self.path}: n_classes is needed to create a file")
            else:
                self._create_file(lambda f: _skeleton(f, targets, probe_sha, n_classes, name,
                                                      config_json, probe_inputs), LIBVER)
        except BaseException:
            self._session.close()
            raise

    def _check_compatible(self, probe_sha: str, targets: np.ndarray, n_classes: int | None,
                          config_json: str) -> None:
        f = self._f
        if _str_attr(f.attrs.get("format", "")) != FORMAT:
            raise FormatError(f"{self.path} is not a trajviz file; refusing to resume into it")
        version = f.attrs.get("format_version")
        if not isinstance(version, (int, np.integer)) or int(version) != FORMAT_VERSION:
            # a file of another version keeps its own layout: never mix two in one file
            shown = int(version) if isinstance(version, (int, np.integer)) else repr(version)
            raise FormatError(f"{self.path} has format_version {shown}; this trajviz appends "
                              f"only to version {FORMAT_VERSION} files: record into a new file")
        if _str_attr(f.attrs.get("probe_sha256", "")) != probe_sha:
            raise FormatError(f"{self.path} was recorded on a different probe set; "
                              "resume needs the same data and probe config")
        stored = f.attrs.get("n_classes")
        if stored is not None and n_classes is not None and int(stored) != n_classes:
            raise FormatError(f"{self.path} holds outputs of {int(stored)} classes, not "
                              f"{n_classes}; resume needs the same model outputs")
        if n_classes is None:
            if stored is None:
                raise FormatError(f"{self.path} has no 'n_classes' attribute; pass n_classes")
            self.n_classes = int(stored)
        old = json.loads(_str_attr(f.attrs.get("config", "{}")))
        new = json.loads(config_json)
        diff = _first_difference(old, new, ignore=("engine", "seeds"))
        if diff is not None:
            raise FormatError(f"{self.path} was recorded with a different config ({diff}); "
                              "use mode='overwrite' or another output file")
        if new.get("seeds"):
            f.attrs["config"] = config_json  # more seeds may be added to an experiment

    def completed_runs(self) -> set[str]:
        self._drain(block=True)
        return {rid for rid, g in self._f["runs"].items()
                if _str_attr(g.attrs.get("status", "")) in (COMPLETE, DIVERGED)}

    def start_run(self, run_id: str, *, seed: int | None, pretrain: str, group: str | None = None,
                  config_json: str = "{}", **attrs: Any) -> RunWriter:
        """Create the run's group (replacing an unfinished one of the same id)."""
        if not run_id or "/" in run_id or run_id in (".", ".."):
            raise FormatError(f"run id {run_id!r}: must be non-empty without '/'")
        self._drain(block=True)
        runs = self._f["runs"]
        if run_id in runs and _str_attr(runs[run_id].attrs.get("status", "")) == COMPLETE:
            raise OutputExistsError(f"run {run_id!r} is already complete in {self.path}; "
                                    "choose another run id, or another file")
        n, c = self.n_probe, self.n_classes

        def op() -> None:
            runs = self._f["runs"]
            if run_id in runs:
                log.info("restarting unfinished run %s", run_id)
                del runs[run_id]
            g = runs.create_group(run_id)
            g.attrs["seed"] = -1 if seed is None else int(seed)
            g.attrs["pretrain"] = pretrain
            g.attrs["group"] = group if group is not None else pretrain
            g.attrs["config"] = config_json
            g.attrs["status"] = RUNNING
            for key, value in attrs.items():
                g.attrs[key] = value
            g.create_dataset("outputs", shape=(0, n, c), maxshape=(None, n, c), dtype="f4",
                             chunks=(1, n, c), compression="gzip", compression_opts=1,
                             shuffle=True, **_CHECKSUMMED)
            g.create_dataset("steps", shape=(0,), maxshape=(None,), dtype="i8", chunks=(256,),
                             **_CHECKSUMMED)
            g.create_dataset("epochs", shape=(0,), maxshape=(None,), dtype="f8", chunks=(256,),
                             **_CHECKSUMMED)
            g.create_group("metrics")

        self._submit(op, 0, block=True)
        return RunWriter(self, run_id)

    def run_status(self, run_id: str) -> str | None:
        """The run's ``status`` attribute, None if the file has no such run."""
        self._drain(block=True)
        runs = self._f["runs"]
        return _str_attr(runs[run_id].attrs.get("status", COMPLETE)) if run_id in runs else None

    def run_steps(self, run_id: str) -> np.ndarray:
        """Steps of the checkpoints a run holds (empty if the run does not exist)."""
        self._drain(block=True)
        runs = self._f["runs"]
        if run_id not in runs:
            return np.zeros(0, dtype=np.int64)
        return runs[run_id]["steps"][()].astype(np.int64)

    def continue_run(self, run_id: str, keep: int | None = None) -> RunWriter:
        """A writer that appends to the unfinished run ``run_id`` instead of restarting it (a
        training resumed from a resume state or a framework's checkpoint): its first ``keep``
        checkpoints are kept (all if None) and any later ones dropped, e.g. those recorded
        after the training checkpoint the training restarts from. FormatError if there is no
        such run or it is finished."""
        self._drain(block=True)
        runs = self._f["runs"]
        g = runs.get(run_id)
        if not isinstance(g, h5py.Group) or "steps" not in g:
            raise FormatError(f"{self.path} has no run {run_id!r} to continue")
        status = _str_attr(g.attrs.get("status", ""))
        if status != RUNNING:
            raise FormatError(f"run {run_id!r} in {self.path} is {status!r}, not running; "
                              "only an unfinished run can be continued")
        n = int(g["steps"].shape[0])
        keep = n if keep is None else int(keep)
        if not 0 <= keep <= n:
            raise FormatError(f"run {run_id!r} in {self.path} has {n} checkpoints; cannot keep {keep}")
        if keep < n:
            def op() -> None:
                g = self._f["runs"][run_id]
                g["steps"].resize(keep, axis=0)  # first: from here on readers see `keep`
                for name in ("outputs", "epochs"):
                    if name in g:
                        g[name].resize(keep, axis=0)
                for sub in ("metrics", "params/trajectory"):
                    for ds in (g[sub].values() if sub in g else ()):
                        ds.resize(min(keep, ds.shape[0]), axis=0)

            log.info("run %s: dropping its last %d checkpoints to continue from checkpoint %d",
                     run_id, n - keep, keep)
            self._submit(op, 0, block=True)
        return RunWriter(self, run_id, n_checkpoints=keep)

    # --- resume state (trajviz.store.resume; docs/format.md, "Resume state")
    def write_resume_state(self, key: str, arrays: Mapping[str, np.ndarray],
                           meta: Mapping[str, Any]) -> None:
        """Store (replace) the resume state ``key``: named arrays, kept in their dtype, and a
        JSON-serialisable ``meta``. Queued like any change; inside :meth:`atomic` it is part of
        the block's transaction."""
        if not key or "/" in key or key in (".", ".."):
            raise FormatError(f"resume state key {key!r}: must be non-empty without '/'")
        copies = {str(k): np.array(v, copy=True) for k, v in arrays.items()}
        meta = json.loads(json.dumps(dict(meta)))  # a copy, and refuse what JSON cannot hold
        self._submit(lambda: _resume.write_state(self._f, key, copies, meta),
                     sum(a.nbytes for a in copies.values()))

    def read_resume_state(self, key: str) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
        """The resume state ``key`` as (arrays, meta), or None; FormatError if it is damaged."""
        self._drain(block=True)
        return _resume.read_state(self._f, key)

    def delete_resume_state(self, key: str) -> None:
        """Remove the resume state ``key`` if the file has it (queued like any change)."""
        self._submit(lambda: _resume.delete_state(self._f, key), 0)

    def resume_state_keys(self) -> list[str]:
        """Keys of the resume states in the file."""
        self._drain(block=True)
        return _resume.state_keys(self._f)

    def __enter__(self) -> "ExperimentWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
