"""The rollback journal on its own (trajviz.store.journal, trajviz.store.lock): recovery that
never loses the journal before the file is restored, a reader holding the file during recovery,
a recovery that fails or is killed half-way, the owner block's CRC, filesystems without flock.

Crash scenarios run in forked children that die with os._exit (as SIGKILL would: no cleanup,
the kernel drops their locks)."""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from trajviz.errors import FileLockedError, TrajvizError
from trajviz.store import ExperimentFile, ExperimentWriter
from trajviz.store import journal
from trajviz.store.journal import WriteSession, journal_path, read_hot_journal, read_owner

TARGETS = np.array([0, 1, 2, 1])


def _writer(path: Path, mode: str = "resume") -> ExperimentWriter:
    return ExperimentWriter(path, probe_targets=TARGETS, probe_sha="p", n_classes=3,
                            config_json="{}", mode=mode)


def _append(w: ExperimentWriter, run_id: str, n: int) -> None:
    run = w.start_run(run_id, seed=0, pretrain="none")
    for t in range(n):
        run.append(t, np.full((4, 3), 1 / 3, dtype=np.float32), {"train_nll": float(t)})


def _in_child(body) -> int:
    """Fork; the child runs ``body`` and exits 0 (3 if it raised) unless ``body`` exits first.
    Returns the child's exit code."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            body()
            os._exit(0)
        except BaseException:
            os._exit(3)
    _, status = os.waitpid(pid, 0)
    return os.WEXITSTATUS(status)


@pytest.fixture
def torn(tmp_path) -> tuple[Path, bytes]:
    """A trajviz file whose writer died inside an HDF5 write that overwrote existing bytes
    (garbage where the write tore): a hot journal, a damaged file. Returns the path and the
    file's bytes as they were before (what recovery must restore)."""
    path = tmp_path / "f.h5"
    with _writer(path, "create") as w:
        _append(w, "a", 3)
    original = path.read_bytes()
    ino, size0 = path.stat().st_ino, len(original)

    def resume_and_die() -> None:
        real = os.pwrite

        def pwrite(fd, data, offset):
            if offset < size0 and os.fstat(fd).st_ino == ino:  # an overwrite of the HDF5 file
                real(fd, b"\xaa" * len(data), offset)  # a torn write: garbage
                os._exit(77)
            return real(fd, data, offset)

        os.pwrite = pwrite
        with _writer(path) as w:
            _append(w, "b", 2)

    assert _in_child(resume_and_die) == 77
    assert read_hot_journal(path) is not None and path.read_bytes() != original
    return path, original


def _short_waits(monkeypatch, cap: float = 0.3) -> None:
    """Lock waits inside the journal last at most ``cap`` s (recovery waits 600 s for readers)."""
    real = journal.try_flock

    def capped(fd, how, timeout, *args, **kwargs):
        return real(fd, how, timeout if timeout is not None and timeout <= cap else cap,
                    *args, **kwargs)

    monkeypatch.setattr(journal, "try_flock", capped)


def test_recovery_restores_the_file_then_empties_the_journal(torn, monkeypatch):
    path, original = torn
    synced_while_hot = []
    real_fsync = os.fsync

    def fsync(fd):
        synced_while_hot.append(read_hot_journal(path) is not None)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    session = WriteSession(path)
    try:
        assert session.recover() is True
    finally:
        session.close()
    assert synced_while_hot and all(synced_while_hot)  # the journal outlived the restore's sync
    assert path.read_bytes() == original
    assert not journal_path(path).exists()
    with ExperimentFile(path) as f:
        assert f.run_ids() == ["a"] and f.run_info("a").n_checkpoints == 3


def test_a_reader_holding_the_file_during_recovery_leaves_journal_and_file_untouched(
        torn, monkeypatch):
    """Recovery waits for readers; when they stay, it gives up in one line and changes
    nothing, so a later recovery (once the reader is gone) still restores the file."""
    path, original = torn
    _short_waits(monkeypatch)
    torn_bytes, journal_bytes = path.read_bytes(), journal_path(path).read_bytes()
    reader = ExperimentFile(path)  # reads the rolled-back view, holds a shared lock
    try:
        assert reader.run_info("a").n_checkpoints == 3
        session = WriteSession(path)
        try:
            with pytest.raises(FileLockedError) as err:
                session.recover()
        finally:
            session.close()
        assert "\n" not in str(err.value) and "readers" in str(err.value)
        assert path.read_bytes() == torn_bytes
        assert journal_path(path).read_bytes() == journal_bytes
        with pytest.raises(FileLockedError, match="readers"):  # the same through a writer
            _writer(path)
        assert path.read_bytes() == torn_bytes
        assert journal_path(path).read_bytes() == journal_bytes
    finally:
        reader.close()
    session = WriteSession(path)
    try:
        assert session.recover() is True
    finally:
        session.close()
    assert path.read_bytes() == original


