"""Advisory locks of trajviz files.

Locks (``flock``, so they die with the process that holds them and never go stale):

* the *session lock* (:class:`SessionLock`): exclusive, on the journal file, held by a writer
  for as long as it has the file open; a second writer fails at once with
  :class:`~trajviz.errors.FileLockedError` naming the holder (pid, host, start time from the
  journal's owner block);
* the *transaction lock*: on the HDF5 file itself; exclusive for a writer's transaction,
  shared for a reader's whole session (:class:`ReadLock`). A reader therefore always sees a
  committed state, and a writer that finds readers present queues its changes in memory
  instead of waiting.

A filesystem without ``flock`` (some NFS mounts, some FUSE filesystems) cannot give these
guarantees: writers are refused there with :class:`~trajviz.errors.LocksUnsupportedError`
unless the environment variable ``TRAJVIZ_NO_LOCKS=1`` waives locking (the user then promises
that one process at a time writes the file); readers go on without a lock, with a warning.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import socket
import time
from pathlib import Path
from typing import Callable, Protocol

from trajviz.errors import FileLockedError, LocksUnsupportedError

log = logging.getLogger(__name__)

#: set to 1 to write files on a filesystem without flock, giving up the single-writer guarantee
NO_LOCKS_ENV = "TRAJVIZ_NO_LOCKS"
#: errno values meaning "this filesystem has no flock" (not "someone holds the lock")
_UNSUPPORTED = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)
_warned: set[str] = set()


def locks_waived() -> bool:
    """Whether ``TRAJVIZ_NO_LOCKS`` asks to go on without locks where flock is unsupported."""
    return os.environ.get(NO_LOCKS_ENV, "").strip() not in ("", "0")


def _unsupported(path: str | Path, exc: OSError) -> LocksUnsupportedError:
    return LocksUnsupportedError(
        f"{path}: this filesystem does not support file locks (flock: {exc.strerror or exc}); "
        "trajviz needs them to keep one writer per file: put the file on a local disk, or set "
        f"{NO_LOCKS_ENV}=1 to write without locks (then make sure only one process writes it)")


def try_flock(fd: int, how: int, timeout: float | None, poll: float = 0.0005, *,
              path: str | Path = "file") -> bool:
    """Take ``flock(how)`` on fd, polling until ``timeout`` seconds (None: forever, 0: once).
    Returns False when it timed out.

    On a filesystem without flock it raises :class:`LocksUnsupportedError` (naming ``path``),
    unless :func:`locks_waived`: then it warns once per path and returns True.

    Polls stay short (at most 2 ms apart): a busy writer leaves gaps of a few milliseconds
    between its transactions, and a reader polling more slowly would rarely land in one."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, how | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            pass
        except OSError as exc:
            if exc.errno not in _UNSUPPORTED:
                raise
            if not locks_waived():
                raise _unsupported(path, exc) from None
            if str(path) not in _warned:
                _warned.add(str(path))
                log.warning("%s: no file locks on this filesystem (%s); going on without them "
                            "as %s asks", path, exc.strerror or exc, NO_LOCKS_ENV)
            return True
        if deadline is not None and time.monotonic() >= deadline:
            return False
        time.sleep(poll)
        poll = min(poll * 2, 0.002)


def unlock(fd: int) -> None:
    """Drop fd's flock (a no-op where the filesystem has none: nothing was taken)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_UN)
    except OSError as exc:
        if exc.errno not in _UNSUPPORTED:
            raise


class Holder(Protocol):
    """Who holds a session lock (the journal's owner block, :class:`trajviz.store.journal.Owner`)."""

    pid: int
    host: str

    def describe(self) -> str: ...


class SessionLock:
    """A writer's exclusive lock on ``lock_path`` (the journal file, created if absent), held
    until :meth:`release`; :attr:`fd` is that file opened read-write.

    ``read_holder(fd)`` says who holds the lock, for the error when it is taken."""

    def __init__(self, path: Path, lock_path: Path,
                 read_holder: Callable[[int], Holder | None]):
        self.fd = -1
        path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(100):
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                locked = try_flock(fd, fcntl.LOCK_EX, 0.5, path=path)
            except BaseException:
                os.close(fd)
                raise
            if not locked:
                owner = read_holder(fd)
                os.close(fd)
                if (owner is not None and owner.host == socket.gethostname()
                        and owner.pid == os.getpid()):
                    raise FileLockedError(
                        f"{path} is being written by a writer of this very process "
                        f"({owner.describe()}), one that was not closed; close() it first")
                raise FileLockedError(f"{path} is being written by another trajviz process "
                                      f"({_who(owner)}); wait for it to finish, or stop it and "
                                      "reopen it with mode='resume'")
            try:  # the file we locked must still be the journal (a closing writer unlinks it)
                same = os.fstat(fd).st_ino == os.stat(lock_path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self.fd = fd
                return
            os.close(fd)
        raise FileLockedError(f"could not lock {lock_path}: it keeps being replaced")

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # drops the flock
            self.fd = -1


def _who(owner: Holder | None) -> str:
    if owner is None:
        return "another process"
    who = owner.describe()
    if owner.host == socket.gethostname() and not pid_alive(owner.pid):
        who += (f"; pid {owner.pid} has exited, but a process it started still holds the lock: "
                "stop that process")
    return who


class ReadLock:
    """A reader's shared lock on an HDF5 file: waits (up to ``timeout`` s) for a writer's
    transaction to end, then keeps writers from changing the file until :meth:`release`.
    Where the filesystem has no flock, the reader goes on unlocked with a warning (writers are
    refused there, so none can be changing the file unless ``TRAJVIZ_NO_LOCKS`` was set)."""

    def __init__(self, path: str | Path, timeout: float = 60.0):
        self.path = Path(path)
        self._fd = os.open(self.path, os.O_RDONLY)
        try:
            if not try_flock(self._fd, fcntl.LOCK_SH, timeout, path=self.path):
                raise FileLockedError(
                    f"{self.path} stayed locked by a writer for {timeout:g} s; try again")
        except LocksUnsupportedError:
            if str(self.path) not in _warned:
                _warned.add(str(self.path))
                log.warning("%s: no file locks on this filesystem; reading without a lock",
                            self.path)
        except BaseException:
            os.close(self._fd)
            raise

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # closing the descriptor drops its flock
            self._fd = -1


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
