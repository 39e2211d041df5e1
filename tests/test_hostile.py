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
import os
import pickle
import re
import shutil
import sys
from dataclasses import dataclass, field
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


def _broken_bytes(data: bytes, out: Path, corpus: dict[str, Path], marker: Path,
                  rng: np.random.Generator) -> None:
    """Damage below HDF5: 8 truncations, 12 bit-flipped copies (4 in the superblock, 8
    anywhere), random bytes, an empty file, JSON, a raw pickle that would create ``marker``."""
    size = len(data)

    def raw(name: str, content: bytes) -> None:
        p = out / name
        p.write_bytes(content)
        corpus[name] = p

    for frac in (0.0, 0.01, 0.1, 0.25, 0.5, 0.75, 0.95):
        raw(f"truncated-{int(frac * 100):02d}pct.h5", data[:int(size * frac)])
    raw("truncated-last-byte.h5", data[:-1])
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


def build_corpus(base: Path, out: Path, marker: Path) -> dict[str, Path]:
    """About fifty damaged variants of the valid trajviz file ``base``."""
    out.mkdir(parents=True, exist_ok=True)
    data = base.read_bytes()
    corpus: dict[str, Path] = {}

    _broken_bytes(data, out, corpus, marker, np.random.default_rng(0))
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
    from trajviz.training.runner import record_experiment

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


SERVER_WARM = ("trajviz.cli", "trajviz.store.summary", "trajviz.trajectories.embedding", "trajviz.trajectories.divergence",
               "trajviz.landscape")


@dataclass
class CorpusReport:
    """What :func:`check_corpus` saw: command runs refused properly, harmless bit flips
    (behaving exactly as the clean file), undetected bit flips (exit 0 as on the clean file,
    but the numbers read differ: only where ``same_content`` is given), and failures."""

    runs: int = 0
    refused: int = 0
    harmless: int = 0
    undetected: int = 0
    failures: list[str] = field(default_factory=list)


def check_corpus(corpus: dict[str, Path], base: Path, work: Path, server,
                 sample: dict[str, set[str]] | None = None, *, commands=_commands,
                 reference: str = "info", same_content=None) -> CorpusReport:
    """Run the reading commands (``commands(path, work)``: name -> argv) on the corpus:
    ``reference`` on every file, any other command on the files ``sample[command]`` names
    (``sample`` None: every command on every file). A bit-flipped file may behave as the
    clean one; ``same_content(path)``, if given, tells whether it also reads the same numbers
    (else that run counts as undetected, not harmless)."""
    clean: dict[str, tuple[int, str]] = {}  # each command on the clean file: exit, output
    before = _digest(base)
    for cmd, argv in commands(base, work).items():
        if cmd == reference or sample is None:
            rc = server.run(argv, cwd=work, log=work / f"clean.{cmd}.log")
            clean[cmd] = rc, (work / f"clean.{cmd}.log").read_text().replace(str(base), "FILE")
    assert clean[reference][0] == 0, clean[reference][1]
    assert _digest(base) == before, "a command changed the clean file"
    report = CorpusReport()
    failures = report.failures
    for name, path in corpus.items():
        before = _digest(path)
        same: bool | None = None  # same_content(path), once it is needed
        for cmd, argv in commands(path, work).items():
            if cmd != reference and sample is not None and name not in sample.get(cmd, ()):
                continue
            report.runs += 1
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
                # the command behaves as on the clean file: a flip in bytes no reader uses,
                # or (without checksums) one that changed a number the output does not show
                if same is None:
                    same = same_content is None or same_content(path)
                if same:
                    report.harmless += 1
                else:
                    report.undetected += 1
                continue
            if rc == 0 and name.startswith("bitflip"):
                failures.append(f"{name} / {cmd}: exit 0 with output unlike the clean file's")
                continue
            if rc != 1 or len(errors) != 1 or "Traceback" in text or len(lines) > 3:
                failures.append(f"{name} / {cmd}: exit {rc}, output {text[-600:]!r}")
            else:
                report.refused += 1
        if _digest(path) != before:
            failures.append(f"{name}: the input file changed")
    return report


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
        report = check_corpus(corpus, base, work, server, sample)
    finally:
        server.close()
    assert not marker.exists(), "a pickle was unpickled"
    assert report.failures == [], "\n".join(report.failures)
    assert report.refused >= 60


