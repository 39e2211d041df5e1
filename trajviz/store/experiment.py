"""The HDF5 store: the only module that imports h5py. The layout is a public contract,
documented in docs/format.md; bump ``FORMAT_VERSION`` on any breaking change.

Write side: :class:`ExperimentWriter` (one per file) hands out :class:`RunWriter` objects that
append checkpoints. Every change (an append, a run start, an attribute) is one transaction of a
rollback journal (:mod:`trajviz.lock`), so a process killed at any moment, even inside an HDF5
write, leaves the file as the last complete change left it (docs/reliability.md). Read side:
:class:`ExperimentFile`, which may read while a writer writes, validates what it reads, and
turns any read failure into a :class:`~trajviz.errors.FormatError` naming the HDF5 key.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import h5py
import numpy as np

from trajviz.errors import (FileLockedError, FormatError, InputFileNotFoundError,
                            OutputExistsError, StoreWriteError, TrajvizError)
from trajviz.lock import ReadLock, RolledBackView, WriteSession, read_hot_journal

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
    try:
        hdf5 = h5py.is_hdf5(str(path))
    except OSError as exc:
        raise FormatError(f"{path} cannot be read: {exc}") from None
    if not hdf5:
        raise FormatError(f"{path} is not an HDF5 file (and so not a trajviz file)")


#: how much larger than its stored bytes a dataset may claim to be: deflate compresses at most
#: ~1032:1, so a bigger claim is a lie that would make a reader allocate absurd memory
_MAX_CLAIM_RATIO = 1100
_MAX_CLAIM_SLACK = 2**20
_MAX_CLASSES = 2**24
#: probabilities may stray this far outside [0, 1] (float32 softmax rounding)
_PROB_TOL = 1e-3

_READ_ERRORS = (OSError, KeyError, ValueError, RuntimeError, TypeError, IndexError,
                AttributeError, OverflowError, MemoryError, UnicodeDecodeError, SystemError)


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


def open_for_reading(path: str | Path, lock_timeout: float = 60.0) -> tuple[h5py.File, ReadLock | None]:
    """Open an HDF5 file for reading while a trajviz writer may be writing it.

    Takes a shared lock (waiting up to ``lock_timeout`` s for the writer's current transaction);
    if the last writer died mid-transaction, the file is read as the rollback will leave it,
    without changing it. Release the returned lock after closing the file.
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
                        "complete state (`trajviz record --resume` repairs the file)", path)
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


class ExperimentFile:
    """Read-only view of a trajviz file, validating what it reads.

    Use as a context manager. Only complete checkpoints are visible. The file may be read while
    ``trajviz record`` writes it: the reader holds a shared lock for as long as it is open and
    sees the state after the writer's last complete change (the writer queues its changes
    meanwhile), so close it when done. Any read error becomes a :class:`FormatError` naming
    the HDF5 key; :meth:`verify` checks the whole file.
    """

    def __init__(self, path: str | Path, *, lock_timeout: float = 60.0):
        self.path = Path(path)
        self._key = "/"
        self._f, self._lock = open_for_reading(self.path, lock_timeout)
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
        fmt = _str_attr(f.attrs.get("format", ""))
        if fmt != FORMAT:
            raise FormatError(f"{self.path} is not a trajviz file (root attribute 'format' is "
                              f"{fmt[:40]!r}, expected {FORMAT!r})")
        version = f.attrs.get("format_version")
        if not isinstance(version, (int, np.integer)) or not 1 <= int(version) <= FORMAT_VERSION:
            raise FormatError(f"{self.path}: format_version {version!r} is not supported "
                              f"(this trajviz reads 1..{FORMAT_VERSION}); upgrade trajviz")
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

    @_guarded
    def probe_targets(self) -> np.ndarray:
        return self._dataset("probe/targets", ndim=1, kind="iu")[()].astype(np.int64)

    @property
    @_guarded
    def probe_size(self) -> int:
        return int(self._dataset("probe/targets", ndim=1).shape[0])

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
        claimed = int(np.prod(ds.shape, dtype=np.float64)) * ds.dtype.itemsize
        if claimed > _MAX_CLAIM_SLACK:
            stored = min(ds.id.get_storage_size(), self._file_size())
            if claimed > _MAX_CLAIM_RATIO * stored + _MAX_CLAIM_SLACK:
                raise FormatError(f"{self.path}: '{self._key}' claims {claimed:.3g} bytes "
                                  f"(shape {ds.shape}) but stores only {stored}; the file is "
                                  "damaged or hostile")
        return ds

    def _file_size(self) -> int:
        try:
            return os.stat(self.path).st_size
        except OSError:
            return 0

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

    def __enter__(self) -> "ExperimentFile":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _natural_key(text: str) -> list[Any]:
    import re

    return [int(tok) if tok.isdigit() else tok for tok in re.split(r"(\d+)", text)]


# --------------------------------------------------------------------------- gathering shards


@dataclass(frozen=True)
class ShardSource:
    """One trajviz file to :func:`gather`, and how its runs are renamed on the way.

    A run ``r`` becomes ``run_prefix + r``; its ``group`` attribute gets ``group_suffix``
    appended; ``run_attrs`` are set on each of its runs.
    """

    path: str | Path
    run_prefix: str = ""
    group_suffix: str = ""
    run_attrs: Mapping[str, Any] | None = None


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
            for rid in f.run_ids():
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
                    for rid in src["runs"]:
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


# --------------------------------------------------------------------------- landscape files

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


# --------------------------------------------------------------------------- embedding files

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
        fmt = _str_attr(f.attrs.get("format", ""))
        if fmt != EMBEDDING_FORMAT:
            raise FormatError(f"{path} is not a trajviz embedding file (root attribute 'format' "
                              f"is {fmt!r}, expected {EMBEDDING_FORMAT!r})")
        version = f.attrs.get("format_version")
        if not isinstance(version, (int, np.integer)) or not 1 <= int(version) <= EMBEDDING_FORMAT_VERSION:
            raise FormatError(f"{path}: embedding format_version {version!r} is not supported "
                              f"(this trajviz reads 1..{EMBEDDING_FORMAT_VERSION}); upgrade trajviz")
        if "coords" not in f or not isinstance(f["coords"], h5py.Dataset) or f["coords"].ndim != 2:
            raise FormatError(f"{path}: missing HDF5 key '/coords' (a 2-D dataset)")
        coords = np.asarray(f["coords"][()], dtype=np.float64)
        points: dict[str, np.ndarray] = {}
        for key in EMBEDDING_POINT_KEYS:
            if f"points/{key}" not in f:
                raise FormatError(f"{path}: missing HDF5 key '/points/{key}'")
        for key, ds in f["points"].items():
            if not isinstance(ds, h5py.Dataset) or ds.shape[:1] != coords.shape[:1]:
                raise FormatError(f"{path}: '/points/{key}' should have {coords.shape[0]} rows "
                                  "like '/coords'")
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
                extra[name] = obj[()]

        f.visititems(visit)
    return {"coords": coords, "points": points, "attrs": attrs, "extra": extra}
