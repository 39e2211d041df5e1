"""Landscape results files (docs/format.md, "Landscape files"): :class:`LandscapeWriter`,
:class:`LandscapeFile`."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from trajviz.errors import FormatError, OutputExistsError
from trajviz.store.experiment import _check_readable, _first_difference, _natural_key, _str_attr

LANDSCAPE_FORMAT = "trajviz-landscape"
LANDSCAPE_FORMAT_VERSION = 1


class LandscapeWriter:
    """Creates or resumes a landscape results file (docs/format.md, "Landscape files").

    Results are tables of rows (one row per direction, or per grid line) written as they come:
    each :meth:`write_row` writes the row's columns, then marks it in the table's ``done``
    dataset, then flushes, so an interrupted scan leaves exactly its finished rows. ``mode``:
    ``"create"`` refuses an existing file, ``"resume"`` reopens one written with the same
    ``config_json`` (else :class:`FormatError` naming the first difference), ``"overwrite"``
    replaces it.
    """

    def __init__(self, path: str | Path, *, config_json: str, source: str = "",
                 mode: str = "create"):
        self.path = Path(path)
        if mode not in ("create", "resume", "overwrite"):
            raise ValueError(f"mode {mode!r}: choose create, resume or overwrite")
        exists = self.path.exists()
        if exists and mode == "create":
            raise OutputExistsError(
                f"{self.path} exists; pass --resume to continue it or --overwrite to replace it")
        if exists and mode == "resume":
            _check_readable(self.path)
            self._f = h5py.File(self.path, "r+")
            fmt = _str_attr(self._f.attrs.get("format", ""))
            if fmt != LANDSCAPE_FORMAT:
                self._f.close()
                raise FormatError(f"{self.path} is not a trajviz landscape file (format {fmt!r}); "
                                  "refusing to resume into it")
            old = json.loads(_str_attr(self._f.attrs.get("config", "{}")))
            diff = _first_difference(old, json.loads(config_json))
            if diff is not None:
                self._f.close()
                raise FormatError(f"{self.path} was scanned with different settings ({diff}); "
                                  "use --overwrite or another output file")
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if exists:
            os.unlink(self.path)
        self._f = h5py.File(self.path, "w")
        self._f.attrs["format"] = LANDSCAPE_FORMAT
        self._f.attrs["format_version"] = LANDSCAPE_FORMAT_VERSION
        self._f.attrs["config"] = config_json
        self._f.attrs["source"] = source
        self._f.flush()

    def has(self, key: str) -> bool:
        return key in self._f

    def read_array(self, key: str) -> np.ndarray:
        return np.asarray(self._f[key][()])

    def write_array(self, key: str, data: np.ndarray, **attrs: Any) -> None:
        """Write a dataset once (a later call with the same key replaces it)."""
        if key in self._f:
            del self._f[key]
        ds = self._f.create_dataset(key, data=np.asarray(data))
        for name, value in attrs.items():
            ds.attrs[name] = value
        self._f.flush()

    def require_rows(self, key: str, n_rows: int, row_shape: tuple[int, ...],
                     columns: tuple[str, ...]) -> None:
        """A table group ``key`` with one NaN-filled (n_rows, *row_shape) float64 dataset per
        column and a ``done`` (n_rows,) uint8 dataset; kept as it is if it exists."""
        if key in self._f:
            g = self._f[key]
            for col in columns:
                if col not in g or g[col].shape != (n_rows, *row_shape):
                    raise FormatError(f"{self.path}: '{g.name}/{col}' does not have shape "
                                      f"{(n_rows, *row_shape)}; use --overwrite")
            return
        g = self._f.create_group(key)
        for col in columns:
            g.create_dataset(col, shape=(n_rows, *row_shape), dtype="f8", fillvalue=np.nan)
        g.create_dataset("done", shape=(n_rows,), dtype="u1", fillvalue=0)
        self._f.flush()

    def done_rows(self, key: str) -> np.ndarray:
        return np.asarray(self._f[f"{key}/done"][()], dtype=bool)

    def write_row(self, key: str, index: int, **columns: np.ndarray) -> None:
        g = self._f[key]
        for col, value in columns.items():
            g[col][index] = value
        g["done"][index] = 1  # after the values: a row marked done is complete
        self._f.flush()

    def set_attrs(self, key: str, **attrs: Any) -> None:
        node = self._f.require_group(key) if key not in self._f else self._f[key]
        for name, value in attrs.items():
            node.attrs[name] = value
        self._f.flush()

    def get_attrs(self, key: str) -> dict[str, Any]:
        if key not in self._f:
            return {}
        return {k: (_str_attr(v) if isinstance(v, (bytes, str)) else v)
                for k, v in self._f[key].attrs.items()}

    def close(self) -> None:
        if self._f.id.valid:
            self._f.close()

    def __enter__(self) -> "LandscapeWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class LandscapeFile:
    """Read-only view of a landscape results file; errors name the HDF5 key that failed.

    Opened without HDF5 file locking, so a scan can be looked at while it is written; rows whose
    ``done`` flag is 0 are to be treated as missing."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        _check_readable(self.path)
        try:
            self._f = h5py.File(self.path, "r", locking=False)
        except OSError as exc:
            raise FormatError(f"{self.path} cannot be opened as HDF5: {exc}") from None
        fmt = _str_attr(self._f.attrs.get("format", ""))
        version = self._f.attrs.get("format_version")
        if fmt != LANDSCAPE_FORMAT:
            self._f.close()
            raise FormatError(f"{self.path} is not a trajviz landscape file (root attribute "
                              f"'format' is {fmt!r}, expected {LANDSCAPE_FORMAT!r})")
        if (not isinstance(version, (int, np.integer))
                or not 1 <= int(version) <= LANDSCAPE_FORMAT_VERSION):
            self._f.close()
            raise FormatError(f"{self.path}: landscape format_version {version!r} is not supported "
                              f"(this trajviz reads 1..{LANDSCAPE_FORMAT_VERSION}); upgrade trajviz")

    @property
    def config(self) -> dict[str, Any]:
        try:
            return json.loads(_str_attr(self._f.attrs.get("config", "{}")))
        except json.JSONDecodeError:
            raise FormatError(f"{self.path}: root attribute 'config' is not valid JSON") from None

    @property
    def source(self) -> str:
        return _str_attr(self._f.attrs.get("source", ""))

    def has(self, key: str) -> bool:
        return key in self._f

    def keys(self, key: str = "/") -> list[str]:
        if key not in self._f:
            return []
        return sorted(self._f[key].keys(), key=_natural_key)

    def attrs(self, key: str = "/") -> dict[str, Any]:
        if key not in self._f:
            raise FormatError(f"{self.path}: missing HDF5 key '{key}'")
        return {k: (_str_attr(v) if isinstance(v, (bytes, str)) else v)
                for k, v in self._f[key].attrs.items()}

    def array(self, key: str) -> np.ndarray:
        if key not in self._f or not isinstance(self._f[key], h5py.Dataset):
            raise FormatError(f"{self.path}: missing HDF5 dataset '{key}'")
        return np.asarray(self._f[key][()])

    def close(self) -> None:
        if self._f.id.valid:
            self._f.close()

    def __enter__(self) -> "LandscapeFile":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


