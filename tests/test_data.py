"""Tests of the dataset builders: generators, IDX files, MNIST loading and download."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import threading
from pathlib import Path

import numpy as np
import pytest

from trajviz.config import DATASETS, DatasetConfig
from trajviz.data import BUILDERS, load_dataset
from trajviz.data import mnist, shapeset, shapeset3x2
from trajviz.errors import DataError, DataFileNotFoundError, DownloadError, TrajvizError


def test_registry_matches_config():
    assert tuple(DATASETS) == tuple(BUILDERS)


# ----------------------------------------------------------------------------- Shapeset

def test_shapeset_deterministic_and_seed_dependent():
    x1, y1 = shapeset.generate(600, 3)
    x2, y2 = shapeset.generate(600, 3)
    x3, _ = shapeset.generate(600, 4)
    assert x1.tobytes() == x2.tobytes() and np.array_equal(y1, y2)
    assert not np.array_equal(x1, x3)


@pytest.mark.parametrize("n", [1, 7, 1000])
def test_shapeset_shapes_range_balance(n):
    x, y = shapeset.generate(n, 0)
    assert x.shape == (n, 100) and x.dtype == np.float32 and y.dtype == np.int64
    assert x.min() >= 0.0 and x.max() <= 1.0
    counts = np.bincount(y, minlength=2)
    assert counts.sum() == n and abs(counts[0] - counts[1]) <= 1


def test_shapeset_shapes_inside_and_antialiased():
    x, _ = shapeset.generate(2000, 1)
    img = x.reshape(-1, 10, 10)
    # Every image has ink, partial-coverage pixels exist (anti-aliasing), background is 0.
    assert np.all(img.max(axis=(1, 2)) >= shapeset.GREY_RANGE[0] * 0.5)
    partial = (x > 0) & (x < x.max(axis=1, keepdims=True) - 1e-6)
    assert partial.any(axis=1).mean() > 0.9
    assert np.all((x == 0).sum(axis=1) > 40)


def test_shapeset_shape_matters_ink_does_not():
    from sklearn.linear_model import LogisticRegression

    x, y = shapeset.generate(3000, 10)
    xt, yt = shapeset.generate(1500, 11)
    pixels = LogisticRegression(max_iter=300).fit(x, y).score(xt, yt)
    ink = x.sum(axis=1, keepdims=True)
    ink_t = xt.sum(axis=1, keepdims=True)
    ink_acc = LogisticRegression().fit(ink, y).score(ink_t, yt)
    assert pixels > 0.6, pixels
    assert ink_acc < 0.6, ink_acc


def test_shapeset_build_sizes_and_split_independence():
    ds = load_dataset(DatasetConfig(name="shapeset", n_train=20, n_valid=10, n_test=11, seed=5))
    assert (len(ds.train), len(ds.valid), len(ds.test)) == (20, 10, 11)
    assert ds.n_classes == 2 and ds.image_shape == (10, 10) and ds.n_inputs == 100
    assert not np.array_equal(ds.train.x[:10], ds.valid.x)
    other = load_dataset(DatasetConfig(name="shapeset", n_train=30, n_valid=10, n_test=11,
                                       seed=5))
    assert np.array_equal(ds.valid.x, other.valid.x)


def test_shapeset_standard_sizes():
    assert shapeset.STANDARD_SIZES == (50_000, 10_000, 10_000)


# ----------------------------------------------------------------------------- Shapeset-3x2

def test_shapeset3x2_deterministic_shapes_balance():
    x1, y1, _ = shapeset3x2.generate(300, 2)
    x2, y2, _ = shapeset3x2.generate(300, 2)
    x3, _, _ = shapeset3x2.generate(300, 3)
    assert x1.tobytes() == x2.tobytes() and np.array_equal(y1, y2)
    assert not np.array_equal(x1, x3)
    assert x1.shape == (300, 1024) and x1.dtype == np.float32
    assert x1.min() >= 0 and x1.max() <= 1
    counts = np.bincount(y1, minlength=9)
    assert counts.max() - counts.min() <= 1
    assert len(shapeset3x2.LABELS) == 9 == len(set(shapeset3x2.LABELS))


def test_shapeset3x2_labels_agree_with_objects():
    x, y, drawing = shapeset3x2.generate(600, 7, n_coverage=40)
    for label, kinds in zip(y, drawing.kinds):
        present = tuple(sorted(int(k) for k in kinds if k >= 0))
        assert shapeset3x2.LABELS[label] == present
    # Both orders of a mixed pair occur (the first object is not always the lower kind).
    mixed = drawing.kinds[(drawing.kinds[:, 1] >= 0) & (drawing.kinds[:, 0] != drawing.kinds[:, 1])]
    assert (mixed[:, 0] > mixed[:, 1]).any() and (mixed[:, 0] < mixed[:, 1]).any()
    # The kept coverage maps recompose the images and show absent objects as empty.
    cov, g = drawing.coverage, drawing.grey[:40]
    recomposed = g[:, 0, None, None] * cov[:, 0] * (1 - cov[:, 1]) + g[:, 1, None, None] * cov[:, 1]
    np.testing.assert_allclose(recomposed.reshape(40, -1), x[:40], atol=1e-6)
    single = drawing.kinds[:40, 1] < 0
    assert np.all(cov[single, 1] == 0) and np.all(cov[~single, 1].sum(axis=(1, 2)) > 10)
    assert np.all(cov[:, 0].sum(axis=(1, 2)) > 10)


def test_shapeset3x2_overlap_at_most_half():
    _, _, drawing = shapeset3x2.generate(900, 8, n_coverage=100)
    assert drawing.overlap.max() <= shapeset3x2.MAX_OVERLAP
    assert drawing.overlap[drawing.kinds[:, 1] < 0].max() == 0
    assert (drawing.overlap > 0.05).any()  # overlaps do happen, the limit is not vacuous
    cov = drawing.coverage
    pixel_overlap = (cov[:, 0] * cov[:, 1]).sum(axis=(1, 2)) / cov[:, 0].sum(axis=(1, 2))
    assert pixel_overlap.max() <= shapeset3x2.MAX_OVERLAP + 0.05


def test_shapeset3x2_build():
    ds = load_dataset(DatasetConfig(name="shapeset3x2", n_train=30, n_valid=9, n_test=9))
    assert ds.n_classes == 9 and ds.image_shape == (32, 32) and ds.n_inputs == 1024
    assert (len(ds.train), len(ds.valid), len(ds.test)) == (30, 9, 9)


# ----------------------------------------------------------------------------- IDX files

@pytest.mark.parametrize("dtype", ["u1", "i1", "i2", "i4", "f4", "f8"])
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_round_trip(tmp_path, dtype, suffix):
    rng = np.random.default_rng(0)
    arr = (rng.uniform(-100, 100, size=(3, 4, 5))).astype(dtype)
    path = mnist.write_idx(tmp_path / f"a-idx3{suffix}", arr)
    back = mnist.read_idx(path)
    assert back.dtype == arr.dtype and back.shape == arr.shape
    np.testing.assert_array_equal(back, arr)


def test_idx_reference_bytes(tmp_path):
    path = mnist.write_idx(tmp_path / "labels", np.array([7, 2], dtype=np.uint8))
    assert path.read_bytes() == bytes([0, 0, 8, 1, 0, 0, 0, 2, 7, 2])


def _header(code: int, dims: tuple[int, ...]) -> bytes:
    return bytes([0, 0, code, len(dims)]) + np.asarray(dims, dtype=">u4").tobytes()


@pytest.mark.parametrize("raw, match", [
    (b"\x00\x00", "shorter than"),
    (bytes([1, 0, 8, 1, 0, 0, 0, 1, 5]), "magic"),
    (bytes([0, 0, 0x42, 1, 0, 0, 0, 1, 5]), "magic"),
    (bytes([0, 0, 8, 0]), "0 dimensions"),
    (bytes([0, 0, 8, 3, 0, 0, 0, 2]), "header needs"),
    (_header(8, (2, 3)) + bytes(5), "truncated"),
    (_header(8, (2, 3)) + bytes(7), "longer than"),
    (_header(0x0C, (2,)) + bytes(4), "truncated"),
])
def test_idx_malformed_rejected(tmp_path, raw, match):
    path = tmp_path / "bad-idx"
    path.write_bytes(raw)
    with pytest.raises(DataError, match=match):
        mnist.read_idx(path)


def test_idx_truncated_gzip_and_missing(tmp_path):
    good = mnist.write_idx(tmp_path / "x.gz", np.zeros((50, 50), np.uint8))
    cut = tmp_path / "cut.gz"
    cut.write_bytes(good.read_bytes()[:-20])
    with pytest.raises(DataError, match="gzip"):
        mnist.read_idx(cut)
    notgz = tmp_path / "plain.gz"
    notgz.write_bytes(b"not gzip at all")
    with pytest.raises(DataError):
        mnist.read_idx(notgz)
    with pytest.raises(DataFileNotFoundError):
        mnist.read_idx(tmp_path / "nope")


def test_write_idx_rejects_unstorable(tmp_path):
    with pytest.raises(DataError, match="dtype"):
        mnist.write_idx(tmp_path / "a", np.zeros(3, np.int64))


# ----------------------------------------------------------------------------- MNIST

def _fake_mnist(directory: Path, n_train: int = 60, n_test: int = 12, gz: bool = False,
                n_train_labels: int | None = None) -> None:
    rng = np.random.default_rng(0)
    sfx = ".gz" if gz else ""
    mnist.write_idx(directory / (mnist.TRAIN_IMAGES + sfx),
                    rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8))
    mnist.write_idx(directory / (mnist.TRAIN_LABELS + sfx),
                    np.arange(n_train_labels or n_train, dtype=np.uint8) % 10)
    mnist.write_idx(directory / (mnist.TEST_IMAGES + sfx),
                    rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8))
    mnist.write_idx(directory / (mnist.TEST_LABELS + sfx),
                    np.arange(n_test, dtype=np.uint8) % 10)


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_split_and_scaling(tmp_path, gz):
    _fake_mnist(tmp_path, gz=gz)
    ds = load_dataset(DatasetConfig(name="mnist", path=str(tmp_path)))
    assert (len(ds.train), len(ds.valid), len(ds.test)) == (50, 10, 12)
    raw = mnist.read_idx(tmp_path / (mnist.TRAIN_IMAGES + (".gz" if gz else "")))
    np.testing.assert_allclose(ds.train.x, raw[:50].reshape(50, -1) / 255.0, rtol=1e-6)
    np.testing.assert_allclose(ds.valid.x, raw[50:].reshape(10, -1) / 255.0, rtol=1e-6)
    assert ds.train.x.dtype == np.float32 and ds.train.y.dtype == np.int64
    assert ds.valid.y[0] == 50 % 10
    assert ds.n_classes == 10 and ds.image_shape == (28, 28)
    small = load_dataset(DatasetConfig(name="mnist", path=str(tmp_path), n_train=5, n_valid=3,
                                       n_test=4))
    np.testing.assert_array_equal(small.valid.x, ds.valid.x[:3])
    with pytest.raises(DataError, match="n_test = 13"):
        load_dataset(DatasetConfig(name="mnist", path=str(tmp_path), n_test=13))


def test_mnist_env_var(tmp_path, monkeypatch):
    _fake_mnist(tmp_path)
    monkeypatch.setenv(mnist.ENV_VAR, str(tmp_path))
    assert len(load_dataset(DatasetConfig(name="mnist")).test) == 12
    monkeypatch.delenv(mnist.ENV_VAR)
    with pytest.raises(DataFileNotFoundError, match="TRAJVIZ_DATA"):
        load_dataset(DatasetConfig(name="mnist"))


def test_mnist_missing_files_message(tmp_path):
    mnist.write_idx(tmp_path / mnist.TRAIN_LABELS, np.zeros(3, np.uint8))
    with pytest.raises(DataFileNotFoundError) as info:
        load_dataset(DatasetConfig(name="mnist", path=str(tmp_path)))
    message = str(info.value)
    for name in mnist.FILES:
        assert name in message
    assert str(tmp_path) in message and "trajviz data fetch mnist" in message
    assert isinstance(info.value, FileNotFoundError)


def test_mnist_count_mismatch(tmp_path):
    _fake_mnist(tmp_path, n_train_labels=59)
    with pytest.raises(DataError, match="60 images but .* 59 labels"):
        load_dataset(DatasetConfig(name="mnist", path=str(tmp_path)))


def test_mnist_wrong_dimensions(tmp_path):
    _fake_mnist(tmp_path)
    mnist.write_idx(tmp_path / mnist.TEST_IMAGES, np.zeros((12, 784), np.uint8))
    with pytest.raises(DataError, match="3 dimensions"):
        load_dataset(DatasetConfig(name="mnist", path=str(tmp_path)))


# ----------------------------------------------------------------------------- fetch

def test_fetch_without_network(tmp_path):
    with pytest.raises(DownloadError) as info:
        mnist.fetch(tmp_path, progress=False, base_url="http://127.0.0.1:9/", timeout=5)
    assert isinstance(info.value, TrajvizError)
    assert "\n" not in str(info.value) and "127.0.0.1:9" in str(info.value)
    assert list(tmp_path.iterdir()) == []  # no partial files left behind


@pytest.fixture
def local_server(tmp_path):
    """Serve ``tmp_path / 'www'`` over HTTP on 127.0.0.1; yields (directory, base_url, log)."""
    www = tmp_path / "www"
    www.mkdir()
    log: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):  # keep test output quiet; record the paths
            log.append(self.path)

    handler = functools.partial(Handler, directory=str(www))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield www, f"http://127.0.0.1:{server.server_address[1]}/", log
    finally:
        server.shutdown()
        server.server_close()


def test_fetch_checksum_mismatch(tmp_path, local_server):
    www, url, _ = local_server
    for name in mnist.FILES:
        (www / (name + ".gz")).write_bytes(b"wrong bytes")
    dest = tmp_path / "dest"
    with pytest.raises(DownloadError, match="checksum mismatch"):
        mnist.fetch(dest, progress=False, base_url=url)
    assert list(dest.iterdir()) == []


def test_fetch_downloads_verifies_and_skips(tmp_path, local_server, monkeypatch):
    www, url, log = local_server
    _fake_mnist(www, gz=True)
    monkeypatch.setattr(mnist, "MD5", {
        p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in www.iterdir()})
    dest = tmp_path / "dest"
    paths = mnist.fetch(dest, progress=False, base_url=url)
    assert [p.name for p in paths] == [n + ".gz" for n in mnist.FILES]
    assert sorted(p.name for p in dest.iterdir()) == sorted(p.name for p in paths)
    assert len(load_dataset(DatasetConfig(name="mnist", path=str(dest))).train) == 50
    n_requests = len(log)
    mnist.fetch(dest, progress=False, base_url=url)
    assert len(log) == n_requests  # everything present and valid: nothing downloaded
    (dest / (mnist.TEST_LABELS + ".gz")).write_bytes(gzip.compress(b"corrupted"))
    mnist.fetch(dest, progress=False, base_url=url)
    assert len(log) == n_requests + 1
