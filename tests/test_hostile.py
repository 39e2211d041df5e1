"""Hostile and corrupt files: a corpus generated at test time (truncated, bit-flipped,
wrong-schema, wrong-dtype, wrong-shape, NaN/Inf-holding, absurd-size-claiming, pickle-bearing,
not HDF5 at all), fed to every subcommand that reads trajviz files. Each must exit 1 with a
one-line error and no traceback, within a timeout, leaving the file byte-for-byte unchanged;
a bit flip that changes nothing trajviz reads may instead succeed with the clean file's output.

Commands run in processes forked from one warm server (benchmarks/fault_injection.py), so a
crash or hang inside the HDF5 library fails the test instead of killing pytest.
"""

from __future__ import annotations

import hashlib
import importlib.util
import pickle
import re
import shutil
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("fault_injection", ROOT / "benchmarks" / "fault_injection.py")
fi = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("fault_injection", fi)
_spec.loader.exec_module(fi)

TIMEOUT_S = 120  # per command; a hang is a failure


class _Payload:
    """Unpickling this would create the file named MARKER: proof that nothing unpickles."""

    marker = ""

    def __reduce__(self):
        return (Path(self.marker).touch, ())


def _mutate(src: Path, dst: Path, fn) -> Path:
    shutil.copyfile(src, dst)
    with h5py.File(dst, "r+") as f:
        fn(f)
    return dst


def _replace(f: h5py.File, key: str, **kw) -> None:
    del f[key]
    f.create_dataset(key, **kw)


