"""Merging several trajviz files (e.g. a sweep's shards) into one: :func:`gather`."""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Collection, Iterable, Iterator, Mapping

import h5py

from trajviz.errors import FormatError, OutputExistsError
from trajviz.store.experiment import _str_attr
from trajviz.store.reader import ExperimentFile, open_for_reading

log = logging.getLogger("trajviz.store")


@dataclass(frozen=True)
class ShardSource:
    """One trajviz file to :func:`gather`, and how its runs are renamed on the way.

    A run ``r`` becomes ``run_prefix + r``; its ``group`` attribute gets ``group_suffix``
    appended; ``run_attrs`` are set on each of its runs. ``runs``: copy only these runs (their
    ids in the source); None copies every run.
    """

    path: str | Path
    run_prefix: str = ""
    group_suffix: str = ""
    run_attrs: Mapping[str, Any] | None = None
    runs: Collection[str] | None = None

    def selected(self, run_ids: Iterable[str]) -> list[str]:
        return [r for r in run_ids if self.runs is None or r in self.runs]


@contextlib.contextmanager
def _reading(path: str | Path) -> Iterator[h5py.File]:
    """An HDF5 file opened as :func:`open_for_reading` does, closed and unlocked on exit."""
    f, lock = open_for_reading(path)
    try:
        yield f
    finally:
        f.close()
        if lock is not None:
            lock.release()


def read_root_attrs(path: str | Path) -> dict[str, Any]:
    """Root attributes of a trajviz file (strings decoded), e.g. a gathered sweep's ``sweep_*``."""
    with ExperimentFile(path):  # validates that it is a trajviz file
        pass
    with _reading(path) as f:
        return {k: (_str_attr(v) if isinstance(v, (bytes, str)) else v) for k, v in f.attrs.items()}


def gather(sources: "list[ShardSource | str | Path]", output: str | Path, *, name: str | None = None,
           config_json: str | None = None, root_attrs: Mapping[str, Any] | None = None,
           overwrite: bool = False) -> Path:
    """Merge the runs of several trajviz files (e.g. a sweep's shards) into one, by copying.

    Every source must be a trajviz file recorded on the same probe set (``probe_sha256`` and
    ``n_classes`` agree) and the renamed run ids must be unique; both are checked before anything
    is written. Run groups are copied whole with ``h5py``'s ``copy`` (datasets keep their
    chunking and compression); a run whose ``config`` attribute is empty gets its shard's root
    config, and ``source_shard`` names the file it came from. Root attributes and the ``probe``
    group come from the first source; ``name``, ``config_json`` and ``root_attrs`` override them.

    The output is written to a temporary file next to it and renamed into place, so it is never
    seen half-written. Why a merge and not external links: docs/format.md, "Gathered files".
    """
    srcs = [s if isinstance(s, ShardSource) else ShardSource(s) for s in sources]
    if not srcs:
        raise FormatError("gather: no source files given")
    output = Path(output)
    if output.exists() and not overwrite:
        raise OutputExistsError(f"{output} exists; pass overwrite=True (--overwrite) to replace it")
    seen: dict[str, Path] = {}
    first: tuple[Path, str, int] | None = None
    for s in srcs:
        path = Path(s.path)
        with ExperimentFile(path) as f:
            sha, n_classes = f.probe_sha256, f.n_classes
            if first is None:
                first = (path, sha, n_classes)
            elif sha != first[1]:
                raise FormatError(f"{path} was recorded on a different probe set than {first[0]} "
                                  f"(probe_sha256 {sha[:12]} vs {first[1][:12]}); only files "
                                  "with the same probe set can be gathered")
            elif n_classes != first[2]:
                raise FormatError(f"{path} has {n_classes} classes, {first[0]} has {first[2]}")
            for rid in s.selected(f.run_ids()):
                new = s.run_prefix + rid
                if "/" in new:
                    raise FormatError(f"run id {new!r} (from {path}) must not contain '/'")
                if new in seen:
                    raise FormatError(f"run id {new!r} occurs in both {seen[new]} and {path}; "
                                      "give the sources distinct run prefixes")
                seen[new] = path
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.gather-{os.getpid()}.tmp")
    try:
        with h5py.File(tmp, "w") as out:
            for s in srcs:
                with _reading(s.path) as src:
                    if len(out.attrs) == 0:  # the first source gives the root
                        for key, value in src.attrs.items():
                            out.attrs[key] = value
                        for key in src:
                            if key != "runs":
                                src.copy(src[key], out, name=key)
                        out.create_group("runs")
                    shard_config = src.attrs.get("config", "{}")
                    for rid in s.selected(src["runs"]):
                        new = s.run_prefix + rid
                        src.copy(src["runs"][rid], out["runs"], name=new)
                        a = out["runs"][new].attrs
                        group = _str_attr(a.get("group", a.get("pretrain", "none")))
                        a["group"] = group + s.group_suffix
                        if _str_attr(a.get("config", "{}")) in ("", "{}"):
                            a["config"] = shard_config
                        a["source_shard"] = Path(s.path).name
                        for key, value in (s.run_attrs or {}).items():
                            a[key] = value
            if name is not None:
                out.attrs["name"] = name
            if config_json is not None:
                out.attrs["config"] = config_json
            for key, value in (root_attrs or {}).items():
                out.attrs[key] = value
        os.replace(tmp, output)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    log.debug("gathered %d runs from %d files into %s", len(seen), len(srcs), output)
    return output


