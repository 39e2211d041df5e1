"""MNIST from the standard IDX files, with the studies' train / valid / test split.

The data directory is ``cfg.path``, else ``$TRAJVIZ_DATA``; it must hold the four files of
LeCun's distribution (:data:`FILES`), each raw or gzipped (``.gz``). :func:`fetch` downloads them.

Split (Erhan et al. 2010): the first 50,000 images of the official training set are ``train``, the
last 10,000 are ``valid``, and the 10,000 official test images are ``test``. ``n_train``,
``n_valid`` and ``n_test`` take the first n of each of these pools (0 = the whole pool). For an
official training file of other than 60,000 images (e.g. a tiny test fixture) the valid pool is its
last sixth. Pixels are divided by 255 and stored as float32, flattened to (n, 784).

IDX format (LeCun et al., http://yann.lecun.com/exdb/mnist/): two zero bytes, a type code byte
(0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64), a byte giving the
number of dimensions, each dimension as a big-endian uint32, then the data, big-endian, row-major.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

from trajviz.config import DatasetConfig
from trajviz.data.base import Dataset, Split, resolve_sizes
from trajviz.errors import DataError, DataFileNotFoundError, DownloadError

logger = logging.getLogger(__name__)

#: The four files, without the optional ``.gz``.
TRAIN_IMAGES = "train-images-idx3-ubyte"
TRAIN_LABELS = "train-labels-idx1-ubyte"
TEST_IMAGES = "t10k-images-idx3-ubyte"
TEST_LABELS = "t10k-labels-idx1-ubyte"
FILES = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)
#: MD5 of the canonical gzipped files (as listed by torchvision's MNIST dataset).
MD5 = {
    TRAIN_IMAGES + ".gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    TRAIN_LABELS + ".gz": "d53e105ee54ea40749a09fcbcd1e9432",
    TEST_IMAGES + ".gz": "9fb629c4189551a2d022fa330f9573f3",
    TEST_LABELS + ".gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
#: A mirror of LeCun's files (the original site often refuses downloads).
BASE_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
SOURCE_PAGE = "http://yann.lecun.com/exdb/mnist/"
#: Environment variable naming the data directory when the config leaves ``path`` empty.
ENV_VAR = "TRAJVIZ_DATA"
STANDARD_SIZES = (50_000, 10_000, 10_000)
IMAGE_SHAPE = (28, 28)

_IDX_TYPES: dict[int, np.dtype] = {
    0x08: np.dtype("u1"), 0x09: np.dtype("i1"), 0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8"),
}
_IDX_CODES = {dt.newbyteorder("="): code for code, dt in _IDX_TYPES.items()}


# ----------------------------------------------------------------------------- IDX files

def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (gzipped when the name ends in ``.gz``) into an array of native byte order.

    Raises:
        DataFileNotFoundError: the file does not exist.
        DataError: the file is not a well-formed IDX file (bad magic number, unknown type,
            dimensions that disagree with the file's length, truncated or corrupt gzip).
    """
    path = Path(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                raw = f.read()
        else:
            raw = path.read_bytes()
    except FileNotFoundError:
        raise DataFileNotFoundError(f"IDX file {path} does not exist") from None
    except (OSError, EOFError) as exc:  # BadGzipFile is an OSError; a cut gzip an EOFError
        raise DataError(f"cannot read {path}: {exc} (corrupt or truncated gzip?)") from exc
    if len(raw) < 4:
        raise DataError(f"{path} is not an IDX file: {len(raw)} bytes, shorter than the "
                        "4-byte magic number")
    if raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise DataError(f"{path} is not an IDX file: bad magic number 0x{raw[:4].hex()} "
                        "(expected 0x0000, a type code in 08 09 0B 0C 0D 0E, and a dimension "
                        "count)")
    dtype = _IDX_TYPES[raw[2]]
    ndim = raw[3]
    if ndim == 0:
        raise DataError(f"{path}: IDX header declares 0 dimensions")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path} is truncated: its header needs {header} bytes for {ndim} "
                        f"dimensions, the file has {len(raw)}")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    found = len(raw) - header
    if found != expected:
        what = "truncated" if found < expected else "longer than its header says"
        raise DataError(f"{path} is {what}: dimensions {dims} need {expected} bytes of "
                        f"{dtype.name} data, the file has {found}")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims).astype(
        dtype.newbyteorder("="))


def write_idx(path: str | Path, array: np.ndarray) -> Path:
    """Write ``array`` as an IDX file, gzipped when the name ends in ``.gz``; returns the path.

    The dtype must be uint8, int8, int16, int32, float32 or float64; 1 to 255 dimensions.
    """
    path = Path(path)
    array = np.asarray(array)
    code = _IDX_CODES.get(array.dtype.newbyteorder("="))
    if code is None:
        raise DataError(f"IDX cannot store dtype {array.dtype}; use one of uint8, int8, int16, "
                        "int32, float32, float64")
    if not 1 <= array.ndim <= 255:
        raise DataError(f"IDX stores 1 to 255 dimensions, not {array.ndim}")
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    body = np.ascontiguousarray(array, dtype=_IDX_TYPES[code]).tobytes()
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as f:
        f.write(header + body)
    return path


# ----------------------------------------------------------------------------- the dataset

def data_dir(path: str | Path = "") -> Path:
    """The MNIST directory: ``path`` if given, else ``$TRAJVIZ_DATA``; error if neither is set."""
    chosen = str(path) or os.environ.get(ENV_VAR, "")
    if not chosen:
        raise DataFileNotFoundError(
            f"no data directory for mnist: set [dataset] path in the config or the {ENV_VAR} "
            f"environment variable to a directory holding {', '.join(FILES)} (raw or .gz); "
            "get them with `trajviz data fetch mnist`")
    return Path(chosen).expanduser()


