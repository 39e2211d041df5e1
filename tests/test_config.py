import dataclasses
from pathlib import Path

import pytest

from trajviz.config import (DATASETS, ExperimentConfig, config_from_dict, load_config,
                            parse_override, show_defaults)
from trajviz.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_issue_example_config_loads_verbatim():
    cfg = load_config(ROOT / "runs" / "smoke.toml")
    assert cfg.seeds == [0, 1]
    assert cfg.pretrain.methods == ["none", "sdae"]
    assert cfg.train.batch_size == 10 and cfg.probe.n == 500


def test_builtin_default_is_the_documented_experiment():
    cfg = load_config(None)
    assert cfg.dataset.name == "shapeset" and cfg.model.depth == 2
    assert len(cfg.seeds) >= 8 and set(cfg.pretrain.methods) == {"none", "sdae"}
    assert cfg.train.lr == 0.2  # lower, the random-init nets never leave the chance plateau


@pytest.mark.parametrize("data, fragment", [
    ({"modle": {}}, "unknown config key 'modle'"),
    ({"model": {"depht": 2}}, "unknown config key 'model.depht'"),
    ({"model": {"depth": 9}}, "model.depth = 9: must be <= 5"),
    ({"model": {"depth": "2"}}, "expected an integer"),
    ({"dataset": {"name": "cifar"}}, "choose one of"),
    ({"pretrain": {"methods": ["none", "magic"]}}, "pretrain.methods[1]"),
    ({"seeds": []}, "must not be empty"),
    ({"seeds": [1, 1]}, "distinct"),
    ({"train": {"lr": -1}}, ">= 0"),
    ({"model": 3}, "expected a table"),
    ({"train": {"lr": 1e300}}, "train.lr = 1e+300: must be <= 3.4e+38"),
])
def test_bad_values_name_key_and_allowed(data, fragment):
    with pytest.raises(ConfigError) as err:
        config_from_dict(data)
    assert fragment in str(err.value)


def test_overrides_parse_toml_values_and_reach_config():
    cfg = config_from_dict({}, ["model.depth=3", "pretrain.methods=['sdae']", "name=hello",
                                "train.lr=0.5"])
    assert cfg.model.depth == 3 and cfg.pretrain.methods == ["sdae"]
    assert cfg.name == "hello" and cfg.train.lr == 0.5
    assert parse_override("a.b = 1") == ("a.b", 1)
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_override("nonsense")


def test_unknown_override_key_rejected():
    with pytest.raises(ConfigError, match="model.widht"):
        config_from_dict({}, ["model.widht=3"])


def test_config_json_round_trip(tiny_config):
    import json

    assert config_from_dict(json.loads(tiny_config.to_json())) == tiny_config


def test_show_defaults_lists_every_key():
    text = show_defaults()

    def keys(cls, prefix=""):
        for f in dataclasses.fields(cls):
            t = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            if dataclasses.is_dataclass(t):
                assert f"[{prefix}{f.name}]" in text
                yield from keys(type(t), prefix + f.name + ".")
            else:
                yield f.name

    for name in keys(ExperimentConfig):
        assert f"\n{name} = " in "\n" + text


def test_missing_and_malformed_config_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("name = ")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


def test_datasets_constant_matches_registry():
    from trajviz.data import BUILDERS

    assert set(DATASETS) == set(BUILDERS)


def _toml_error(data) -> str:
    with pytest.raises(ConfigError) as err:
        config_from_dict(data)
    return str(err.value)


def test_configs_built_in_python_are_checked_like_toml():
    """A sweep, a study or a notebook building configs in Python gets the same one-line error
    as the TOML path, naming the dotted key."""
    from trajviz.config import EngineConfig, ModelConfig, PretrainConfig, TrainConfig

    with pytest.raises(ConfigError) as err:
        ModelConfig(depth=99, width=-5)
    assert str(err.value) == _toml_error({"model": {"depth": 99, "width": -5}})
    assert str(err.value) == "model.depth = 99: must be <= 5"
    with pytest.raises(ConfigError, match=r"^model.width = -5: must be >= 1$"):
        ModelConfig(width=-5)
    with pytest.raises(ConfigError) as err:
        dataclasses.replace(ExperimentConfig().train, lr=-1)
    assert str(err.value) == _toml_error({"train": {"lr": -1}}) == "train.lr = -1.0: must be >= 0.0"
    with pytest.raises(ConfigError, match="expected an integer"):
        TrainConfig(epochs="3")
    with pytest.raises(ConfigError, match=r"pretrain.methods\[1\] = 'magic'"):
        PretrainConfig(methods=["none", "magic"])
    with pytest.raises(ConfigError, match="seeds.*distinct"):
        ExperimentConfig(seeds=[1, 1])
    with pytest.raises(ConfigError, match=r"^model = \{'depth': 2\}: expected a table"):
        ExperimentConfig(model={"depth": 2})
    # constraints across sections, as for TOML
    msg = _toml_error({"model": {"depth": 1}, "pretrain": {"methods": ["sdae+layers=2"]}})
    with pytest.raises(ConfigError) as err:
        ExperimentConfig(model=ModelConfig(depth=1), pretrain=PretrainConfig(methods=["sdae+layers=2"]))
    assert str(err.value) == msg and "model.depth = 1" in msg
    # values are stored in canonical form, as the TOML path stores them
    assert TrainConfig(lr=1).lr == 1.0 and isinstance(TrainConfig(lr=1).lr, float)
    assert PretrainConfig(methods=["sdae+hist+layers=1"]).methods == ["sdae+layers=1+hist"]
    assert EngineConfig(device="cuda:1").device == "cuda:1"


@pytest.mark.parametrize("device", ["toaster", "gpu", "cuda:x", "cuda:", "CPU", ""])
def test_engine_device_is_checked_in_python_toml_and_sweeps(device):
    from trajviz.config import EngineConfig
    from trajviz.sweep import sweep_from_dict

    with pytest.raises(ConfigError) as err:
        EngineConfig(device=device)
    msg = str(err.value)
    assert msg.startswith(f"engine.device = {device!r}: not a device") and "cuda:N" in msg
    assert _toml_error({"engine": {"device": device}}) == msg
    with pytest.raises(ConfigError, match="engine.device"):
        sweep_from_dict({"name": "s", "seeds": [0], "sweep": {"engine.device": ["cpu", device]}})


@pytest.mark.parametrize("device", ["cpu", "cuda", "cuda:0", "cuda:12", "mps", "auto"])
def test_engine_device_accepts_torch_devices(device):
    assert config_from_dict({"engine": {"device": device}}).engine.device == device
