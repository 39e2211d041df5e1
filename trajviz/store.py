"""The HDF5 store: the only module that imports h5py. The layout is a public contract,
documented in docs/format.md; bump ``FORMAT_VERSION`` on any breaking change.

Write side: :class:`ExperimentWriter` (one per file) hands out :class:`RunWriter` objects that
append checkpoints. Every append grows the run's datasets, writes ``steps`` last, and flushes,
so a process killed between appends leaves a file whose ``steps`` length counts exactly the
complete checkpoints. Read side: :class:`ExperimentFile`, which validates what it reads and names
the HDF5 key that failed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

import h5py
import numpy as np

from trajviz.errors import FormatError, InputFileNotFoundError, OutputExistsError

log = logging.getLogger(__name__)

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


# --------------------------------------------------------------------------- writing


class RunWriter:
    """Appends checkpoints of one run. Obtain it from :meth:`ExperimentWriter.start_run`."""

    def __init__(self, owner: "ExperimentWriter", group: h5py.Group):
        self._owner = owner
        self._g = group
        self.run_id = group.name.rsplit("/", 1)[-1]

    @property
    def n_checkpoints(self) -> int:
        return int(self._g["steps"].shape[0])

    def append(self, step: int, probabilities: np.ndarray,
               metrics: Mapping[str, float] | None = None, epoch: float | None = None,
               params: Mapping[str, np.ndarray] | None = None) -> None:
        """Append one checkpoint: ``probabilities`` (N, C) on the probe set, scalar metrics,
        and optionally the parameters at this checkpoint (stored under params/trajectory)."""
        g = self._g
        probs = np.asarray(probabilities, dtype=np.float32)
        expected = g["outputs"].shape[1:]
        if probs.shape != expected:
            raise FormatError(f"run {self.run_id!r}: outputs of shape {probs.shape}, "
                              f"but the probe set needs {expected}")
        t = self.n_checkpoints
        _append(g["outputs"], t, probs)
        _append(g["epochs"], t, np.nan if epoch is None else float(epoch))
        mg = g["metrics"]
        for name, value in (metrics or {}).items():
            if name not in mg:
                ds = mg.create_dataset(name, shape=(t,), maxshape=(None,), dtype="f8",
                                       chunks=(256,), fillvalue=np.nan)
                ds[:] = np.nan
            _append(mg[name], t, float(value))
        for name in mg:  # metrics not given at this checkpoint stay NaN
            if mg[name].shape[0] < t + 1:
                _append(mg[name], t, np.nan)
        if params is not None:
            pg = g.require_group("params/trajectory")
            for name, arr in params.items():
                arr = np.asarray(arr, dtype=np.float32)
                if name not in pg:
                    pg.create_dataset(name, shape=(0, *arr.shape), maxshape=(None, *arr.shape),
                                      dtype="f4", chunks=(1, *arr.shape))
                _append(pg[name], t, arr)
        _append(g["steps"], t, int(step))  # last: its length counts complete checkpoints
        self._owner.flush()

    def write_params(self, params: Mapping[str, np.ndarray], which: str = "final") -> None:
        """Store a set of named parameter arrays under ``params/<which>``."""
        pg = self._g.require_group("params")
        if which in pg:
            del pg[which]
        sub = pg.create_group(which)
        for name, arr in params.items():
            sub.create_dataset(name, data=np.asarray(arr, dtype=np.float32))
        self._owner.flush()

    def set_attrs(self, **attrs: Any) -> None:
        for key, value in attrs.items():
            self._g.attrs[key] = value
        self._owner.flush()

    def finish(self, status: str = COMPLETE) -> None:
        self.set_attrs(status=status)


def _append(ds: h5py.Dataset, t: int, value: Any) -> None:
    ds.resize(t + 1, axis=0)
    ds[t] = value


class ExperimentWriter:
    """Creates or reopens a trajviz file for writing.

    ``mode``: ``"create"`` refuses an existing file; ``"resume"`` reopens one written with the
    same probe set (and creates it if absent); ``"overwrite"`` replaces it.
    """

    def __init__(self, path: str | Path, *, probe_targets: np.ndarray, probe_sha: str,
                 n_classes: int, name: str = "", config_json: str = "{}",
                 mode: str = "create"):
        self.path = Path(path)
        if mode not in ("create", "resume", "overwrite"):
            raise ValueError(f"mode {mode!r}: choose create, resume or overwrite")
        exists = self.path.exists()
        if exists and mode == "create":
            raise OutputExistsError(
                f"{self.path} exists; pass --resume to continue it or --overwrite to replace it")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        targets = np.asarray(probe_targets, dtype=np.int64)
        if exists and mode == "resume":
            _check_readable(self.path)
            self._f = h5py.File(self.path, "r+")
            self._check_compatible(probe_sha, targets, n_classes, config_json)
        else:
            if exists:
                os.unlink(self.path)
            self._f = h5py.File(self.path, "w")
            f = self._f
            f.attrs["format"] = FORMAT
            f.attrs["format_version"] = FORMAT_VERSION
            f.attrs["probe_sha256"] = probe_sha
            f.attrs["n_classes"] = int(n_classes)
            f.attrs["name"] = name
            f.attrs["config"] = config_json
            f.create_group("probe").create_dataset("targets", data=targets)
            f.create_group("runs")
            f.flush()
        self.n_probe = int(targets.shape[0])
        self.n_classes = int(n_classes)

    def _check_compatible(self, probe_sha: str, targets: np.ndarray, n_classes: int,
                          config_json: str) -> None:
        f = self._f
        if _str_attr(f.attrs.get("format", "")) != FORMAT:
            self._f.close()
            raise FormatError(f"{self.path} is not a trajviz file; refusing to resume into it")
        if _str_attr(f.attrs.get("probe_sha256", "")) != probe_sha:
            self._f.close()
            raise FormatError(f"{self.path} was recorded on a different probe set; "
                              "resume needs the same data and probe config")
        old = json.loads(_str_attr(f.attrs.get("config", "{}")))
        new = json.loads(config_json)
        diff = _first_difference(old, new, ignore=("engine", "seeds"))
        if diff is not None:
            self._f.close()
            raise FormatError(f"{self.path} was recorded with a different config ({diff}); "
                              "use --overwrite or another output file")
        if new.get("seeds"):
            f.attrs["config"] = config_json  # more seeds may be added to an experiment

    def completed_runs(self) -> set[str]:
        return {rid for rid, g in self._f["runs"].items()
                if _str_attr(g.attrs.get("status", "")) in (COMPLETE, DIVERGED)}

    def start_run(self, run_id: str, *, seed: int | None, pretrain: str, group: str | None = None,
                  config_json: str = "{}", **attrs: Any) -> RunWriter:
        """Create the run's group (replacing an unfinished one of the same id)."""
        if not run_id or "/" in run_id or run_id in (".", ".."):
            raise FormatError(f"run id {run_id!r}: must be non-empty without '/'")
        runs = self._f["runs"]
        if run_id in runs:
            if _str_attr(runs[run_id].attrs.get("status", "")) == COMPLETE:
                raise OutputExistsError(f"run {run_id!r} is already complete in {self.path}")
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
        n, c = self.n_probe, self.n_classes
        g.create_dataset("outputs", shape=(0, n, c), maxshape=(None, n, c), dtype="f4",
                         chunks=(1, n, c), compression="gzip", compression_opts=1, shuffle=True)
        g.create_dataset("steps", shape=(0,), maxshape=(None,), dtype="i8", chunks=(256,))
        g.create_dataset("epochs", shape=(0,), maxshape=(None,), dtype="f8", chunks=(256,))
        g.create_group("metrics")
        self.flush()
        return RunWriter(self, g)

    def flush(self) -> None:
        self._f.flush()

    def close(self) -> None:
        if self._f.id.valid:
            self._f.close()

    def __enter__(self) -> "ExperimentWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


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


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class RunInfo:
    """What a run group's attributes say about it."""

    run_id: str
    seed: int
    pretrain: str
    group: str
    status: str
    n_checkpoints: int


