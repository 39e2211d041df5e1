"""InPCA, aligned UMAP and PHATE behind `trajviz project --method`: reference values against a
direct computation, planted groups kept apart on a file written by plain h5py, --into for InPCA."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from synthetic_trajectories import two_groups
from trajviz.cli import main
from trajviz.errors import ConfigError
from trajviz.trajectories import Embedding, embed
from trajviz.trajectories.inpca import InPCA, bhattacharyya_distances


def _knn_group_accuracy(coords, group, k=3):
    from trajviz.trajectories.divergence import knn_accuracy, pairwise_rms_distances

    return knn_accuracy(pairwise_rms_distances(coords, 1), group, k=k)


def write_foreign(path, runs, n_probe=30, n_classes=3):
    """An experiment file written with plain h5py from docs/format.md alone."""
    with h5py.File(path, "w") as f:
        f.attrs["format"] = "trajviz"
        f.attrs["format_version"] = 1
        f.attrs["probe_sha256"] = "0" * 64
        f.create_dataset("probe/targets", data=np.arange(n_probe) % n_classes)
        for i, (rid, (group, probs)) in enumerate(runs.items()):
            g = f.create_group(f"runs/{rid}")
            g.attrs["seed"] = i
            g.attrs["pretrain"] = group
            g.create_dataset("outputs", data=probs)
            g.create_dataset("steps", data=np.arange(probs.shape[0]) * 10)
    return path


@pytest.fixture(scope="module")
def foreign(tmp_path_factory):
    d = tmp_path_factory.mktemp("modern")
    return write_foreign(d / "foreign.h5", two_groups(n_runs=5, T=6, gap=3.0))


def test_bhattacharyya_distances_equal_the_definition():
    rng = np.random.default_rng(0)
    P = rng.dirichlet(np.ones(4), size=(5, 7))  # 5 nets, 7 probes, 4 classes
    Q = rng.dirichlet(np.ones(4), size=(3, 7))
    direct = np.array([[-np.mean([np.log(np.sum(np.sqrt(p[n] * q[n]))) for n in range(7)])
                        for q in Q] for p in P])
    np.testing.assert_allclose(bhattacharyya_distances(P, Q, block_mb=1e-4), direct, rtol=1e-12)
    D = bhattacharyya_distances(P)
    assert np.all(np.diag(D) == 0) and np.allclose(D, D.T) and np.all(D >= 0)


def test_inpca_equals_a_direct_double_centred_eigendecomposition():
    rng = np.random.default_rng(1)
    P = rng.dirichlet(np.ones(3) * 0.5, size=(9, 6))
    D = bhattacharyya_distances(P)
    m = D.shape[0]
    L = np.eye(m) - np.ones((m, m)) / m
    W = -0.5 * L @ D @ L
    w, u = np.linalg.eig(W)  # a different solver than the module's eigh
    w, u = w.real, u.real
    top = np.argsort(-np.abs(w))[:2]
    model = InPCA(dims=2).fit(D)
    np.testing.assert_allclose(np.abs(model.eigenvalues_), np.abs(w[top]), rtol=1e-9)
    np.testing.assert_allclose(model.eigenvalues_, w[top], rtol=1e-9)  # signs kept, negative too
    expected = u[:, top] * np.sqrt(np.abs(w[top]))
    for j in range(2):  # each axis up to its sign
        s = np.sign(expected[:, j] @ model.coords_[:, j])
        np.testing.assert_allclose(model.coords_[:, j], s * expected[:, j], atol=1e-9)
    stress = np.sum(w[top] ** 2) / np.sum(w ** 2)
    assert model.explained_stress_ == pytest.approx(stress, rel=1e-9)
    # 1 - ||W - W_k||^2 / ||W||^2, the definition
    W_k = (u[:, top] * w[top]) @ u[:, top].T
    assert model.explained_stress_ == pytest.approx(1 - np.sum((W - W_k) ** 2) / np.sum(W ** 2),
                                                    rel=1e-9)
    # a fitted point placed again lands on itself
    np.testing.assert_allclose(model.transform(D[:4]), model.coords_[:4], atol=1e-9)


def test_inpca_keeps_negative_eigenvalues():
    # four points whose distances are not Euclidean-embeddable: W has a negative eigenvalue
    D = np.array([[0, 1, 1, 2], [1, 0, 2, 1], [1, 2, 0, 1], [2, 1, 1, 0]], dtype=float) ** 2
    D[0, 3] = D[3, 0] = 0.1
    w = np.linalg.eigvalsh(-0.5 * (np.eye(4) - 0.25) @ D @ (np.eye(4) - 0.25))
    assert w.min() < -1e-6
    model = InPCA(dims=3).fit(D)
    assert (model.eigenvalues_ < 0).any()
    assert model.explained_stress_ == pytest.approx(1.0)  # rank 3 after centring: all of W


@pytest.fixture(scope="module")
def projected(foreign, tmp_path_factory):
    """`trajviz project --method M` of the foreign file, once per method (UMAP's are slow)."""
    cache = {}

    def run(method):
        if method not in cache:
            out = tmp_path_factory.mktemp(method) / f"{method}.h5"
            import contextlib
            import io

            buf = io.StringIO()
            with contextlib.redirect_stdout(buf):
                assert main(["project", str(foreign), "--method", method, "-o", str(out)]) == 0
            cache[method] = (out, buf.getvalue())
        return cache[method]

    return run


@pytest.mark.parametrize("method", ["inpca", "aligned-umap", "phate"])
def test_cli_methods_keep_planted_groups_apart(projected, method):
    out, printed = projected(method)
    emb = Embedding.load(out)
    assert emb.method == method and emb.coords.shape == (60, 2)
    assert _knn_group_accuracy(emb.coords, emb.group) >= 0.95
    assert 0 < emb.attrs["quality_trustworthiness"] <= 1  # the same quality figures as the rest
    if method == "inpca":
        stress = emb.attrs["params"]["explained_stress"]
        assert 0 < stress <= 1 and f"explained stress {stress:.3f}" in printed


def test_aligned_umap_keeps_each_run_in_place_between_checkpoints(projected):
    emb = Embedding.load(projected("aligned-umap")[0])
    # consecutive checkpoints of one run are closer than the typical pair of points of one map
    steps, spans = [], []
    for _, _, idx in emb.trajectories():
        steps.append(np.linalg.norm(np.diff(emb.coords[idx], axis=0), axis=1).mean())
    for t in range(6):
        pts = emb.coords[emb.checkpoint == t]
        spans.append(np.mean(np.linalg.norm(pts[:, None] - pts[None], axis=-1)))
    assert np.mean(steps) < 0.5 * np.mean(spans)
    assert emb.attrs["params"]["n_neighbors"] == 4  # 10 runs per checkpoint: lowered from 15


def test_inpca_into_places_new_runs_with_their_group(tmp_path):
    runs = two_groups(n_runs=6, T=5, gap=3.0)
    base_runs = {k: v for k, v in runs.items() if not k.endswith(("-4", "-5"))}
    new_runs = {k: v for k, v in runs.items() if k.endswith(("-4", "-5"))}
    a = write_foreign(tmp_path / "a.h5", base_runs)
    b = write_foreign(tmp_path / "b.h5", new_runs)
    base = tmp_path / "base.h5"
    assert main(["project", str(a), "--method", "inpca", "-o", str(base), "-q"]) == 0
    assert main(["project", str(b), "--into", str(base), "-o", str(tmp_path / "g.h5"), "-q"]) == 0
    grown = Embedding.load(tmp_path / "g.h5")
    old = Embedding.load(base)
    np.testing.assert_array_equal(grown.coords[~grown.added], old.coords)  # old points fixed
    assert grown.added.sum() == 20
    # each new point's nearest fitted point is of its own group
    new, ref = grown.coords[grown.added], old.coords
    nearest = np.argmin(np.linalg.norm(new[:, None] - ref[None], axis=-1), axis=1)
    assert np.mean(old.group[nearest] == grown.group[grown.added]) >= 0.95


def test_methods_without_extension_and_bad_parameters_refuse_in_one_line(foreign, projected,
                                                                      tmp_path, capsys):
    base = projected("aligned-umap")[0]
    capsys.readouterr()
    more = write_foreign(tmp_path / "more.h5", two_groups(n_runs=2, T=6, prefix="new-"))
    assert main(["project", str(more), "--into", str(base), "-o", str(tmp_path / "x.h5"),
                 "-q"]) == 1
    err = capsys.readouterr().err
    assert "cannot take new points" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(ConfigError, match="inpca takes no parameters"):
        embed([foreign], method="inpca", params={"perplexity": 3})
