"""What the store's writers share: an HDF5 file written through a rollback journal.

:class:`JournaledWriter` is the base of :class:`~trajviz.store.ExperimentWriter` and
:class:`~trajviz.store.LandscapeWriter`. It opens the file through a
:class:`~trajviz.store.journal.WriteSession` (session lock, recovery, journaled writes; h5py
writes through its ``file``) and makes every
change one transaction (:meth:`JournaledWriter._transaction`): a process killed at any moment,
even inside an HDF5 write, leaves the file as its last complete change left it, and a change
that fails (disk full) is rolled back in-process and reported in one line. While readers hold
the file, changes queue in memory (:meth:`JournaledWriter._submit`) instead of waiting
(docs/reliability.md).
"""

from __future__ import annotations

import atexit
import errno
import logging
import os
import weakref
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import h5py

from trajviz.errors import (FileLockedError, FormatError, OutputExistsError, StoreWriteError,
                            TrajvizError)
from trajviz.store.journal import WriteSession

log = logging.getLogger("trajviz.store")

#: queued changes (bytes) after which a writer waits for readers instead of queueing more
MAX_PENDING_BYTES = 256 * 2**20
#: how long a writer that must write waits for readers to close the file (seconds)
READER_WAIT_S = 600.0

#: writers of this process whose file is open: closed at interpreter exit if their owner did
#: not (a notebook interrupted mid-loop), before h5py's own teardown would try to write to the
#: file outside a transaction
_OPEN_WRITERS: "weakref.WeakSet[JournaledWriter]" = weakref.WeakSet()


@atexit.register
def _close_open_writers() -> None:
    for writer in list(_OPEN_WRITERS):
        writer._close_quietly()


def open_writer_of(path: str | Path) -> "JournaledWriter | None":
    """The writer of this process that has ``path`` open, if any."""
    target = os.path.realpath(path)
    for writer in list(_OPEN_WRITERS):
        if os.path.realpath(writer.path) == target:
            return writer
    return None


