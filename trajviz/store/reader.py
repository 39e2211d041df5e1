"""Experiment files, read side: :class:`ExperimentFile`, which may read while a writer writes,
validates what it reads, and turns any read failure into a :class:`~trajviz.errors.FormatError`
naming the HDF5 key."""

from __future__ import annotations

import functools
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Self

import h5py
import numpy as np

from trajviz.errors import FormatError, TrajvizError
from trajviz.store.journal import RolledBackView, read_hot_journal
from trajviz.store.lock import ReadLock
from trajviz.store.resume import read_metas
from trajviz.store.experiment import (COMPLETE, DIVERGED, FORMAT, FORMAT_VERSION, RUNNING,
                                      _READ_ERRORS, _check_readable, _natural_key, _str_attr,
                                      check_format_attrs)

log = logging.getLogger("trajviz.store")


@dataclass(frozen=True)
class RunInfo:
    """What a run group's attributes say about it."""

    run_id: str
    seed: int
    pretrain: str
    group: str
    status: str
    n_checkpoints: int


#: how much larger than its stored bytes a dataset may claim to be: deflate compresses at most
#: ~1032:1, so a bigger claim is a lie that would make a reader allocate absurd memory
_MAX_CLAIM_RATIO = 1100
_MAX_CLAIM_SLACK = 2**20
_MAX_CLASSES = 2**24
#: probabilities may stray this far outside [0, 1] (float32 softmax rounding)
_PROB_TOL = 1e-3


def check_size_claim(path: Path, key: str, ds: h5py.Dataset) -> None:
    """Refuse (FormatError naming ``key``) a dataset whose shape claims far more bytes than the
    file stores: a damaged or hostile file would otherwise make a read allocate terabytes."""
    claimed = int(np.prod(ds.shape, dtype=np.float64)) * ds.dtype.itemsize
    if claimed > _MAX_CLAIM_SLACK:
        try:
            size = os.stat(path).st_size
        except OSError:
            size = 0
        stored = min(ds.id.get_storage_size(), size)
        if claimed > _MAX_CLAIM_RATIO * stored + _MAX_CLAIM_SLACK:
            raise FormatError(f"{path}: '{key}' claims {claimed:.3g} bytes (shape {ds.shape}) "
                              f"but stores only {stored}; the file is damaged or hostile")


