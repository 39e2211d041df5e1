"""Recording whatever results of the studies are missing; finished runs are never redone.

Each setting of a study is one HDF5 file, recorded by :func:`trajviz.training.runner.record_experiment` in
``resume`` mode: complete runs are kept, unfinished ones (an interrupted reproduce) redone.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from trajviz.errors import ConfigError

from trajviz.reproduce.studies import Setting, Study, result_path
from trajviz.store import COMPLETE, DIVERGED, ExperimentFile

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SettingRun:
    """What happened to one setting: ``"recorded"``, ``"complete"`` (nothing to do) or
    ``"reused"`` (its runs belong to another study's setting); ``seconds`` (wall) and
    ``cpu_seconds`` (this process's CPU time, all threads) spent recording it, now or (for
    ``"complete"``) when it was recorded. On a shared machine the CPU time is the better
    measure of the work."""

    study: str
    setting: str
    path: Path
    status: str
    seconds: float
    n_runs: int
    cpu_seconds: float = 0.0


def expected_run_ids(setting: Setting) -> set[str]:
    """Run ids the setting's config plans (``<method>-seed<seed>``, as trajviz.training.runner names them)."""
    cfg = setting.config
    assert cfg is not None
    return {f"{m}-seed{s}" for m in cfg.pretrain.methods for s in cfg.seeds}


def finished_run_ids(path: Path) -> set[str]:
    """Run ids that are complete (or diverged: finished, flagged) in a result file."""
    if not path.exists():
        return set()
    with ExperimentFile(path) as f:
        return {r.run_id for r in f.runs() if r.status in (COMPLETE, DIVERGED)}


def is_complete(setting: Setting, results_dir: Path) -> bool:
    return expected_run_ids(setting) <= finished_run_ids(result_path(results_dir, setting))


def run_missing(studies: Iterable[Study], results_dir: str | Path, *,
                progress: bool = False) -> list[SettingRun]:
    """Record every setting of ``studies`` whose file lacks some of its runs.

    A study with a selection plan (``[select]``, :mod:`.selection`) first selects each
    condition's grid point (resumable, stored), then trains each method's seeds at its own
    chosen point into the setting's file; the selection's time counts in the setting's."""
    from trajviz.training.runner import record_experiment  # torch: only when something may train

    results_dir = Path(results_dir)
    timings = _load_timings(results_dir)
    done: list[SettingRun] = []
    for study in studies:
        for setting in study.settings:
            path = result_path(results_dir, setting)
            if setting.source is not None:
                done.append(SettingRun(study.name, setting.id, path, "reused", 0.0, 0))
                continue
            assert setting.config is not None
            n_runs = len(expected_run_ids(setting))
            t0, c0 = time.perf_counter(), time.process_time()
            configs = method_configs(study, setting, results_dir, progress=progress)
            _check_run_configs(path, configs)
            if is_complete(setting, results_dir):
                log.info("%s/%s: all %d runs complete in %s", study.name, setting.id, n_runs, path)
                t = timings.get(f"{study.name}/{setting.id}", {})
                done.append(SettingRun(study.name, setting.id, path, "complete",
                                       float(t.get("seconds", 0.0)), n_runs,
                                       float(t.get("cpu_seconds", 0.0))))
                continue
            log.info("%s/%s: recording %d runs into %s", study.name, setting.id, n_runs, path)
            path.parent.mkdir(parents=True, exist_ok=True)
            for cfg in configs.values():
                record_experiment(cfg, path, mode="resume", progress=progress,
                                  file_config=setting.config)
            seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
            log.info("%s/%s: %.1f s (%.1f s CPU)", study.name, setting.id, seconds, cpu)
            done.append(SettingRun(study.name, setting.id, path, "recorded", seconds, n_runs, cpu))
            timings[f"{study.name}/{setting.id}"] = {"seconds": seconds, "cpu_seconds": cpu}
            _save_timings(results_dir, timings)
    return done


def method_configs(study: Study, setting: Setting, results_dir: Path, *,
                   progress: bool = False) -> dict[str, Any]:
    """method -> the config its runs train with: the setting's own, or, when the study
    selects, the setting's at the method's chosen grid point (running the selection first)."""
    from trajviz.reproduce.selection import method_config, select_setting

    assert setting.config is not None
    methods = list(setting.config.pretrain.methods)
    if study.select is None:
        return {m: method_config(setting.config, m, {}) for m in methods}
    choices = select_setting(study, setting, results_dir, progress=progress)
    return {m: method_config(setting.config, m, choices[m].point) for m in methods}


def _check_run_configs(path: Path, configs: Mapping[str, Any]) -> None:
    """Refuse to mix: a finished run of the file trained at another point than the one now
    chosen (e.g. the grid changed) would be silently kept by a resume."""
    if not path.exists():
        return
    with ExperimentFile(path) as f:
        for info in f.runs():
            cfg = configs.get(info.group)
            if cfg is None or info.status not in (COMPLETE, DIVERGED):
                continue
            try:
                old = json.loads(f.run_attrs(info.run_id).get("config", "{}"))
            except ValueError:
                old = {}
            new = json.loads(cfg.to_json())
            for section in ("train", "pretrain"):
                a, b = old.get(section, {}), new.get(section, {})
                diff = sorted(k for k in set(a) | set(b) if k != "methods" and a.get(k) != b.get(k))
                if diff and old:
                    k = diff[0]
                    raise ConfigError(
                        f"{path}: run {info.run_id} was trained with {section}.{k} = "
                        f"{a.get(k)!r}, but the study now gives {b.get(k)!r} (its selection or "
                        "config changed); write to another output directory, or delete the file "
                        "to retrain it")


TIMINGS = "timings.json"


def _load_timings(results_dir: Path) -> dict:
    """Wall and CPU seconds of each setting's last recording (``results/timings.json``), so a
    report written after a resume still says what the finished settings cost."""
    try:
        data = json.loads((results_dir / TIMINGS).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _save_timings(results_dir: Path, timings: dict) -> None:
    results_dir.mkdir(parents=True, exist_ok=True)
    tmp = results_dir / (TIMINGS + ".tmp")
    tmp.write_text(json.dumps(timings, indent=1, sort_keys=True))
    tmp.replace(results_dir / TIMINGS)


def check_data(studies: Iterable[Study]) -> None:
    """Raise :class:`~trajviz.errors.DataFileNotFoundError` (one line naming the files and how to
    get them) when a setting that will train reads MNIST and its files are not there."""
    from trajviz.data.mnist import data_dir, find_files

    for study in studies:
        for setting in study.settings:
            cfg = setting.config
            if cfg is not None and cfg.dataset.name == "mnist":
                find_files(data_dir(cfg.dataset.path))


def needed_studies(studies: Mapping[str, Study], names: Iterable[str]) -> list[Study]:
    """The studies ``names``, plus the settings of other studies that they reuse (only those
    settings: ``--only F9`` records the depth study's depth1-3, not its depth4)."""
    import dataclasses

    from trajviz.errors import ConfigError

    names = list(dict.fromkeys(names))
    for name in names:
        if name not in studies:
            raise ConfigError(f"no study {name!r} in the study directory; it has "
                              f"{', '.join(sorted(studies))}")
    deps: dict[str, list[str]] = {}
    for name in names:
        for s in studies[name].settings:
            if s.source and s.source[0] not in names:
                ids = deps.setdefault(s.source[0], [])
                if s.source[1] not in ids:
                    ids.append(s.source[1])
    out = [dataclasses.replace(studies[d], settings=tuple(x for x in studies[d].settings
                                                           if x.id in ids))
           for d, ids in deps.items()]
    return out + [studies[n] for n in names]
