"""Crash safety of trajviz files: a rollback journal.

The store (:mod:`trajviz.store`) writes an HDF5 file through a :class:`WriteSession`. Every
change to the file happens inside a *transaction* (one checkpoint append, one run start, ...):

1. ``begin``: take an exclusive ``flock`` on the HDF5 file (readers hold shared ones) and write
   a transaction header (the file's committed size) into the journal ``<file>-journal``;
2. before HDF5 overwrites any byte that existed at ``begin``, the 4 KiB page holding it is
   copied into the journal (with a CRC-32); bytes past the committed size need no copy;
3. ``commit``: after HDF5 has flushed, the journal is truncated back to its owner block; that
   truncation is the commit point. The lock is released.

A process killed at any moment (SIGKILL included, inside an HDF5 write or not) leaves either no
transaction in the journal, or one whose pages restore the file exactly as it was at ``begin``:
the next writer (``--resume``) copies them back, truncates the file to the committed size, syncs
it, and only then empties the journal (SQLite's rollback journal, at page granularity). A
recovery that cannot finish (readers keep the file open, a write fails) leaves journal and file
as they were, so the next attempt starts over; restoring is idempotent, so a recovery killed
half-way is simply done again. Readers that find such a *hot* journal do not touch the file;
they read through :class:`RolledBackView`, which applies the rollback in memory. A write that
fails (disk full, file-size limit) is rolled back the same way, in-process.

The parts: :class:`Journal` (the journal file: owner block, transaction header, page records),
:class:`JournaledFile` (the file object h5py writes through, which saves pages into the journal
before overwriting them), :class:`RolledBackView` (what readers see of an interrupted file), and
:class:`WriteSession`, a writer's hold on the file, tying them to the session lock
(:mod:`trajviz.store.lock`).

Guarantees cover process death (SIGKILL, OOM kill, a failed write) while the machine stays
up. They do not cover an operating-system crash or power loss unless ``durable=True`` (fsync of
the journal before the file is overwritten and of the file before commit).
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import socket
import struct
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

from trajviz.errors import FileLockedError, StoreWriteError
from trajviz.store.lock import SessionLock, try_flock, unlock

log = logging.getLogger(__name__)

JOURNAL_SUFFIX = "-journal"
PAGE = 4096

_OWNER_MAGIC = b"TVJOWN01"
_OWNER = struct.Struct("<8sQd64sI")  # magic, pid, start time (s since epoch), host, crc32
OWNER_LEN = 128
_TXN_MAGIC = b"TVJTXN01"
_TXN = struct.Struct("<8sQQI")  # magic, committed size, transaction number, crc32
_REC_MAGIC = b"TVRC"
_REC = struct.Struct("<4sQII")  # magic, offset, length, crc32 of (offset, length, data)

#: how long recovery waits for readers to close a file it must roll back (seconds)
RECOVERY_WAIT_S = 600.0
#: testing hook (docs/reliability.md): seconds to sleep after every write HDF5 makes, which
#: widens the window in which a fault-injection kill lands inside an HDF5 write
DEBUG_DELAY_ENV = "TRAJVIZ_DEBUG_WRITE_DELAY"


def journal_path(path: str | Path) -> Path:
    """Where the journal of the HDF5 file ``path`` lives: ``<path>-journal``."""
    path = Path(path)
    return path.with_name(path.name + JOURNAL_SUFFIX)


# --------------------------------------------------------------------------- journal parsing


@dataclass(frozen=True)
class Owner:
    """Who holds (or last held) a writer session: read from the journal's owner block."""

    pid: int
    host: str
    started: float

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.started))
        return f"pid {self.pid} on {self.host}, since {when}"


@dataclass(frozen=True)
class HotJournal:
    """An interrupted transaction: the file's committed size and the pages to restore."""

    committed_size: int
    pages: dict[int, bytes]  # offset -> original bytes


