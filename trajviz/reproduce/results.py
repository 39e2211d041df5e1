"""Stored results of the studies, read into plain numpy tables for the findings and figures.

Reads only through :class:`trajviz.store.ExperimentFile`; never imports torch. Test errors are
percentages. The *selected* test error of a run is the one at its checkpoint of lowest
validation error (the first such checkpoint), the early stopping of Erhan et al.; the final
one is at its last checkpoint.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

from trajviz.errors import InputFileNotFoundError
from trajviz.reproduce.studies import Study, result_path
from trajviz.store import COMPLETE, DIVERGED, ExperimentFile

log = logging.getLogger(__name__)


def select_checkpoint(valid_error: np.ndarray) -> int:
    """Index of the first checkpoint of lowest finite validation error (-1 if none)."""
    v = np.asarray(valid_error, dtype=float)
    finite = np.isfinite(v)
    if not finite.any():
        return -1
    return int(np.argmin(np.where(finite, v, np.inf)))


@dataclass
class RunResult:
    """One run: its identity, per-checkpoint metrics and the selected test error (%)."""

    setting: str
    method: str
    seed: int
    status: str
    run_id: str
    epochs: np.ndarray
    metrics: dict[str, np.ndarray]
    test_error: float  # % at the checkpoint of lowest validation error
    final_test_error: float  # % at the last checkpoint

    @property
    def diverged(self) -> bool:
        return self.status == DIVERGED


@dataclass
class StudyResults:
    """All runs of one study in one profile, with the files they came from."""

    study: Study
    results_dir: Path
    runs: list[RunResult] = field(default_factory=list)
    files: dict[str, Path] = field(default_factory=dict)
    n_test: dict[str, int] = field(default_factory=dict)
    configs: dict[str, dict] = field(default_factory=dict)  # setting -> stored config (JSON)

    @property
    def name(self) -> str:
        return self.study.name

    def setting_ids(self) -> list[str]:
        return [s.id for s in self.study.settings]

    def methods(self, setting: str | None = None) -> list[str]:
        seen: list[str] = []
        for r in self.runs:
            if (setting is None or r.setting == setting) and r.method not in seen:
                seen.append(r.method)
        return seen

    def select(self, setting: str | None = None, method: str | None = None) -> list[RunResult]:
        return [r for r in self.runs if (setting is None or r.setting == setting)
                and (method is None or r.method == method)]

    def errors(self, setting: str, method: str, which: str = "selected") -> np.ndarray:
        """Test errors (%) of the runs of one cell, ordered by seed; NaN-free."""
        runs = sorted(self.select(setting, method), key=lambda r: r.seed)
        vals = np.array([r.test_error if which == "selected" else r.final_test_error for r in runs])
        return vals[np.isfinite(vals)]

    def error_seeds(self, setting: str, method: str, which: str = "selected") -> np.ndarray:
        """The seeds of the values :meth:`errors` returns, in the same order."""
        runs = sorted(self.select(setting, method), key=lambda r: r.seed)
        vals = np.array([r.test_error if which == "selected" else r.final_test_error for r in runs])
        return np.array([r.seed for r in runs], dtype=np.int64)[np.isfinite(vals)]

    def paired(self, setting: str) -> bool:
        """Whether the runs of one seed share initial weights and example order across methods
        in this setting (``pretrain.shared_init``; files recorded before the key existed were
        paired)."""
        return bool(self.configs.get(setting, {}).get("pretrain", {}).get("shared_init", True))

    def error_resolution(self, setting: str) -> float:
        """Smallest step of a test error on this setting's test set, in % (100 / n_test)."""
        n = self.n_test.get(setting, 0)
        return 100.0 / n if n else 0.0

    def setting_config(self, setting: str) -> dict:
        return self.configs[setting]

    def final_outputs(self, setting: str, method: str) -> np.ndarray:
        """Probe outputs at the last checkpoint of each complete run: (runs, N * C) float32."""
        runs = [r for r in sorted(self.select(setting, method), key=lambda r: r.seed)
                if r.status == COMPLETE]
        if not runs:
            return np.zeros((0, 0), dtype=np.float32)
        with ExperimentFile(self.files[setting]) as f:
            return np.stack([f.outputs(r.run_id, -1).reshape(-1) for r in runs])

    def trajectories(self, setting: str, methods: Iterable[str] | None = None
                     ) -> tuple[np.ndarray, list[RunResult]]:
        """Probe outputs of complete runs at every checkpoint: (runs, T, N * C) float32, with
        the runs in the same order. Runs shorter than the longest are left out."""
        runs = [r for r in self.select(setting) if r.status == COMPLETE
                and (methods is None or r.method in methods)]
        runs.sort(key=lambda r: (r.method, r.seed))
        if not runs:
            return np.zeros((0, 0, 0), dtype=np.float32), []
        with ExperimentFile(self.files[setting]) as f:
            arrs = [f.outputs(r.run_id) for r in runs]
        t = max(a.shape[0] for a in arrs)
        keep = [i for i, a in enumerate(arrs) if a.shape[0] == t]
        data = np.stack([arrs[i].reshape(t, -1) for i in keep])
        return data, [runs[i] for i in keep]


def read_study(study: Study, results_dir: str | Path) -> StudyResults:
    """Read every setting's result file of ``study``; missing files raise
    :class:`~trajviz.errors.InputFileNotFoundError` naming the file and the fix."""
    results_dir = Path(results_dir)
    out = StudyResults(study=study, results_dir=results_dir)
    for setting in study.settings:
        path = result_path(results_dir, setting)
        if not path.exists():
            raise InputFileNotFoundError(
                f"{path} is missing: the results of study {study.name!r}, setting {setting.id!r}; "
                f"run `trajviz reproduce --profile {study.profile}` to record it")
        out.files[setting.id] = path
        with ExperimentFile(path) as f:
            cfg = f.config
            out.configs[setting.id] = cfg
            out.n_test[setting.id] = int(cfg.get("dataset", {}).get("n_test", 0)) or _split_size(f)
            for info in f.runs():
                if info.status not in (COMPLETE, DIVERGED):
                    log.warning("%s: run %s is unfinished (%s); left out", path, info.run_id,
                                info.status)
                    continue
                metrics = f.metrics(info.run_id)
                out.runs.append(_run_result(setting.id, info, f.epochs(info.run_id), metrics))
    return out


def _split_size(f: ExperimentFile) -> int:
    # Standard splits (n_test = 0 in the config) are not stored as a number; the probe set is
    # the test split in every study, so its size is the best available answer.
    return f.probe_size


def _run_result(setting: str, info, epochs: np.ndarray, metrics: Mapping[str, np.ndarray]) -> RunResult:
    test = metrics.get("test_error", np.array([]))
    valid = metrics.get("valid_error", np.array([]))
    best = select_checkpoint(valid) if len(valid) else -1
    selected = float(test[best]) * 100 if best >= 0 and best < len(test) else np.nan
    finite = test[np.isfinite(test)] if len(test) else test
    final = float(finite[-1]) * 100 if len(finite) else np.nan
    return RunResult(setting=setting, method=info.group, seed=info.seed, status=info.status,
                     run_id=info.run_id, epochs=epochs, metrics=dict(metrics),
                     test_error=selected, final_test_error=final)


def read_results(studies: Mapping[str, Study], results_dir: str | Path) -> dict[str, StudyResults]:
    """:func:`read_study` for each study."""
    return {name: read_study(s, results_dir) for name, s in studies.items()}

