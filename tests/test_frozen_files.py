"""Files written by earlier versions of trajviz keep reading (docs/format.md, "Versions").

tests/data/ holds small files of every kind, frozen when written (tests/data/freeze.py, which
also wrote expected.json with plain h5py): experiment files from before and after checksums,
landscape files from before and after checksums (commit 43b92e4), an embedding file and a
sweep's gathered file. Today's readers must open each and return the numbers stored in it.
A frozen file is never rewritten: if this test fails, the reader broke compatibility."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from trajviz.store import ExperimentFile, LandscapeFile

DATA = Path(__file__).resolve().parent / "data"
EXPECTED = json.loads((DATA / "expected.json").read_text())
EXPERIMENT_LIKE = ["experiment-v1.h5", "experiment-v1-before-checksums.h5", "sweep-gathered-v1.h5"]
LANDSCAPES = ["landscape-v1.h5", "landscape-v1-before-checksums.h5"]


def _same(got, entry) -> None:
    """``got`` (an array a reader returned) equals a dataset of expected.json, exactly."""
    got = np.asarray(got)
    assert list(got.shape) == entry["shape"]
    if "value" in entry:
        want = np.asarray(entry["value"], dtype=got.dtype if got.dtype.kind != "O" else object)
        if got.dtype.kind == "f":
            np.testing.assert_array_equal(got.astype(np.float64), np.asarray(entry["value"], float))
        else:
            assert got.tolist() == want.tolist()
    else:
        flat = got.astype(np.float64).ravel()
        np.testing.assert_array_equal(flat[:len(entry["head"])], entry["head"])
        assert flat.sum() == pytest.approx(entry["sum"], rel=1e-12, abs=1e-12)


def _runs(expected: dict) -> list[str]:
    return sorted({k.split("/")[2] for k in expected["datasets"] if k.startswith("/runs/")})


def test_every_kind_of_file_is_frozen():
    names = set(EXPECTED)
    assert names == {p.name for p in DATA.glob("*.h5")}
    assert set(EXPERIMENT_LIKE + LANDSCAPES + ["embedding-v1.h5"]) <= names
    for name in names:
        assert (DATA / name).stat().st_size < 256 * 1024, f"{name}: keep frozen files small"
    # the "before checksums" files are what they say: HDF5 superblock version 0 (not the 1.10
    # formats' 3) and no Fletcher-32 filter
    import h5py

    for name in names:
        superblock = (DATA / name).read_bytes()[8]
        with h5py.File(DATA / name, "r") as f:
            filtered = []
            f.visititems(lambda k, o: filtered.append(o.fletcher32)
                         if isinstance(o, h5py.Dataset) and o.chunks else None)
        if "before-checksums" in name:
            assert superblock == 0 and not any(filtered), name
        elif name.startswith(("experiment", "landscape")):  # embeddings, gathered: h5py defaults
            assert superblock == 3 and all(filtered), name


@pytest.mark.parametrize("name", EXPERIMENT_LIKE)
def test_experiment_files_read_with_their_numbers(name):
    exp = EXPECTED[name]
    ds, attrs = exp["datasets"], exp["attrs"]
    with ExperimentFile(DATA / name) as f:
        f.verify()
        assert f.run_ids() == _runs(exp)
        assert f.n_classes == attrs["/@n_classes"] and f.probe_sha256 == attrs["/@probe_sha256"]
        _same(f.probe_targets(), ds["/probe/targets"])
        assert f.config == json.loads(attrs["/@config"])
        for rid in f.run_ids():
            g = f"/runs/{rid}"
            info = f.run_info(rid)
            assert (info.status, info.seed, info.group, info.pretrain) == (
                attrs[f"{g}@status"], attrs[f"{g}@seed"], attrs[f"{g}@group"], attrs[f"{g}@pretrain"])
            assert info.status == "complete"
            assert info.n_checkpoints == ds[f"{g}/steps"]["shape"][0] > 0
            _same(f.steps(rid), ds[f"{g}/steps"])
            _same(f.epochs(rid), ds[f"{g}/epochs"])
            _same(f.outputs(rid), ds[f"{g}/outputs"])
            metrics = f.metrics(rid)
            assert sorted(metrics) == sorted(k.rsplit("/", 1)[1] for k in ds
                                             if k.startswith(f"{g}/metrics/"))
            for m, values in metrics.items():
                _same(values, ds[f"{g}/metrics/{m}"])
            params = f.params(rid)
            assert sorted(params) == sorted(k.rsplit("/", 1)[1] for k in ds
                                            if k.startswith(f"{g}/params/final/"))
            for p, values in params.items():
                _same(values, ds[f"{g}/params/final/{p}"])


def test_the_gathered_sweep_keeps_its_grid_points():
    exp = EXPECTED["sweep-gathered-v1.h5"]
    with ExperimentFile(DATA / "sweep-gathered-v1.h5") as f:
        assert f.run_ids() == ["width=3:none-seed0", "width=4:none-seed0"]
        for rid in f.run_ids():
            a = f.run_attrs(rid)
            assert json.loads(a["sweep_point"]) == json.loads(exp["attrs"][f"/runs/{rid}@sweep_point"])
            assert json.loads(a["sweep_point"])["model.width"] == int(rid[6])
            assert f.params(rid)["0.weight"].shape[0] == int(rid[6])


@pytest.mark.parametrize("name", LANDSCAPES)
def test_landscape_files_read_with_their_numbers(name):
    from trajviz.landscape import flatness_table, load_result

    exp = EXPECTED[name]
    ds, attrs = exp["datasets"], exp["attrs"]
    res = load_result(DATA / name)
    assert res.settings == json.loads(attrs["/@config"])
    assert res.kinds == ["sgd", "gaussian"]
    _same(res.alphas, ds["/alphas"])
    assert [r.run_id for r in res.runs] == _runs(exp)
    for r in res.runs:
        g = f"/runs/{r.run_id}"
        assert r.complete and attrs[f"{g}@status"] == "complete"
        assert r.loss_at_theta == (attrs[f"{g}@nll_at_theta"], attrs[f"{g}@error_at_theta"])
        assert (r.depth, r.width, r.seed) == (attrs[f"{g}@depth"], attrs[f"{g}@width"], attrs[f"{g}@seed"])
        assert r.top_eigenvalue == attrs[f"{g}/hessian@top_eigenvalue"]
        assert r.hessian_trace == attrs[f"{g}/hessian@trace"]
        for kind in res.kinds:
            for col in ("nll", "error"):
                _same(r.scans1d[kind][col], ds[f"{g}/scan1d/{kind}/{col}"])
    with LandscapeFile(DATA / name) as f:
        for r in res.runs:
            for kind in res.kinds:
                _same(f.array(f"runs/{r.run_id}/directions/{kind}"),
                      ds[f"/runs/{r.run_id}/directions/{kind}"])
    # the flatness measures are computed from the stored scans when read: finite for both runs
    table = flatness_table(res, n_boot=50)
    assert [g.label for g in table.groups] == ["depth 1, none", "depth 1, sdae"]
    assert all(np.isfinite(g.stats["curvature[sgd]"][0]) for g in table.groups)


def test_the_embedding_file_reads_with_its_numbers():
    from trajviz.trajectories import Embedding

    exp = EXPECTED["embedding-v1.h5"]
    ds, attrs = exp["datasets"], exp["attrs"]
    emb = Embedding.load(DATA / "embedding-v1.h5")
    assert emb.method == attrs["/@method"] == "pca"
    _same(emb.coords, ds["/coords"])
    _same(emb.run, ds["/points/run"])
    _same(emb.group, ds["/points/group"])
    _same(emb.step, ds["/points/step"])
    _same(emb.epoch, ds["/points/epoch"])
    _same(emb.checkpoint, ds["/points/checkpoint"])
    _same(emb.features, ds["/features"])
    assert emb.groups == ["none", "sdae"]
    assert emb.pca is not None and emb.pca.components_.shape == tuple(ds["/pca/components"]["shape"])
    for name, values in emb.metrics.items():
        _same(values, ds[f"/points/metric_{name}"])


@pytest.mark.parametrize("name", EXPERIMENT_LIKE)
def test_info_reads_every_frozen_experiment_file(name, capsys):
    from trajviz.cli import main

    assert main(["info", str(DATA / name)]) == 0
    assert "none" in capsys.readouterr().out


def test_an_old_experiment_file_can_still_be_scanned(tmp_path):
    """The landscape scan rebuilds the nets from an old file's stored config (keys added since
    take their defaults) and its final parameters."""
    from trajviz.landscape import ScanSettings, scan_file

    old = DATA / "experiment-v1-before-checksums.h5"
    res = scan_file(old, tmp_path / "l.h5", settings=ScanSettings(
        directions=("gaussian",), n_directions=1, points=3, span=0.5, n_examples=10, hessian=False))
    assert [r.run_id for r in res.runs] == ["none-seed0", "sdae-seed0"]
    assert all(np.isfinite(r.scans1d["gaussian"]["nll"]).all() for r in res.runs)


def test_a_writer_never_appends_to_a_file_of_another_version(tmp_path):
    """docs/format.md, rule 4: resuming a file of another format_version is refused, untouched."""
    import shutil

    import h5py

    from trajviz.errors import FormatError
    from trajviz.store import ExperimentWriter

    path = tmp_path / "v2.h5"
    shutil.copy(DATA / "experiment-v1.h5", path)
    with h5py.File(path, "r+") as f:
        f.attrs["format_version"] = 2
        targets, sha, n_classes = f["probe/targets"][()], f.attrs["probe_sha256"], int(f.attrs["n_classes"])
        config = f.attrs["config"]
    before = path.read_bytes()
    with pytest.raises(FormatError, match="format_version 2"):
        ExperimentWriter(path, probe_targets=targets, probe_sha=sha, n_classes=n_classes,
                         config_json=config, mode="resume")
    assert path.read_bytes() == before
