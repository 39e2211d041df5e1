"""Study definitions: one TOML file per study experiment of Erhan et al. (2009, 2010).

A study file (docs/reproduce.md) holds a ``[base]`` experiment config table, a list of
``[[settings]]`` (each an ``id`` and a ``set`` table of dotted overrides, or ``from`` naming a
setting of another study whose results it reuses), and ``[profiles.<name>]`` tables that adjust
the base (``set``) and may replace the settings list (``settings``) for that profile::

    study = "depth"
    findings = ["F1", "F2", "F3", "F5"]
    description = "test error vs depth, with and without pre-training"

    [base]                       # any experiment config (trajviz config --show-defaults)
    seeds = [0, 1, 2, 3]
    model = { width = 100 }

    [[settings]]
    id = "depth1"
    set = { "model.depth" = 1 }

    [profiles.quick]
    set = { "dataset.name" = "digits", "train.epochs" = 10 }

    [profiles.full]
    set = { "dataset.name" = "mnist", "seeds" = { range = [0, 400] } }

In a ``set`` table, ``{ range = [a, b] }`` stands for the list ``[a, a+1, ..., b-1]``.

Every setting resolves to a validated :class:`~trajviz.config.ExperimentConfig` (through
:func:`trajviz.config.config_from_dict`) before anything trains, so a typo fails in a second,
not after an hour. Numpy-free and torch-free: reading studies is cheap.

The study files of the papers ship with the package (``trajviz/presets/studies/*.toml``, read
through :mod:`importlib.resources`), so the reproduction runs from any folder of an installed
trajviz; :func:`load_studies` reads them when given no directory, and :func:`copy_studies`
writes them out for editing (then ``load_studies(that_directory, ...)``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, Mapping

from trajviz.config import ExperimentConfig, config_from_dict, parse_toml, read_toml, set_dotted
from trajviz.errors import ConfigError

#: every study file has one table per profile: ``tiny`` checks an installation in seconds (its
#: numbers mean nothing), ``quick`` fits 2 CPU cores (digits), ``medium`` is MNIST at about an
#: hour of a workstation GPU, ``full`` is the studies' own sizes
PROFILES = ("tiny", "quick", "medium", "full")
STUDY_KEYS = {"study", "findings", "description", "base", "settings", "profiles", "scan", "select"}
SETTING_KEYS = {"id", "set", "from", "label"}
PROFILE_KEYS = {"set", "settings", "scan", "select"}
SELECT_KEYS = {"seeds", "grid"}
#: config keys a selection grid may search: fine-tuning and pre-training hyper-parameters
GRID_PREFIXES = ("train.", "pretrain.")
GRID_FIXED = ("pretrain.methods", "pretrain.shared_init")


@dataclass(frozen=True)
class SelectionPlan:
    """Model selection of a study (Erhan et al.'s protocol): every condition (setting x
    pre-training method) tries each point of ``grid`` on ``seeds``, keeps the point of lowest mean
    validation error, and trains its full set of seeds there (:mod:`.selection`).

    ``grid``: (dotted config key, values) pairs in file order; the points are their product.
    Keys under ``pretrain.`` do not vary for the method ``none``, which has no pre-training.
    """

    seeds: tuple[int, ...]
    grid: tuple[tuple[str, tuple[Any, ...]], ...]

    def points(self, method: str) -> list[dict[str, Any]]:
        """The grid points a condition of ``method`` tries, in grid order."""
        import itertools

        pre = not method.startswith("none")
        keys = [(k, v) for k, v in self.grid if pre or not k.startswith("pretrain.")]
        return [dict(zip([k for k, _ in keys], combo))
                for combo in itertools.product(*[v for _, v in keys])]


@dataclass(frozen=True)
class Setting:
    """One setting of a study in one profile.

    ``config`` is the validated experiment config it trains; ``source`` is ``(study, setting)``
    when the setting reuses another study's results instead (``config`` is then ``None``).
    """

    study: str
    id: str
    label: str
    config: ExperimentConfig | None
    source: tuple[str, str] | None = None

    @property
    def key(self) -> tuple[str, str]:
        """The (study, setting) whose result file holds this setting's runs."""
        return self.source if self.source is not None else (self.study, self.id)


@dataclass(frozen=True)
class Study:
    """A study resolved for one profile: its settings, each with a validated config."""

    name: str
    profile: str
    findings: tuple[str, ...]
    description: str
    settings: tuple[Setting, ...]
    path: Path
    scan: dict[str, Any] = field(default_factory=dict)  # landscape scan settings (F9 study)
    select: SelectionPlan | None = None  # model selection; None: every setting as configured

    def setting(self, setting_id: str) -> Setting:
        for s in self.settings:
            if s.id == setting_id:
                return s
        raise ConfigError(f"study {self.name!r} ({self.profile} profile) has no setting "
                          f"{setting_id!r}; it has {', '.join(s.id for s in self.settings)}")


