"""Experiment configuration: frozen dataclasses, read from TOML, validated once at the edge.

Every field carries its documentation, allowed values and range in its metadata; that single
declaration drives validation, ``trajviz config --show-defaults`` and docs/config.md.
Configs are data: nothing in a config file is ever executed.
"""

from __future__ import annotations

import dataclasses
import json
import re
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator, Mapping, Sequence, get_args, get_origin

from trajviz.errors import ConfigError

#: Names of registered datasets and pre-training methods. Kept here (not imported from the
#: modules that implement them) so that validating a config never imports torch.
DATASETS = ("shapeset", "shapeset3x2", "mnist", "digits")
PRETRAIN_METHODS = ("none", "sdae", "rbm")
#: Modifiers of a pre-training method spec (see :func:`parse_method` and docs/config.md).
METHOD_MODIFIERS = ("layers=K", "reinit=L[,L...]", "hist")


@dataclass(frozen=True)
class MethodSpec:
    """One entry of ``pretrain.methods``: a base method and the studies' modifications of it.

    Grammar: ``BASE[+layers=K][+reinit=L[,L...]][+hist]`` with BASE in :data:`PRETRAIN_METHODS`.

    - ``layers=K``: pre-train only the bottom K hidden layers (Erhan et al. 2010, F8 (b)).
    - ``reinit=L,...``: pre-train, then put layers L (1-based, hidden) back to their random
      initial weights and zero biases (Erhan et al. 2009, sec. 6, F8 (a)).
    - ``hist``: after pre-training, resample every weight of each pre-trained layer from the
      histogram of that layer's weights, biases from the biases' histogram (F7).
    """

    base: str
    layers: int | None = None
    reinit: tuple[int, ...] = ()
    histogram: bool = False

    @property
    def spec(self) -> str:
        """The canonical spec string (modifiers in grammar order); also the run group name."""
        parts = [self.base]
        if self.layers is not None:
            parts.append(f"layers={self.layers}")
        if self.reinit:
            parts.append("reinit=" + ",".join(str(l) for l in self.reinit))
        if self.histogram:
            parts.append("hist")
        return "+".join(parts)

    def pretrained_layers(self, depth: int) -> int:
        """How many hidden layers, bottom first, are pre-trained in a net of ``depth``."""
        if self.base == "none":
            return 0
        return depth if self.layers is None else min(self.layers, depth)


def parse_method(text: str, key: str = "pretrain.methods") -> MethodSpec:
    """Parse a method spec such as ``"sdae+reinit=2"``; ConfigError naming the grammar if bad."""
    grammar = (f"write BASE[+layers=K][+reinit=L[,L...]][+hist] with BASE one of "
               f"{', '.join(PRETRAIN_METHODS)}, e.g. 'sdae+reinit=2' or 'rbm+hist'")
    if not isinstance(text, str):
        raise ConfigError(f"{key} = {text!r}: expected a string; {grammar}")
    base, *mods = [part.strip() for part in text.split("+")]
    if base not in PRETRAIN_METHODS:
        raise ConfigError(f"{key} = {text!r}: unknown method {base!r}; {grammar}")
    if base == "none" and mods:
        raise ConfigError(f"{key} = {text!r}: 'none' takes no modifiers; {grammar}")
    layers: int | None = None
    reinit: tuple[int, ...] = ()
    hist = False
    seen: set[str] = set()
    for mod in mods:
        name, _, arg = mod.partition("=")
        if name in seen:
            raise ConfigError(f"{key} = {text!r}: modifier {name!r} given twice")
        seen.add(name)
        if name == "hist":
            if mod != "hist":
                raise ConfigError(f"{key} = {text!r}: 'hist' takes no value; {grammar}")
            hist = True
            continue
        if name not in ("layers", "reinit"):
            raise ConfigError(f"{key} = {text!r}: unknown modifier {mod!r}; {grammar}")
        try:
            numbers = [int(a) for a in arg.split(",")] if name == "reinit" else [int(arg)]
        except ValueError:
            numbers = [0]
        if not numbers or min(numbers) < 1:
            raise ConfigError(f"{key} = {text!r}: {mod!r} needs positive integer layer numbers; "
                              f"{grammar}")
        if name == "layers":
            layers = numbers[0]
        else:
            reinit = tuple(sorted(set(numbers)))
    if layers is not None and any(l > layers for l in reinit):
        raise ConfigError(f"{key} = {text!r}: reinit names a layer above layers={layers}, "
                          "which is not pre-trained anyway")
    return MethodSpec(base, layers, reinit, hist)


