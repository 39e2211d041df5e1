"""Experiment files (docs/format.md), write side, and what the store's submodules share.

Format constants, run status values, :func:`probe_sha256`; :class:`ExperimentWriter` (one per
file) hands out :class:`RunWriter` objects that append checkpoints. Every change (an append, a
run start, an attribute) is one transaction of a rollback journal (:mod:`trajviz.lock`), so a
process killed at any moment, even inside an HDF5 write, leaves the file as the last complete
change left it (docs/reliability.md). Also the private helpers the other submodules use.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Callable, Mapping

import h5py
import numpy as np

from trajviz.errors import (FileLockedError, FormatError, InputFileNotFoundError,
                            OutputExistsError, StoreWriteError, TrajvizError)
from trajviz.lock import WriteSession

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


def _natural_key(text: str) -> list[Any]:
    import re

    return [int(tok) if tok.isdigit() else tok for tok in re.split(r"(\d+)", text)]



#: HDF5 format versions the writer uses: 1.10 objects carry checksums on all metadata
#: (superblock, object headers, chunk indexes), so a flipped bit is detected, not misread
LIBVER = ("v110", "v110")
#: queued changes (bytes) after which a writer waits for readers instead of queueing more
MAX_PENDING_BYTES = 256 * 2**20
#: how long a writer that must write waits for readers to close the file (seconds)
READER_WAIT_S = 600.0
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


class ExperimentWriter:
    """Creates or reopens a trajviz file for writing.

    ``mode``: ``"create"`` refuses an existing file; ``"resume"`` reopens one written with the
    same probe set (and creates it if absent); ``"overwrite"`` replaces it.

    Crash safety (docs/reliability.md): every change is a transaction of a rollback journal
    (:mod:`trajviz.lock`), so a process killed at any moment leaves the file as it was after
    the last complete change, and the next writer rolls back the unfinished one. A second
    writer is refused with :class:`~trajviz.errors.FileLockedError`. While readers
    (:class:`ExperimentFile`) hold the file, changes queue in memory (up to
    ``MAX_PENDING_BYTES``) rather than wait. A failed write (disk full) is rolled back and
    raised as :class:`~trajviz.errors.StoreWriteError`; the writer is unusable afterwards.
    ``durable=True`` also fsyncs, for safety against power loss (slower).
    """

    def __init__(self, path: str | Path, *, probe_targets: np.ndarray, probe_sha: str,
                 n_classes: int, name: str = "", config_json: str = "{}",
                 mode: str = "create", durable: bool = False):
        self.path = Path(path)
        if mode not in ("create", "resume", "overwrite"):
            raise ValueError(f"mode {mode!r}: choose create, resume or overwrite")
        if self.path.exists() and mode == "create":
            raise OutputExistsError(
                f"{self.path} exists; pass --resume to continue it or --overwrite to replace it")
        if self.path.is_dir():
            raise FormatError(f"{self.path} is a directory, not a trajviz file")
        targets = np.asarray(probe_targets, dtype=np.int64)
        self.n_probe = int(targets.shape[0])
        self.n_classes = int(n_classes)
        self._pending: list[Callable[[], None]] = []
        self._pending_bytes = 0
        self._broken: BaseException | None = None
        self._f: h5py.File | None = None
        self._session = WriteSession(self.path, durable=durable)  # FileLockedError if taken
        try:
            if mode == "resume":
                self._session.recover()
            if mode == "resume" and self.path.exists() and self.path.stat().st_size > 0:
                _check_readable(self.path)
                self._session.open_main()
                self._begin_waiting()
                try:
                    self._f = h5py.File(self._session, "r+", libver=LIBVER)
                    self._check_compatible(probe_sha, targets, n_classes, config_json)
                    self._f.flush()
                    if self._session.failed():
                        raise self._session.write_error
                except BaseException as exc:
                    self._fail(exc)
                self._session.commit()
            else:
                self._create(targets, probe_sha, n_classes, name, config_json)
        except BaseException:
            self._session.close()
            raise

    def _create(self, targets: np.ndarray, probe_sha: str, n_classes: int, name: str,
                config_json: str) -> None:
        """Write the file's skeleton under a temporary name and rename it into place, so an
        existing file is replaced only by a complete new one."""
        tmp = self.path.with_name(f".{self.path.name}.create-{os.getpid()}.tmp")
        try:
            with h5py.File(tmp, "w", libver=LIBVER) as f:
                f.attrs["format"] = FORMAT
                f.attrs["format_version"] = FORMAT_VERSION
                f.attrs["probe_sha256"] = probe_sha
                f.attrs["n_classes"] = int(n_classes)
                f.attrs["name"] = name
                f.attrs["config"] = config_json
                f.create_group("probe").create_dataset("targets", data=targets)
                f.create_group("runs")
            os.replace(tmp, self.path)
        finally:
            tmp.unlink(missing_ok=True)
        self._session.open_main()
        self._begin_waiting()
        try:
            self._f = h5py.File(self._session, "r+", libver=LIBVER)
            self._f.flush()
            if self._session.failed():
                raise self._session.write_error
        except BaseException as exc:
            self._fail(exc)
        self._session.commit()

    def _check_compatible(self, probe_sha: str, targets: np.ndarray, n_classes: int,
                          config_json: str) -> None:
        f = self._f
        if _str_attr(f.attrs.get("format", "")) != FORMAT:
            raise FormatError(f"{self.path} is not a trajviz file; refusing to resume into it")
        if _str_attr(f.attrs.get("probe_sha256", "")) != probe_sha:
            raise FormatError(f"{self.path} was recorded on a different probe set; "
                              "resume needs the same data and probe config")
        old = json.loads(_str_attr(f.attrs.get("config", "{}")))
        new = json.loads(config_json)
        diff = _first_difference(old, new, ignore=("engine", "seeds"))
        if diff is not None:
            raise FormatError(f"{self.path} was recorded with a different config ({diff}); "
                              "use --overwrite or another output file")
        if new.get("seeds"):
            f.attrs["config"] = config_json  # more seeds may be added to an experiment

    # --- transactions
    def _begin_waiting(self) -> None:
        """Begin a transaction, waiting for readers up to ``READER_WAIT_S``."""
        if not self._session.begin(block=True, timeout=READER_WAIT_S):
            raise FileLockedError(
                f"{self.path} has been held open by readers for {READER_WAIT_S:g} s while "
                "changes wait to be written; close them (an ExperimentFile open in this very "
                "process counts too)")

    def _submit(self, op: Callable[[], None], nbytes: int, block: bool = False) -> None:
        """Queue a change and apply the queue in one transaction, unless readers hold the
        file and neither ``block`` nor a full queue forces a wait."""
        if self._broken is not None:
            raise StoreWriteError(f"{self.path}: an earlier write failed; nothing more is "
                                  "written (rerun with --resume)")
        self._pending.append(op)
        self._pending_bytes += nbytes
        self._drain(block or self._pending_bytes > MAX_PENDING_BYTES)

    def _drain(self, block: bool) -> None:
        if not self._pending or self._broken is not None:
            return
        if not self._session.begin(block=False):
            if not block:
                log.debug("%s is being read; %d changes queued", self.path, len(self._pending))
                return
            log.info("waiting for readers of %s to finish", self.path)
            self._begin_waiting()
        try:
            for op in self._pending:
                op()
            self._f.flush()
            if self._session.failed():
                raise self._session.write_error
        except BaseException as exc:
            self._fail(exc)
        self._session.commit()
        self._pending.clear()
        self._pending_bytes = 0

    def _fail(self, exc: BaseException) -> None:
        """A change failed half-way: put the file back as the last transaction left it, make
        this writer unusable, and raise (a TrajvizError for I/O failures)."""
        self._broken = exc
        self._pending.clear()
        self._session.discard_writes()
        try:
            if self._f is not None and self._f.id.valid:
                self._f.close()
        except Exception:  # the HDF5 library's state is what failed; the journal decides
            pass
        try:
            self._session.rollback()
        except OSError as again:
            log.warning("%s: rolling back failed too (%s); readers see the rolled-back state "
                        "and the next writer (--resume) completes the rollback", self.path, again)
        if isinstance(exc, TrajvizError):
            raise exc
        cause = self._session.write_error
        if cause is not None:
            reason = (f"{cause.strerror or cause} (errno {cause.errno})" if cause.errno else str(cause))
            if cause.errno in (errno.ENOSPC, errno.EDQUOT):
                reason += ": the disk is full"
            elif cause.errno == errno.EFBIG:
                reason += ": a file-size limit was reached"
            raise StoreWriteError(
                f"writing {self.path} failed: {reason}; the unfinished change was rolled back, "
                "so the file holds every checkpoint written before it; free space and rerun "
                "with --resume") from None
        if isinstance(exc, (OSError, RuntimeError, ValueError, KeyError)):
            raise StoreWriteError(f"writing {self.path} failed ({type(exc).__name__}: {exc}); "
                                  "the unfinished change was rolled back") from exc
        raise exc

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
            raise OutputExistsError(f"run {run_id!r} is already complete in {self.path}")
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

    def flush(self) -> None:
        """Write every queued change now (waiting for readers if need be)."""
        self._drain(block=True)

    def close(self) -> None:
        """Write what is queued, close the file and end the writer session."""
        if self._f is None:
            self._session.close()
            return
        try:
            if self._broken is None and self._f.id.valid:
                self._drain(block=True)
                self._begin_waiting()
                try:
                    self._f.close()
                    if self._session.failed():
                        raise self._session.write_error
                except BaseException as exc:
                    self._fail(exc)
                self._session.commit()
        finally:
            if self._f.id.valid:  # closing failed half-way: drop what HDF5 still wants to write
                self._session.discard_writes()
                try:
                    self._f.close()
                except Exception:  # the file on disk is the last committed state
                    pass
            self._session.close()

    def __enter__(self) -> "ExperimentWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