def pack_owner(pid: int | None = None, host: str | None = None,
               started: float | None = None) -> bytes:
    """The owner block (``OWNER_LEN`` bytes) naming this process (or the given one); its
    CRC-32 covers the packed magic, pid, start time and host."""
    body = _OWNER.pack(_OWNER_MAGIC, os.getpid() if pid is None else pid,
                       time.time() if started is None else started,
                       (socket.gethostname() if host is None else host).encode()[:64], 0)[:-4]
    return (body + struct.pack("<I", zlib.crc32(body))).ljust(OWNER_LEN, b"\0")


def read_owner(data: bytes) -> Owner | None:
    """The owner block at the start of ``data``, or None if absent or damaged (its CRC)."""
    if len(data) < _OWNER.size:
        return None
    magic, pid, started, host, crc = _OWNER.unpack_from(data)
    if magic != _OWNER_MAGIC or zlib.crc32(data[:_OWNER.size - 4]) != crc:
        return None
    return Owner(pid=int(pid), host=host.rstrip(b"\0").decode(errors="replace"), started=started)


def parse_journal(data: bytes, file_size: int) -> HotJournal | None:
    """The transaction a journal holds, or None when it holds none (committed or never begun).

    A record cut short or failing its CRC ends the list: a record is written whole before the
    page it saves is overwritten, so a torn record means its page was never touched.
    """
    if len(data) < OWNER_LEN + _TXN.size:
        return None
    magic, committed, _txn, crc = _TXN.unpack_from(data, OWNER_LEN)
    if magic != _TXN_MAGIC or zlib.crc32(data[OWNER_LEN:OWNER_LEN + _TXN.size - 4]) != crc:
        return None  # a header torn while being written: the file was not yet touched
    pages: dict[int, bytes] = {}
    pos = OWNER_LEN + _TXN.size
    while pos + _REC.size <= len(data):
        rmagic, offset, length, rcrc = _REC.unpack_from(data, pos)
        body = data[pos + _REC.size:pos + _REC.size + length]
        if rmagic != _REC_MAGIC or len(body) != length:
            break
        if zlib.crc32(body, zlib.crc32(struct.pack("<QI", offset, length))) != rcrc:
            break
        pages.setdefault(int(offset), body)
        pos += _REC.size + length
    if not pages and file_size == committed:
        return None
    return HotJournal(committed_size=int(committed), pages=pages)


def read_hot_journal(path: str | Path) -> HotJournal | None:
    """The interrupted transaction left in ``path``'s journal, if any (reads, never writes)."""
    jpath = journal_path(path)
    try:
        data = jpath.read_bytes()
        size = os.stat(path).st_size
    except FileNotFoundError:
        return None
    return parse_journal(data, size)


def _restore(fd: int, hot: HotJournal) -> None:
    """Put the saved pages back and cut the file to its committed size (idempotent)."""
    for offset, body in hot.pages.items():
        os.pwrite(fd, body, offset)
    os.ftruncate(fd, hot.committed_size)


def _read_all(fd: int) -> bytes:
    size = os.fstat(fd).st_size
    return os.pread(fd, size, 0) if size else b""


# --------------------------------------------------------------------------- file objects


class _FileObject:
    """What h5py's ``fileobj`` driver calls to read: ``seek``, ``tell``, ``read``, ``readinto``,
    over a subclass's :meth:`_size` and :meth:`_pread`."""

    _pos = 0

    def _size(self) -> int:
        raise NotImplementedError

    def _pread(self, n: int, offset: int) -> bytes:
        raise NotImplementedError

    def seek(self, offset: int, whence: int = 0) -> int:
        if whence not in (0, 1, 2):
            raise ValueError(f"whence {whence!r}: 0, 1 or 2")
        base = (0, self._pos, self._size() if whence == 2 else 0)[whence]
        self._pos = base + offset
        return self._pos

    def tell(self) -> int:
        return self._pos

    def readinto(self, buf) -> int:
        view = memoryview(buf).cast("B")
        data = self._pread(len(view), self._pos)
        view[:len(data)] = data
        self._pos += len(data)
        return len(data)

    def read(self, n: int = -1) -> bytes:
        if n < 0:
            n = max(0, self._size() - self._pos)
        data = self._pread(n, self._pos)
        self._pos += len(data)
        return data

    def flush(self) -> None:
        pass


