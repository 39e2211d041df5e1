"""Joint embeddings (trajviz.trajectories.embedding, trajviz.trajectories.embedders), the embedding file, the trajectory
plot and the CLI subcommands project / plot trajectories."""

from __future__ import annotations

import contextlib
import logging

import h5py
import numpy as np
import pytest
from synthetic_trajectories import two_groups, write_experiment

from trajviz.cli import main
from trajviz.errors import ConfigError, FormatError, ProbeSetMismatchError
from trajviz.trajectories import (Embedding, StreamingPCA, embed, open_experiments,
                                  parse_checkpoints, represent, select)
from trajviz.trajectories.pca import reduce_checkpoints


def knn_group_accuracy(coords: np.ndarray, group: np.ndarray, k: int = 5) -> float:
    from trajviz.trajectories.divergence import knn_accuracy, pairwise_rms_distances

    return knn_accuracy(pairwise_rms_distances(coords, 1), group, k)


@pytest.fixture
def two_h5(tmp_path):
    return write_experiment(tmp_path / "two.h5", two_groups())


# --------------------------------------------------------------------------- pieces


def test_representations():
    p = np.array([[0.25, 0.75], [1.0, 0.0]], dtype=np.float32)
    assert np.allclose(represent(p, "sqrt"), [[0.5, np.sqrt(0.75)], [1.0, 0.0]])
    assert np.isfinite(represent(p, "log")).all()
    with pytest.raises(ConfigError, match="probs, sqrt, log"):
        represent(p, "logit")


def test_parse_checkpoints():
    idx = np.arange(20)
    assert idx[parse_checkpoints("0:20:2")].tolist() == list(range(0, 20, 2))
    assert idx[parse_checkpoints("::5")].tolist() == [0, 5, 10, 15]
    assert idx[parse_checkpoints("-1")].tolist() == [19]
    assert idx[parse_checkpoints("3")].tolist() == [3]
    assert idx[parse_checkpoints(None)].tolist() == list(range(20))
    for bad in ("a:b", "1:2:3:4", "::0"):
        with pytest.raises(ConfigError, match="checkpoints"):
            parse_checkpoints(bad)


def test_streaming_pca_agrees_with_in_memory_pca():
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(0)
    X = (rng.normal(size=(150, 8)) * np.linspace(5, 1, 8)) @ rng.normal(size=(8, 300))
    X = (X + 0.01 * rng.normal(size=X.shape)).astype(np.float32)
    ref = PCA(n_components=8).fit(X)
    sp = StreamingPCA(8, batch_rows=40).fit(iter(X), len(X))
    assert sp.n_batches_ == 3
    assert np.allclose(sp.explained_variance_ratio_, ref.explained_variance_ratio_, rtol=1e-3)
    a, b = sp.transform(X), ref.transform(X)
    signs = np.sign(np.sum(a * b, axis=0))
    assert np.allclose(a * signs, b, atol=1e-2 * np.abs(b).max())


def test_streaming_reduction_of_a_file_matches_in_memory(two_h5):
    from sklearn.decomposition import PCA

    with contextlib.ExitStack() as stack:
        files = open_experiments([two_h5], stack)
        runs = select(files)
        full = np.concatenate([files[0].outputs(r.run_id) for r in runs]).reshape(96, -1)
        # a tiny memory budget forces several batches
        pca, feats = reduce_checkpoints(files, runs, "probs", 5, memory_mb=0.004)
    assert pca.n_batches_ > 2
    ref = PCA(n_components=5).fit(full)
    b = ref.transform(full)
    signs = np.sign(np.sum(feats * b, axis=0))
    top = ref.explained_variance_ratio_ > 0.05
    assert np.allclose((feats * signs)[:, top], b[:, top], atol=0.05 * np.abs(b).max())


def test_selection_groups_where_checkpoints_and_diverged(tmp_path, caplog):
    runs = two_groups(n_runs=3, T=6)
    path = write_experiment(tmp_path / "s.h5", runs, statuses={"a-1": "diverged"})
    with contextlib.ExitStack() as stack:
        files = open_experiments([path], stack)
        with caplog.at_level(logging.WARNING, logger="trajviz"):
            sel = select(files, groups=["a"], checkpoints="1::2")
        assert [r.run_id for r in sel] == ["a-0", "a-2"]
        assert "a-1" in caplog.text and "diverged" in caplog.text
        assert sel[0].checkpoints.tolist() == [1, 3, 5] and sel[0].steps.tolist() == [100, 300, 500]
        assert [r.run_id for r in select(files, where=["seed=4,5"])] == ["b-1", "b-2"]
        with pytest.raises(ConfigError, match="groups there: a, b"):
            select(files, groups=["z"])
        with pytest.raises(ConfigError, match="KEY=VALUE"):
            select(files, where=["seed"])