def test_nothing_in_the_package_unpickles():
    """No pickle import, no np.load with allow_pickle, every torch.load with weights_only=True."""
    pkg = ROOT / "trajviz"
    for path in pkg.rglob("*.py"):
        text = path.read_text()
        assert not re.search(r"^\s*(import|from)\s+(c?pickle|dill|joblib|shelve)\b", text, re.M), path
        assert "allow_pickle=True" not in text, path
        for call in re.finditer(r"torch\.load\(([^)]*)\)", text):
            assert "weights_only=True" in call.group(1), f"{path}: {call.group(0)}"


# --------------------------------------------------------------------------- landscape files

#: the base landscape file's scan: small, with every part a reader uses (1-D and 2-D tables,
#: Hessian measures); LANDSCAPE_ARGS are the same settings as `trajviz landscape` options
LANDSCAPE_SCAN = {"directions": ("sgd",), "n_directions": 2, "points": 7, "span": 1.5,
                  "grid": True, "hessian": True, "hessian_iters": 3, "hutchinson_probes": 2}
LANDSCAPE_ARGS = ["--directions", "sgd", "--n-directions", "2", "--points", "7", "--span", "1.5",
                  "--grid", "--hessian-iters", "3", "--hutchinson-probes", "2"]


def make_landscape(experiment: Path, out: Path) -> Path:
    """A valid landscape file of ``experiment`` (about 0.3 s for the hostile base file)."""
    from trajviz.landscape import ScanSettings, scan_file

    scan_file(experiment, out, settings=ScanSettings(**LANDSCAPE_SCAN))
    return out