class RolledBackView(_FileObject):
    """Read-only file object (for h5py's ``fileobj`` driver) showing a file as its interrupted
    transaction would leave it after rollback, without changing the file."""

    def __init__(self, path: str | Path, hot: HotJournal):
        self._fd = os.open(path, os.O_RDONLY)
        self._hot = hot

    def _size(self) -> int:
        return self._hot.committed_size

    def _pread(self, n: int, offset: int) -> bytes:
        n = max(0, min(n, self._hot.committed_size - offset))
        data = bytearray(os.pread(self._fd, n, offset).ljust(n, b"\0"))
        for p in range(offset // PAGE, (offset + n - 1) // PAGE + 1) if n else ():
            saved = self._hot.pages.get(p * PAGE)
            if saved is None:
                continue
            lo, hi = max(p * PAGE, offset), min(p * PAGE + len(saved), offset + n)
            if lo < hi:
                data[lo - offset:hi - offset] = saved[lo - p * PAGE:hi - p * PAGE]
        return bytes(data)

    def write(self, data) -> int:
        raise OSError(errno.EROFS, "read-only view of an interrupted file")

    def truncate(self, size: int | None = None) -> int:
        raise OSError(errno.EROFS, "read-only view of an interrupted file")

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self) -> None:  # h5py does not close the file objects it is given
        self.close()


