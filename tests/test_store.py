import json

import h5py
import numpy as np
import pytest

from trajviz.errors import FormatError, InputFileNotFoundError, OutputExistsError
from trajviz.store import ExperimentFile, ExperimentWriter, probe_sha256


def make(path, mode="create", runs=("a", "b"), finish=True):
    rng = np.random.default_rng(0)
    targets = np.array([0, 1, 1, 0, 2])
    with ExperimentWriter(path, probe_targets=targets, probe_sha="abc", n_classes=3,
                          name="t", config_json=json.dumps({"x": 1}), mode=mode) as w:
        written = {}
        for rid in runs:
            run = w.start_run(rid, seed=7, pretrain="sdae")
            probs = rng.dirichlet(np.ones(3), size=(3, 5)).astype(np.float32)
            for t in range(3):
                run.append(10 * t, probs[t], {"train_nll": 1.0 / (t + 1), "test_error": 0.5},
                           epoch=float(t))
            run.write_params({"0.weight": np.ones((2, 3)), "0.bias": np.zeros(2)})
            if finish:
                run.finish()
            written[rid] = probs
    return written


def test_round_trip(tmp_path):
    path = tmp_path / "f.h5"
    written = make(path)
    with ExperimentFile(path) as f:
        assert f.name == "t" and f.probe_sha256 == "abc" and f.n_classes == 3
        assert f.run_ids() == ["a", "b"]
        info = f.run_info("a")
        assert (info.seed, info.pretrain, info.group, info.status, info.n_checkpoints) == \
            (7, "sdae", "sdae", "complete", 3)
        np.testing.assert_array_equal(f.outputs("a"), written["a"])
        np.testing.assert_array_equal(np.stack(list(f.iter_outputs("b"))), written["b"])
        assert f.steps("a").tolist() == [0, 10, 20]
        np.testing.assert_allclose(f.metrics("a")["train_nll"], [1, 0.5, 1 / 3])
        assert f.params("a")["0.weight"].shape == (2, 3)
        np.testing.assert_array_equal(f.probe_targets(), [0, 1, 1, 0, 2])


def test_layout_matches_the_documented_contract_with_plain_h5py(tmp_path):
    path = tmp_path / "f.h5"
    make(path)
    with h5py.File(path, "r") as f:
        assert f.attrs["format"] == "trajviz" and int(f.attrs["format_version"]) == 1
        assert "probe_sha256" in f.attrs and f["probe/targets"].shape == (5,)
        g = f["runs/a"]
        assert {"seed", "pretrain", "config"} <= set(g.attrs)
        assert g["outputs"].shape == (3, 5, 3) and g["outputs"].chunks == (1, 5, 3)
        assert g["outputs"].compression == "gzip"
        assert g["steps"].dtype.kind == "i"
        assert set(g["metrics"]) == {"train_nll", "test_error"}
        assert "params/final/0.weight" in g


def test_existing_output_is_refused_and_kept(tmp_path):
    path = tmp_path / "f.h5"
    make(path)
    before = path.read_bytes()
    with pytest.raises(OutputExistsError, match="mode='resume'"):
        make(path)
    assert path.read_bytes() == before


def test_resume_keeps_complete_runs_and_restarts_unfinished(tmp_path):
    path = tmp_path / "f.h5"
    make(path, runs=("a",))
    make(path, mode="resume", runs=("b",), finish=False)
    targets = np.array([0, 1, 1, 0, 2])
    with ExperimentWriter(path, probe_targets=targets, probe_sha="abc", n_classes=3,
                          config_json=json.dumps({"x": 1}), mode="resume") as w:
        assert w.completed_runs() == {"a"}
        run = w.start_run("b", seed=1, pretrain="none")
        assert run.n_checkpoints == 0


def test_resume_refuses_other_probe_or_config(tmp_path):
    path = tmp_path / "f.h5"
    make(path)
    targets = np.array([0, 1, 1, 0, 2])
    with pytest.raises(FormatError, match="different probe set"):
        ExperimentWriter(path, probe_targets=targets, probe_sha="zzz", n_classes=3,
                         config_json=json.dumps({"x": 1}), mode="resume")
    with pytest.raises(FormatError, match="different config"):
        ExperimentWriter(path, probe_targets=targets, probe_sha="abc", n_classes=3,
                         config_json=json.dumps({"x": 2}), mode="resume")


def test_unfinished_checkpoint_is_invisible(tmp_path):
    """A crash between writing outputs and steps leaves only complete checkpoints visible."""
    path = tmp_path / "f.h5"
    make(path, runs=("a",))
    with h5py.File(path, "r+") as f:
        f["runs/a/outputs"].resize(4, axis=0)
    with ExperimentFile(path) as f:
        assert f.outputs("a").shape[0] == 3 and f.run_info("a").n_checkpoints == 3


def test_reading_wrong_files(tmp_path):
    with pytest.raises(InputFileNotFoundError):
        ExperimentFile(tmp_path / "missing.h5")
    text = tmp_path / "t.h5"
    text.write_text("hello")
    with pytest.raises(FormatError, match="not an HDF5 file"):
        ExperimentFile(text)
    other = tmp_path / "o.h5"
    with h5py.File(other, "w") as f:
        f.attrs["format"] = "something"
    with pytest.raises(FormatError, match="not a trajviz file"):
        ExperimentFile(other)


def test_probe_sha_depends_on_values_and_shape():
    x = np.arange(12, dtype=np.float32)
    assert probe_sha256(x) == probe_sha256(x.copy())
    assert probe_sha256(x) != probe_sha256(x.reshape(3, 4))
    assert probe_sha256(x) != probe_sha256(x + 1)