def build_landscape_corpus(base: Path, experiment: Path, out: Path,
                           marker: Path) -> dict[str, Path]:
    """About seventy damaged variants of the valid landscape file ``base`` (a scan of the
    trajviz file ``experiment``), in the style of :func:`build_corpus`."""
    import json

    out.mkdir(parents=True, exist_ok=True)
    corpus: dict[str, Path] = {}
    _broken_bytes(base.read_bytes(), out, corpus, marker, np.random.default_rng(1))
    corpus["experiment-file.h5"] = out / "experiment-file.h5"  # a trajviz file, not a landscape
    shutil.copyfile(experiment, corpus["experiment-file.h5"])
    with h5py.File(out / "foreign.h5", "w") as f:
        f.create_dataset("x", data=np.arange(10))
    corpus["foreign.h5"] = out / "foreign.h5"

    with h5py.File(base, "r") as f:
        rid = sorted(f["runs"])[0]
        n, a = f[f"runs/{rid}/scan1d/sgd/nll"].shape
        p = f[f"runs/{rid}/directions/sgd"].shape[1]
        config = json.loads(f.attrs["config"])
    r = f"runs/{rid}"
    t1, t2, d = f"{r}/scan1d/sgd", f"{r}/scan2d/sgd", f"{r}/directions/sgd"
    evil = np.void(pickle.dumps(_Payload()))

    def group_to_dataset(f: h5py.File, key: str) -> None:
        del f[key]
        f.create_dataset(key, data=[1.0])

    mutations = {
        # wrong schema, missing keys
        "schema-no-format": lambda f: f.attrs.__delitem__("format"),
        "schema-format-experiment": lambda f: f.attrs.__setitem__("format", "trajviz"),
        "schema-version-99": lambda f: f.attrs.__setitem__("format_version", 99),
        "schema-version-string": lambda f: f.attrs.__setitem__("format_version", "1"),
        "schema-config-not-json": lambda f: f.attrs.__setitem__("config", "{not json"),
        "schema-config-list": lambda f: f.attrs.__setitem__("config", "[1, 2]"),
        "schema-config-pickle": lambda f: f.attrs.__setitem__("config", evil),
        "schema-config-directions-number": lambda f: f.attrs.__setitem__(
            "config", json.dumps({**config, "directions": 5})),
        "schema-no-alphas": lambda f: f.__delitem__("alphas"),
        "schema-runs-is-dataset": lambda f: group_to_dataset(f, "runs"),
        "schema-run-is-dataset": lambda f: group_to_dataset(f, r),
        "schema-table-is-dataset": lambda f: group_to_dataset(f, t1),
        "schema-hessian-is-dataset": lambda f: group_to_dataset(f, f"{r}/hessian"),
        "schema-no-nll": lambda f: f.__delitem__(f"{t1}/nll"),
        "schema-no-done": lambda f: f.__delitem__(f"{t2}/done"),
        "schema-no-status": lambda f: f[r].attrs.__delitem__("status"),
        "schema-unknown-status": lambda f: f[r].attrs.__setitem__("status", "exploded"),
        # wrong kinds of attributes and datasets (the first two crashed load_result)
        "dtype-seed-string": lambda f: f[r].attrs.__setitem__("seed", "zero"),
        "dtype-depth-array": lambda f: f[r].attrs.__setitem__("depth", np.array([1, 2])),
        "dtype-width-float": lambda f: f[r].attrs.__setitem__("width", 6.5),
        "dtype-group-number": lambda f: f[r].attrs.__setitem__("group", 3),
        "dtype-status-number": lambda f: f[r].attrs.__setitem__("status", 1),
        "dtype-nll-at-theta-string": lambda f: f[r].attrs.__setitem__("nll_at_theta", "low"),
        "dtype-trace-string": lambda f: f[f"{r}/hessian"].attrs.__setitem__("trace", "big"),
        "dtype-alphas-strings": lambda f: _replace(f, "alphas", data=np.full(a, b"x")),
        "dtype-alphas-int": lambda f: _replace(f, "alphas", data=np.arange(a) - a // 2),
        "dtype-nll-strings": lambda f: _replace(f, f"{t1}/nll", data=np.full((n, a), b"x")),
        "dtype-nll-int": lambda f: _replace(f, f"{t1}/nll", data=np.zeros((n, a), int)),
        "dtype-nll-vlen": lambda f: _replace(f, f"{t1}/nll", data=["a"] * n,
                                             dtype=h5py.string_dtype()),
        "dtype-nll-pickle-opaque": lambda f: _replace(f, f"{t1}/nll", data=np.array([evil] * n)),
        "dtype-nll-compound": lambda f: _replace(
            f, f"{t1}/nll", data=np.zeros((n, a), dtype=[("a", "f4"), ("b", "i4")])),
        "dtype-done-float": lambda f: _replace(f, f"{t1}/done", data=np.ones(n)),
        "dtype-directions-strings": lambda f: _replace(f, d, data=np.full((n, p), b"x")),
        # wrong shapes (the first crashed the flatness table and the plot)
        "shape-nll-wrong-alphas": lambda f: _replace(f, f"{t1}/nll", data=np.zeros((n, a - 2))),
        "shape-nll-1d": lambda f: _replace(f, f"{t1}/nll", data=np.zeros(a)),
        "shape-nll-3d": lambda f: _replace(f, f"{t1}/nll", data=np.zeros((n, a, 1))),
        "shape-error-unlike-nll": lambda f: _replace(f, f"{t1}/error", data=np.zeros((n + 1, a))),
        "shape-grid-not-square": lambda f: _replace(f, f"{t2}/nll", data=np.zeros((a, a - 2))),
        "shape-alphas-2d": lambda f: _replace(f, "alphas", data=np.zeros((a, 1))),
        "shape-alphas-empty": lambda f: _replace(f, "alphas", data=np.zeros(0)),
        "shape-done-too-long": lambda f: _replace(f, f"{t1}/done", data=np.ones(n + 1, "u1")),
        "shape-directions-wrong-params": lambda f: _replace(f, d, data=np.zeros((n, p - 1), "f4")),
        "shape-directions-1d": lambda f: _replace(f, d, data=np.zeros(p, "f4")),
        # values no scan writes
        "values-alphas-nan": lambda f: f["alphas"].__setitem__(0, np.nan),
        "values-alphas-decreasing": lambda f: _replace(f, "alphas", data=np.linspace(1.5, -1.5, a)),
        "values-depth-negative": lambda f: f[r].attrs.__setitem__("depth", -1),
        # absurd size claims
        "claim-alphas-huge": lambda f: _replace(f, "alphas", shape=(2**33,), dtype="f8",
                                                chunks=(2**16,), maxshape=(None,)),
        "claim-directions-huge": lambda f: _replace(f, d, shape=(2**31, p), dtype="f4",
                                                    chunks=(1, p), maxshape=(None, p)),
    }
    for name, fn in mutations.items():
        corpus[f"{name}.h5"] = _mutate(base, out / f"{name}.h5", fn)
    (out / "a-directory.h5").mkdir()
    corpus["a-directory.h5"] = out / "a-directory.h5"
    corpus["missing.h5"] = out / "missing.h5"
    return corpus


def landscape_commands(experiment: Path):
    """``commands(path, work)`` for :func:`check_corpus`: every command that reads a
    landscape file, with cheap settings. ``resume`` continues the file (the scan of
    ``experiment`` with the base file's settings); not for a missing path, which it would
    create."""

    def commands(path: Path, work: Path) -> dict[str, list[str]]:
        out = {
            "plot-lines": ["plot", "landscape", str(path), "-o", str(work / "lines.png"),
                           "--overwrite", "-q"],
            "plot-contour": ["plot", "landscape", str(path), "--view", "contour",
                             "-o", str(work / "contour.png"), "--overwrite", "-q"],
        }
        if os.path.lexists(path):
            out["resume"] = ["landscape", str(experiment), "-o", str(path), *LANDSCAPE_ARGS,
                             "--bootstrap", "10", "--resume", "-q"]
        return out

    return commands


LANDSCAPE_SERVER_WARM = SERVER_WARM + ("trajviz.landscape", "trajviz.plots.landscape",
                                       "matplotlib.pyplot")


@pytest.fixture(scope="module")
def landscape_base(base, tmp_path_factory) -> Path:
    return make_landscape(base, tmp_path_factory.mktemp("landscape") / "base.landscape.h5")


@pytest.fixture(scope="module")
def landscape_corpus(base, landscape_base, tmp_path_factory) -> tuple[dict[str, Path], Path]:
    """The landscape corpus and the marker file its pickles would create."""
    out = tmp_path_factory.mktemp("landscape-corpus")
    marker = out / "UNPICKLED"
    return build_landscape_corpus(landscape_base, base, out / "corpus", marker), marker


def landscape_fingerprint(path: Path) -> str:
    """SHA-256 of everything `load_result` reads from a landscape file, bit for bit, after
    running what the reading commands compute from it (the flatness table of `trajviz
    landscape`, F9's per-run curvatures of `trajviz reproduce`)."""
    import json

    from trajviz.landscape import flatness_table, load_result
    from trajviz.reproduce.landscape import run_curvatures

    res = load_result(path)
    flatness_table(res, n_boot=10).format()
    run_curvatures(res)
    h = hashlib.sha256(json.dumps(res.settings, sort_keys=True).encode())
    h.update(res.alphas.tobytes())
    for r in res.runs:
        h.update(repr((r.run_id, r.group, r.pretrain, r.seed, r.depth, r.width, r.complete,
                       r.loss_at_theta, r.top_eigenvalue, r.hessian_trace,
                       r.hessian_trace_sem)).encode())
        for scans in (r.scans1d, r.scans2d):
            for kind in sorted(scans):
                for col in ("nll", "error"):
                    h.update(f"{kind}/{col}{scans[kind][col].shape}".encode())
                    h.update(scans[kind][col].tobytes())
    return h.hexdigest()


#: the damaged landscape files that ended in a traceback before the reader checked them
LANDSCAPE_CRASHERS = ("dtype-seed-string.h5", "dtype-depth-array.h5", "shape-nll-wrong-alphas.h5")


def test_every_damaged_landscape_file_is_refused_in_one_line_or_read_harmlessly(
        tmp_path, base, landscape_base, landscape_corpus, capsys):
    """The landscape corpus in-process (full size, through forked processes:
    benchmarks/hostile_files.py): every file through the reading library code, a sample
    through the reading commands. Each is refused with a one-line error naming the file
    (commands: exit 1, one line on stderr) or, only a bit-flipped file, read without error and
    with the clean file's numbers (metadata checksums and Fletcher-32 on the tables catch a flip
    in a stored number); no file changes."""
    from trajviz.cli import main
    from trajviz.errors import TrajvizError

    corpus, marker = landscape_corpus
    assert len(corpus) >= 70
    digests = {name: _digest(path) for name, path in corpus.items()}
    clean = landscape_fingerprint(landscape_base)
    failures, refused, same = [], 0, 0
    for name, path in corpus.items():
        try:
            fingerprint = landscape_fingerprint(path)
        except TrajvizError as exc:
            refused += 1
            if "\n" in str(exc) or str(path) not in str(exc):
                failures.append(f"{name}: not one line naming the file: {exc}")
            continue
        except Exception as exc:  # noqa: BLE001 - a traceback in the CLI
            failures.append(f"{name}: {type(exc).__name__}: {exc}")
            continue
        if not name.startswith("bitflip"):
            failures.append(f"{name}: read without an error")
        elif fingerprint != clean:
            failures.append(f"{name}: read without an error but with other numbers")
        same += 1
    assert failures == [], "\n".join(failures)
    assert refused >= 60 and same >= 1

    # the commands: the files that crashed, one of each other kind, three bit flips
    sample = set(LANDSCAPE_CRASHERS) | {n for n in corpus if re.search(
        r"-50pct|bitflip-0[035]|experiment-file|schema-config-pickle|schema-no-status|"
        r"dtype-nll-vlen|shape-grid|values-alphas-nan|claim-directions|directory|missing", n)}
    commands = landscape_commands(base)
    capsys.readouterr()
    for name in sorted(sample):
        for cmd, argv in commands(corpus[name], tmp_path).items():
            try:
                rc = main(argv)
            except BaseException as exc:  # noqa: BLE001 - would be a traceback
                rc = f"{type(exc).__name__}: {exc}"
            err = capsys.readouterr().err
            lines = err.strip().splitlines()
            if name.startswith("bitflip") and rc == 0:
                continue  # read without an error, as load_result did above
            if rc != 1 or len(lines) != 1 or "error:" not in lines[0]:
                failures.append(f"{name} / {cmd}: exit {rc}, stderr {err[-300:]!r}")
    assert failures == [], "\n".join(failures)
    assert {name: _digest(path) for name, path in corpus.items()} == digests
    assert not marker.exists(), "a pickle was unpickled"


def test_no_traceback_reaches_stderr_for_the_landscape_files_that_crashed(
        tmp_path, base, landscape_corpus):
    """Two real processes: the damaged files that used to end in a traceback now give exit 1
    and one line on stderr, through `trajviz plot landscape` and `trajviz landscape --resume`."""
    import subprocess

    corpus, _ = landscape_corpus
    commands = landscape_commands(base)
    runs = [commands(corpus["dtype-seed-string.h5"], tmp_path)["plot-lines"],
            commands(corpus["shape-nll-wrong-alphas.h5"], tmp_path)["resume"]]
    for argv in runs:
        before = _digest(Path(argv[2] if argv[0] == "plot" else argv[3]))
        proc = subprocess.run([sys.executable, "-m", "trajviz", *argv], capture_output=True,
                              text=True, timeout=TIMEOUT_S, cwd=tmp_path,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert proc.returncode == 1, proc.stderr
        assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert "expected" in proc.stderr
        assert _digest(Path(argv[2] if argv[0] == "plot" else argv[3])) == before