def _expand(value: Any, where: str) -> Any:
    """``{ range = [a, b] }`` stands for the list a, a+1, ..., b-1 (e.g. 400 seeds)."""
    if isinstance(value, Mapping):
        r = value.get("range")
        if set(value) != {"range"} or not (isinstance(r, list) and len(r) == 2
                                           and all(isinstance(v, int) for v in r)):
            raise ConfigError(f"{where}: a table value must be {{ range = [START, STOP] }}, got {value!r}")
        return list(range(r[0], r[1]))
    return value


def _apply(data: dict[str, Any], overrides: Any, where: str) -> None:
    if overrides is None:
        return
    if not isinstance(overrides, Mapping):
        raise ConfigError(f"{where}: 'set' must be a table of dotted keys, e.g. "
                          "{ \"model.depth\" = 2 }")
    for key, value in overrides.items():
        set_dotted(data, key, copy.deepcopy(_expand(value, where)), where=f"{where}:")


def _check_keys(table: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; allowed: {', '.join(sorted(allowed))}")


def parse_study(data: Mapping[str, Any], profile: str, path: Path) -> Study:
    """Resolve a study table (as read from TOML) for ``profile`` and validate every config."""
    where = str(path)
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a table")
    _check_keys(data, STUDY_KEYS, where)
    name = data.get("study")
    if not isinstance(name, str) or not name or "/" in name:
        raise ConfigError(f"{where}: 'study' must be a non-empty name without '/'")
    if profile not in PROFILES:
        raise ConfigError(f"profile {profile!r}: choose one of {', '.join(PROFILES)}")
    profiles = data.get("profiles", {})
    if not isinstance(profiles, Mapping) or profile not in profiles:
        raise ConfigError(f"{where}: no [profiles.{profile}] table; every study needs "
                          f"{' and '.join(f'[profiles.{p}]' for p in PROFILES)}")
    prof = profiles[profile]
    _check_keys(prof, PROFILE_KEYS, f"{where} [profiles.{profile}]")
    base = copy.deepcopy(dict(data.get("base", {})))
    _apply(base, prof.get("set"), f"{where} [profiles.{profile}]")
    raw_settings = prof.get("settings", data.get("settings"))
    if not isinstance(raw_settings, list) or not raw_settings:
        raise ConfigError(f"{where}: needs a non-empty [[settings]] list")
    settings: list[Setting] = []
    for i, s in enumerate(raw_settings):
        swhere = f"{where} setting {i + 1}"
        if not isinstance(s, Mapping):
            raise ConfigError(f"{swhere}: expected a table")
        _check_keys(s, SETTING_KEYS, swhere)
        sid = s.get("id")
        if not isinstance(sid, str) or not sid or "/" in sid:
            raise ConfigError(f"{swhere}: 'id' must be a non-empty name without '/'")
        if any(x.id == sid for x in settings):
            raise ConfigError(f"{swhere}: id {sid!r} is used twice")
        label = str(s.get("label", sid))
        if "from" in s:
            if "set" in s:
                raise ConfigError(f"{swhere}: give either 'from' or 'set', not both")
            src = s["from"]
            if not isinstance(src, str) or src.count("/") != 1:
                raise ConfigError(f"{swhere}: from = {src!r}: expected 'STUDY/SETTING'")
            a, b = src.split("/")
            settings.append(Setting(name, sid, label, None, (a, b)))
            continue
        cfg_data = copy.deepcopy(base)
        _apply(cfg_data, s.get("set"), swhere)
        cfg_data["name"] = f"{name}-{sid}"
        try:
            cfg = config_from_dict(cfg_data)
        except ConfigError as exc:
            raise ConfigError(f"{swhere} ({profile} profile): {exc}") from None
        settings.append(Setting(name, sid, label, cfg))
    findings = data.get("findings", [])
    if not isinstance(findings, list) or not all(isinstance(f, str) for f in findings):
        raise ConfigError(f"{where}: 'findings' must be a list of ids such as \"F1\"")
    scan = dict(data.get("scan", {}))
    scan.update(prof.get("scan", {}))
    select = _parse_select(data.get("select"), prof.get("select"), settings,
                           f"{where} ({profile} profile)")
    return Study(name=name, profile=profile, findings=tuple(findings),
                 description=str(data.get("description", "")), settings=tuple(settings),
                 path=path, scan=scan, select=select)


def _parse_select(study_table: Any, profile_table: Any, settings: list[Setting],
                  where: str) -> SelectionPlan | None:
    """The ``[select]`` table (a profile's ``select`` replaces its keys), validated against
    every setting's config: each grid value must make a valid config."""
    table: dict[str, Any] = {}
    for t, name in ((study_table, "[select]"), (profile_table, "profile 'select'")):
        if t is None:
            continue
        if not isinstance(t, Mapping):
            raise ConfigError(f"{where}: {name} must be a table with 'seeds' and 'grid'")
        _check_keys(t, SELECT_KEYS, f"{where} {name}")
        table.update(t)
    if not table:
        return None
    seeds = _expand(table.get("seeds"), f"{where} select.seeds")
    if (not isinstance(seeds, list) or not seeds or len(set(seeds)) != len(seeds)
            or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in seeds)):
        raise ConfigError(f"{where}: select.seeds must be a non-empty list of distinct seeds "
                          f">= 0 (or {{ range = [a, b] }}), got {table.get('seeds')!r}")
    grid = table.get("grid")
    if not isinstance(grid, Mapping) or not grid:
        raise ConfigError(f"{where}: select.grid must be a table of dotted keys and value lists, "
                          'e.g. { "train.lr" = [0.1, 0.02], "train.l2" = [0.0, 1e-4] }')
    pairs = []
    for key, values in grid.items():
        if not key.startswith(GRID_PREFIXES) or key in GRID_FIXED:
            raise ConfigError(f"{where}: select.grid key {key!r}: a grid searches keys under "
                              f"{' or '.join(GRID_PREFIXES)} (not {', '.join(GRID_FIXED)})")
        if not isinstance(values, list) or not values or len(set(map(repr, values))) != len(values):
            raise ConfigError(f"{where}: select.grid {key!r} must be a non-empty list of distinct "
                              f"values, got {values!r}")
        pairs.append((key, tuple(values)))
    for s in settings:
        if s.config is None:
            continue
        base = s.config.to_dict()
        for key, values in pairs:
            for v in values:
                data = copy.deepcopy(base)
                set_dotted(data, key, v, where=f"{where} select.grid")
                try:
                    config_from_dict(data)
                except ConfigError as exc:
                    raise ConfigError(f"{where}: select.grid {key} = {v!r} (setting {s.id!r}): "
                                      f"{exc}") from None
    return SelectionPlan(seeds=tuple(seeds), grid=tuple(pairs))


