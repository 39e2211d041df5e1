"""The HDF5 store: the only package that imports h5py. The layout is a public contract,
documented in docs/format.md; bump ``FORMAT_VERSION`` on any breaking change.

Write side: :class:`ExperimentWriter` (one per file) hands out :class:`RunWriter` objects that
append checkpoints; :class:`LandscapeWriter` writes landscape scans row by row. Every change (an
append, a run start, a row, an attribute) is one transaction of a rollback journal
(:mod:`trajviz.store.journal`), so a process killed at any moment, even inside an HDF5 write, leaves the
file as the last complete change left it (docs/reliability.md). Read side:
:class:`ExperimentFile` (and :class:`LandscapeFile`), which may read while a writer writes;
:class:`ExperimentFile` validates what it reads, and turns any read failure into a
:class:`~trajviz.errors.FormatError` naming the HDF5 key.

Submodules, one per concern (everything is re-exported here; import from ``trajviz.store``):

* :mod:`trajviz.store.journal`: the rollback journal: :class:`~trajviz.store.journal.Journal`
  (the journal file), :class:`~trajviz.store.journal.JournaledFile` (the file object h5py
  writes through), :class:`~trajviz.store.journal.WriteSession` (a writer's hold on a file:
  session lock, recovery, transactions), :class:`~trajviz.store.journal.RolledBackView` for
  readers; :mod:`trajviz.store.lock`: the advisory locks (session lock, read lock, refusal of
  filesystems without ``flock``).
* :mod:`trajviz.store.journaled`: :class:`JournaledWriter`, the base of both writers: the
  session, one transaction per change, rollback and the one-line error of a failed write, the
  queue of changes while readers hold the file.
* :mod:`trajviz.store.experiment`: format constants, run status values, :func:`probe_sha256`,
  the writer (:class:`ExperimentWriter`, :class:`RunWriter`) and the private helpers the other
  submodules share.
* :mod:`trajviz.store.resume`: the resume state a writer keeps under ``/resume`` so an
  interrupted training continues mid-run (:meth:`ExperimentWriter.write_resume_state`).
* :mod:`trajviz.store.reader`: :class:`ExperimentFile`, :class:`RunInfo`,
  :func:`open_for_reading` and the validation limits for hostile files.
* :mod:`trajviz.store.gather`: :class:`ShardSource`, :func:`gather`, :func:`read_root_attrs`.
* :mod:`trajviz.store.landscape`: :class:`LandscapeWriter`, :class:`LandscapeFile`.
* :mod:`trajviz.store.embedding`: :func:`write_embedding`, :func:`read_embedding`.
* :mod:`trajviz.store.summary`: :func:`summarize`, what ``trajviz info`` prints (not
  re-exported: it needs the training package's checkpoint selection).
"""

from trajviz.store.journaled import MAX_PENDING_BYTES, READER_WAIT_S, JournaledWriter
from trajviz.store.experiment import (COMPLETE, DIVERGED, FORMAT, FORMAT_VERSION, LIBVER,
                                      METRIC_NAMES, RUNNING, SPLITS, ExperimentWriter, ProbeInputsRecord,
                                      RunWriter,
                                      _append, _check_readable, _CHECKSUMMED, _first_difference,
                                      _natural_key, _READ_ERRORS, _str_attr, probe_sha256)
from trajviz.store.reader import (_MAX_CLAIM_RATIO, _MAX_CLAIM_SLACK, _MAX_CLASSES, _PROB_TOL,
                                  ExperimentFile, RunInfo, _guarded, open_for_reading)
from trajviz.store.gather import ShardSource, _reading, gather, read_root_attrs
from trajviz.store.landscape import (LANDSCAPE_FORMAT, LANDSCAPE_FORMAT_VERSION, LandscapeFile,
                                     LandscapeWriter)
from trajviz.store.embedding import (EMBEDDING_FORMAT, EMBEDDING_FORMAT_VERSION,
                                     EMBEDDING_POINT_KEYS, _read_embedding, read_embedding,
                                     write_embedding)

__all__ = [
    "COMPLETE", "DIVERGED", "EMBEDDING_FORMAT", "EMBEDDING_FORMAT_VERSION", "EMBEDDING_POINT_KEYS",
    "ExperimentFile", "ExperimentWriter", "FORMAT", "FORMAT_VERSION", "LANDSCAPE_FORMAT",
    "LANDSCAPE_FORMAT_VERSION", "LIBVER", "LandscapeFile", "LandscapeWriter", "MAX_PENDING_BYTES",
    "METRIC_NAMES", "ProbeInputsRecord", "READER_WAIT_S", "RUNNING", "RunInfo", "RunWriter", "SPLITS", "ShardSource",
    "gather", "open_for_reading", "probe_sha256", "read_embedding", "read_root_attrs",
    "write_embedding",
]
