"""Per-condition model selection, as Erhan et al. (2009, 2010) did: every condition (one setting
of a study x one pre-training method) tries each point of its study's grid (learning rate, L2
penalty, pre-training learning rate and corruption...) on a few seeds, keeps the point of lowest
validation error, and then trains its full set of seeds there.

A condition's score at a grid point is the mean, over the selection seeds, of each run's lowest
validation error over its checkpoints (``best_valid_error``, the early stopping of
:mod:`trajviz.training.selection`); a run without a finite validation error (diverged at once)
counts as error 1. The lowest score wins; ties go to the lower mean validation NLL at those
checkpoints, then to the earlier point in grid order. A configuration that does not train is
thus a lost grid point, not the method's result.

Storage (resumable like the results; nothing finished is redone)::

    results/<study>/select/<setting>/<method>/<point>.h5   the selection runs (trajviz files,
                                                          probe set of 1 example)
    results/<study>/select/<setting>.json                  scores and the chosen point per method

The JSON is rewritten from the HDF5 files on every call, so it always says what they hold.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from trajviz.config import ExperimentConfig, config_from_dict, set_dotted
from trajviz.errors import ConfigError
from trajviz.reproduce.studies import Setting, Study
from trajviz.store import COMPLETE, DIVERGED, ExperimentFile

log = logging.getLogger(__name__)

SELECT_DIR = "select"
CRITERION = ("mean over the selection seeds of each run's lowest validation error (ties: lower "
             "mean validation NLL, then grid order)")


@dataclass(frozen=True)
class Choice:
    """The chosen grid point of one condition and the score that chose it."""

    method: str
    point: dict[str, Any]
    valid_error: float  # mean over the selection seeds, a fraction


def point_name(point: Mapping[str, Any]) -> str:
    """A grid point as a file name: ``train.lr=0.1,train.l2=0.0`` (``default`` if empty)."""
    return ",".join(f"{k}={v!r}" for k, v in point.items()) or "default"


def with_overrides(cfg: ExperimentConfig, overrides: Mapping[str, Any]) -> ExperimentConfig:
    """``cfg`` with dotted ``overrides`` applied, validated."""
    data = cfg.to_dict()
    for key, value in overrides.items():
        set_dotted(data, key, value, where="select.grid")
    return config_from_dict(data)


def method_config(cfg: ExperimentConfig, method: str, point: Mapping[str, Any],
                  seeds: list[int] | None = None) -> ExperimentConfig:
    """The config of ``method``'s runs at a grid point (one method; ``seeds`` if given)."""
    over: dict[str, Any] = dict(point)
    over["pretrain.methods"] = [method]
    if seeds is not None:
        over["seeds"] = list(seeds)
    return with_overrides(cfg, over)


def selection_file(results_dir: Path, study: Study, setting: Setting, method: str,
                   point: Mapping[str, Any]) -> Path:
    return (Path(results_dir) / study.name / SELECT_DIR / setting.id / method
            / f"{point_name(point)}.h5")


def summary_path(results_dir: Path, study: Study, setting: Setting) -> Path:
    return Path(results_dir) / study.name / SELECT_DIR / f"{setting.id}.json"


def _selection_config(setting: Setting, method: str, point: Mapping[str, Any],
                      seeds: tuple[int, ...]) -> ExperimentConfig:
    cfg = method_config(setting.config, method, point, list(seeds))
    # selection reads validation errors only: a probe set of one example keeps the files small
    return cfg.replace(probe=cfg.probe.__class__(split=cfg.probe.split, n=1),
                       name=f"{cfg.name}-select")


def _scores(path: Path, seeds: tuple[int, ...], method: str) -> tuple[list[float], list[float]] | None:
    """Per selection seed: lowest validation error and its NLL; None if a run is unfinished."""
    if not path.exists():
        return None
    errs, nlls = [], []
    with ExperimentFile(path) as f:
        info = {r.run_id: r for r in f.runs()}
        for s in seeds:
            rid = f"{method}-seed{s}"
            if rid not in info or info[rid].status not in (COMPLETE, DIVERGED):
                return None
            a = f.run_attrs(rid)
            e = float(a.get("best_valid_error", math.nan))
            errs.append(e if math.isfinite(e) else 1.0)
            n = float(a.get("best_valid_nll", math.nan))
            nlls.append(n if math.isfinite(n) else math.inf)
    return errs, nlls


def select_setting(study: Study, setting: Setting, results_dir: str | Path, *,
                   progress: bool = False) -> dict[str, Choice]:
    """Run (or resume) the selection of every method of one setting; returns method -> choice
    and writes the setting's summary JSON."""
    from trajviz.training.runner import record_experiment

    plan = study.select
    if plan is None or setting.config is None:
        raise ConfigError(f"study {study.name!r} setting {setting.id!r} has no selection to run")
    results_dir = Path(results_dir)
    methods = list(setting.config.pretrain.methods)
    summary: dict[str, Any] = {"study": study.name, "setting": setting.id,
                               "criterion": CRITERION, "seeds": list(plan.seeds),
                               "grid": {k: list(v) for k, v in plan.grid}, "methods": {}}
    choices: dict[str, Choice] = {}
    for method in methods:
        rows, best = [], None
        for i, point in enumerate(plan.points(method)):
            path = selection_file(results_dir, study, setting, method, point)
            scores = _scores(path, plan.seeds, method)
            if scores is None:
                log.info("%s/%s %s: selection at %s", study.name, setting.id, method,
                         point_name(point))
                path.parent.mkdir(parents=True, exist_ok=True)
                record_experiment(_selection_config(setting, method, point, plan.seeds), path,
                                  mode="resume", progress=progress)
                scores = _scores(path, plan.seeds, method)
                assert scores is not None
            errs, nlls = scores
            mean_err, mean_nll = sum(errs) / len(errs), sum(nlls) / len(nlls)
            rows.append({"set": dict(point), "valid_error": errs, "mean_valid_error": mean_err,
                         "mean_valid_nll": mean_nll if math.isfinite(mean_nll) else None,
                         "file": str(path.relative_to(results_dir))})
            key = (mean_err, mean_nll, i)
            if best is None or key < best[0]:
                best = (key, point)
        assert best is not None
        choices[method] = Choice(method, dict(best[1]), best[0][0])
        summary["methods"][method] = {"points": rows, "chosen": dict(best[1]),
                                      "chosen_valid_error": best[0][0]}
        log.info("%s/%s %s: chose %s (mean valid error %.4f)", study.name, setting.id, method,
                 point_name(best[1]), best[0][0])
    out = summary_path(results_dir, study, setting)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(summary, indent=1))
    tmp.replace(out)
    return choices


def read_selection(results_dir: str | Path, study: Study, setting: Setting) -> dict[str, Any] | None:
    """A setting's stored selection summary (None if the study selects nothing or it is missing)."""
    path = summary_path(Path(results_dir), study, setting)
    if study.select is None or not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc}); delete it and rerun to redo it from "
                          "the selection files") from None
