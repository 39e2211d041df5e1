"""The error hierarchy: every error trajviz raises on purpose derives from :class:`TrajvizError`.

Subclasses also inherit the matching builtin (as zarr does), so ``except FileNotFoundError``
keeps working for callers who do not know trajviz. The CLI turns any ``TrajvizError`` into a
one-line message and a non-zero exit code; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class TrajvizError(Exception):
    """Base class of all errors trajviz raises deliberately."""


class ConfigError(TrajvizError, ValueError):
    """A config key is unknown, or its value is not allowed."""


class DataError(TrajvizError, ValueError):
    """A dataset cannot be built or read as asked."""


class DataFileNotFoundError(TrajvizError, FileNotFoundError):
    """A data file the dataset needs is missing."""


class FormatError(TrajvizError, ValueError):
    """A file is not a trajviz file, or breaks the format contract (docs/format.md)."""


class InputFileNotFoundError(TrajvizError, FileNotFoundError):
    """A file given to read does not exist."""


class OutputExistsError(TrajvizError, FileExistsError):
    """An output file exists and neither resume nor overwrite was asked for."""


class FileLockedError(TrajvizError, OSError):
    """Another live process is writing the file."""


class LocksUnsupportedError(TrajvizError, OSError):
    """The file's filesystem has no ``flock``, so the single-writer guarantee cannot be kept
    (``TRAJVIZ_NO_LOCKS=1`` waives it)."""


class TrainingDivergedError(TrajvizError, FloatingPointError):
    """The loss of a run became NaN or infinite."""


class DownloadError(TrajvizError, OSError):
    """A download failed: no network, an HTTP error, or a checksum that does not match."""


class ProbeSetMismatchError(TrajvizError, ValueError):
    """Files to be compared were recorded on different probe sets (``probe_sha256`` differs)."""


class StoreWriteError(TrajvizError, OSError):
    """Writing a trajviz file failed (disk full, file-size limit, I/O error); the unfinished
    change was rolled back, so the file holds everything written before it."""


class ModelOutputError(TrajvizError, ValueError):
    """A model's outputs cannot be recorded as class probabilities of the declared kind (e.g.
    ``output="probs"`` but values outside [0, 1]); nothing was written."""


class MissingExtraError(TrajvizError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""
