"""Background writes: store writes of a checkpoint run on a worker thread, off the training
loop's critical path (the training runner submits each checkpoint's writes as one job;
:class:`DeferredRun` queues a run's calls one by one)."""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any, Callable

log = logging.getLogger(__name__)


class BackgroundWriter:
    """Runs store writes one at a time, in submission order, on a worker thread.

    HDF5 writes of a checkpoint then overlap the next training steps (torch releases the GIL in
    its kernels). At most ``max_pending`` writes wait; :meth:`submit` blocks beyond that, so a
    slow disk slows training instead of filling memory. An exception raised by a write is
    re-raised in the caller's thread by the next :meth:`submit`, :meth:`flush` or :meth:`close`;
    writes after a failed one are dropped (the run stays unfinished, for resume to redo).

    Arrays handed to a write must not change afterwards: pass copies of live tensors.

    Between two writes the worker pauses ``pause_s`` seconds: each write is a transaction under
    the file's exclusive lock, and a live reader (``trajviz info`` on a running experiment)
    polls for the shared lock, so back-to-back writes of a backlog would starve it.
    """

    _STOP = object()

    def __init__(self, max_pending: int = 64, pause_s: float = 0.002):
        self._queue: queue.Queue = queue.Queue(maxsize=max_pending)
        self._pause_s = pause_s
        self._error: BaseException | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._work, name="trajviz-writer", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is self._STOP:
                    return
                if self._error is None:
                    fn, args, kwargs = item
                    fn(*args, **kwargs)
                    if self._pause_s and not self._queue.empty():
                        time.sleep(self._pause_s)
            except BaseException as exc:  # handed to the caller's thread
                self._error = exc
            finally:
                self._queue.task_done()

    def _raise(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Queue ``fn(*args, **kwargs)``."""
        if self._closed:
            raise RuntimeError("BackgroundWriter is closed")
        self._raise()
        self._queue.put((fn, args, kwargs))

    def flush(self) -> None:
        """Wait until every queued write is done; re-raise a write's exception."""
        self._queue.join()
        self._raise()

    def close(self) -> None:
        """Finish the queued writes and stop the thread; re-raise a write's exception."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(self._STOP)
        self._thread.join()
        self._raise()

    def __enter__(self) -> "BackgroundWriter":
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        if exc_type is None:
            self.close()
        else:  # keep the original exception; still drain the writes already queued
            try:
                self.close()
            except Exception:
                log.exception("a background write failed while handling another error")


class DeferredRun:
    """A :class:`~trajviz.record.RunRecorder` whose writes go through a :class:`BackgroundWriter`.

    Same methods as the run it wraps (``append``, ``save_params``, ``set_attrs``, ``finish``);
    each is queued, in order, instead of run now.
    """

    def __init__(self, run: Any, writer: BackgroundWriter):
        self._run = run
        self._writer = writer
        self.run_id = run.run_id

    def append(self, *args: Any, **kwargs: Any) -> None:
        self._writer.submit(self._run.append, *args, **kwargs)

    def save_params(self, *args: Any, **kwargs: Any) -> None:
        self._writer.submit(self._run.save_params, *args, **kwargs)

    def set_attrs(self, **attrs: Any) -> None:
        self._writer.submit(self._run.set_attrs, **attrs)

    def finish(self, *args: Any, **kwargs: Any) -> None:
        self._writer.submit(self._run.finish, *args, **kwargs)