def _method_spec(key: str, value: str) -> str:
    return parse_method(value, key).spec

#: learning rates must be representable in float32, the engine's scalar type
FLOAT32_MAX = 3.4e38


def _f(default: Any, doc: str, *, choices: Sequence[Any] | None = None,
       lo: float | None = None, hi: float | None = None, each: bool = False,
       check: Any = None) -> Any:
    """A dataclass field whose metadata documents and constrains it.

    ``each`` applies ``choices``/``lo``/``hi``/``check`` to every element of a list value;
    ``check(key, value)`` validates a value beyond its type and returns it in canonical form.
    """
    meta = {"doc": doc, "choices": choices, "lo": lo, "hi": hi, "each": each, "check": check}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


class _Validated:
    """Base of the config sections: each checks its fields on construction (``__post_init__``),
    so a config built in Python (by a sweep, a study, a notebook, ``dataclasses.replace``) is
    refused with the same one-line :class:`ConfigError` as the TOML path, naming the dotted key.
    Values are stored in canonical form (ints given for floats become floats, method specs
    canonical, lists copied)."""

    #: dotted prefix of this section's keys ("model.", or "" for the root)
    _section: ClassVar[str] = ""

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            key = self._section + f.name
            value, tp = getattr(self, f.name), hints[f.name]
            if _is_section(tp):
                if not isinstance(value, tp):
                    raise ConfigError(f"{key} = {value!r}: expected a table ({tp.__name__})")
                continue
            checked = _check_value(key, value, tp, f.metadata)
            if checked is not value:
                object.__setattr__(self, f.name, checked)


def _device(key: str, value: str) -> str:
    if not re.fullmatch(r"cpu|auto|mps|cuda(:\d+)?", value):
        raise ConfigError(f"{key} = {value!r}: not a device; use cpu, cuda, cuda:N (N = 0, 1, ...), "
                          "mps or auto")
    return value


@dataclass(frozen=True)
class DatasetConfig(_Validated):
    _section: ClassVar[str] = "dataset."
    name: str = _f("shapeset", "dataset to train on", choices=DATASETS)
    n_train: int = _f(0, "training examples (0 = the dataset's standard split)", lo=0)
    n_valid: int = _f(0, "validation examples (0 = the dataset's standard split)", lo=0)
    n_test: int = _f(0, "test examples (0 = the dataset's standard split)", lo=0)
    seed: int = _f(0, "seed of the data generator / split (shared by all runs)", lo=0)
    path: str = _f("", "data directory for file-based datasets ('' = $TRAJVIZ_DATA)")


@dataclass(frozen=True)
class ModelConfig(_Validated):
    _section: ClassVar[str] = "model."
    depth: int = _f(2, "hidden layers", lo=1, hi=5)
    width: int = _f(400, "units in every hidden layer", lo=1)


@dataclass(frozen=True)
class PretrainConfig(_Validated):
    _section: ClassVar[str] = "pretrain."
    methods: list[str] = _f(["none", "sdae"], "every seed is trained once per method spec "
                            "BASE[+layers=K][+reinit=L[,L...]][+hist] (docs/config.md)",
                            choices=PRETRAIN_METHODS, each=True, check=_method_spec)
    epochs: int = _f(10, "pre-training epochs per layer", lo=0)
    lr: float = _f(0.01, "pre-training SGD learning rate", lo=0.0, hi=FLOAT32_MAX)
    batch_size: int = _f(10, "pre-training minibatch size", lo=1)
    corruption: float = _f(0.25, "SDAE masking-noise level: fraction of inputs set to 0", lo=0.0, hi=1.0)
    tied: bool = _f(True, "SDAE decoder uses the transposed encoder weights")
    cd_k: int = _f(1, "RBM: Gibbs steps of contrastive divergence (CD-k)", lo=1)
    rbm_lr: float = _f(0.05, "RBM: CD learning rate (gradient averaged over the minibatch)", lo=0.0,
                       hi=FLOAT32_MAX)
    hist_bins: int = _f(100, "'+hist' init: bins of each layer's weight (and bias) histogram", lo=2)
    shared_init: bool = _f(True, "runs of one seed share initial weights (output layer included) "
                           "and example order across methods (a paired design); false: every "
                           "(seed, method) draws its own, independent nets as in the studies")


@dataclass(frozen=True)
class TrainConfig(_Validated):
    _section: ClassVar[str] = "train."
    epochs: int = _f(10, "supervised fine-tuning epochs", lo=0)
    lr: float = _f(0.05, "fine-tuning SGD learning rate (constant)", lo=0.0, hi=FLOAT32_MAX)
    batch_size: int = _f(10, "fine-tuning minibatch size (1 = the studies' online SGD)", lo=1)
    l2: float = _f(0.0, "L2 penalty on weights (added to the averaged NLL)", lo=0.0)