def build_corpus(base: Path, out: Path, marker: Path) -> dict[str, Path]:
    """About fifty damaged variants of the valid trajviz file ``base``."""
    out.mkdir(parents=True, exist_ok=True)
    data = base.read_bytes()
    size = len(data)
    corpus: dict[str, Path] = {}

    def raw(name: str, content: bytes) -> None:
        p = out / name
        p.write_bytes(content)
        corpus[name] = p

    for frac in (0.0, 0.01, 0.1, 0.25, 0.5, 0.75, 0.95):
        raw(f"truncated-{int(frac * 100):02d}pct.h5", data[:int(size * frac)])
    raw("truncated-last-byte.h5", data[:-1])
    rng = np.random.default_rng(0)
    for i in range(12):
        flipped = bytearray(data)
        lo = 0 if i < 4 else size // 2 if i < 8 else 0  # first four hit the superblock region
        hi = 64 if i < 4 else size
        for _ in range(1 + i % 4):
            pos = int(rng.integers(lo, hi))
            flipped[pos] ^= 1 << int(rng.integers(8))
        raw(f"bitflip-{i:02d}.h5", bytes(flipped))
    raw("random-bytes.h5", rng.bytes(4096))
    raw("empty.h5", b"")
    raw("json.h5", b'{"format": "trajviz"}')
    _Payload.marker = str(marker)
    raw("raw-pickle.h5", pickle.dumps(_Payload()))
    import torch

    pt = out / "checkpoint.pt"
    torch.save({"w": torch.zeros(3), "evil": _Payload()}, pt)
    corpus["torch-checkpoint.pt"] = pt
    with h5py.File(out / "foreign.h5", "w") as f:
        f.create_dataset("x", data=np.arange(10))
    corpus["foreign.h5"] = out / "foreign.h5"

    with h5py.File(base, "r") as f:
        rid = sorted(f["runs"])[0]
        g = f["runs"][rid]
        t, n, c = g["outputs"].shape
    r = f"runs/{rid}"
    evil = np.void(pickle.dumps(_Payload()))
    mutations = {
        # wrong schema
        "schema-no-format": lambda f: f.attrs.__delitem__("format"),
        "schema-version-99": lambda f: f.attrs.__setitem__("format_version", 99),
        "schema-version-string": lambda f: f.attrs.__setitem__("format_version", "1"),
        "schema-runs-is-dataset": lambda f: (f.__delitem__("runs"), f.create_dataset("runs", data=[1])),
        "schema-no-probe": lambda f: f.__delitem__("probe"),
        "schema-run-without-steps": lambda f: f.__delitem__(f"{r}/steps"),
        "schema-run-is-dataset": lambda f: (f.__delitem__(r), f.create_dataset(r, data=[1.0])),
        "schema-metrics-is-dataset": lambda f: _replace(f, f"{r}/metrics", data=[1.0]),
        "schema-unknown-status": lambda f: f[r].attrs.__setitem__("status", "exploded"),
        "schema-config-not-json": lambda f: f.attrs.__setitem__("config", "{not json"),
        "schema-config-pickle": lambda f: f.attrs.__setitem__("config", evil),
        "schema-steps-decreasing": lambda f: _replace(f, f"{r}/steps", data=np.arange(t)[::-1]),
        # wrong dtype
        "dtype-outputs-strings": lambda f: _replace(f, f"{r}/outputs", data=np.full((t, n, c), b"x")),
        "dtype-outputs-int": lambda f: _replace(f, f"{r}/outputs", data=np.zeros((t, n, c), int)),
        "dtype-outputs-vlen": lambda f: _replace(f, f"{r}/outputs", data=["a"] * t,
                                                 dtype=h5py.string_dtype()),
        "dtype-outputs-pickle-opaque": lambda f: _replace(f, f"{r}/outputs", data=np.array([evil] * t)),
        "dtype-outputs-compound": lambda f: _replace(
            f, f"{r}/outputs", data=np.zeros((t, n, c), dtype=[("a", "f4"), ("b", "i4")])),
        "dtype-steps-float": lambda f: _replace(f, f"{r}/steps", data=np.linspace(0, 1, t)),
        "dtype-targets-float": lambda f: _replace(f, "probe/targets", data=np.zeros(n) + 0.5),
        "dtype-n-classes-string": lambda f: f.attrs.__setitem__("n_classes", "three"),
        # wrong shape
        "shape-outputs-2d": lambda f: _replace(f, f"{r}/outputs", data=np.zeros((t, n * c), "f4")),
        "shape-outputs-wrong-n": lambda f: _replace(f, f"{r}/outputs", data=np.full((t, n + 1, c), 1 / c, "f4")),
        "shape-outputs-too-few-rows": lambda f: _replace(f, f"{r}/outputs", data=np.full((t - 1, n, c), 1 / c, "f4")),
        "shape-metrics-too-short": lambda f: _replace(f, f"{r}/metrics/train_nll", data=np.zeros(t - 1)),
        "shape-steps-2d": lambda f: _replace(f, f"{r}/steps", data=np.zeros((t, 2), int)),
        # NaN / Inf / not probabilities
        "values-outputs-nan": lambda f: f[f"{r}/outputs"].__setitem__((t - 1, 0, 0), np.nan),
        "values-outputs-inf": lambda f: f[f"{r}/outputs"].__setitem__((0, n - 1, 0), np.inf),
        "values-outputs-negative": lambda f: f[f"{r}/outputs"].__setitem__((1, 0, 0), -3.0),
        "values-targets-out-of-range": lambda f: f["probe/targets"].__setitem__(0, 99),
        # absurd size claims
        "claim-steps-2e40": lambda f: _replace(f, f"{r}/steps", shape=(2**40,), dtype="i8",
                                               chunks=(256,), maxshape=(None,)),
        "claim-outputs-huge": lambda f: (
            _replace(f, f"{r}/outputs", shape=(2**31, n, c), dtype="f4", chunks=(1, n, c),
                     maxshape=(None, n, c)),
            _replace(f, f"{r}/steps", shape=(2**31,), dtype="i8", chunks=(2**16,), maxshape=(None,))),
        "claim-n-classes-1e12": lambda f: f.attrs.__setitem__("n_classes", 10**12),
        "claim-targets-huge": lambda f: _replace(f, "probe/targets", shape=(2**38,), dtype="i8",
                                                 chunks=(2**16,), maxshape=(None,)),
    }
    for name, fn in mutations.items():
        corpus[f"{name}.h5"] = _mutate(base, out / f"{name}.h5", fn)
    (out / "a-directory.h5").mkdir()
    corpus["a-directory.h5"] = out / "a-directory.h5"
    corpus["missing.h5"] = out / "missing.h5"
    return corpus


