"""Recorder on models of every common shape (trajviz.record.adapters), its checks of what a
model returns, the probe inputs it stores, and its behaviour when interrupted or re-opened."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from trajviz import Recorder
from trajviz.errors import FileLockedError, ModelOutputError, OutputExistsError
from trajviz.store import ExperimentFile, probe_sha256

N, D, C = 12, 5, 3


def _x(n: int = N, d: int = D, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


@dataclass
class Output:  # what Hugging Face models return: an object with .logits
    logits: torch.Tensor
    hidden: torch.Tensor


class Wrap(nn.Module):
    """A linear layer whose result is returned in some container."""

    def __init__(self, kind: str, c: int = C):
        super().__init__()
        self.kind = kind
        self.lin = nn.Linear(D, c)

    def forward(self, x):
        z = self.lin(x)
        if self.kind == "dict":
            return {"logits": z, "features": x}
        if self.kind == "dict-named":
            return {"scores": z, "features": x}
        if self.kind == "tuple":
            return z, x
        if self.kind == "object":
            return Output(logits=z, hidden=x)
        if self.kind == "flat":
            return z[:, 0]
        return z


class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(D, C), nn.Linear(2, C)

    def forward(self, x, extra):
        return self.a(x) + self.b(extra)


class KeywordInputs(TwoInputs):
    def forward(self, x, extra):  # fed as model(x=..., extra=...)
        return super().forward(x, extra)


class TokenIds(nn.Module):
    """Integer token ids through an embedding: fails on float input."""

    def __init__(self, vocab: int = 50):
        super().__init__()
        self.emb = nn.Embedding(vocab, 4)
        self.head = nn.Linear(4, C)

    def forward(self, ids, mask):
        h = (self.emb(ids) * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True)
        return {"logits": self.head(h)}


def _record(path: Path, model: nn.Module, probe, **kw) -> np.ndarray:
    with Recorder(path, probe, run_id="r", **kw) as rec:
        rec.record(model, step=0)
        rec.record(model, step=1)
        rec.save_params(model)
    with ExperimentFile(path) as f:
        f.verify()
        assert f.run_info("r").status == "complete"
        return f.outputs("r")[-1]


@pytest.mark.parametrize("kind,adapter", [
    ("tensor", {}), ("dict", {}), ("tuple", {}), ("object", {}),
    ("dict-named", {"outputs_fn": "scores"}),
    ("tuple", {"outputs_fn": lambda out: out[0]}),
])
def test_output_containers_record_with_at_most_one_adapter(tmp_path, kind, adapter):
    torch.manual_seed(0)
    model = Wrap(kind)
    x = _x()
    stored = _record(tmp_path / "m.h5", model, x, **adapter)
    expected = torch.softmax(model.lin(torch.from_numpy(x)), -1).detach().numpy()
    np.testing.assert_allclose(stored, expected, atol=1e-6)


def test_several_inputs_positional_keyword_and_by_inputs_fn(tmp_path):
    torch.manual_seed(0)
    x, extra = _x(), _x(d=2, seed=1)
    model = TwoInputs()
    expected = torch.softmax(model(torch.from_numpy(x), torch.from_numpy(extra)), -1).detach().numpy()
    by_tuple = _record(tmp_path / "t.h5", model, (x, extra))
    kw_model = KeywordInputs()
    kw_model.load_state_dict(model.state_dict())
    by_dict = _record(tmp_path / "d.h5", kw_model, {"x": x, "extra": extra})
    by_fn = _record(tmp_path / "f.h5", model, {"a": x, "b": extra},
                    inputs_fn=lambda m, batch: m(batch["a"], batch["b"]))
    for got in (by_tuple, by_dict, by_fn):
        np.testing.assert_allclose(got, expected, atol=1e-6)
    with ExperimentFile(tmp_path / "d.h5") as f:  # stored as given, for re-evaluation
        stored = f.probe_inputs()
        assert list(stored) == ["x", "extra"]
        np.testing.assert_array_equal(stored["extra"], extra)
        assert f.probe_inputs_layout()["structure"] == "dict"
    with ExperimentFile(tmp_path / "t.h5") as f:
        assert isinstance(f.probe_inputs(), tuple) and len(f.probe_inputs()) == 2


def test_integer_token_ids_stay_integer(tmp_path):
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 50, size=(N, 7))  # numpy int64: must reach nn.Embedding as long
    mask = np.ones((N, 7), dtype=np.float32)
    mask[:, 5:] = 0
    torch.manual_seed(0)
    model = TokenIds()
    stored = _record(tmp_path / "ids.h5", model, {"ids": ids, "mask": mask})
    expected = torch.softmax(model(torch.from_numpy(ids), torch.from_numpy(mask))["logits"], -1)
    np.testing.assert_allclose(stored, expected.detach().numpy(), atol=1e-6)
    with ExperimentFile(tmp_path / "ids.h5") as f:
        back = f.probe_inputs()
        assert back["ids"].dtype == np.int64 and np.array_equal(back["ids"], ids)
        entries = {e["name"]: e for e in f.probe_inputs_layout()["entries"]}
        assert entries["ids"]["dtype"] == "int64" and entries["ids"]["shape"] == [N, 7]


@pytest.mark.parametrize("shape,output", [("(N, 1)", "logits"), ("(N,)", "logits"),
                                          ("(N, 1)", "probs"), ("(N,)", "log_probs")])
def test_one_score_per_example_becomes_two_class_probabilities(tmp_path, shape, output):
    torch.manual_seed(0)
    lin = nn.Linear(D, 1)
    post = {"logits": lambda z: z, "probs": torch.sigmoid, "log_probs": nn.functional.logsigmoid}
    squeeze = (lambda z: z[:, 0]) if shape == "(N,)" else (lambda z: z)
    model = nn.Sequential(lin)
    model.forward = lambda x: squeeze(post[output](lin(x)))  # type: ignore[method-assign]
    x = _x()
    targets = (x[:, 0] > 0).astype(int)
    stored = _record(tmp_path / "b.h5", model, x, probe_targets=targets, output=output)
    p = torch.sigmoid(lin(torch.from_numpy(x)))[:, 0].detach().numpy()
    np.testing.assert_allclose(stored, np.stack([1 - p, p], 1), atol=1e-6)
    with ExperimentFile(tmp_path / "b.h5") as f:
        assert f.n_classes == 2


class Const(nn.Module):
    """Returns fixed values (whatever the input), to plant outputs of the wrong kind."""

    def __init__(self, values: torch.Tensor):
        super().__init__()
        self.register_buffer("values", values)

    def forward(self, x):
        return self.values[: x.shape[0]]


_LOGITS = torch.tensor(np.random.default_rng(0).normal(0, 3, size=(N, C)), dtype=torch.float32)


@pytest.mark.parametrize("values,kw,message", [
    (_LOGITS, {"output": "probs"}, r"output='probs', but .* not probabilities \(values in \[-"),
    (torch.sigmoid(_LOGITS), {"output": "probs"}, r"rows sum to .*not 1"),
    (_LOGITS, {"output": "log_probs"}, r"output='log_probs', but .*some above 0"),
    (torch.log_softmax(_LOGITS, -1) - 1, {"output": "log_probs"}, r"exp of the model's rows sums"),
    (torch.softmax(_LOGITS, -1), {"output": "log_probs"}, r"output='log_probs'"),
    (_LOGITS.reshape(N, C, 1).expand(N, C, 4), {}, r"shape \(12, 3, 4\).*needs \(12, C\)"),
    (_LOGITS.argmax(1), {}, r"torch.int64, not floats"),
    (torch.where(_LOGITS > 2, float("nan"), _LOGITS), {}, r"NaN or infinite"),
    (_LOGITS[:, :1], {"probe_targets": np.arange(N) % 10}, r"labels up to 9, but the model .* 2 classes"),
    (_LOGITS, {"n_classes": 4}, r"3 classes, but n_classes is 4"),
])
def test_outputs_that_cannot_be_what_was_declared_are_refused_before_writing(
        tmp_path, values, kw, message):
    path = tmp_path / "bad.h5"
    rec = Recorder(path, _x(), run_id="r", **kw)
    with pytest.raises(ModelOutputError, match=message) as err:
        rec.record(Const(values), step=0)
    assert "\n" not in str(err.value)
    rec.close()
    if "n_classes" in kw:  # a file opened at construction holds no run
        with ExperimentFile(path) as f:
            assert f.run_ids() == []
    else:
        assert not path.exists()


def test_logits_that_look_like_probabilities_warn(tmp_path, caplog):
    with Recorder(tmp_path / "w.h5", _x(), run_id="r") as rec:
        rec.record(Const(torch.softmax(_LOGITS, -1)), step=0)
    assert "look like probabilities" in caplog.text and "output='probs'" in caplog.text


def test_unreadable_model_returns_name_the_adapter(tmp_path):
    rec = Recorder(tmp_path / "u.h5", _x(), run_id="r")
    with pytest.raises(ModelOutputError, match=r"keys \['a', 'b'\] and no 'logits'.*outputs_fn='KEY'"):
        rec.record(lambda_module(lambda x: {"a": x[:, :3], "b": x[:, :2]}), step=0)
    with pytest.raises(ModelOutputError, match="outputs_fn='nope'.*no entry 'nope'"):
        Recorder(tmp_path / "v.h5", _x(), outputs_fn="nope").record(Wrap("dict"), step=0)
    with pytest.raises(ModelOutputError, match="returned a str"):
        rec.record(lambda_module(lambda x: "text"), step=0)
    rec.close()


def lambda_module(fn) -> nn.Module:
    class M(nn.Module):
        def forward(self, x):
            return fn(x)

    return M()


def test_probe_inputs_are_stored_or_only_checksummed(tmp_path, caplog):
    x = _x()
    model = Wrap("tensor")
    _record(tmp_path / "s.h5", model, x)
    _record(tmp_path / "c.h5", model, x, store_inputs=False)
    with ExperimentFile(tmp_path / "s.h5") as f:
        np.testing.assert_array_equal(f.probe_inputs(), x)
        assert f.probe_sha256 == probe_sha256(x)  # one array: the documented formula, as before
        params = f.params("r")
        # an analysis can re-evaluate the stored model on the stored probe set
        again = Wrap("tensor")
        again.load_state_dict({k: torch.from_numpy(v) for k, v in params.items()})
        got = torch.softmax(again(torch.from_numpy(f.probe_inputs())), -1).detach().numpy()
        np.testing.assert_allclose(got, f.outputs("r")[-1], atol=1e-6)
    with ExperimentFile(tmp_path / "c.h5") as f:
        assert f.probe_inputs() is None
        layout = f.probe_inputs_layout()
        assert layout["stored"] is False and layout["entries"][0]["shape"] == [N, D]
        assert f.probe_sha256 == probe_sha256(x)
    import trajviz.record.recorder as recorder_module

    old = recorder_module.STORE_INPUTS_MAX_BYTES
    recorder_module.STORE_INPUTS_MAX_BYTES = x.nbytes - 1  # "too large": checksum only
    try:
        with caplog.at_level("INFO", logger="trajviz"):
            _record(tmp_path / "big.h5", model, x)
    finally:
        recorder_module.STORE_INPUTS_MAX_BYTES = old
    assert "checksum and shapes only" in caplog.text
    with ExperimentFile(tmp_path / "big.h5") as f:
        assert f.probe_inputs() is None


def test_name_defaults_to_the_file_stem(tmp_path, capsys):
    from trajviz.cli import main

    _record(tmp_path / "my-experiment.h5", Wrap("tensor"), _x())
    _record(tmp_path / "other.h5", Wrap("tensor"), _x(), name="given")
    assert main(["info", str(tmp_path / "my-experiment.h5")]) == 0
    assert "experiment 'my-experiment'" in capsys.readouterr().out
    with ExperimentFile(tmp_path / "other.h5") as f:
        assert f.name == "given"


def test_library_errors_speak_of_arguments_the_cli_of_flags(tmp_path):
    from trajviz.cli import as_flags

    path = tmp_path / "e.h5"
    _record(path, Wrap("tensor"), _x())
    with pytest.raises(OutputExistsError) as err:
        Recorder(path, _x())
    assert "mode='resume'" in str(err.value) and "--" not in str(err.value)
    assert as_flags(str(err.value)).endswith("pass --resume to continue it or --overwrite to replace it")
    with pytest.raises(OutputExistsError, match="already complete.*choose another run id") as err:
        with Recorder(path, _x(), run_id="r", mode="resume") as rec:
            rec.record(Wrap("tensor"), step=0)
    assert "--" not in str(err.value)


def test_reopening_in_the_same_process_takes_over_the_file(tmp_path, caplog):
    """A notebook cell re-run: the first Recorder was neither closed nor used in a `with`."""
    path = tmp_path / "nb.h5"
    model = Wrap("tensor")
    first = Recorder(path, _x(), run_id="r")
    first.record(model, step=0)
    second = Recorder(path, _x(), run_id="r", mode="resume")
    second.record(model, step=0)
    second.record(model, step=5)
    second.save_params(model)
    second.close()
    assert "closing the earlier Recorder" in caplog.text
    with pytest.raises(FileLockedError, match="this Recorder is closed"):
        first.record(model, step=1)
    with ExperimentFile(path) as f:
        assert f.steps("r").tolist() == [0, 5] and f.run_info("r").status == "complete"


def test_continue_run_keeps_what_a_resumed_training_had(tmp_path):
    path = tmp_path / "c.h5"
    model = Wrap("tensor")
    rec = Recorder(path, _x(), run_id="r")
    for step in (0, 10, 20, 30):
        rec.record(model, step=step, train_nll=float(step))
    rec.close()  # no final params: stays running
    rec = Recorder(path, _x(), run_id="r", mode="resume")
    rec.continue_default_run(last_step=20)
    rec.record(model, step=30, train_nll=-1.0)
    assert rec.n_checkpoints == 4
    rec.close()
    with ExperimentFile(path) as f:
        assert f.steps("r").tolist() == [0, 10, 20, 30]
        assert f.metrics("r")["train_nll"].tolist() == [0, 10, 20, -1]
    rec = Recorder(path, _x(), run_id="r", mode="resume")
    rec.continue_default_run(keep=1)
    rec.record(model, step=99)
    rec.save_params(model)
    rec.close()
    with ExperimentFile(path) as f:
        f.verify()
        assert f.steps("r").tolist() == [0, 99] and f.run_info("r").status == "complete"


_INTERRUPTED = """
import numpy as np, torch
from torch import nn
from trajviz import Recorder

