"""Sweep files: parsing the ``[sweep]`` table, expanding grid x seeds into jobs, and the checks
that must pass before any job starts (every expanded config valid, one probe set)."""

from __future__ import annotations

import itertools
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from trajviz.config import ExperimentConfig, config_from_dict, parse_override, read_toml, set_dotted
from trajviz.errors import ConfigError

log = logging.getLogger(__name__)


class SweepError(ConfigError):
    """The ``[sweep]`` table, or a sweep's outputs, are not as they must be."""


# --------------------------------------------------------------------------- spec and expansion


@dataclass(frozen=True)
class SweepSpec:
    """A validated sweep: the base experiment config (as a plain dict, ``--set`` applied) and the
    grid, dotted key -> list of values, in file order."""

    base: dict[str, Any]
    grid: dict[str, list[Any]]

    @property
    def base_config(self) -> ExperimentConfig:
        return config_from_dict(self.base)


@dataclass(frozen=True)
class SweepJob:
    """One grid point x one seed: a single ``record_experiment`` call writing one shard."""

    index: int
    key: str                 # unique, file-name safe: "<label>-seed<seed>" ("seed<seed>" if no grid)
    label: str               # the grid point, e.g. "width=20;methods=sdae" ("" if no grid)
    point: dict[str, Any]    # dotted key -> value of this grid point
    seed: int
    config: ExperimentConfig  # base config with the point's values and seeds = [seed]

    @property
    def methods(self) -> list[str]:
        return list(self.config.pretrain.methods)


