"""Landscape results files (docs/format.md, "Landscape files"): :class:`LandscapeWriter`,
:class:`LandscapeFile`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from trajviz.errors import FormatError
from trajviz.store.experiment import (_CHECKSUMMED, LIBVER, _check_readable, _first_difference,
                                      _natural_key, _str_attr, check_format_attrs)
from trajviz.store.journaled import JournaledWriter
from trajviz.store.reader import CheckedReader, _guarded

LANDSCAPE_FORMAT = "trajviz-landscape"
LANDSCAPE_FORMAT_VERSION = 1
#: values a run's ``status`` attribute may take (docs/format.md, "Landscape files")
RUN_STATUSES = ("running", "complete")
#: attributes of a run group and of its ``hessian`` group, with the kind of value each must
#: hold when present (only ``status`` is required: it says whether the run's tables are final)
RUN_ATTRS = {"group": "str", "pretrain": "str", "status": "str", "seed": "int", "depth": "count",
             "width": "count", "n_params": "count", "nll_at_theta": "float",
             "error_at_theta": "float"}
HESSIAN_ATTRS = {"top_eigenvalue": "float", "trace": "float", "trace_sem": "float"}
_KIND_WORDS = {"str": "a string", "int": "an integer", "count": "an integer >= 0",
               "float": "a number"}


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
    _file_kind = "trajviz landscape file"

    def __init__(self, path: str | Path, *, config_json: str, source: str = "",
                 mode: str = "create", durable: bool = False):
        self._start_session(path, durable, mode)  # FileLockedError if another writer has it
        try:
            if mode == "resume":
                self._session.recover()
            if mode == "resume" and self.path.exists():
                _check_readable(self.path)
                # the reader's checks (LandscapeFile.check_structure) before any write: a
                # damaged file is refused in one line, as it is when read, and never written to
                with LandscapeFile(self.path) as existing:
                    old = existing.config
                self._open_file(LIBVER, lambda: self._check_resumable(old, config_json))
            else:
                self._create_file(lambda f: _skeleton(f, config_json, source), LIBVER)
        except BaseException:
            self._session.close()
            raise

    def _check_resumable(self, old: dict[str, Any], config_json: str) -> None:
        fmt = _str_attr(self._f.attrs.get("format", ""))
        if fmt != LANDSCAPE_FORMAT:
            raise FormatError(f"{self.path} is not a trajviz landscape file (format {fmt!r}); "
                              "refusing to resume into it")
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
            # Fletcher-32 needs chunks, which a scalar or an empty array cannot have
            ds = self._f.create_dataset(key, data=arr,
                                        **(_CHECKSUMMED if arr.ndim and arr.size else {}))
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
                g.create_dataset(col, shape=(n_rows, *row_shape), dtype="f8", fillvalue=np.nan,
                                 **_CHECKSUMMED)
            g.create_dataset("done", shape=(n_rows,), dtype="u1", fillvalue=0, **_CHECKSUMMED)

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


class LandscapeFile(CheckedReader):
    """Read-only view of a landscape results file; errors name the HDF5 key that failed.

    Opened as :class:`~trajviz.store.ExperimentFile` opens experiment files
    (:func:`~trajviz.store.open_for_reading`): a scan can be looked at while it is written (the
    reader holds a shared lock until closed, and sees the rows finished so far; the writer
    queues its rows meanwhile), and a file whose writer was killed mid-change is read as its
    last complete state, without being changed. Rows whose ``done`` flag is 0 are missing.

    At open it checks the whole structure against the format contract
    (:meth:`check_structure`), so what :meth:`attrs` and :meth:`array` return afterwards has
    the kinds and shapes docs/format.md gives; a damaged file is refused with a one-line
    :class:`FormatError` naming the key and what was expected.
    """

    def __init__(self, path: str | Path, *, lock_timeout: float = 60.0):
        self._open(path, lock_timeout, repair="trajviz landscape --resume")
        try:
            self._check_format()
            self.check_structure()
        except BaseException:
            self.close()
            raise

    # every read below turns an error of the HDF5 library, h5py or numpy into a FormatError
    # naming the file and the key (a damaged file: docs/reliability.md, "Hostile files")
    @_guarded
    def _check_format(self) -> None:
        self._key = "/ (attribute 'format')"
        check_format_attrs(self.path, self._f.attrs, LANDSCAPE_FORMAT, LANDSCAPE_FORMAT_VERSION,
                           "landscape")

    @_guarded
    def check_structure(self) -> None:
        """Check everything readers use against the format contract (docs/format.md,
        "Landscape files"), reading only the small arrays: ``config`` a JSON object whose
        ``directions`` are strings; ``alphas`` 1-D floats, finite and increasing; every run a
        group whose attributes have their kinds (:data:`RUN_ATTRS`; ``status`` present and
        one of :data:`RUN_STATUSES`); directions float (n, n_params); 1-D tables ``nll`` and
        ``error`` float (n, A) with ``done`` (n,), 2-D tables (A, A) with ``done`` (A,), where
        A is the number of alphas and n the rows of the kind's directions; Hessian attributes
        numbers. Done at open; raises :class:`FormatError` naming the first bad key."""
        directions = self.config.get("directions", [])
        if not isinstance(directions, list) or not all(isinstance(d, str) for d in directions):
            raise FormatError(f"{self.path}: root attribute 'config' has 'directions' "
                              f"{_short(directions)}, expected a list of direction kinds (strings)")
        n_alphas = None
        if "alphas" in self._f:
            alphas = self._dataset("alphas", ndim=1, kind="f")[()]
            if alphas.size == 0 or not np.all(np.isfinite(alphas)) or np.any(np.diff(alphas) <= 0):
                raise FormatError(f"{self.path}: '/alphas' holds {_short(alphas)}, expected "
                                  "finite step sizes in increasing order")
            n_alphas = alphas.size
        if "examples" in self._f:
            self._dataset("examples", ndim=1, kind="iu")
        for rid in self.keys("runs"):
            run = f"runs/{rid}"
            self._group(run)
            attrs = self._typed_attrs(run, RUN_ATTRS)
            if attrs.get("status") not in RUN_STATUSES:
                what = (f"status {_short(attrs['status'])}" if "status" in attrs
                        else "no attribute 'status'")
                raise FormatError(f"{self.path}: '/{run}' has {what}, expected status "
                                  f"{' or '.join(RUN_STATUSES)}")
            rows = {}
            for kind in self.keys(f"{run}/directions"):
                d = self._dataset(f"{run}/directions/{kind}", ndim=2, kind="f")
                if "n_params" in attrs and d.shape[1] != attrs["n_params"]:
                    raise FormatError(f"{self.path}: '/{run}/directions/{kind}' has shape "
                                      f"{d.shape}, expected (n, {attrs['n_params']}) (the run's "
                                      "n_params)")
                rows[kind] = d.shape[0]
            for dim in ("scan1d", "scan2d"):
                for kind in self.keys(f"{run}/{dim}"):
                    table = f"{run}/{dim}/{kind}"
                    self._group(table)
                    if n_alphas is None:
                        raise FormatError(f"{self.path}: '/{table}' is a scan table but the file "
                                          "has no '/alphas'")
                    n = n_alphas if dim == "scan2d" else rows.get(kind)
                    if n is None:  # a table is written after its directions
                        n = self._dataset(f"{table}/nll", ndim=2).shape[0]
                    for col in ("nll", "error"):
                        self._dataset(f"{table}/{col}", kind="f", shape=(n, n_alphas))
                    self._dataset(f"{table}/done", kind="iub", shape=(n,))
            if f"{run}/hessian" in self._f:
                self._group(f"{run}/hessian")
                self._typed_attrs(f"{run}/hessian", HESSIAN_ATTRS)

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
        self._group(key)
        return sorted(self._f[key].keys(), key=_natural_key)

    @_guarded
    def attrs(self, key: str = "/") -> dict[str, Any]:
        """The attributes of ``key``, strings decoded; those of runs and their Hessian groups
        are checked at open to hold the kinds docs/format.md gives (:data:`RUN_ATTRS`)."""
        self._key = f"{key} (attributes)"
        if key not in self._f:
            raise FormatError(f"{self.path}: missing HDF5 key '{key}'")
        return {k: (_str_attr(v) if isinstance(v, (bytes, str)) else v)
                for k, v in self._f[key].attrs.items()}

    @_guarded
    def array(self, key: str) -> np.ndarray:
        """The numeric dataset ``key``, read whole (its shape checked at open)."""
        return np.asarray(self._dataset(key)[()])

    # --- checks
    def _group(self, key: str) -> h5py.Group:
        self._key = key
        node = self._f[key]
        if not isinstance(node, h5py.Group):
            raise FormatError(f"{self.path}: '/{key.lstrip('/')}' is a dataset, expected a group")
        return node

    def _dataset(self, key: str, *, ndim: int | None = None, shape: tuple[int, ...] | None = None,
                 kind: str = "biuf") -> h5py.Dataset:
        """The dataset at ``key``, checked: numeric ``kind``, ``ndim`` or ``shape``, and a
        size claim the file can back (no absurd allocations, as for experiment files)."""
        self._key = name = f"/{key.lstrip('/')}"
        if key not in self._f or not isinstance(self._f[key], h5py.Dataset):
            what = "missing" if key not in self._f else "a group"
            raise FormatError(f"{self.path}: '{name}' is {what}, expected a dataset")
        ds = self._f[key]
        if ds.dtype.kind not in kind:
            expected = {"f": "floats", "iu": "integers", "iub": "0/1 flags"}.get(kind, "numbers")
            raise FormatError(f"{self.path}: '{name}' holds {ds.dtype}, expected {expected}")
        if shape is not None and ds.shape != shape:
            raise FormatError(f"{self.path}: '{name}' has shape {ds.shape}, expected {shape}")
        if ndim is not None and ds.ndim != ndim:
            raise FormatError(f"{self.path}: '{name}' has shape {ds.shape}, expected a "
                              f"{ndim}-D dataset")
        self._check_claim(ds)
        return ds

    def _typed_attrs(self, key: str, schema: dict[str, str]) -> dict[str, Any]:
        """The attributes of ``key`` that ``schema`` names, each checked to be of its kind."""
        self._key = f"/{key} (attributes)"
        out = {}
        attrs = self._f[key].attrs
        for name, kind in schema.items():
            if name not in attrs:
                continue
            value = attrs[name]
            ok = (isinstance(value, (str, bytes)) if kind == "str"
                  else isinstance(value, (int, np.integer)) and not isinstance(value, bool)
                  if kind in ("int", "count")
                  else isinstance(value, (int, float, np.integer, np.floating))
                  and not isinstance(value, bool))
            if ok and kind == "count":
                ok = int(value) >= 0
            if not ok:
                raise FormatError(f"{self.path}: attribute '{name}' of '/{key}' is "
                                  f"{_short(value)}, expected {_KIND_WORDS[kind]}")
            out[name] = _str_attr(value) if kind == "str" else value
        return out


def _short(value: Any) -> str:
    """A value for an error message: its repr, cut to 60 characters, with its type."""
    shown = (value.item() if isinstance(value, np.generic)
             else value.tolist() if isinstance(value, np.ndarray) and value.size < 20 else value)
    text = repr(shown)
    text = " ".join(text.split())
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({type(value).__name__})"