def test_mismatched_probe_sets_are_refused(tmp_path, two_h5):
    other = write_experiment(tmp_path / "other.h5", two_groups(n_runs=2, T=3), probe_seed=1)
    with pytest.raises(ProbeSetMismatchError, match="two.h5 and .*other.h5"):
        embed([two_h5, other], method="pca")


# --------------------------------------------------------------------------- embedding


@pytest.mark.parametrize("method", ["pca", "tsne", "isomap"])
def test_groups_apart_in_the_embedding(two_h5, method):
    emb = embed([two_h5], method=method, seed=0)
    assert emb.coords.shape == (96, 2)
    assert knn_group_accuracy(emb.coords, emb.group) >= 0.95
    assert emb.attrs["quality_trustworthiness"] > 0.8
    assert 0 < emb.attrs["quality_knn_preservation"] <= 1


def test_deterministic_given_seed(two_h5):
    short = {"n_iter": 100, "early_exaggeration_iter": 50}  # determinism, not quality, is tested
    a = embed([two_h5], method="tsne", seed=3, params=short)
    b = embed([two_h5], method="tsne", seed=3, params=short)
    assert np.array_equal(a.coords, b.coords)


def test_isomap_raises_neighbours_until_connected(tmp_path):
    path = write_experiment(tmp_path / "far.h5", two_groups(gap=40.0, noise=0.05))
    emb = embed([path], method="isomap", params={"n_neighbors": 2})
    p = emb.attrs["params"]
    assert p["n_neighbors_requested"] == 2 and p["n_neighbors"] > 2
    from trajviz.trajectories.embedders import connected_n_neighbors

    assert connected_n_neighbors(emb.features, 2) == p["n_neighbors"]


def test_unknown_method_and_param_refused(two_h5):
    with pytest.raises(ConfigError, match="tsne, isomap, umap, pca"):
        embed([two_h5], method="mds")
    with pytest.raises(ConfigError, match="takes: perplexity"):
        embed([two_h5], method="tsne", params={"perplexty": 5})
    with pytest.raises(ConfigError, match="expected float, e.g. perplexity=30"):
        embed([two_h5], method="tsne", params={"perplexity": "high"})


def test_save_load_round_trip(tmp_path, two_h5):
    emb = embed([two_h5], method="pca", dims=3, checkpoints="::3")
    emb.save(tmp_path / "e.h5")
    back = Embedding.load(tmp_path / "e.h5")
    for name in ("coords", "run", "step", "group", "epoch", "checkpoint", "source", "added"):
        assert np.array_equal(getattr(back, name), getattr(emb, name)), name
    assert back.attrs["method"] == "pca" and back.attrs["dims"] == 3
    assert back.attrs["sources"][0]["path"].endswith("two.h5")
    assert np.allclose(back.features, emb.features, atol=1e-5)
    from trajviz.errors import OutputExistsError

    with pytest.raises(OutputExistsError):
        emb.save(tmp_path / "e.h5")


@pytest.mark.parametrize("method", ["pca", "isomap", "tsne", "umap"])
def test_add_runs_keeps_old_points_and_places_new_ones_by_group(tmp_path, method):
    runs = two_groups(n_runs=8, T=6, seed=5)
    old = {k: v for k, v in runs.items() if not k.endswith(("-6", "-7"))}
    new = {k: v for k, v in runs.items() if k.endswith(("-6", "-7"))}
    f_old = write_experiment(tmp_path / "old.h5", old)
    f_new = write_experiment(tmp_path / "new.h5", new)
    base = embed([f_old], method=method, seed=0)
    base.save(tmp_path / "base.h5")
    grown = Embedding.load(tmp_path / "base.h5").add([f_new])
    assert np.array_equal(grown.coords[: len(base.coords)], base.coords)
    assert grown.added.sum() == 24 and not grown.added[: len(base.coords)].any()
    assert grown.source[grown.added].tolist() == [1] * 24
    # each new point lies nearer its own group's old points than the other group's
    cents = {g: base.coords[base.group == g].mean(axis=0) for g in ("a", "b")}
    new_pts, new_grp = grown.coords[grown.added], grown.group[grown.added]
    near = [min(cents, key=lambda g: np.linalg.norm(p - cents[g])) for p in new_pts]
    assert np.mean(np.array(near) == new_grp) >= 0.9
    # adding the same checkpoints again: nothing new
    with pytest.raises(ConfigError, match="already in the embedding"):
        grown.add([f_new])