def _flatten(table: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"model": {"width": [..]}}`` -> ``{"model.width": [..]}`` (unquoted TOML dotted keys)."""
    flat: dict[str, Any] = {}
    for key, value in table.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


def sweep_from_dict(data: Mapping[str, Any], overrides: Sequence[str] = ()) -> SweepSpec:
    """Split a sweep file's contents into base config and grid, and validate both.

    ``overrides`` are ``--set KEY=VALUE`` strings: they change the base config, or the grid when
    KEY starts with ``sweep.`` (``--set sweep.model.width=[10,20]``). Every expanded config is
    validated here, so a bad value fails before any job starts.
    """
    base = json.loads(json.dumps({k: v for k, v in data.items() if k != "sweep"}))
    raw_grid = data.get("sweep", {})
    if not isinstance(raw_grid, Mapping):
        raise SweepError("[sweep] must be a table mapping dotted config keys to lists of values, "
                         'e.g. "model.width" = [20, 40]')
    grid = _flatten(raw_grid)
    for text in overrides:
        key, value = parse_override(text)
        if key.startswith("sweep."):
            grid[key[len("sweep."):]] = value
        else:
            set_dotted(base, key, value, where="[sweep]", error=SweepError)
    for key, values in grid.items():
        if key == "seeds":
            raise SweepError("[sweep] 'seeds': the seeds are the sweep's other axis; set the "
                             "top-level seeds list instead")
        if key == "name":
            raise SweepError("[sweep] 'name': the experiment name cannot be swept")
        if not isinstance(values, list) or not values:
            raise SweepError(f"[sweep] {key!r} = {values!r}: expected a non-empty list of values "
                             "(a list of lists for a list-valued key such as pretrain.methods)")
        if any(isinstance(v, Mapping) for v in values):
            raise SweepError(f"[sweep] {key!r}: values must be numbers, strings, booleans or lists")
        texts = [json.dumps(v, sort_keys=True) for v in values]
        if len(set(texts)) != len(texts):
            raise SweepError(f"[sweep] {key!r} = {values!r}: values must be distinct")
    spec = SweepSpec(base=base, grid=grid)
    expand(spec)  # validates every expanded config
    return spec


def load_sweep(path: str | Path, overrides: Sequence[str] = ()) -> SweepSpec:
    """Read a sweep file: an experiment config TOML with an optional ``[sweep]`` table."""
    data = read_toml(path, "sweep", SweepError)
    return sweep_from_dict(data, overrides)


def _format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "+".join(_format_value(v) for v in value)
    return str(value)


def _short_keys(keys: Sequence[str]) -> dict[str, str]:
    """The shortest dotted suffix of each key that no other key shares."""
    short = {}
    for key in keys:
        parts = key.split(".")
        for n in range(1, len(parts) + 1):
            cand = ".".join(parts[-n:])
            if not any(other != key and (other == cand or other.endswith("." + cand)) for other in keys):
                break
        short[key] = cand
    return short


def point_label(point: Mapping[str, Any], short: Mapping[str, str]) -> str:
    """A readable, file-name and HDF5-name safe label of a grid point, e.g. ``width=20;lr=0.1``."""
    text = ";".join(f"{short[k]}={_format_value(v)}" for k, v in point.items())
    return re.sub(r"[^A-Za-z0-9._+=;-]", "_", text)


def expand(spec: SweepSpec) -> list[SweepJob]:
    """Every (grid point, seed) job, grid points in file order (last key fastest), then seeds.

    Each job's config is validated with :func:`trajviz.config.config_from_dict`; a value that is
    not allowed raises :class:`~trajviz.errors.ConfigError` naming the grid point.
    """
    try:
        base_cfg = config_from_dict(spec.base)
    except ConfigError as exc:
        raise ConfigError(f"base config: {exc}") from None
    keys = list(spec.grid)
    short = _short_keys(keys)
    jobs: list[SweepJob] = []
    labels: set[str] = set()
    for values in itertools.product(*(spec.grid[k] for k in keys)):
        point = dict(zip(keys, values))
        label = point_label(point, short)
        if label in labels:  # two points that sanitize alike
            label = f"{label}~{len(labels)}"
        labels.add(label)
        data = json.loads(json.dumps(spec.base))
        for key, value in point.items():
            set_dotted(data, key, value, where="[sweep]", error=SweepError)
        for seed in base_cfg.seeds:
            data["seeds"] = [seed]
            try:
                cfg = config_from_dict(data)
            except ConfigError as exc:
                where = f"sweep point {label}" if label else "config"
                raise ConfigError(f"{where}: {exc}") from None
            key = f"{label}-seed{seed}" if label else f"seed{seed}"
            jobs.append(SweepJob(index=len(jobs), key=key, label=label, point=point, seed=seed,
                                 config=cfg))
    return jobs


def check_probe_sets(jobs: Sequence[SweepJob]) -> None:
    """Check, before any job runs, that every job records on the same probe set, so that their
    shards can be gathered into one file. Only needed (and only done: it builds each distinct
    dataset once, here) when the grid changes a ``dataset.*`` or ``probe.*`` key."""
    import dataclasses

    if not any(k.startswith(("dataset.", "probe.")) for job in jobs for k in job.point):
        return
    from trajviz.data import load_dataset
    from trajviz.store import probe_sha256

    seen: dict[str, str] = {}
    first: tuple[str, str] | None = None
    for job in jobs:
        cfg = job.config
        ident = json.dumps([dataclasses.asdict(cfg.dataset), dataclasses.asdict(cfg.probe)],
                           sort_keys=True)
        if ident in seen:
            continue
        log.info("checking the probe set of sweep point %s", job.label)
        split = load_dataset(cfg.dataset).split(cfg.probe.split)
        if cfg.probe.n > len(split):
            raise ConfigError(f"sweep point {job.label}: probe.n = {cfg.probe.n} exceeds the "
                              f"{len(split)} examples of the {cfg.probe.split} split")
        sha = seen[ident] = probe_sha256((split.head(cfg.probe.n) if cfg.probe.n else split).x)
        if first is None:
            first = (sha, job.label)
        elif sha != first[0]:
            raise SweepError(f"sweep points {first[1]} and {job.label} have different probe sets, "
                             "so their runs cannot share one file; keep the probe inputs fixed "
                             "(dataset.name/seed, the probe split's size, probe.*) across the "
                             "grid, or run separate sweeps")


def default_shards_dir(output: str | Path) -> Path:
    """Where the shards of a sweep writing ``output`` live: ``OUT.shards`` next to it."""
    return Path(output).with_suffix(".shards")
