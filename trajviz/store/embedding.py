"""Embedding files (docs/format.md, "Embedding files"): :func:`write_embedding`,
:func:`read_embedding`."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import h5py
import numpy as np

from trajviz.errors import FormatError, OutputExistsError, TrajvizError
from trajviz.store.experiment import _READ_ERRORS, _check_readable, _str_attr, check_format_attrs
from trajviz.store.reader import check_size_claim

EMBEDDING_FORMAT = "trajviz-embedding"
EMBEDDING_FORMAT_VERSION = 1
#: per-point datasets under /points that every embedding file must have
EMBEDDING_POINT_KEYS = ("run", "step", "group")


def write_embedding(path: str | Path, coords: np.ndarray, run: Any, step: Any, group: Any, *,
                    attrs: Mapping[str, Any] | None = None,
                    points: Mapping[str, np.ndarray] | None = None,
                    extra: Mapping[str, np.ndarray] | None = None,
                    overwrite: bool = False) -> None:
    """Write an embedding file (layout: docs/format.md, "Embedding files").

    ``coords`` (M, 2 or 3); ``run``, ``group`` (M,) strings; ``step`` (M,) int. ``attrs`` become
    root attributes (dicts and lists stored as JSON strings); ``points`` are further per-point
    arrays under ``/points``; ``extra`` maps HDF5 paths (e.g. ``"pca/components"``) to arrays.
    The file is written to a temporary name and renamed, so a failed write leaves no file and
    an existing file is replaced only with ``overwrite``.
    """
    path = Path(path)
    coords = np.asarray(coords, dtype=np.float64)
    if coords.ndim != 2 or coords.shape[1] not in (1, 2, 3):
        raise FormatError(f"embedding coords of shape {coords.shape}: expected (M, 2) or (M, 3)")
    m = coords.shape[0]
    cols = {"run": np.asarray(run, dtype=object).astype(str),
            "step": np.asarray(step, dtype=np.int64),
            "group": np.asarray(group, dtype=object).astype(str)}
    for name, arr in {**cols, **(points or {})}.items():
        if np.asarray(arr).shape[:1] != (m,):
            raise FormatError(f"embedding points/{name} has {np.asarray(arr).shape[:1]} rows, "
                              f"coords have {m}")
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} exists; pass --overwrite to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    str_dt = h5py.string_dtype("utf-8")
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = EMBEDDING_FORMAT
            f.attrs["format_version"] = EMBEDDING_FORMAT_VERSION
            for key, value in (attrs or {}).items():
                f.attrs[key] = json.dumps(value) if isinstance(value, (dict, list, tuple)) else value
            f.create_dataset("coords", data=coords)
            pg = f.create_group("points")
            for name, arr in {**cols, **(points or {})}.items():
                arr = np.asarray(arr)
                if arr.dtype.kind in "OUS":
                    pg.create_dataset(name, data=arr.astype(object).astype(str).tolist(), dtype=str_dt)
                else:
                    pg.create_dataset(name, data=arr)
            for key, arr in (extra or {}).items():
                f.create_dataset(key, data=np.asarray(arr))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def read_embedding(path: str | Path) -> dict[str, Any]:
    """Read an embedding file, validating it against docs/format.md (see
    :func:`_read_embedding`); any error reading it becomes a :class:`FormatError`."""
    try:
        return _read_embedding(path)
    except TrajvizError:
        raise
    except _READ_ERRORS as exc:
        msg = " ".join(str(exc).split()) or type(exc).__name__
        raise FormatError(f"{path}: cannot be read as an embedding file ({msg}); the file is "
                          "damaged or of another kind") from None


def _read_embedding(path: str | Path) -> dict[str, Any]:
    """Read an embedding file, validating it against docs/format.md.

    Returns a dict with ``coords`` (M, k) float64, ``points`` (name -> (M,) array; strings as
    ``str`` object arrays), ``attrs`` (root attributes, JSON strings decoded) and ``extra``
    (HDF5 path -> array for every other dataset, e.g. ``features``, ``pca/mean``).
    """
    path = Path(path)
    _check_readable(path)
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise FormatError(f"{path} cannot be opened as HDF5: {exc}") from None
    with f:
        check_format_attrs(path, f.attrs, EMBEDDING_FORMAT, EMBEDDING_FORMAT_VERSION, "embedding")
        if "coords" not in f or not isinstance(f["coords"], h5py.Dataset) or f["coords"].ndim != 2:
            raise FormatError(f"{path}: missing HDF5 key '/coords' (a 2-D dataset)")
        check_size_claim(path, "/coords", f["coords"])
        coords = np.asarray(f["coords"][()], dtype=np.float64)
        points: dict[str, np.ndarray] = {}
        for key in EMBEDDING_POINT_KEYS:
            if f"points/{key}" not in f:
                raise FormatError(f"{path}: missing HDF5 key '/points/{key}'")
        for key, ds in f["points"].items():
            if not isinstance(ds, h5py.Dataset) or ds.shape[:1] != coords.shape[:1]:
                raise FormatError(f"{path}: '/points/{key}' should have {coords.shape[0]} rows "
                                  "like '/coords'")
            check_size_claim(path, f"/points/{key}", ds)
            arr = ds[()]
            if ds.dtype.kind in "OS":
                arr = np.array([_str_attr(v) for v in arr], dtype=object)
            points[key] = arr
        points["step"] = points["step"].astype(np.int64)
        attrs: dict[str, Any] = {}
        for key, value in f.attrs.items():
            value = _str_attr(value) if isinstance(value, (bytes, str)) else value
            if isinstance(value, str) and value[:1] in "[{":
                try:
                    value = json.loads(value)
                except json.JSONDecodeError:
                    pass
            attrs[key] = value.item() if isinstance(value, np.generic) else value
        extra: dict[str, np.ndarray] = {}

        def visit(name: str, obj: Any) -> None:
            if isinstance(obj, h5py.Dataset) and name != "coords" and not name.startswith("points/"):
                check_size_claim(path, f"/{name}", obj)
                extra[name] = obj[()]

        f.visititems(visit)
    return {"coords": coords, "points": points, "attrs": attrs, "extra": extra}