def test_a_recovery_that_fails_leaves_journal_and_file_for_the_next_attempt(torn, monkeypatch):
    path, original = torn
    journal_bytes = journal_path(path).read_bytes()
    real_restore = journal._restore

    def fails_half_way(fd, hot):
        offset, body = next(iter(hot.pages.items()))
        os.pwrite(fd, body, offset)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(journal, "_restore", fails_half_way)
    session = WriteSession(path)
    try:
        with pytest.raises(OSError) as err:
            session.recover()
    finally:
        session.close()
    assert isinstance(err.value, TrajvizError) and "\n" not in str(err.value)
    assert "disk is full" in str(err.value) and "left as they are" in str(err.value)
    assert journal_path(path).read_bytes() == journal_bytes
    monkeypatch.setattr(journal, "_restore", real_restore)
    with _writer(path) as w:  # the next writer finishes the rollback
        assert w.completed_runs() == set()
    assert not journal_path(path).exists()
    with ExperimentFile(path) as f:
        assert f.run_ids() == ["a"] and f.run_info("a").n_checkpoints == 3


def test_a_recovery_killed_half_way_is_done_again(tmp_path):
    """A raw (non-HDF5) file: an interrupted transaction that overwrote two pages and grew the
    file; the recovering process dies after restoring one page, before the truncation."""
    path = tmp_path / "raw.bin"
    original = np.random.default_rng(0).bytes(5 * journal.PAGE + 100)
    path.write_bytes(original)

    def write_and_die() -> None:
        session = WriteSession(path)
        session.recover()
        session.open_main()
        assert session.begin()
        session.file.seek(journal.PAGE + 10)
        session.file.write(b"x" * (2 * journal.PAGE))
        session.file.seek(0, 2)
        session.file.write(b"y" * 3000)
        os._exit(77)

    assert _in_child(write_and_die) == 77
    hot = read_hot_journal(path)
    assert hot is not None and len(hot.pages) == 3 and hot.committed_size == len(original)

    def recover_and_die() -> None:
        def one_page_then_die(fd, hot):
            offset, body = next(iter(hot.pages.items()))
            os.pwrite(fd, body, offset)
            os._exit(77)

        journal._restore = one_page_then_die
        WriteSession(path).recover()

    assert _in_child(recover_and_die) == 77
    assert read_hot_journal(path) is not None and path.read_bytes() != original
    session = WriteSession(path)
    try:
        assert session.recover() is True and session.recovered_pages == 3
    finally:
        session.close()
    assert path.read_bytes() == original
    assert not journal_path(path).exists()


def test_writes_outside_a_transaction_are_refused(tmp_path):
    path = tmp_path / "raw.bin"
    path.write_bytes(b"\0" * 100)
    session = WriteSession(path)
    try:
        session.open_main()
        with pytest.raises(RuntimeError, match="outside a transaction"):
            session.file.write(b"x")
    finally:
        session.close()


def test_the_owner_block_names_the_writer_and_its_crc_is_checked(tmp_path):
    path = tmp_path / "f.h5"
    w = _writer(path, "create")
    try:
        data = journal_path(path).read_bytes()[:journal.OWNER_LEN]
    finally:
        w.close()
    n = journal._OWNER.size
    assert struct.unpack_from("<I", data, n - 4)[0] == zlib.crc32(data[:n - 4])
    owner = read_owner(data)
    assert owner is not None and owner.pid == os.getpid()
    damaged = bytearray(data)
    damaged[8] ^= 0x01  # one bit of the pid
    assert read_owner(bytes(damaged)) is None  # not a wrong pid named in an error


def _no_flock(monkeypatch) -> None:
    """Make flock fail as on a filesystem without locks (ENOLCK, as NFS mounted nolock)."""
    def flock(fd, how):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", flock)


def test_a_filesystem_without_locks_is_refused_in_one_line(tmp_path, monkeypatch):
    monkeypatch.delenv("TRAJVIZ_NO_LOCKS", raising=False)
    _no_flock(monkeypatch)
    path = tmp_path / "nolocks.h5"
    with pytest.raises(TrajvizError) as err:
        _writer(path, "create")
    msg = str(err.value)
    assert "\n" not in msg and "does not support file locks" in msg and "TRAJVIZ_NO_LOCKS=1" in msg
    assert not path.exists()


def test_locks_can_be_waived_explicitly_and_that_is_said(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("TRAJVIZ_NO_LOCKS", "1")
    _no_flock(monkeypatch)
    path = tmp_path / "waived.h5"
    with caplog.at_level(logging.WARNING, logger="trajviz"):
        with _writer(path, "create") as w:
            _append(w, "a", 2)
        with ExperimentFile(path) as f:
            assert f.run_info("a").n_checkpoints == 2
    assert "no file locks" in caplog.text and "TRAJVIZ_NO_LOCKS" in caplog.text