x = np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32)
model = nn.Linear(4, 3)
try:  # Ctrl-C inside the block
    with Recorder("with.h5", x, run_id="r") as rec:
        rec.record(model, step=0)
        raise KeyboardInterrupt
except KeyboardInterrupt:
    pass
rec = Recorder("loose.h5", x, run_id="r")  # a notebook: no `with`, interrupted mid-loop
try:
    rec.record(model, step=0)
    raise KeyboardInterrupt
except KeyboardInterrupt:
    pass
done = Recorder("done.h5", x, run_id="r")
done.record(model, step=0)
done.save_params(model)
done.close()
again = Recorder("done.h5", x, run_id="r", mode="resume")  # reusing a complete run's id
try:
    again.record(model, step=0)
except Exception as exc:
    print("refused:", type(exc).__name__)
print("end of script")
"""


def test_interrupted_or_abandoned_recorders_leave_valid_files_and_no_traceback(tmp_path):
    res = subprocess.run([sys.executable, "-c", textwrap.dedent(_INTERRUPTED)], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "refused: OutputExistsError" in res.stdout and "end of script" in res.stdout
    assert "Traceback" not in res.stderr and "SystemError" not in res.stderr, res.stderr
    for name, status in (("with", "running"), ("loose", "running"), ("done", "complete")):
        with ExperimentFile(tmp_path / f"{name}.h5") as f:
            f.verify()
            assert f.run_info("r").status == status and f.run_info("r").n_checkpoints == 1
        assert not (tmp_path / f"{name}.h5-journal").exists()


def test_plain_loop_example_records_a_dict_returning_model(tmp_path):
    """examples/plain_loop.py: two seeds of a model returning a dict, re-evaluable from the file."""
    import importlib.util

    example = Path(__file__).resolve().parents[1] / "examples" / "plain_loop.py"
    spec = importlib.util.spec_from_file_location("plain_loop", example)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    path = module.main(tmp_path, seeds=(0, 1), epochs=3)
    with ExperimentFile(path) as f:
        f.verify()
        assert f.name == "digits_mlp" and f.run_ids() == ["seed0", "seed1"]
        for run in f.run_ids():
            info = f.run_info(run)
            assert info.status == "complete" and info.n_checkpoints == 4
            nll = f.metrics(run)["train_nll"]
            assert nll[3] < nll[1]
            assert (f.outputs(run)[-1].argmax(1) == f.probe_targets()).mean() > 0.7  # learned (chance: 0.1)
    assert module.reevaluate(path, "seed1") < 1e-6