def _guarded(method: Callable) -> Callable:
    """Any error the HDF5 library, h5py or numpy raises while reading becomes a FormatError
    naming the file and the HDF5 key being read (hostile files: docs/reliability.md)."""

    @functools.wraps(method)
    def wrapper(self: "ExperimentFile", *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except TrajvizError:
            raise
        except _READ_ERRORS as exc:
            msg = " ".join(str(exc).split()) or type(exc).__name__
            raise FormatError(f"{self.path}: cannot read '{self._key}' ({msg}); the file is "
                              "damaged or not written by trajviz") from None

    return wrapper


def open_for_reading(path: str | Path, lock_timeout: float = 60.0, *,
                     repair: str = "trajviz record --resume") -> tuple[h5py.File, ReadLock | None]:
    """Open an HDF5 file for reading while a trajviz writer may be writing it.

    Takes a shared lock (waiting up to ``lock_timeout`` s for the writer's current transaction);
    if the last writer died mid-transaction, the file is read as the rollback will leave it,
    without changing it (the warning names ``repair``, the command that rolls it back on disk).
    Release the returned lock after closing the file.
    """
    path = Path(path)
    _check_readable(path)
    try:
        lock: ReadLock | None = ReadLock(path, timeout=lock_timeout)
    except PermissionError:
        lock = None  # unreadable for locking but maybe readable: h5py will tell
    try:
        hot = read_hot_journal(path)
        if hot is not None:
            log.warning("%s: its writer died in the middle of a change; reading the last "
                        "complete state (`%s` repairs the file)", path, repair)
            view = RolledBackView(path, hot)
            f = h5py.File(view, "r")
        else:
            f = h5py.File(path, "r", locking=False)
        return f, lock
    except OSError as exc:
        if lock is not None:
            lock.release()
        msg = " ".join(str(exc).split())
        raise FormatError(f"{path} cannot be opened as HDF5 ({msg}); the file is damaged "
                          "(truncated or overwritten?)") from None
    except BaseException:
        if lock is not None:
            lock.release()
        raise


class CheckedReader:
    """What the store's readers (:class:`ExperimentFile`, :class:`~trajviz.store.LandscapeFile`)
    share: the file opened by :func:`open_for_reading` (a shared lock; a crashed file read as
    its last complete state), the root ``config`` attribute, the check that a dataset's size
    claim is one the file can back, and closing. Reads are wrapped by :func:`_guarded`, which
    turns any read error into a :class:`FormatError` naming ``self._key``."""

    path: Path
    _key: str

    def _open(self, path: str | Path, lock_timeout: float, repair: str) -> None:
        self.path = Path(path)
        self._key = "/"
        self._lock: ReadLock | None = None
        self._f, self._lock = open_for_reading(self.path, lock_timeout, repair=repair)

    @property
    @_guarded
    def config(self) -> dict[str, Any]:
        self._key = "/ (attribute 'config')"
        try:
            cfg = json.loads(_str_attr(self._f.attrs.get("config", "{}")))
        except json.JSONDecodeError:
            raise FormatError(f"{self.path}: root attribute 'config' is not valid JSON") from None
        if not isinstance(cfg, dict):
            raise FormatError(f"{self.path}: root attribute 'config' is not a JSON object")
        return cfg

    def _check_claim(self, ds: h5py.Dataset) -> None:
        """Refuse a dataset whose shape claims far more bytes than the file stores
        (:func:`check_size_claim`)."""
        check_size_claim(self.path, self._key, ds)

    def close(self) -> None:
        f = getattr(self, "_f", None)
        try:
            if f is not None and f.id.valid:
                f.close()
        except Exception:  # closing a damaged file may fail; nothing was written to it
            pass
        lock = getattr(self, "_lock", None)
        if lock is not None:
            lock.release()
            self._lock = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class ExperimentFile(CheckedReader):
    """Read-only view of a trajviz file, validating what it reads.

    Use as a context manager. Only complete checkpoints are visible. The file may be read while
    ``trajviz record`` writes it: the reader holds a shared lock for as long as it is open and
    sees the state after the writer's last complete change (the writer queues its changes
    meanwhile), so close it when done. Any read error becomes a :class:`FormatError` naming
    the HDF5 key; :meth:`verify` checks the whole file.
    """

    def __init__(self, path: str | Path, *, lock_timeout: float = 60.0):
        self._open(path, lock_timeout, repair="trajviz record --resume")
        try:
            self._validate_root()
            self.check_structure()
        except BaseException:
            self.close()
            raise

    @_guarded
    def _validate_root(self) -> None:
        f = self._f
        self._key = "/ (attribute 'format')"
        check_format_attrs(self.path, f.attrs, FORMAT, FORMAT_VERSION)
        for key, kind in (("runs", h5py.Group), ("probe/targets", h5py.Dataset)):
            self._key = f"/{key}"
            if key not in f or not isinstance(f[key], kind):
                raise FormatError(f"{self.path}: missing HDF5 key '/{key}' (a "
                                  f"{'group' if kind is h5py.Group else 'dataset'})")
        n_classes = self.n_classes
        if not 1 <= n_classes <= _MAX_CLASSES:
            raise FormatError(f"{self.path}: root attribute 'n_classes' is {n_classes}, "
                              f"expected 1..{_MAX_CLASSES}")

    # --- file-level facts
    @property
    @_guarded
    def name(self) -> str:
        self._key = "/ (attribute 'name')"
        return _str_attr(self._f.attrs.get("name", ""))

    @property
    @_guarded
    def probe_sha256(self) -> str:
        self._key = "/ (attribute 'probe_sha256')"
        return _str_attr(self._f.attrs.get("probe_sha256", ""))

    @_guarded
    def probe_targets(self) -> np.ndarray:
        return self._dataset("probe/targets", ndim=1, kind="iu")[()].astype(np.int64)

    @property
    @_guarded
    def probe_size(self) -> int:
        return int(self._dataset("probe/targets", ndim=1).shape[0])

    @_guarded
    def probe_inputs_layout(self) -> dict[str, Any] | None:
        """How the probe inputs were given (docs/format.md, "Probe inputs"): ``structure``
        (``"tensor"``, ``"tuple"``, ``"dict"``), ``stored`` (whether the arrays are in the
        file) and ``entries`` (each one's ``name``, ``shape``, ``dtype``); None for files
        without it (the runner's, whose probe set its config rebuilds)."""
        self._key = "/probe (attribute 'inputs')"
        text = self._f["probe"].attrs.get("inputs")
        if text is None:
            return None
        layout = json.loads(_str_attr(text))
        if (not isinstance(layout, dict) or layout.get("structure") not in ("tensor", "tuple", "dict")
                or not isinstance(layout.get("entries"), list)):
            raise FormatError(f"{self.path}: '/probe' attribute 'inputs' is not a probe-inputs "
                              "layout (docs/format.md)")
        return layout

    @_guarded
    def probe_inputs(self) -> np.ndarray | tuple | dict | None:
        """The probe inputs as they were given to the recorder: one array, a tuple or a dict
        of arrays, (N, ...) each; None when the file keeps only their checksum and shape."""
        layout = self.probe_inputs_layout()
        if layout is None or not layout.get("stored"):
            return None
        n = self.probe_size
        if layout["structure"] == "tensor":
            ds = self._dataset("probe/inputs", kind="iufb")
            arrays = [ds[()]]
        else:
            arrays = [self._dataset(f"probe/inputs/{e['name']}", kind="iufb")[()]
                      for e in layout["entries"]]
        for arr, e in zip(arrays, layout["entries"]):
            if arr.ndim == 0 or arr.shape[0] != n:
                raise FormatError(f"{self.path}: probe input {e['name']!r} has shape "
                                  f"{arr.shape}, but the probe set has {n} examples")
        if layout["structure"] == "dict":
            return {e["name"]: a for e, a in zip(layout["entries"], arrays)}
        return tuple(arrays) if layout["structure"] == "tuple" else arrays[0]

    @property
    @_guarded
    def n_classes(self) -> int:
        self._key = "/ (attribute 'n_classes')"
        if "n_classes" in self._f.attrs:
            value = self._f.attrs["n_classes"]
            if not isinstance(value, (int, np.integer)):
                raise FormatError(f"{self.path}: root attribute 'n_classes' is {value!r}, "
                                  "expected an integer")
            return int(value)
        return int(self.probe_targets().max()) + 1

    # --- runs
    @_guarded
    def run_ids(self) -> list[str]:
        self._key = "/runs"
        return sorted(self._f["runs"].keys(), key=_natural_key)

    @_guarded
    def run_info(self, run_id: str) -> RunInfo:
        g = self._run(run_id)
        a = g.attrs
        self._key = f"{g.name} (attributes)"
        pretrain = _str_attr(a.get("pretrain", "none"))
        return RunInfo(run_id=run_id, seed=int(a.get("seed", -1)), pretrain=pretrain,
                       group=_str_attr(a.get("group", pretrain)),
                       status=_str_attr(a.get("status", COMPLETE)),
                       n_checkpoints=self._n_checkpoints(g))

    def runs(self) -> list[RunInfo]:
        return [self.run_info(r) for r in self.run_ids()]

    @_guarded
    def run_attrs(self, run_id: str) -> dict[str, Any]:
        g = self._run(run_id)
        self._key = f"{g.name} (attributes)"
        return {k: (_str_attr(v) if isinstance(v, (bytes, str)) else v)
                for k, v in g.attrs.items()}

    @_guarded
    def steps(self, run_id: str) -> np.ndarray:
        g = self._run(run_id)
        return self._dataset(f"{g.name}/steps", ndim=1, kind="iu")[()].astype(np.int64)

    @_guarded
    def epochs(self, run_id: str) -> np.ndarray:
        g = self._run(run_id)
        n = self._n_checkpoints(g)
        if "epochs" not in g:
            return np.full(n, np.nan)
        return self._dataset(f"{g.name}/epochs", ndim=1, length=n)[:n].astype(np.float64)

    @_guarded
    def metrics(self, run_id: str) -> dict[str, np.ndarray]:
        g = self._run(run_id)
        n = self._n_checkpoints(g)
        out = {}
        self._key = f"{g.name}/metrics"
        for name in g.get("metrics", {}):
            ds = self._dataset(f"{g.name}/metrics/{name}", ndim=1, length=n)
            out[name] = ds[:n].astype(np.float64)
        return out

    @_guarded
    def outputs(self, run_id: str, index: slice | np.ndarray | int = slice(None)) -> np.ndarray:
        """Probe probabilities of a run, (T, N, C) float32, complete checkpoints only."""
        g = self._run(run_id)
        ds = self._outputs(g)
        n = self._n_checkpoints(g)
        data = ds[slice(*index.indices(n))] if isinstance(index, slice) else ds[:n][index]
        return self._probabilities(ds.name, data)

    @_guarded
    def iter_outputs(self, run_id: str) -> Iterator[np.ndarray]:
        """Probe probabilities one checkpoint at a time, (N, C) each: memory stays O(N C)."""
        g = self._run(run_id)
        ds = self._outputs(g)
        n = self._n_checkpoints(g)
        return self._iter_outputs(ds, n)

    def _iter_outputs(self, ds: h5py.Dataset, n: int) -> Iterator[np.ndarray]:
        for t in range(n):
            yield self._read_checkpoint(ds, t)

    @_guarded
    def _read_checkpoint(self, ds: h5py.Dataset, t: int) -> np.ndarray:
        self._key = f"{ds.name}[{t}]"
        return self._probabilities(ds.name, ds[t])

    @_guarded
    def params(self, run_id: str, which: str = "final") -> dict[str, np.ndarray]:
        """Named parameter arrays stored under ``params/<which>`` (nn.Module state_dict names)."""
        g = self._run(run_id)
        key = f"params/{which}"
        self._key = f"{g.name}/{key}"
        if key not in g or not isinstance(g[key], h5py.Group):
            raise FormatError(f"{self.path}: run {run_id!r} has no '{g.name}/{key}'"
                              + (" (record with record.params = 'all' to keep every checkpoint)"
                                 if which == "trajectory" else ""))
        return {name: np.asarray(self._dataset(f"{g.name}/{key}/{name}")[()])
                for name in g[key]}

    @_guarded
    def has_params(self, run_id: str, which: str = "final") -> bool:
        return f"params/{which}" in self._run(run_id)

    @_guarded
    def resume_states(self) -> dict[str, dict[str, Any]]:
        """The resume states of unfinished training batches (docs/format.md, "Resume state"):
        key -> JSON ``state`` (``runs``, ``step``, ``n_checkpoints``, ...). Empty once a
        recording is finished."""
        self._key = "/resume"
        return read_metas(self._f)

    @_guarded
    def check_structure(self) -> None:
        """Check everything but the bulk arrays against the format contract (docs/format.md):
        the config is a JSON object, probe labels lie within the classes, and every run has a
        known status, increasing integer steps, metrics and epochs at least as long, and
        outputs and parameters of the right kind, dtype and shape (their values are checked
        when read). Done at open; raises :class:`FormatError` naming the first bad key."""
        self.config  # noqa: B018 - must be a JSON object
        targets = self.probe_targets()
        if targets.size and (targets.min() < -1 or targets.max() >= self.n_classes):
            raise FormatError(f"{self.path}: '/probe/targets' holds labels outside "
                              f"-1..{self.n_classes - 1}")
        for rid in self.run_ids():
            info = self.run_info(rid)
            g = self._run(rid)
            if info.status not in (RUNNING, COMPLETE, DIVERGED):
                raise FormatError(f"{self.path}: '{g.name}' has status {info.status[:40]!r}, "
                                  f"expected one of {RUNNING}, {COMPLETE}, {DIVERGED}")
            steps = self.steps(rid)
            if steps.size > 1 and not np.all(np.diff(steps) > 0):
                raise FormatError(f"{self.path}: '{g.name}/steps' is not increasing")
            self.epochs(rid)
            self._key = f"{g.name}/metrics"
            if "metrics" in g and not isinstance(g["metrics"], h5py.Group):
                raise FormatError(f"{self.path}: '{g.name}/metrics' should be a group")
            self.metrics(rid)
            self._outputs(g)
            for which, sub in self._param_groups(g):
                for name in sub:
                    self._dataset(f"{sub.name}/{name}", kind="f")

    @_guarded
    def verify(self) -> None:
        """:meth:`check_structure`, then read every run whole: probabilities finite and within
        [0, 1], every data chunk's checksum. Raises :class:`FormatError` naming the first bad
        HDF5 key; memory stays O(N C) per run."""
        self.check_structure()
        for rid in self.run_ids():
            for _ in self.iter_outputs(rid):
                pass
            for which, _sub in self._param_groups(self._run(rid)):
                self.params(rid, which)

    def _param_groups(self, g: h5py.Group) -> list[tuple[str, h5py.Group]]:
        self._key = f"{g.name}/params"
        if "params" not in g:
            return []
        pg = g["params"]
        if not isinstance(pg, h5py.Group):
            raise FormatError(f"{self.path}: '{pg.name}' should be a group")
        out = []
        for which in pg:
            self._key = f"{pg.name}/{which}"
            if not isinstance(pg[which], h5py.Group):
                raise FormatError(f"{self.path}: '{pg.name}/{which}' should be a group")
            out.append((which, pg[which]))
        return out

    # --- helpers
    def _run(self, run_id: str) -> h5py.Group:
        self._key = f"/runs/{run_id}"
        runs = self._f["runs"]
        if run_id not in runs:
            raise FormatError(f"{self.path}: no run {run_id!r}; runs here: "
                              + ", ".join(self.run_ids()[:10]))
        g = runs[run_id]
        if not isinstance(g, h5py.Group):
            raise FormatError(f"{self.path}: '/runs/{run_id}' should be a group")
        return g

    def _n_checkpoints(self, g: h5py.Group) -> int:
        return int(self._dataset(f"{g.name}/steps", ndim=1).shape[0])

    def _outputs(self, g: h5py.Group) -> h5py.Dataset:
        n = self._n_checkpoints(g)
        ds = self._dataset(f"{g.name}/outputs", ndim=3, length=n, kind="f")
        if ds.shape[1:] != (self.probe_size, self.n_classes):
            raise FormatError(f"{self.path}: '{ds.name}' has shape {ds.shape}, expected "
                              f"({n}, {self.probe_size}, {self.n_classes})")
        self._key = ds.name
        return ds

    def _probabilities(self, key: str, data: Any) -> np.ndarray:
        arr = np.asarray(data, dtype=np.float32)
        if arr.size and not (np.isfinite(arr).all() and arr.min() >= -_PROB_TOL
                             and arr.max() <= 1 + _PROB_TOL):
            raise FormatError(f"{self.path}: '{key}' holds values that are not probabilities "
                              "(NaN, infinite, or outside [0, 1])")
        return arr

    def _dataset(self, key: str, ndim: int | None = None, length: int | None = None,
                 kind: str = "iuf") -> h5py.Dataset:
        """The dataset at ``key``, checked: numeric ``kind``, ``ndim``, at least ``length``
        rows, and a size claim the file can back (no absurd allocations)."""
        self._key = key if key.startswith("/") else f"/{key}"
        if key not in self._f:
            raise FormatError(f"{self.path}: missing HDF5 key '{self._key}'")
        ds = self._f[key]
        if not isinstance(ds, h5py.Dataset):
            raise FormatError(f"{self.path}: '{self._key}' should be a dataset")
        if ndim is not None and ds.ndim != ndim:
            raise FormatError(f"{self.path}: '{self._key}' should be a {ndim}-D dataset, "
                              f"it has shape {ds.shape}")
        if ds.dtype.kind not in kind:
            expected = {"f": "floats", "iu": "integers"}.get(kind, "numbers")
            raise FormatError(f"{self.path}: '{self._key}' has dtype {ds.dtype}, expected {expected}")
        if length is not None and ds.shape[0] < length:
            raise FormatError(f"{self.path}: '{self._key}' has {ds.shape[0]} rows, but "
                              f"'steps' counts {length} checkpoints")
        self._check_claim(ds)
        return ds