def _digest(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    from trajviz.config import config_from_dict
    from trajviz.train import record_experiment

    cfg = {"name": "base", "seeds": [0, 1],
           "dataset": {"name": "shapeset", "n_train": 60, "n_valid": 20, "n_test": 24},
           "model": {"depth": 1, "width": 6},
           "pretrain": {"methods": ["none", "sdae"], "epochs": 1},
           "train": {"epochs": 2, "lr": 0.1, "batch_size": 10}, "probe": {"n": 12},
           "record": {"every_steps": 3}}
    return record_experiment(config_from_dict(cfg), tmp_path_factory.mktemp("base") / "base.h5")


def _commands(path: Path, work: Path) -> dict[str, list[str]]:
    """Every subcommand that reads a trajviz file, with cheap settings."""
    return {
        "info": ["info", str(path)],
        "project": ["project", str(path), "-o", str(work / "p.h5"), "--method", "pca",
                    "--overwrite", "-q"],
        "divergence": ["divergence", str(path), "-o", str(work / "d.json"), "--n-boot", "5",
                       "--overwrite", "-q"],
        "landscape": ["landscape", str(path), "-o", str(work / "l.h5"), "--n-directions", "1",
                      "--points", "5", "--no-hessian", "--overwrite", "-q"],
        "plot": ["plot", "trajectories", str(path), "-o", str(work / "t.png"), "-q"],
    }


SERVER_WARM = ("trajviz.cli", "trajviz.info", "trajviz.project", "trajviz.metrics",
               "trajviz.landscape")


def check_corpus(corpus: dict[str, Path], base: Path, work: Path, server,
                 sample: dict[str, set[str]] | None = None) -> tuple[int, int, list[str]]:
    """Run the reading commands on the corpus: ``info`` on every file, any other command on
    the files ``sample[command]`` names (``sample`` None: every command on every file).
    Returns (refused properly, harmless bit flips, failures)."""
    clean: dict[str, tuple[int, str]] = {}  # each command on the clean file: exit, output
    for cmd, argv in _commands(base, work).items():
        if cmd == "info" or sample is None:
            rc = server.run(argv, cwd=work, log=work / f"clean.{cmd}.log")
            clean[cmd] = rc, (work / f"clean.{cmd}.log").read_text().replace(str(base), "FILE")
    assert clean["info"][0] == 0, clean["info"][1]
    failures: list[str] = []
    refused = harmless = 0
    for name, path in corpus.items():
        before = _digest(path)
        for cmd, argv in _commands(path, work).items():
            if cmd != "info" and sample is not None and name not in sample.get(cmd, ()):
                continue
            log = work / f"{name}.{cmd}.log"
            pid = server.start(argv, cwd=work, log=log)
            try:
                rc = server.wait(TIMEOUT_S, pid=pid)
            except TimeoutError:
                failures.append(f"{name} / {cmd}: no answer within {TIMEOUT_S} s")
                continue
            text = log.read_text()
            lines = [ln for ln in text.splitlines() if ln.strip()]
            errors = [ln for ln in lines if f"trajviz {argv[0]}: error:" in ln]
            same_as_clean = cmd in clean and (rc, text.replace(str(path), "FILE")) == clean[cmd]
            if name.startswith("bitflip") and (same_as_clean or (rc == 0 and cmd not in clean)):
                # a flip in bytes no reader uses: the command behaves as on the clean file
                harmless += 1
                continue
            if rc == 0 and name.startswith("bitflip"):
                failures.append(f"{name} / {cmd}: exit 0 with output unlike the clean file's")
                continue
            if rc != 1 or len(errors) != 1 or "Traceback" in text or len(lines) > 3:
                failures.append(f"{name} / {cmd}: exit {rc}, output {text[-600:]!r}")
            else:
                refused += 1
        if _digest(path) != before:
            failures.append(f"{name}: the input file changed")
    return refused, harmless, failures


def test_every_reading_command_refuses_every_damaged_file(tmp_path, base):
    marker = tmp_path / "UNPICKLED"
    corpus = build_corpus(base, tmp_path / "corpus", marker)
    assert len(corpus) >= 55
    work = tmp_path / "work"
    work.mkdir()
    # info on every file; the other readers on one file of each kind (all of them:
    # benchmarks/hostile_files.py)
    few = {n for n in corpus if re.search(r"bitflip-05|-50pct|dtype-outputs-pickle|"
                                          r"values-outputs-nan|claim-steps", n)}
    fewer = {n for n in corpus if re.search(r"-50pct|shape-outputs-wrong-n|torch-checkpoint", n)}
    sample = {"project": few, "divergence": few, "landscape": fewer, "plot": fewer}
    server = fi.ForkServer(warm=SERVER_WARM)
    try:
        refused, harmless, failures = check_corpus(corpus, base, work, server, sample)
    finally:
        server.close()
    assert not marker.exists(), "a pickle was unpickled"
    assert failures == [], "\n".join(failures)
    assert refused >= 60


def test_nothing_in_the_package_unpickles():
    """No pickle import, no np.load with allow_pickle, every torch.load with weights_only=True."""
    pkg = ROOT / "trajviz"
    for path in pkg.rglob("*.py"):
        text = path.read_text()
        assert not re.search(r"^\s*(import|from)\s+(c?pickle|dill|joblib|shelve)\b", text, re.M), path
        assert "allow_pickle=True" not in text, path
        for call in re.finditer(r"torch\.load\(([^)]*)\)", text):
            assert "weights_only=True" in call.group(1), f"{path}: {call.group(0)}"
