"""Resume state in experiment files: what an interrupted training needs to continue mid-run.

A writer keeps, under ``/resume/<key>`` (docs/format.md, "Resume state"), the state of one
training batch at its latest checkpoint: named arrays (parameters in the training dtype, random
generator states as uint8, ...) and one JSON attribute ``state``. The store treats both as
opaque; :mod:`trajviz.training.resume` says what they hold. Every write overwrites the same
datasets in place, so the file does not grow from one checkpoint to the next; the group is
deleted when the batch completes. Readers of the experiment (:class:`~trajviz.store.ExperimentFile`)
ignore it.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Mapping

import h5py
import numpy as np

from trajviz.errors import FormatError

log = logging.getLogger("trajviz.store")

#: root group holding the resume states, one subgroup per key
RESUME_GROUP = "resume"
_CHECKSUMMED = dict(fletcher32=True)
#: a state's arrays may claim at most this many bytes per byte of file (hostile files)
_MAX_CLAIM_RATIO = 1.0


def _datasets(g: h5py.Group) -> dict[str, h5py.Dataset]:
    out: dict[str, h5py.Dataset] = {}

    def visit(name: str, node: Any) -> None:
        if isinstance(node, h5py.Dataset):
            out[name] = node

    g.visititems(visit)
    return out


def write_state(f: h5py.File, key: str, arrays: Mapping[str, np.ndarray],
                meta: Mapping[str, Any]) -> None:
    """Store ``arrays`` (names may contain ``/``) and ``meta`` (JSON) as the state ``key``,
    replacing the previous one. Datasets of unchanged shape and dtype are overwritten in place."""
    g = f.require_group(RESUME_GROUP).require_group(key)
    old = _datasets(g)
    for name in old:
        if name not in arrays:
            del g[name]
    for name, arr in arrays.items():
        ds = old.get(name)
        if ds is not None and (ds.shape != arr.shape or ds.dtype != arr.dtype):
            del g[name]
            ds = None
        if ds is None:
            if arr.ndim == 0 or arr.size == 0:
                g.create_dataset(name, data=arr)
                continue
            chunks = (1, *arr.shape[1:]) if arr.ndim >= 2 else arr.shape
            ds = g.create_dataset(name, shape=arr.shape, dtype=arr.dtype, chunks=chunks,
                                  **_CHECKSUMMED)
        ds[...] = arr
    g.attrs["state"] = json.dumps(dict(meta), sort_keys=True)


def read_state(f: h5py.File, key: str) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
    """The state ``key`` as (arrays, meta), or None if the file has none.

    Raises :class:`~trajviz.errors.FormatError` naming the key if it cannot be read (a damaged
    dataset, a non-numeric dtype, an array claiming more bytes than the file holds, a ``state``
    attribute that is not a JSON object)."""
    root = f.get(RESUME_GROUP)
    if root is None or key not in root:
        return None
    where = f"/{RESUME_GROUP}/{key}"
    try:
        g = root[key]
        if not isinstance(g, h5py.Group):
            raise FormatError(f"{where} is not a group")
        raw = g.attrs.get("state", "")
        meta = json.loads(raw.decode() if isinstance(raw, bytes) else str(raw))
        if not isinstance(meta, dict):
            raise FormatError(f"{where}: attribute 'state' is not a JSON object")
        size = f.id.get_filesize()
        arrays = {}
        for name, ds in _datasets(g).items():
            if ds.dtype.kind not in "biuf":
                raise FormatError(f"{where}/{name}: dtype {ds.dtype} is not numeric")
            claim = int(np.prod(ds.shape, dtype=np.int64)) * ds.dtype.itemsize
            if claim > _MAX_CLAIM_RATIO * size + (1 << 20):
                raise FormatError(f"{where}/{name}: claims {claim} bytes in a {size}-byte file")
            arrays[name] = ds[()]
    except FormatError:
        raise
    except (OSError, KeyError, ValueError, TypeError, RuntimeError) as exc:
        raise FormatError(f"{where} cannot be read ({type(exc).__name__}: {exc})") from None
    return arrays, meta


def read_metas(f: h5py.File) -> dict[str, dict[str, Any]]:
    """Every state's ``meta`` (the JSON attribute only, no arrays), by key. FormatError if one
    is not a JSON object."""
    out = {}
    for key in state_keys(f):
        where = f"/{RESUME_GROUP}/{key}"
        node = f[RESUME_GROUP][key]
        raw = node.attrs.get("state", "") if isinstance(node, h5py.Group) else ""
        try:
            meta = json.loads(raw.decode() if isinstance(raw, bytes) else str(raw))
        except ValueError:
            meta = None
        if not isinstance(meta, dict):
            raise FormatError(f"{where}: attribute 'state' is not a JSON object")
        out[key] = meta
    return out


def delete_state(f: h5py.File, key: str) -> None:
    """Remove the state ``key`` (and the ``/resume`` group once it is empty), if present."""
    root = f.get(RESUME_GROUP)
    if root is None:
        return
    if key in root:
        del root[key]
    if len(root) == 0:
        del f[RESUME_GROUP]


def state_keys(f: h5py.File) -> list[str]:
    """Keys of the resume states the file holds."""
    root = f.get(RESUME_GROUP)
    return sorted(root.keys()) if isinstance(root, h5py.Group) else []