def find_files(directory: str | Path) -> dict[str, Path]:
    """Map each of :data:`FILES` to its path in ``directory`` (raw preferred over ``.gz``).

    Raises DataFileNotFoundError naming the four files, the directory, and how to get them.
    """
    directory = Path(directory)
    found: dict[str, Path] = {}
    for name in FILES:
        for candidate in (directory / name, directory / (name + ".gz")):
            if candidate.is_file():
                found[name] = candidate
                break
    missing = [name for name in FILES if name not in found]
    if missing:
        raise DataFileNotFoundError(
            f"MNIST needs the four files {', '.join(FILES)} (each raw or .gz) in {directory}; "
            f"missing: {', '.join(missing)}. Get them with `trajviz data fetch mnist` or from "
            f"{BASE_URL} (original: {SOURCE_PAGE})")
    return found


def _images_and_labels(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataError(f"{images_path}: expected uint8 images of 3 dimensions (n, rows, cols), "
                        f"found {images.dtype} of shape {images.shape}")
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise DataError(f"{labels_path}: expected uint8 labels of 1 dimension, found "
                        f"{labels.dtype} of shape {labels.shape}")
    if images.shape[0] != labels.shape[0]:
        raise DataError(f"{images_path} holds {images.shape[0]} images but {labels_path} holds "
                        f"{labels.shape[0]} labels")
    if labels.size and labels.max() > 9:
        raise DataError(f"{labels_path}: labels must lie in 0..9, found {labels.max()}")
    return images, labels


def _split(images: np.ndarray, labels: np.ndarray) -> Split:
    x = images.reshape(images.shape[0], -1).astype(np.float32)
    x *= np.float32(1.0 / 255.0)
    return Split(x, labels.astype(np.int64))


def build(cfg: DatasetConfig) -> Dataset:
    """MNIST with the studies' split (see the module docstring), read from the data directory."""
    files = find_files(data_dir(cfg.path))
    train_x, train_y = _images_and_labels(files[TRAIN_IMAGES], files[TRAIN_LABELS])
    test_x, test_y = _images_and_labels(files[TEST_IMAGES], files[TEST_LABELS])
    if train_x.shape[1:] != test_x.shape[1:]:
        raise DataError(f"train images are {train_x.shape[1:]} but test images are "
                        f"{test_x.shape[1:]}")
    n_pool_valid = train_x.shape[0] // 6   # 10,000 of the official 60,000
    pools = (train_x.shape[0] - n_pool_valid, n_pool_valid, test_x.shape[0])
    sizes = resolve_sizes(cfg, pools)
    for split, n, pool in zip(("n_train", "n_valid", "n_test"), sizes, pools):
        if n > pool:
            raise DataError(f"mnist has {pool} examples for {split[2:]}, but {split} = {n}; "
                            "lower it")
    cut = pools[0]
    logger.debug("mnist sizes %s from %s", sizes, files[TRAIN_IMAGES].parent)
    return Dataset(
        name="mnist",
        train=_split(train_x[: sizes[0]], train_y[: sizes[0]]),
        valid=_split(train_x[cut: cut + sizes[1]], train_y[cut: cut + sizes[1]]),
        test=_split(test_x[: sizes[2]], test_y[: sizes[2]]),
        n_classes=10,
        image_shape=tuple(int(d) for d in train_x.shape[1:]),
    )


# ----------------------------------------------------------------------------- download

def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(dest: str | Path, *, progress: bool = True, base_url: str = BASE_URL,
          timeout: float = 30.0) -> list[Path]:
    """Download the four gzipped MNIST files into ``dest``, verifying their MD5 checksums.

    Files already present with the right checksum are skipped; each download goes to a temporary
    file in ``dest`` that is renamed into place only once its checksum matches, so an interrupted
    fetch never leaves a partial file under the final name.

    Args:
        dest: directory to fill (created if needed).
        progress: show a tqdm bar per file.
        base_url: mirror holding the files under their canonical names.
        timeout: seconds to wait for the server on each request.

    Returns:
        The four paths ``dest/<name>.gz`` in the order of :data:`FILES`.

    Raises:
        DownloadError: the server cannot be reached, answers with an error, or sends bytes
            whose checksum does not match.
    """
    from trajviz.progress import progress_bar

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in FILES:
        target = dest / (name + ".gz")
        paths.append(target)
        want = MD5[target.name]
        if target.is_file():
            if _md5(target) == want:
                logger.info("%s is present and valid; skipping", target)
                continue
            logger.warning("%s has a wrong checksum; downloading it again", target)
        url = base_url.rstrip("/") + "/" + target.name
        logger.info("downloading %s", url)
        fd, tmp_name = tempfile.mkstemp(dir=dest, prefix="." + target.name + ".", suffix=".part")
        tmp = Path(tmp_name)
        try:
            digest = hashlib.md5()
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
                total = int(resp.headers.get("Content-Length") or 0) or None
                with progress_bar(enabled=progress, total=total, unit="B", unit_scale=True,
                                  desc=target.name) as bar:
                    for block in iter(lambda: resp.read(1 << 16), b""):
                        out.write(block)
                        digest.update(block)
                        bar.update(len(block))
            got = digest.hexdigest()
            if got != want:
                raise DownloadError(
                    f"checksum mismatch for {url}: md5 {got}, expected {want}; the mirror sent "
                    "wrong bytes; retry, or pass another base_url")
            os.replace(tmp, target)
        except DownloadError:
            raise
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise DownloadError(
                f"cannot download {url}: {reason}; check the network, or put the four files "
                f"{', '.join(FILES)} (.gz) in {dest} by hand (from {SOURCE_PAGE})") from exc
        finally:
            tmp.unlink(missing_ok=True)
    return paths