def test_add_refuses_other_probe_set(tmp_path, two_h5):
    base = embed([two_h5], method="pca")
    other = write_experiment(tmp_path / "o.h5", two_groups(n_runs=2, T=3), probe_seed=7)
    with pytest.raises(ProbeSetMismatchError):
        base.add([other])


def test_foreign_trajviz_file_following_the_format_projects(tmp_path):
    """An experiment file written with plain h5py from docs/format.md alone."""
    runs = two_groups(n_runs=4, T=5)
    path = tmp_path / "foreign.h5"
    with h5py.File(path, "w") as f:
        f.attrs["format"] = "trajviz"
        f.attrs["format_version"] = 1
        f.attrs["probe_sha256"] = "0" * 64
        f.create_dataset("probe/targets", data=np.arange(30) % 3)
        for rid, (group, probs) in runs.items():
            g = f.create_group(f"runs/{rid}")
            g.attrs["seed"] = 0
            g.attrs["pretrain"] = group
            g.create_dataset("outputs", data=probs)
            g.create_dataset("steps", data=np.arange(5) * 10)
    emb = embed([path], method="pca")
    assert emb.coords.shape == (40, 2) and set(emb.groups) == {"a", "b"}
    assert np.all(np.isnan(emb.epoch))
    assert knn_group_accuracy(emb.coords, emb.group) >= 0.95


def test_foreign_embedding_file_loads_and_plots(tmp_path):
    """An embedding file with only the required keys of docs/format.md ("Embedding files")."""
    path = tmp_path / "foreign_emb.h5"
    with h5py.File(path, "w") as f:
        f.attrs["format"] = "trajviz-embedding"
        f.attrs["format_version"] = 1
        f.create_dataset("coords", data=np.random.default_rng(0).normal(size=(6, 2)))
        f.create_dataset("points/run", data=["r0"] * 3 + ["r1"] * 3, dtype=h5py.string_dtype())
        f.create_dataset("points/step", data=[0, 1, 2, 0, 1, 2])
        f.create_dataset("points/group", data=["x"] * 3 + ["y"] * 3, dtype=h5py.string_dtype())
    emb = Embedding.load(path)
    assert emb.groups == ["x", "y"] and emb.features is None
    assert main(["plot", "trajectories", str(path), "-o", str(tmp_path / "f.svg"), "-q"]) == 0
    with pytest.raises(FormatError, match="cannot be added"):
        emb.add([path])


def test_embedding_file_missing_key_named(tmp_path):
    path = tmp_path / "bad.h5"
    with h5py.File(path, "w") as f:
        f.attrs["format"] = "trajviz-embedding"
        f.attrs["format_version"] = 1
        f.create_dataset("coords", data=np.zeros((2, 2)))
        f.create_dataset("points/run", data=["a", "b"], dtype=h5py.string_dtype())
    with pytest.raises(FormatError, match="/points/step"):
        Embedding.load(path)


@pytest.mark.parametrize("key", ["coords", "features"])
def test_embedding_file_with_an_absurd_size_claim_is_refused_before_reading(tmp_path, key):
    """Like the other two readers, the embedding reader refuses a dataset claiming far more
    bytes than the file stores, naming it, instead of allocating what it claims."""
    path = tmp_path / "claim.h5"
    with h5py.File(path, "w") as f:
        f.attrs["format"] = "trajviz-embedding"
        f.attrs["format_version"] = 1
        rows = 2**40 if key == "coords" else 2
        f.create_dataset("coords", shape=(rows, 2), dtype="f8", chunks=(min(rows, 4096), 2))
        if key == "features":
            f.create_dataset("features", shape=(2**36, 64), dtype="f4", chunks=(64, 64))
        for name, dt in (("run", h5py.string_dtype()), ("step", "i8"), ("group", h5py.string_dtype())):
            f.create_dataset(f"points/{name}", shape=(rows,), dtype=dt, chunks=(min(rows, 4096),))
    with pytest.raises(FormatError, match=f"'/{key}' claims .* bytes"):
        Embedding.load(path)