def load_study(path: str | Path, profile: str) -> Study:
    """Read and resolve one study file."""
    path = Path(path)
    return parse_study(read_toml(path, "study"), profile, path)


def packaged_studies() -> Traversable:
    """The folder of study files that ships with trajviz (``trajviz/presets/studies``)."""
    return files("trajviz.presets").joinpath("studies")


def _study_files(directory: Traversable) -> list[Traversable]:
    return sorted((f for f in directory.iterdir() if f.name.endswith(".toml") and f.is_file()),
                  key=lambda f: f.name)


def load_studies(directory: str | Path | None, profile: str) -> dict[str, Study]:
    """Every ``*.toml`` study of ``directory`` (``None``: the study files packaged with trajviz),
    resolved for ``profile``; cross-study ``from`` references are checked."""
    if directory is None:
        source: Traversable = packaged_studies()
    else:
        source = Path(directory)
        if not source.is_dir():
            raise ConfigError(f"study directory {str(directory)!r} does not exist or is not a "
                              "directory (leave it out to use the study files packaged with trajviz)")
    studies: dict[str, Study] = {}
    for entry in _study_files(source):
        path = Path(str(entry))
        if isinstance(entry, Path):
            data = read_toml(entry, "study")
        else:  # a packaged file inside an archive: read through importlib.resources
            data = parse_toml(entry.read_text(), str(path))
        study = parse_study(data, profile, path)
        if study.name in studies:
            raise ConfigError(f"study {study.name!r} is defined twice ({studies[study.name].path} "
                              f"and {path})")
        studies[study.name] = study
    if not studies:
        raise ConfigError(f"study directory {str(source)!r} holds no *.toml study files")
    for study in studies.values():
        for s in study.settings:
            if s.source is None:
                continue
            a, b = s.source
            if a not in studies:
                raise ConfigError(f"{study.path}: setting {s.id!r} reuses unknown study {a!r}")
            target = studies[a].setting(b)
            if target.source is not None:
                raise ConfigError(f"{study.path}: setting {s.id!r} reuses {a}/{b}, which itself "
                                  "reuses another study; point at the original")
    return studies


def copy_studies(directory: str | Path) -> list[Path]:
    """Write the packaged study files into ``directory`` (created if missing), to edit and then
    pass to :func:`load_studies`. Refuses, before writing anything, if a file would be replaced."""
    directory = Path(directory)
    entries = _study_files(packaged_studies())
    targets = [directory / e.name for e in entries]
    existing = [str(t) for t in targets if t.exists()]
    if existing:
        raise ConfigError(f"{existing[0]} exists; copy the study files into a new or empty directory")
    if directory.exists() and not directory.is_dir():
        raise ConfigError(f"{str(directory)!r} is a file; give a directory")
    directory.mkdir(parents=True, exist_ok=True)
    for entry, target in zip(entries, targets):
        target.write_text(entry.read_text())
    return targets


def result_path(results_dir: str | Path, setting: Setting) -> Path:
    """Where a setting's HDF5 result lives: ``<results_dir>/<study>/<setting>.h5``."""
    study, sid = setting.key
    return Path(results_dir) / study / f"{sid}.h5"

