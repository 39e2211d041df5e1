"""Advisory locks of trajviz files.

Locks (``flock``, so they die with the process that holds them and never go stale):

* the *session lock*: exclusive, on the journal file, held by a writer for as long as it has
  the file open; a second writer fails at once with :class:`~trajviz.errors.FileLockedError`
  naming the holder (pid, host, start time from the journal's owner block);
* the *transaction lock*: on the HDF5 file itself; exclusive for a writer's transaction,
  shared for a reader's whole session. A reader therefore always sees a committed state, and
  a writer that finds readers present queues its changes in memory instead of waiting.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import time
from pathlib import Path

from trajviz.errors import FileLockedError

log = logging.getLogger(__name__)


def try_flock(fd: int, how: int, timeout: float | None, poll: float = 0.0005) -> bool:
    """Take ``flock(how)`` on fd, polling until ``timeout`` seconds (None: forever, 0: once).
    Returns False when it timed out. Filesystems without flock count as locked (logged).

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
            if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                log.debug("flock unsupported here (%s); proceeding without a lock", exc)
                return True
            raise
        if deadline is not None and time.monotonic() >= deadline:
            return False
        time.sleep(poll)
        poll = min(poll * 2, 0.002)


class ReadLock:
    """A reader's shared lock on an HDF5 file: waits (up to ``timeout`` s) for a writer's
    transaction to end, then keeps writers from changing the file until :meth:`release`."""

    def __init__(self, path: str | Path, timeout: float = 60.0):
        self.path = Path(path)
        self._fd = os.open(self.path, os.O_RDONLY)
        try:
            if not try_flock(self._fd, fcntl.LOCK_SH, timeout):
                raise FileLockedError(
                    f"{self.path} stayed locked by a writer for {timeout:g} s; try again")
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