@dataclass(frozen=True)
class ProbeConfig(_Validated):
    _section: ClassVar[str] = "probe."
    split: str = _f("test", "split whose inputs form the probe set", choices=("train", "valid", "test"))
    n: int = _f(0, "probe examples: the split's first n (0 = the whole split)", lo=0)


@dataclass(frozen=True)
class RecordConfig(_Validated):
    _section: ClassVar[str] = "record."
    every_steps: int = _f(0, "extra checkpoint every N updates (0 = only at step 0 and each epoch end)", lo=0)
    params: str = _f("final", "parameters stored: 'final', or 'all' checkpoints", choices=("final", "all"))


@dataclass(frozen=True)
class EngineConfig(_Validated):
    _section: ClassVar[str] = "engine."
    device: str = _f("cpu", "torch device: 'cpu', 'cuda', 'cuda:N', 'mps', or 'auto' (CUDA when available)",
                     check=_device)
    nets_per_batch: int = _f(16, "nets trained together in one batched pass", lo=1)
    dtype: str = _f("float32", "floating-point type of training", choices=("float32", "float64"))
    backend: str = _f("fast", "SGD steps: 'fast' (hand-derived fused updates, trajviz/training/fast.py) "
                      "or 'autograd' (the reference; same numbers up to rounding)",
                      choices=("fast", "autograd"))
    resume_state: bool = _f(True, "keep each batch's training state (parameters, random streams, "
                            "example-order position) with its latest checkpoint, so --resume "
                            "continues an interrupted run from there, not from epoch 0 "
                            "(docs/reliability.md); false: --resume redoes unfinished runs")


@dataclass(frozen=True)
class ExperimentConfig(_Validated):
    name: str = _f("experiment", "experiment name, stored in the file")
    seeds: list[int] = _f([0, 1, 2, 3, 4, 5, 6, 7], "one run per seed and pre-training method", lo=0, each=True)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    record: RecordConfig = field(default_factory=RecordConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_across(self)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def replace(self, **changes: Any) -> "ExperimentConfig":
        return dataclasses.replace(self, **changes)


def _is_section(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _check_scalar(key: str, value: Any, tp: Any, meta: Mapping[str, Any]) -> Any:
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} = {value!r}: expected true or false")
    elif tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} = {value!r}: expected an integer")
    elif tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} = {value!r}: expected a number")
        value = float(value)
    elif tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} = {value!r}: expected a string")
    choices, lo, hi = meta.get("choices"), meta.get("lo"), meta.get("hi")
    if meta.get("check") is not None:
        return meta["check"](key, value)  # the check owns the allowed values
    if choices is not None and value not in choices:
        allowed = ", ".join(repr(c) for c in choices)
        raise ConfigError(f"{key} = {value!r}: not allowed; choose one of {allowed}")
    if lo is not None and value < lo:
        raise ConfigError(f"{key} = {value!r}: must be >= {lo}")
    if hi is not None and value > hi:
        raise ConfigError(f"{key} = {value!r}: must be <= {hi}")
    return value


def _check_value(key: str, value: Any, tp: Any, meta: Mapping[str, Any]) -> Any:
    if get_origin(tp) is list:
        (item_tp,) = get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{key} = {value!r}: expected a list")
        if not value:
            raise ConfigError(f"{key}: must not be empty")
        item_meta = meta if meta.get("each") else {}
        items = [_check_scalar(f"{key}[{i}]", v, item_tp, item_meta) for i, v in enumerate(value)]
        if len(set(items)) != len(items):
            raise ConfigError(f"{key} = {value!r}: values must be distinct")
        return items
    return _check_scalar(key, value, tp, meta)


def _build(cls: type, data: Mapping[str, Any], prefix: str) -> Any:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a table, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        allowed = ", ".join(prefix + n for n in fields)
        raise ConfigError(f"unknown config key {prefix + unknown[0]!r}; allowed here: {allowed}")
    kwargs = {}
    resolved = typing.get_type_hints(cls)
    for name, value in data.items():
        tp = resolved[name]
        key = prefix + name
        if _is_section(tp):
            kwargs[name] = _build(tp, value, key + ".")
        else:  # checked in data order, so the first bad key of the file is the one named
            kwargs[name] = _check_value(key, value, tp, fields[name].metadata)
    return cls(**kwargs)  # __post_init__ checks again, and the defaults