# --------------------------------------------------------------------------- plot and CLI


def test_plot_draws_on_given_axes(two_h5):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from trajviz.plots.trajectories import plot_trajectories

    emb = embed([two_h5], method="pca")
    fig, ax = plt.subplots()
    assert plot_trajectories(ax, emb) is ax
    assert len(ax.get_lines()) == 12  # one line per run
    assert len(ax.collections) == 2 * 3  # points, starts, ends per group
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["a (6 runs)", "b (6 runs)", "start", "end"]
    assert len(ax.child_axes) == 2  # two colour bars, inset in ax
    plt.close(fig)


def test_cli_project_options_reach_the_library(tmp_path, two_h5, capsys):
    out = tmp_path / "e.h5"
    assert main(["project", str(two_h5), "--method", "tsne", "--representation", "sqrt",
                 "--pca-dims", "10", "--groups", "a", "--checkpoints", "::2", "--where", "seed=0,1,2",
                 "--param", "perplexity=3", "--param", "n_iter=100", "--seed", "7", "-o", str(out), "-q"]) == 0
    emb = Embedding.load(out)
    a = emb.attrs
    assert (a["method"], a["representation"], a["pca_dims"], a["seed"]) == ("tsne", "sqrt", 10, 7)
    assert a["params"]["perplexity"] == 3.0
    assert set(emb.group) == {"a"} and set(emb.run) == {"a-0", "a-1", "a-2"}
    assert sorted(set(emb.checkpoint)) == [0, 2, 4, 6]
    # refuse to overwrite; --overwrite replaces
    assert main(["project", str(two_h5), "--method", "pca", "-o", str(out), "-q"]) == 1
    assert "exists" in capsys.readouterr().err
    assert main(["project", str(two_h5), "--method", "pca", "-o", str(out), "--overwrite"]) == 0
    assert "pca embedding of 96 checkpoints" in capsys.readouterr().out
    # --into adds the remaining group
    grown = tmp_path / "g.h5"
    base = tmp_path / "base.h5"
    assert main(["project", str(two_h5), "--method", "isomap", "--groups", "a", "-o", str(base), "-q"]) == 0
    assert main(["project", str(two_h5), "--into", str(base), "--groups", "b", "-o", str(grown), "-q"]) == 0
    g = Embedding.load(grown)
    assert g.added.sum() == 48 and set(g.group[g.added]) == {"b"} and g.method == "isomap"


def test_cli_errors_are_one_line(tmp_path, two_h5, capsys):
    cases = [
        (["project", str(tmp_path / "missing.h5"), "-o", str(tmp_path / "x.h5")], "does not exist"),
        (["project", str(two_h5), "--checkpoints", "x", "-o", str(tmp_path / "x.h5")], "START:STOP"),
        (["project", str(two_h5), "--groups", "zz", "-o", str(tmp_path / "x.h5")], "groups there"),
        (["project", str(two_h5), "--param", "k", "-o", str(tmp_path / "x.h5")], "KEY=VALUE"),
        (["plot", "trajectories", str(two_h5), "-o", str(tmp_path / "x.png")], "not a trajviz embedding"),
    ]
    for argv, msg in cases:
        assert main(argv + ["-q"]) == 1, argv
        err = capsys.readouterr().err
        assert msg in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "x.h5").exists()


@pytest.mark.parametrize("suffix", [".pdf", ".png", ".svg"])
def test_cli_plot_trajectories_formats(tmp_path, two_h5, suffix):
    emb = embed([two_h5], method="pca")
    emb.save(tmp_path / "e.h5")
    out = tmp_path / f"fig{suffix}"
    assert main(["plot", "trajectories", str(tmp_path / "e.h5"), "-o", str(out), "-q",
                 "--groups", "b,a", "--cmaps", "Greens,Purples"]) == 0
    assert out.stat().st_size > 1000
    assert main(["plot", "trajectories", str(tmp_path / "e.h5"), "-o", str(out), "-q"]) == 1
