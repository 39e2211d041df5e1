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