class Journal:
    """The journal file ``<file>-journal`` of one HDF5 file, open read-write on ``fd`` by the
    writer holding its session lock: an owner block, then (inside a transaction) a header with
    the file's committed size and a record per saved page."""

    def __init__(self, fd: int, durable: bool = False):
        self.fd = fd
        self.durable = durable
        self._size = os.fstat(fd).st_size
        self._txn_no = 0
        self._committed = 0
        self._saved: set[int] = set()

    def read_all(self) -> bytes:
        return _read_all(self.fd)

    def holds_transaction(self) -> bool:
        """Whether the journal is long enough to hold a transaction header (maybe committed)."""
        return os.fstat(self.fd).st_size >= OWNER_LEN + _TXN.size

    def clear(self) -> None:
        """Empty the journal: nothing is left to roll back."""
        os.ftruncate(self.fd, 0)
        self._size = 0

    def stamp_owner(self) -> None:
        """Start this writer's journal: just the owner block naming this process."""
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, pack_owner(), 0)
        self._size = OWNER_LEN

    def begin(self, committed_size: int) -> None:
        """Write the header of a transaction on a file of ``committed_size`` bytes."""
        self._committed = committed_size
        self._txn_no += 1
        head = _TXN.pack(_TXN_MAGIC, committed_size, self._txn_no, 0)[:-4]
        head += struct.pack("<I", zlib.crc32(head))
        os.ftruncate(self.fd, OWNER_LEN)
        os.pwrite(self.fd, head, OWNER_LEN)
        self._size = OWNER_LEN + len(head)
        self._saved = set()

    def save_pages(self, fd: int, start: int, end: int) -> None:
        """Copy into the journal every not-yet-saved page of bytes [start, end) of ``fd`` that
        lies below the committed size, before the caller overwrites it."""
        end = min(end, self._committed)
        if start >= end:
            return
        records = []
        for p in range(start // PAGE, (end - 1) // PAGE + 1):
            if p in self._saved:
                continue
            offset = p * PAGE
            body = os.pread(fd, min(PAGE, self._committed - offset), offset)
            crc = zlib.crc32(body, zlib.crc32(struct.pack("<QI", offset, len(body))))
            records.append(_REC.pack(_REC_MAGIC, offset, len(body), crc) + body)
            self._saved.add(p)
        if records:
            blob = b"".join(records)
            written = 0
            while written < len(blob):
                written += os.pwrite(self.fd, blob[written:], self._size + written)
            self._size += len(blob)
            if self.durable:
                os.fsync(self.fd)

    def end_transaction(self) -> None:
        """Truncate back to the owner block: the commit point (or the end of a rollback)."""
        os.ftruncate(self.fd, OWNER_LEN)
        self._size = OWNER_LEN
        self._saved = set()

    @property
    def committed_size(self) -> int:
        return self._committed


class JournaledFile(_FileObject):
    """The file object h5py writes through (``h5py.File(session.file, mode)``).

    Writes are allowed only inside a transaction (``in_transaction``); each one first saves
    the pages it overwrites into ``journal``. A failed write (disk full) is not raised into
    HDF5: the rest of the transaction is dropped and :attr:`write_error` set, for the writer to
    roll back."""

    def __init__(self, path: Path, journal: Journal, debug_delay: float = 0.0):
        self.path = path
        self._fd = os.open(path, os.O_RDWR)
        self._journal = journal
        self.debug_delay = debug_delay
        self.in_transaction = False
        self.discard = False
        self.write_error: OSError | None = None

    @property
    def fd(self) -> int:
        return self._fd

    def _size(self) -> int:
        return os.fstat(self._fd).st_size

    def _pread(self, n: int, offset: int) -> bytes:
        return os.pread(self._fd, n, offset)

    def write(self, data) -> int:
        data = bytes(data)
        if self.discard:
            self._pos += len(data)
            return len(data)
        if not self.in_transaction:
            raise RuntimeError(f"{self.path}: HDF5 write outside a transaction")
        try:
            self._journal.save_pages(self._fd, self._pos, self._pos + len(data))
            done = 0
            while done < len(data):
                done += os.pwrite(self._fd, data[done:], self._pos + done)
        except OSError as exc:
            # Not raised into HDF5: its error paths after a failed write of the fileobj driver
            # can crash the process. The rest of the transaction is dropped instead, and the
            # writer sees ``write_error`` and rolls back (every page touched is in the journal).
            self.write_error = self.write_error or exc
            self.discard = True
        self._pos += len(data)
        if self.debug_delay:
            time.sleep(self.debug_delay)
        return len(data)

    def truncate(self, size: int | None = None) -> int:
        if self.discard:
            return size if size is not None else self._pos
        if not self.in_transaction:
            raise RuntimeError(f"{self.path}: HDF5 truncate outside a transaction")
        size = self._pos if size is None else size
        try:
            self._journal.save_pages(self._fd, size, self._journal.committed_size)
            os.ftruncate(self._fd, size)
        except OSError as exc:  # as in write(): dropped, seen by the writer, rolled back
            self.write_error = self.write_error or exc
            self.discard = True
        return size

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


# --------------------------------------------------------------------------- the writer's session


def _debug_delay() -> float:
    try:
        return float(os.environ.get(DEBUG_DELAY_ENV, "0") or 0)
    except ValueError:
        return 0.0


class WriteSession:
    """A writer's hold on an HDF5 file: the session lock (taken here, FileLockedError if
    another writer has the file), :meth:`recover`, and journaled transactions
    (:meth:`begin` ... :meth:`commit` or :meth:`rollback`) on :attr:`file`, the object h5py
    writes through, available after :meth:`open_main`."""

    def __init__(self, path: str | Path, *, durable: bool = False, debug_delay: float | None = None):
        self.path = Path(path)
        self.journal_path = journal_path(self.path)
        self.durable = durable
        self.debug_delay = _debug_delay() if debug_delay is None else debug_delay
        self.recovered_pages = 0
        self.file: JournaledFile | None = None
        self._lock = SessionLock(self.path, self.journal_path,
                                 lambda fd: read_owner(os.pread(fd, OWNER_LEN, 0)))
        self._journal = Journal(self._lock.fd, durable)

    # --- recovery
    def recover(self, reader_wait: float | None = None) -> bool:
        """Roll back a transaction an earlier writer left unfinished. Returns True if it did.

        The journal is emptied only once the file is restored and synced: a recovery that
        cannot finish (readers hold the file for ``reader_wait`` s, default
        ``RECOVERY_WAIT_S``: FileLockedError; a failed write: StoreWriteError) leaves journal
        and file as they were, and the next attempt starts over. Without the file, a journal
        left behind protects nothing and is emptied (a new file created in its place must not
        be "rolled back" with another file's pages)."""
        if not self.path.exists() or not self._journal.holds_transaction():
            self._journal.clear()
            return False
        wait = RECOVERY_WAIT_S if reader_wait is None else reader_wait
        fd = os.open(self.path, os.O_RDWR)
        try:
            if not try_flock(fd, fcntl.LOCK_EX, wait, path=self.path):
                raise FileLockedError(
                    f"{self.path} has an unfinished change to roll back, but readers have held "
                    f"it open for {wait:g} s; close them and try again (the file and its journal "
                    "are left as they are)")
            data = self._journal.read_all()
            hot = parse_journal(data, os.fstat(fd).st_size)
            if hot is None:
                self._journal.clear()
                return False
            try:
                _restore(fd, hot)
                os.fsync(fd)
            except OSError as exc:
                raise StoreWriteError(
                    f"{self.path}: rolling back an unfinished change failed ({_reason(exc)}); "
                    f"the file and its journal {self.journal_path.name} are left as they are "
                    "(readers see the rolled-back state): fix the cause and reopen it with "
                    "mode='resume'"
                ) from None
            self._journal.clear()  # only now: the restore is complete and on disk
        finally:
            os.close(fd)  # drops the flock too
        owner = read_owner(data)
        self.recovered_pages = len(hot.pages)
        log.warning("%s: rolled back a write interrupted %s (%d pages restored, file "
                    "truncated to %d bytes)", self.path,
                    f"in {owner.describe()}" if owner else "earlier", len(hot.pages),
                    hot.committed_size)
        return True

    def open_main(self) -> None:
        """Open the HDF5 file (which must exist) as :attr:`file` and stamp the journal's owner
        block."""
        self.file = JournaledFile(self.path, self._journal, self.debug_delay)
        self._journal.stamp_owner()

    # --- transactions
    def begin(self, block: bool = True, timeout: float | None = None) -> bool:
        """Start a transaction; False if readers hold the file and ``block`` is False."""
        f = self._opened()
        assert not f.in_transaction, "nested transaction"
        if not try_flock(f.fd, fcntl.LOCK_EX, (timeout if block else 0), path=self.path):
            return False
        self._journal.begin(os.fstat(f.fd).st_size)
        f.in_transaction = True
        return True

    def commit(self) -> None:
        f = self._opened()
        if self.durable:
            os.fsync(f.fd)
        self._journal.end_transaction()  # the commit point
        self._end()

    def rollback(self) -> None:
        """Undo the current transaction from the journal, in this process (e.g. after a write
        failed): the file returns to its state at :meth:`begin`."""
        f = self._opened()
        try:
            hot = parse_journal(self._journal.read_all(), os.fstat(f.fd).st_size)
            if hot is not None:
                _restore(f.fd, hot)
                if self.durable:
                    os.fsync(f.fd)
        except OSError:
            # the journal stays hot: readers see the rolled-back state, the next writer
            # (--resume) finishes the rollback
            self._end()
            raise
        self._journal.end_transaction()
        self._end()

    def _end(self) -> None:
        f = self._opened()
        f.in_transaction = False
        unlock(f.fd)

    def _opened(self) -> JournaledFile:
        if self.file is None:
            raise RuntimeError(f"{self.path}: open_main() first")
        return self.file

    def failed(self) -> bool:
        """Whether a write of the current transaction failed (and later ones were dropped)."""
        return self.file is not None and self.file.write_error is not None

    @property
    def write_error(self) -> OSError | None:
        return None if self.file is None else self.file.write_error

    def discard_writes(self) -> None:
        """From now on writes are dropped silently: lets h5py close after a failure without
        touching the file, before :meth:`rollback`."""
        if self.file is not None:
            self.file.discard = True

    @property
    def in_transaction(self) -> bool:
        return self.file is not None and self.file.in_transaction

    def close(self) -> None:
        """Close the file and end the session. The journal is removed when it holds nothing to
        roll back; a hot one stays, for readers and the next writer."""
        if self.file is not None:
            self.file.close()
        if self._lock.fd >= 0:
            try:
                if os.fstat(self._lock.fd).st_size <= OWNER_LEN:
                    self.journal_path.unlink(missing_ok=True)
            finally:
                self._lock.release()


def _reason(exc: OSError) -> str:
    reason = f"{exc.strerror or exc} (errno {exc.errno})" if exc.errno else str(exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        reason += ": the disk is full"
    return reason
