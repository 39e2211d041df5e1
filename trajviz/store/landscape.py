"""Landscape results files (docs/format.md, "Landscape files"): :class:`LandscapeWriter`,
:class:`LandscapeFile`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from trajviz.errors import FormatError, OutputExistsError
from trajviz.store.experiment import _check_readable, _first_difference, _natural_key, _str_attr
from trajviz.store.journaled import JournaledWriter
from trajviz.store.reader import _guarded, open_for_reading

LANDSCAPE_FORMAT = "trajviz-landscape"
LANDSCAPE_FORMAT_VERSION = 1


class LandscapeWriter(JournaledWriter):
    """Creates or resumes a landscape results file (docs/format.md, "Landscape files").

    Results are tables of rows (one row per direction, or per grid line) written as they come:
    each :meth:`write_row` writes the row's columns and marks it in the table's ``done``
    dataset. ``mode``: ``"create"`` refuses an existing file, ``"resume"`` reopens one written
    with the same ``config_json`` (else :class:`FormatError` naming the first difference),
    ``"overwrite"`` replaces it.

    Crash safety as for experiment files (docs/reliability.md): every change (a row, an array,
    attributes) is one transaction of a rollback journal, so a process killed at any moment,
    even inside an HDF5 write, leaves the file with exactly its finished rows, and the next
    writer (``"resume"``) rolls back the unfinished change. A second writer is refused with
    :class:`~trajviz.errors.FileLockedError`; while a :class:`LandscapeFile` holds the file,
    changes queue in memory; a failed write (disk full) is rolled back and raised as
    :class:`~trajviz.errors.StoreWriteError`. ``durable=True`` also fsyncs (power loss).
    """

    _unit = "row"
    _reader_name = "a LandscapeFile"

    def __init__(self, path: str | Path, *, config_json: str, source: str = "",
                 mode: str = "create", durable: bool = False):
        path = Path(path)
        if mode not in ("create", "resume", "overwrite"):
            raise ValueError(f"mode {mode!r}: choose create, resume or overwrite")
        if path.exists() and mode == "create":
            raise OutputExistsError(
                f"{path} exists; pass --resume to continue it or --overwrite to replace it")
        if path.is_dir():
            raise FormatError(f"{path} is a directory, not a trajviz landscape file")
        self._start_session(path, durable)  # FileLockedError if another writer has it
        try:
            if mode == "resume":
                self._session.recover()
            if mode == "resume" and self.path.exists():
                _check_readable(self.path)
                self._open_file(None, lambda: self._check_resumable(config_json))
            else:
                self._create_file(lambda f: _skeleton(f, config_json, source), None)
        except BaseException:
            self._session.close()
            raise

    def _check_resumable(self, config_json: str) -> None:
        fmt = _str_attr(self._f.attrs.get("format", ""))
        if fmt != LANDSCAPE_FORMAT:
            raise FormatError(f"{self.path} is not a trajviz landscape file (format {fmt!r}); "
                              "refusing to resume into it")
        old = json.loads(_str_attr(self._f.attrs.get("config", "{}")))
        diff = _first_difference(old, json.loads(config_json))
        if diff is not None:
            raise FormatError(f"{self.path} was scanned with different settings ({diff}); "
                              "use --overwrite or another output file")

    # --- reading back (queued changes are written first)
    def has(self, key: str) -> bool:
        self._drain(block=True)
        return key in self._f

    def read_array(self, key: str) -> np.ndarray:
        self._drain(block=True)
        return np.asarray(self._f[key][()])

    def done_rows(self, key: str) -> np.ndarray:
        self._drain(block=True)
        return np.asarray(self._f[f"{key}/done"][()], dtype=bool)

    def get_attrs(self, key: str) -> dict[str, Any]:
        self._drain(block=True)
        if key not in self._f:
            return {}
        return {k: (_str_attr(v) if isinstance(v, (bytes, str)) else v)
                for k, v in self._f[key].attrs.items()}

    # --- changes: each one transaction
    def write_array(self, key: str, data: np.ndarray, **attrs: Any) -> None:
        """Write a dataset once (a later call with the same key replaces it)."""
        arr = np.array(data, copy=True)

        def op() -> None:
            if key in self._f:
                del self._f[key]
            ds = self._f.create_dataset(key, data=arr)
            for name, value in attrs.items():
                ds.attrs[name] = value

        self._submit(op, arr.nbytes)

    def require_rows(self, key: str, n_rows: int, row_shape: tuple[int, ...],
                     columns: tuple[str, ...]) -> None:
        """A table group ``key`` with one NaN-filled (n_rows, *row_shape) float64 dataset per
        column and a ``done`` (n_rows,) uint8 dataset; kept as it is if it exists."""
        self._drain(block=True)
        if key in self._f:
            g = self._f[key]
            for col in columns:
                if col not in g or g[col].shape != (n_rows, *row_shape):
                    raise FormatError(f"{self.path}: '{g.name}/{col}' does not have shape "
                                      f"{(n_rows, *row_shape)}; use --overwrite")
            return

        def op() -> None:
            g = self._f.create_group(key)
            for col in columns:
                g.create_dataset(col, shape=(n_rows, *row_shape), dtype="f8", fillvalue=np.nan)
            g.create_dataset("done", shape=(n_rows,), dtype="u1", fillvalue=0)

        self._submit(op, 0)

    def write_row(self, key: str, index: int, **columns: np.ndarray) -> None:
        """Row ``index`` of table ``key``: its columns and its ``done`` flag, in one
        transaction (a row is in the file whole, marked done, or not at all)."""
        values = {col: np.array(v, dtype=np.float64, copy=True) for col, v in columns.items()}

        def op() -> None:
            g = self._f[key]
            for col, value in values.items():
                g[col][index] = value
            g["done"][index] = 1  # after the values, as in files of other writers

        self._submit(op, sum(v.nbytes for v in values.values()))

    def set_attrs(self, key: str, **attrs: Any) -> None:
        def op() -> None:
            node = self._f.require_group(key) if key not in self._f else self._f[key]
            for name, value in attrs.items():
                node.attrs[name] = value

        self._submit(op, 0)

    def __enter__(self) -> "LandscapeWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _skeleton(f: h5py.File, config_json: str, source: str) -> None:
    """What a new landscape file holds before its first result."""
    f.attrs["format"] = LANDSCAPE_FORMAT
    f.attrs["format_version"] = LANDSCAPE_FORMAT_VERSION
    f.attrs["config"] = config_json
    f.attrs["source"] = source


class LandscapeFile:
    """Read-only view of a landscape results file; errors name the HDF5 key that failed.

    Opened as :class:`~trajviz.store.ExperimentFile` opens experiment files
    (:func:`~trajviz.store.open_for_reading`): a scan can be looked at while it is written (the
    reader holds a shared lock until closed, and sees the rows finished so far; the writer
    queues its rows meanwhile), and a file whose writer was killed mid-change is read as its
    last complete state, without being changed. Rows whose ``done`` flag is 0 are missing.
    """

    def __init__(self, path: str | Path, *, lock_timeout: float = 60.0):
        self.path = Path(path)
        self._key = "/"
        self._lock = None
        self._f, self._lock = open_for_reading(self.path, lock_timeout,
                                               repair="trajviz landscape --resume")
        try:
            self._check_format()
        except BaseException:
            self.close()
            raise

    # every read below turns an error of the HDF5 library, h5py or numpy into a FormatError
    # naming the file and the key (a damaged file: docs/reliability.md, "Hostile files")
    @_guarded
    def _check_format(self) -> None:
        self._key = "/ (attribute 'format')"
        fmt = _str_attr(self._f.attrs.get("format", ""))
        version = self._f.attrs.get("format_version")
        if fmt != LANDSCAPE_FORMAT:
            raise FormatError(f"{self.path} is not a trajviz landscape file (root attribute "
                              f"'format' is {fmt[:40]!r}, expected {LANDSCAPE_FORMAT!r})")
        if (not isinstance(version, (int, np.integer))
                or not 1 <= int(version) <= LANDSCAPE_FORMAT_VERSION):
            raise FormatError(f"{self.path}: landscape format_version {version!r} is not supported "
                              f"(this trajviz reads 1..{LANDSCAPE_FORMAT_VERSION}); upgrade trajviz")

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

    @property
    @_guarded
    def source(self) -> str:
        self._key = "/ (attribute 'source')"
        return _str_attr(self._f.attrs.get("source", ""))

    @_guarded
    def has(self, key: str) -> bool:
        self._key = key
        return key in self._f

    @_guarded
    def keys(self, key: str = "/") -> list[str]:
        """Names of the members of group ``key`` (none if it is absent)."""
        self._key = key
        if key not in self._f:
            return []
        if not isinstance(self._f[key], h5py.Group):
            raise FormatError(f"{self.path}: '{key}' is a dataset, expected a group")
        return sorted(self._f[key].keys(), key=_natural_key)

    @_guarded
    def attrs(self, key: str = "/") -> dict[str, Any]:
        self._key = f"{key} (attributes)"
        if key not in self._f:
            raise FormatError(f"{self.path}: missing HDF5 key '{key}'")
        return {k: (_str_attr(v) if isinstance(v, (bytes, str)) else v)
                for k, v in self._f[key].attrs.items()}

    @_guarded
    def array(self, key: str) -> np.ndarray:
        self._key = key
        if key not in self._f or not isinstance(self._f[key], h5py.Dataset):
            raise FormatError(f"{self.path}: missing HDF5 dataset '{key}'")
        ds = self._f[key]
        if ds.dtype.kind not in "biuf":
            raise FormatError(f"{self.path}: dataset '{key}' holds {ds.dtype}, expected numbers")
        return np.asarray(ds[()])

    def close(self) -> None:
        f = getattr(self, "_f", None)
        try:
            if f is not None and f.id.valid:
                f.close()
        except Exception:  # closing a damaged file may fail; nothing was written to it
            pass
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> "LandscapeFile":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