def set_dotted(data: dict[str, Any], key: str, value: Any, *, where: str,
               error: type[ConfigError] = ConfigError) -> None:
    """Set ``data["a"]["b"]["c"] = value`` for ``key = "a.b.c"``, creating tables on the way.

    A part of the key that names a non-table value raises ``error`` prefixed by ``where`` (the
    place the key came from, e.g. ``"--set"`` or ``"[sweep]"``)."""
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise error(f"{where} {key!r}: {part!r} is not a table")
        node = child
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """Parse one ``--set key=value``; the value is read as TOML, else taken as a plain string."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. model.depth=3")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return key, value


def config_from_dict(data: Mapping[str, Any], overrides: Sequence[str] = ()) -> ExperimentConfig:
    """Validate a plain dict (as read from TOML) plus ``--set`` overrides into a config."""
    merged = json.loads(json.dumps(data))  # deep copy; TOML values are all JSON-representable
    for text in overrides:
        key, value = parse_override(text)
        set_dotted(merged, key, value, where="--set")
    return _build(ExperimentConfig, merged, "")


def _check_across(cfg: ExperimentConfig) -> None:
    """Constraints that tie keys of different sections together."""
    depth = cfg.model.depth
    for i, text in enumerate(cfg.pretrain.methods):
        spec = parse_method(text)
        too_high = [l for l in spec.reinit + ((spec.layers,) if spec.layers else ()) if l > depth]
        if too_high:
            raise ConfigError(f"pretrain.methods[{i}] = {text!r} names hidden layer {too_high[0]}, "
                              f"but model.depth = {depth}; use layers 1..{depth}")


def parse_toml(text: str, where: str, error: type[Exception] = ConfigError) -> dict[str, Any]:
    """TOML text as a dict; a syntax error becomes ``error`` naming ``where``."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{where}: not valid TOML: {exc}") from None


def read_toml(path: str | Path, kind: str = "config", error: type[Exception] = ConfigError) -> dict[str, Any]:
    """Read a TOML file (a config, sweep or study file); every failure is one ``error`` line
    naming the file."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise error(f"{kind} file {str(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"{kind} file {str(path)!r} cannot be read: {exc}") from None
    return parse_toml(text, str(path), error)


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """Read an experiment config from TOML (``None``: the built-in default experiment)."""
    if path is None:
        from importlib.resources import files

        text = files("trajviz.presets").joinpath("default.toml").read_text()
        data = parse_toml(text, "built-in default")
    else:
        data = read_toml(path)
    return config_from_dict(data, overrides)


def _schema_keys(cls: type = ExperimentConfig, obj: Any = None,
                 section: str = "") -> Iterator[tuple[str, str, Any, Mapping[str, Any]]]:
    """(section prefix, name, default, metadata) of every scalar key, in display order: a
    section's own keys, then its subsections."""
    obj = cls() if obj is None else obj
    subsections = []
    for f in dataclasses.fields(cls):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            subsections.append((f.name, value))
        else:
            yield section, f.name, value, f.metadata
    for name, value in subsections:
        yield from _schema_keys(type(value), value, section + name + ".")


def _describe(meta: Mapping[str, Any], quote: Callable[[Any], str]) -> str:
    """A key's documentation, allowed values and bounds, from its field metadata."""
    note = meta.get("doc", "")
    if meta.get("choices"):
        note += "; one of " + ", ".join(quote(c) for c in meta["choices"])
    bounds = [f">= {meta['lo']}" if meta.get("lo") is not None else "",
              f"<= {meta['hi']}" if meta.get("hi") is not None else ""]
    if any(bounds):
        note += "; " + " and ".join(b for b in bounds if b)
    return note


def show_defaults() -> str:
    """Every config key with its default and documentation, as commented TOML."""
    lines: list[str] = []
    current = ""
    for section, name, value, meta in _schema_keys():
        if section != current:
            lines += ["", f"[{section.rstrip('.')}]"]
            current = section
        lines.append(f"{name} = {_toml_value(value)}  # {_describe(meta, repr)}")
    return "\n".join(lines) + "\n"


def defaults_table() -> str:
    """Every config key as a Markdown table (key, default, meaning): the key table of
    docs/config.md, from the same metadata as :func:`show_defaults`."""
    rows = ["| key | default | meaning |", "|---|---|---|"]
    for section, name, value, meta in _schema_keys():
        note = _describe(meta, lambda c: f"`{c}`").replace("|", "\\|")
        rows.append(f"| `{section + name}` | `{_toml_value(value)}` | {note} |")
    return "\n".join(rows) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return repr(value)