class JournaledWriter:
    """Base of the store's writers: one h5py file (``self._f``) written through a
    :class:`~trajviz.store.journal.WriteSession` (``self._session``), every change one transaction.

    A subclass calls :meth:`_start_session`, then :meth:`_create_file` or (after
    ``self._session.recover()``) :meth:`_open_file`, closing the session if either raises;
    it queues its changes with :meth:`_submit` and calls :meth:`_drain` before reading.
    A change that fails leaves the writer unusable (``_broken``).
    """

    #: what the file is, for error messages
    _file_kind = "trajviz file"
    #: what one change adds, for error messages ("every checkpoint written before it")
    _unit = "change"
    #: the reader class a user may have left open, for the message of a writer that waited
    _reader_name = "a reader"

    path: Path
    _f: h5py.File | None
    _session: WriteSession

    def _start_session(self, path: str | Path, durable: bool, mode: str) -> None:
        """Check ``mode`` against what is at ``path`` ("create" refuses an existing file,
        "resume" and "overwrite" take one), then take the session lock (FileLockedError if
        another writer has the file)."""
        path = Path(path)
        if mode not in ("create", "resume", "overwrite"):
            raise ValueError(f"mode {mode!r}: choose create, resume or overwrite")
        if path.exists() and mode == "create":
            raise OutputExistsError(
                f"{path} exists; pass mode='resume' to continue it or mode='overwrite' to "
                "replace it")
        if path.is_dir():
            raise FormatError(f"{path} is a directory, not a {self._file_kind}")
        self.path = path
        self._pending: list[Callable[[], None]] = []
        self._pending_bytes = 0
        self._holding = False
        self._broken: BaseException | None = None
        self._f = None
        self._session = WriteSession(self.path, durable=durable)
        self._closed = False
        self._pid = os.getpid()
        _OPEN_WRITERS.add(self)

    def _create_file(self, skeleton: Callable[[h5py.File], None],
                     libver: tuple[str, str] | None) -> None:
        """Write the file's skeleton under a temporary name and rename it into place, so an
        existing file is replaced only by a complete new one; then open it for writing.

        A journal an earlier writer left (killed mid-change) belongs to the file being replaced:
        it is used up first (the old file rolled back), so it can never be applied to the new
        one, by a reader or by the next writer, if this process dies right after the rename."""
        tmp = self.path.with_name(f".{self.path.name}.create-{os.getpid()}.tmp")
        try:
            with h5py.File(tmp, "w", libver=libver) as f:
                skeleton(f)
            self._session.recover()
            os.replace(tmp, self.path)
        finally:
            tmp.unlink(missing_ok=True)
        self._open_file(libver)

    def _open_file(self, libver: tuple[str, str] | None,
                   check: Callable[[], None] | None = None) -> None:
        """Open the existing file for writing, in a transaction (HDF5 writes when it opens a
        file r+); ``check`` runs inside it and may refuse the file by raising."""
        self._session.open_main()
        with self._transaction():
            self._f = h5py.File(self._session.file, "r+", libver=libver)
            if check is not None:
                check()

    # --- transactions
    def _begin_waiting(self) -> None:
        """Begin a transaction, waiting for readers up to ``READER_WAIT_S``."""
        if not self._session.begin(block=True, timeout=READER_WAIT_S):
            raise FileLockedError(
                f"{self.path} has been held open by readers for {READER_WAIT_S:g} s while "
                f"changes wait to be written; close them ({self._reader_name} open in this very "
                "process counts too)")

    @contextmanager
    def _transaction(self, *, begun: bool = False) -> Iterator[None]:
        """The body's HDF5 changes as one transaction: begin (waiting for readers, unless the
        caller has ``begun`` it), run the body, flush the file if it is open, commit. If the
        body or a write fails, the file is rolled back and the error raised (:meth:`_fail`)."""
        if not begun:
            self._begin_waiting()
        try:
            yield
            if self._f is not None and self._f.id.valid:
                self._f.flush()
            if self._session.failed():
                raise self._session.write_error
        except BaseException as exc:
            self._fail(exc)
        self._session.commit()

    def _submit(self, op: Callable[[], None], nbytes: int, block: bool = False) -> None:
        """Queue a change and apply the queue in one transaction, unless readers hold the
        file and neither ``block`` nor a full queue forces a wait."""
        if self._broken is not None:
            raise StoreWriteError(f"{self.path}: an earlier write failed; nothing more is "
                                  "written (reopen it with mode='resume')")
        self._pending.append(op)
        self._pending_bytes += nbytes
        if not self._holding:
            self._drain(block or self._pending_bytes > MAX_PENDING_BYTES)

    @contextmanager
    def atomic(self) -> Iterator[None]:
        """Write the changes submitted inside the block as one transaction, at its end: a
        process killed at any moment leaves all of them in the file or none (the runner writes
        a batch's checkpoint of every net and its resume state this way). Reads inside the
        block do not see its changes. If the block raises, none of its changes are written.
        A nested block is part of the outer one."""
        if self._holding:
            yield
            return
        mark, mark_bytes = len(self._pending), self._pending_bytes
        self._holding = True
        try:
            yield
        except BaseException:
            del self._pending[mark:]
            self._pending_bytes = mark_bytes
            raise
        finally:
            self._holding = False
        self._drain(self._pending_bytes > MAX_PENDING_BYTES)

    def _drain(self, block: bool) -> None:
        """Apply the queued changes in one transaction (if readers hold the file: only when
        ``block``, after waiting for them). Inside :meth:`atomic`, nothing is applied yet."""
        if not self._pending or self._broken is not None or self._holding:
            return
        if not self._session.begin(block=False):
            if not block:
                log.debug("%s is being read; %d changes queued", self.path, len(self._pending))
                return
            log.info("waiting for readers of %s to finish", self.path)
            self._begin_waiting()
        with self._transaction(begun=True):
            for op in self._pending:
                op()
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
                        "and the next writer (mode 'resume') completes the rollback", self.path, again)
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
                f"so the file holds every {self._unit} written before it; free space and "
                "reopen it with mode='resume'") from None
        if isinstance(exc, (OSError, RuntimeError, ValueError, KeyError)):
            raise StoreWriteError(f"writing {self.path} failed ({type(exc).__name__}: {exc}); "
                                  "the unfinished change was rolled back") from exc
        raise exc

    def flush(self) -> None:
        """Write every queued change now (waiting for readers if need be)."""
        self._drain(block=True)

    def close(self, *, wait: bool = True) -> None:
        """Write what is queued, close the file and end the writer session.

        ``wait=False``: do not wait for readers; what they keep from being written now is
        dropped (logged) and the file stays as its last complete change left it."""
        if self._closed:
            return
        self._closed = True
        _OPEN_WRITERS.discard(self)
        if self._f is None:
            self._session.close()
            return
        try:
            if self._session.in_transaction:  # interrupted between begin and commit (Ctrl-C)
                self._abandon_transaction()
            if self._broken is None and self._f.id.valid:
                if wait:
                    self._drain(block=True)
                    with self._transaction():
                        self._f.close()
                elif self._session.begin(block=False):
                    with self._transaction(begun=True):
                        for op in self._pending:
                            op()
                        self._pending.clear()
                        self._f.close()
                elif self._pending:
                    log.warning("%s: %d queued changes dropped: readers held the file when it "
                                "was closed", self.path, len(self._pending))
        finally:
            if self._f.id.valid:  # closing failed half-way: drop what HDF5 still wants to write
                self._session.discard_writes()
                try:
                    self._f.close()
                except Exception:  # the file on disk is the last committed state
                    pass
            self._session.close()

    def _abandon_transaction(self) -> None:
        """Roll back a transaction that was begun but never committed (an exception such as
        KeyboardInterrupt between the two); the writer is unusable afterwards."""
        self._broken = RuntimeError("a transaction was interrupted")
        self._pending.clear()
        self._session.discard_writes()
        try:
            self._session.rollback()
        except OSError as exc:
            log.warning("%s: rolling back an interrupted change failed (%s); the next writer "
                        "completes the rollback", self.path, exc)

    def _close_quietly(self) -> None:
        """Close without waiting and without raising: for a writer its owner left open (at
        interpreter exit, or when it is garbage-collected). A process forked from the owner's
        leaves the owner's writer alone."""
        if os.getpid() != getattr(self, "_pid", None):
            return
        try:
            self.close(wait=False)
        except BaseException as exc:  # nothing to raise to: the owner is gone
            log.warning("%s: closing a writer left open failed (%s); the file keeps its last "
                        "complete change", getattr(self, "path", "?"), exc)

    def __del__(self) -> None:
        if getattr(self, "_closed", True) is False:
            self._close_quietly()
