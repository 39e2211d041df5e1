"""Crash safety of trajviz files: a rollback journal.

The store (:mod:`trajviz.store`) writes an HDF5 file through :class:`WriteSession`, a file
object that HDF5 reads and writes via h5py's ``fileobj`` driver. Every change to the file
happens inside a *transaction* (one checkpoint append, one run start, ...):

1. ``begin``: take an exclusive ``flock`` on the HDF5 file (readers hold shared ones) and write
   a transaction header (the file's committed size) into the journal ``<file>-journal``;
2. before HDF5 overwrites any byte that existed at ``begin``, the 4 KiB page holding it is
   copied into the journal (with a CRC-32); bytes past the committed size need no copy;
3. ``commit``: after HDF5 has flushed, the journal is truncated back to its owner block; that
   truncation is the commit point. The lock is released.

A process killed at any moment (SIGKILL included, inside an HDF5 write or not) leaves either no
transaction in the journal, or one whose pages restore the file exactly as it was at ``begin``:
the next writer (``--resume``) copies them back and truncates the file to the committed size
(SQLite's rollback journal, at page granularity). Readers that find such a *hot* journal do not
touch the file; they read through :class:`RolledBackView`, which applies the rollback in memory.
A write that fails (disk full, file-size limit) is rolled back the same way, in-process.

Locks: :mod:`trajviz.store.lock`.

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

from trajviz.errors import FileLockedError
from trajviz.store.lock import pid_alive, try_flock

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


def _pack_owner() -> bytes:
    host = socket.gethostname().encode()[:64]
    body = _OWNER.pack(_OWNER_MAGIC, os.getpid(), time.time(), host, 0)
    crc = zlib.crc32(body[:-4])
    return _OWNER.pack(_OWNER_MAGIC, os.getpid(), time.time(), host, crc).ljust(OWNER_LEN, b"\0")


def read_owner(data: bytes) -> Owner | None:
    if len(data) < _OWNER.size:
        return None
    magic, pid, started, host, _crc = _OWNER.unpack_from(data)
    if magic != _OWNER_MAGIC:
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


class RolledBackView:
    """Read-only file object (for h5py's ``fileobj`` driver) showing a file as its interrupted
    transaction would leave it after rollback, without changing the file."""

    def __init__(self, path: str | Path, hot: HotJournal):
        self._fd = os.open(path, os.O_RDONLY)
        self._hot = hot
        self._pos = 0

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: self._hot.committed_size}[whence]
        self._pos = base + offset
        return self._pos

    def tell(self) -> int:
        return self._pos

    def readinto(self, buf) -> int:
        view = memoryview(buf).cast("B")
        n = max(0, min(len(view), self._hot.committed_size - self._pos))
        data = bytearray(os.pread(self._fd, n, self._pos).ljust(n, b"\0"))
        first, last = self._pos // PAGE, (self._pos + n - 1) // PAGE
        for p in range(first, last + 1) if n else ():
            saved = self._hot.pages.get(p * PAGE)
            if saved is None:
                continue
            lo, hi = max(p * PAGE, self._pos), min(p * PAGE + len(saved), self._pos + n)
            if lo < hi:
                data[lo - self._pos:hi - self._pos] = saved[lo - p * PAGE:hi - p * PAGE]
        view[:n] = data
        self._pos += n
        return n

    def read(self, n: int = -1) -> bytes:
        if n < 0:
            n = max(0, self._hot.committed_size - self._pos)
        buf = bytearray(n)
        got = self.readinto(buf)
        return bytes(buf[:got])

    def write(self, data) -> int:
        raise OSError(errno.EROFS, "read-only view of an interrupted file")

    def truncate(self, size: int | None = None) -> int:
        raise OSError(errno.EROFS, "read-only view of an interrupted file")

    def flush(self) -> None:
        pass

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self) -> None:  # h5py does not close the file objects it is given
        self.close()


# --------------------------------------------------------------------------- writing


class WriteSession:
    """A writer's hold on an HDF5 file: session lock, recovery, and journaled transactions.

    It is also the file object h5py writes through (``h5py.File(session, mode)``). Writes are
    allowed only inside :meth:`begin` ... :meth:`commit`; a write outside is a bug and raises.
    """

    def __init__(self, path: str | Path, *, durable: bool = False, debug_delay: float | None = None):
        self.path = Path(path)
        self.journal = journal_path(self.path)
        self.durable = durable
        if debug_delay is None:
            try:
                debug_delay = float(os.environ.get(DEBUG_DELAY_ENV, "0") or 0)
            except ValueError:
                debug_delay = 0.0
        self.debug_delay = debug_delay
        self._jfd = -1
        self._fd = -1
        self._pos = 0
        self._in_txn = False
        self._discard = False
        self._committed = 0
        self._saved: set[int] = set()
        self._jsize = 0
        self._txn_no = 0
        self.write_error: OSError | None = None
        self.recovered_pages = 0
        self._lock_session()

    # --- session lock and recovery
    def _lock_session(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(100):
            fd = os.open(self.journal, os.O_RDWR | os.O_CREAT, 0o644)
            if not try_flock(fd, fcntl.LOCK_EX, 0.5):
                owner = read_owner(os.pread(fd, OWNER_LEN, 0))
                os.close(fd)
                who = owner.describe() if owner else "another process"
                hint = ""
                if owner and owner.host == socket.gethostname() and not pid_alive(owner.pid):
                    hint = (f" (pid {owner.pid} has exited, but a process it started still holds "
                            "the lock; stop that process)")
                raise FileLockedError(
                    f"{self.path} is being written by another trajviz process ({who}){hint}; "
                    "wait for it to finish, or stop it and rerun with --resume")
            try:  # the file we locked must still be the journal (a closing writer unlinks it)
                same = os.fstat(fd).st_ino == os.stat(self.journal).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self._jfd = fd
                return
            os.close(fd)
        raise FileLockedError(f"could not lock {self.journal}: it keeps being replaced")

    def recover(self) -> bool:
        """Roll back a transaction an earlier writer left unfinished. Returns True if it did.

        Without the file, a journal left behind protects nothing and is emptied (a new file
        created in its place must not be "rolled back" with another file's pages). Waits for
        readers (they hold the file) only when there is something to roll back."""
        if not self.path.exists() or os.fstat(self._jfd).st_size < OWNER_LEN + _TXN.size:
            os.ftruncate(self._jfd, 0)
            return False
        fd = os.open(self.path, os.O_RDWR)
        try:
            if not try_flock(fd, fcntl.LOCK_EX, 600.0):
                raise FileLockedError(f"{self.path} has been held open by readers for 600 s; "
                                      "close them and try again")
            data = _read_all(self._jfd)
            hot = parse_journal(data, os.fstat(fd).st_size)
            if hot is None:
                return False
            owner = read_owner(data)
            _restore(fd, hot)
            os.fsync(fd)
            self.recovered_pages = len(hot.pages)
            log.warning("%s: rolled back a write interrupted %s (%d pages restored, file "
                        "truncated to %d bytes)", self.path,
                        f"in {owner.describe()}" if owner else "earlier", len(hot.pages),
                        hot.committed_size)
            return True
        finally:
            os.close(fd)  # drops the flock too
            os.ftruncate(self._jfd, 0)

    def open_main(self) -> None:
        """Open the HDF5 file (which must exist) and stamp the journal's owner block."""
        self._fd = os.open(self.path, os.O_RDWR)
        os.ftruncate(self._jfd, 0)
        os.pwrite(self._jfd, _pack_owner(), 0)
        self._jsize = OWNER_LEN

    # --- transactions
    def begin(self, block: bool = True, timeout: float | None = None) -> bool:
        """Start a transaction; False if readers hold the file and ``block`` is False."""
        assert not self._in_txn, "nested transaction"
        if not try_flock(self._fd, fcntl.LOCK_EX, (timeout if block else 0)):
            return False
        self._committed = os.fstat(self._fd).st_size
        self._txn_no += 1
        head = _TXN.pack(_TXN_MAGIC, self._committed, self._txn_no, 0)
        head = head[:-4] + struct.pack("<I", zlib.crc32(head[:-4]))
        os.ftruncate(self._jfd, OWNER_LEN)
        os.pwrite(self._jfd, head, OWNER_LEN)
        self._jsize = OWNER_LEN + len(head)
        self._saved = set()
        self._in_txn = True
        return True

    def commit(self) -> None:
        if self.durable:
            os.fsync(self._fd)
        os.ftruncate(self._jfd, OWNER_LEN)  # the commit point
        self._end()

    def rollback(self) -> None:
        """Undo the current transaction from the journal, in this process (e.g. after a write
        failed): the file returns to its state at :meth:`begin`."""
        try:
            hot = parse_journal(_read_all(self._jfd), os.fstat(self._fd).st_size)
            if hot is not None:
                _restore(self._fd, hot)
        except OSError:
            # the journal stays hot: readers see the rolled-back state, the next writer
            # (--resume) finishes the rollback
            self._end()
            raise
        os.ftruncate(self._jfd, OWNER_LEN)
        self._end()

    def _end(self) -> None:
        self._in_txn = False
        self._saved = set()
        fcntl.flock(self._fd, fcntl.LOCK_UN)

    def failed(self) -> bool:
        """Whether a write of the current transaction failed (and later ones were dropped)."""
        return self.write_error is not None

    def discard_writes(self) -> None:
        """From now on writes are dropped silently: lets h5py close after a failure without
        touching the file, before :meth:`rollback`."""
        self._discard = True

    @property
    def in_transaction(self) -> bool:
        return self._in_txn

    def close(self) -> None:
        """Close the file and end the session (the journal is removed: nothing is pending)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self._jfd >= 0:
            try:
                if os.fstat(self._jfd).st_size <= OWNER_LEN:
                    self.journal.unlink(missing_ok=True)
            finally:
                os.close(self._jfd)
                self._jfd = -1

    # --- the file object h5py uses
    def seek(self, offset: int, whence: int = 0) -> int:
        if whence == 0:
            self._pos = offset
        elif whence == 1:
            self._pos += offset
        else:
            self._pos = os.fstat(self._fd).st_size + offset
        return self._pos

    def tell(self) -> int:
        return self._pos

    def readinto(self, buf) -> int:
        view = memoryview(buf).cast("B")
        data = os.pread(self._fd, len(view), self._pos)
        view[:len(data)] = data
        self._pos += len(data)
        return len(data)

    def read(self, n: int = -1) -> bytes:
        if n < 0:
            n = max(0, os.fstat(self._fd).st_size - self._pos)
        data = os.pread(self._fd, n, self._pos)
        self._pos += len(data)
        return data

    def write(self, data) -> int:
        data = bytes(data)
        if self._discard:
            self._pos += len(data)
            return len(data)
        if not self._in_txn:
            raise RuntimeError(f"{self.path}: HDF5 write outside a transaction")
        try:
            self._save_pages(self._pos, self._pos + len(data))
            done = 0
            while done < len(data):
                done += os.pwrite(self._fd, data[done:], self._pos + done)
        except OSError as exc:
            # Not raised into HDF5: its error paths after a failed write of the fileobj driver
            # can crash the process. The rest of the transaction is dropped instead, and the
            # writer sees ``write_error`` and rolls back (every page touched is in the journal).
            self.write_error = self.write_error or exc
            self._discard = True
        self._pos += len(data)
        if self.debug_delay:
            time.sleep(self.debug_delay)
        return len(data)

    def truncate(self, size: int | None = None) -> int:
        if self._discard:
            return size if size is not None else self._pos
        if not self._in_txn:
            raise RuntimeError(f"{self.path}: HDF5 truncate outside a transaction")
        size = self._pos if size is None else size
        try:
            self._save_pages(size, self._committed)
            os.ftruncate(self._fd, size)
        except OSError as exc:  # as in write(): dropped, seen by the writer, rolled back
            self.write_error = self.write_error or exc
            self._discard = True
        return size

    def flush(self) -> None:
        pass

    def _save_pages(self, start: int, end: int) -> None:
        """Copy into the journal every not-yet-saved page of [start, end) below the committed
        size, before the caller overwrites it."""
        end = min(end, self._committed)
        if start >= end:
            return
        records = []
        for p in range(start // PAGE, (end - 1) // PAGE + 1):
            if p in self._saved:
                continue
            offset = p * PAGE
            body = os.pread(self._fd, min(PAGE, self._committed - offset), offset)
            crc = zlib.crc32(body, zlib.crc32(struct.pack("<QI", offset, len(body))))
            records.append(_REC.pack(_REC_MAGIC, offset, len(body), crc) + body)
            self._saved.add(p)
        if records:
            blob = b"".join(records)
            written = 0
            while written < len(blob):
                written += os.pwrite(self._jfd, blob[written:], self._jsize + written)
            self._jsize += len(blob)
            if self.durable:
                os.fsync(self._jfd)


def _restore(fd: int, hot: HotJournal) -> None:
    for offset, body in hot.pages.items():
        os.pwrite(fd, body, offset)
    os.ftruncate(fd, hot.committed_size)


def _read_all(fd: int) -> bytes:
    size = os.fstat(fd).st_size
    return os.pread(fd, size, 0) if size else b""