def _check_readable(path: Path) -> None:
    if not path.exists():
        raise InputFileNotFoundError(f"{path} does not exist")
    if path.is_dir():
        raise FormatError(f"{path} is a directory, not a trajviz file")
    if not h5py.is_hdf5(str(path)):
        raise FormatError(f"{path} is not an HDF5 file (and so not a trajviz file)")


class ExperimentFile:
    """Read-only view of a trajviz file, validating what it reads.

    Use as a context manager. Only complete checkpoints are visible: a run's checkpoint count
    is the length of its ``steps`` dataset, written last by every append.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        _check_readable(self.path)
        try:
            self._f = h5py.File(self.path, "r")
        except OSError as exc:
            raise FormatError(f"{self.path} cannot be opened as HDF5: {exc}") from None
        try:
            self._validate_root()
        except BaseException:
            self._f.close()
            raise

    def _validate_root(self) -> None:
        f = self._f
        fmt = _str_attr(f.attrs.get("format", ""))
        if fmt != FORMAT:
            raise FormatError(f"{self.path} is not a trajviz file (root attribute 'format' is "
                              f"{fmt!r}, expected {FORMAT!r})")
        version = f.attrs.get("format_version")
        if not isinstance(version, (int, np.integer)) or not 1 <= int(version) <= FORMAT_VERSION:
            raise FormatError(f"{self.path}: format_version {version!r} is not supported "
                              f"(this trajviz reads 1..{FORMAT_VERSION}); upgrade trajviz")
        for key in ("runs", "probe/targets"):
            if key not in f:
                raise FormatError(f"{self.path}: missing HDF5 key '/{key}'")

    # --- file-level facts
    @property
    def name(self) -> str:
        return _str_attr(self._f.attrs.get("name", ""))

    @property
    def probe_sha256(self) -> str:
        return _str_attr(self._f.attrs.get("probe_sha256", ""))

    @property
    def config(self) -> dict[str, Any]:
        try:
            return json.loads(_str_attr(self._f.attrs.get("config", "{}")))
        except json.JSONDecodeError:
            raise FormatError(f"{self.path}: root attribute 'config' is not valid JSON") from None

    def probe_targets(self) -> np.ndarray:
        return self._dataset("probe/targets", ndim=1)[()].astype(np.int64)

    @property
    def probe_size(self) -> int:
        return int(self._f["probe/targets"].shape[0])

    @property
    def n_classes(self) -> int:
        if "n_classes" in self._f.attrs:
            return int(self._f.attrs["n_classes"])
        return int(self.probe_targets().max()) + 1

    # --- runs
    def run_ids(self) -> list[str]:
        return sorted(self._f["runs"].keys(), key=_natural_key)

    def run_info(self, run_id: str) -> RunInfo:
        g = self._run(run_id)
        a = g.attrs
        pretrain = _str_attr(a.get("pretrain", "none"))
        return RunInfo(run_id=run_id, seed=int(a.get("seed", -1)), pretrain=pretrain,
                       group=_str_attr(a.get("group", pretrain)),
                       status=_str_attr(a.get("status", COMPLETE)),
                       n_checkpoints=self._n_checkpoints(g))

    def runs(self) -> list[RunInfo]:
        return [self.run_info(r) for r in self.run_ids()]

    def run_attrs(self, run_id: str) -> dict[str, Any]:
        return {k: (_str_attr(v) if isinstance(v, (bytes, str)) else v)
                for k, v in self._run(run_id).attrs.items()}

    def steps(self, run_id: str) -> np.ndarray:
        g = self._run(run_id)
        return self._dataset(f"{g.name}/steps", ndim=1)[()].astype(np.int64)

    def epochs(self, run_id: str) -> np.ndarray:
        g = self._run(run_id)
        n = self._n_checkpoints(g)
        if "epochs" not in g:
            return np.full(n, np.nan)
        return self._dataset(f"{g.name}/epochs", ndim=1)[:n].astype(np.float64)

    def metrics(self, run_id: str) -> dict[str, np.ndarray]:
        g = self._run(run_id)
        n = self._n_checkpoints(g)
        out = {}
        for name in g.get("metrics", {}):
            ds = self._dataset(f"{g.name}/metrics/{name}", ndim=1)
            out[name] = ds[:n].astype(np.float64)
        return out

    def outputs(self, run_id: str, index: slice | np.ndarray | int = slice(None)) -> np.ndarray:
        """Probe probabilities of a run, (T, N, C) float32, complete checkpoints only."""
        g = self._run(run_id)
        n = self._n_checkpoints(g)
        ds = self._dataset(f"{g.name}/outputs", ndim=3)
        if ds.shape[0] < n or ds.shape[1:] != (self.probe_size, self.n_classes):
            raise FormatError(f"{self.path}: '{ds.name}' has shape {ds.shape}, expected "
                              f"({n}, {self.probe_size}, {self.n_classes})")
        data = ds[slice(*index.indices(n))] if isinstance(index, slice) else ds[:n][index]
        return np.asarray(data, dtype=np.float32)

    def iter_outputs(self, run_id: str) -> Iterator[np.ndarray]:
        """Probe probabilities one checkpoint at a time, (N, C) each: memory stays O(N C)."""
        g = self._run(run_id)
        ds = self._dataset(f"{g.name}/outputs", ndim=3)
        for t in range(self._n_checkpoints(g)):
            yield np.asarray(ds[t], dtype=np.float32)

    def params(self, run_id: str, which: str = "final") -> dict[str, np.ndarray]:
        """Named parameter arrays stored under ``params/<which>`` (nn.Module state_dict names)."""
        g = self._run(run_id)
        key = f"params/{which}"
        if key not in g:
            raise FormatError(f"{self.path}: run {run_id!r} has no '{g.name}/{key}'"
                              + (" (record with record.params = 'all' to keep every checkpoint)"
                                 if which == "trajectory" else ""))
        return {name: np.asarray(ds[()]) for name, ds in g[key].items()}

    def has_params(self, run_id: str, which: str = "final") -> bool:
        return f"params/{which}" in self._run(run_id)

    # --- helpers
    def _run(self, run_id: str) -> h5py.Group:
        runs = self._f["runs"]
        if run_id not in runs:
            raise FormatError(f"{self.path}: no run {run_id!r}; runs here: "
                              + ", ".join(self.run_ids()[:10]))
        return runs[run_id]

    def _n_checkpoints(self, g: h5py.Group) -> int:
        if "steps" not in g:
            raise FormatError(f"{self.path}: missing HDF5 key '{g.name}/steps'")
        return int(g["steps"].shape[0])

    def _dataset(self, key: str, ndim: int) -> h5py.Dataset:
        if key not in self._f:
            raise FormatError(f"{self.path}: missing HDF5 key '{key}'")
        ds = self._f[key]
        if not isinstance(ds, h5py.Dataset) or ds.ndim != ndim:
            raise FormatError(f"{self.path}: '{key}' should be a {ndim}-D dataset")
        if ds.dtype.kind not in "iuf":
            raise FormatError(f"{self.path}: '{key}' has dtype {ds.dtype}, expected numbers")
        return ds

    def close(self) -> None:
        if self._f.id.valid:
            self._f.close()

    def __enter__(self) -> "ExperimentFile":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _natural_key(text: str) -> list[Any]:
    import re

    return [int(tok) if tok.isdigit() else tok for tok in re.split(r"(\d+)", text)]
