"""F9's data: 1-D loss scans around the final parameters of the landscape study's runs, through
:mod:`trajviz.landscape` (the studies' protocol: 7 stochastic-gradient directions, unit norm,
alpha in [-2.5, 2.5]; and, beside them, 7 filter-normalized random directions, Li et al. 2018,
whose curvature does not depend on the scale of the weights). Scans are resumable like the training runs: a finished scan is not redone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trajviz.errors import ConfigError
from trajviz.reproduce.studies import Setting, Study, result_path

log = logging.getLogger(__name__)

#: scan settings of the studies (Erhan et al. 2010, sec. 6.4); a study's ``scan`` table adjusts them
STUDY_SCAN = {"directions": ["sgd", "filter"], "n_directions": 7, "span": 2.5, "points": 51,
              "split": "train", "hessian": False}
#: half-width of the alpha window of the quadratic fit whose curvature measures sharpness
FIT_RADIUS = 0.5
#: the same for filter-normalized directions (Li et al. 2018), whose steps are as large as the
#: weights themselves: a narrower window keeps the fit local
FILTER_FIT_RADIUS = 0.2


def scan_path(results_dir: str | Path, study: Study, setting: Setting) -> Path:
    """``<results_dir>/<study>/<setting>.landscape.h5``."""
    return Path(results_dir) / study.name / f"{setting.id}.landscape.h5"


def scan_settings(study: Study) -> Any:
    """The :class:`trajviz.landscape.ScanSettings` of a study (validated; imports torch)."""
    from trajviz.landscape import ScanSettings

    params = dict(STUDY_SCAN)
    params.update(study.scan)
    params["directions"] = tuple(params["directions"])
    try:
        return ScanSettings(**params).validate()
    except TypeError as exc:
        raise ConfigError(f"{study.path}: scan table: {exc}; allowed keys are the fields of "
                          "trajviz.landscape.ScanSettings") from None


def run_scans(study: Study, results_dir: str | Path, *, progress: bool = False) -> list[Path]:
    """Scan every setting of ``study`` (resuming unfinished scans); returns the scan files."""
    from trajviz.landscape import scan_file

    settings = scan_settings(study)
    out = []
    for setting in study.settings:
        src = result_path(results_dir, setting)
        dst = scan_path(results_dir, study, setting)
        if _scan_complete(dst, src):
            log.info("%s/%s: landscape scan complete in %s", study.name, setting.id, dst)
        else:
            log.info("%s/%s: scanning %s", study.name, setting.id, src)
            scan_file(src, dst, settings=settings, mode="resume", progress=progress)
        out.append(dst)
    return out


def _scan_complete(dst: Path, src: Path) -> bool:
    if not dst.exists():
        return False
    from trajviz.landscape import load_result
    from trajviz.store import COMPLETE, ExperimentFile

    res = load_result(dst)
    with ExperimentFile(src) as f:
        want = {r.run_id for r in f.runs() if r.status == COMPLETE}
    done = {r.run_id for r in res.runs if r.complete}
    return want <= done


def load_scans(results: Any) -> dict[str, Any]:
    """setting id -> :class:`trajviz.landscape.LandscapeResult` of a landscape study's results."""
    from trajviz.landscape import load_result

    out = {}
    for setting in results.study.settings:
        path = scan_path(results.results_dir, results.study, setting)
        if not path.exists():
            raise ConfigError(f"{path} is missing: the landscape scan of setting {setting.id!r}; "
                              "run `trajviz reproduce --only F9` to compute it")
        out[setting.id] = load_result(path)
    return out


def fit_radius(alphas: np.ndarray, kind: str) -> float:
    """Half-width of the quadratic fit for a direction kind: :data:`FIT_RADIUS` for unit-norm
    directions, :data:`FILTER_FIT_RADIUS` for filter-normalized ones (a step of alpha = 1 moves
    every unit's weights by their own norm), widened to two scan steps if the scan is coarser."""
    radius = FILTER_FIT_RADIUS if kind == "filter" else FIT_RADIUS
    steps = np.diff(np.sort(np.asarray(alphas, dtype=float)))
    return max(radius, float(steps.max()) * 1.0001 if len(steps) else radius)


def run_curvatures(scan: Any, kind: str = "sgd") -> dict[str, list[float]]:
    """group -> per-run curvature (mean over directions of the quadratic fit's second
    derivative of training NLL, NLL per unit alpha^2) of the complete runs of one scan."""
    return {g: [c for _, c in v] for g, v in run_curvatures_by_seed(scan, kind).items()}


def run_curvatures_by_seed(scan: Any, kind: str = "sgd") -> dict[str, list[tuple[int, float]]]:
    """group -> (seed, curvature) of the complete runs of one scan (see :func:`run_curvatures`);
    the seed is read from the run id ``<method>-seed<seed>`` (-1 if it has none)."""
    from trajviz.landscape import quadratic_curvature

    out: dict[str, list[tuple[int, float]]] = {}
    radius = fit_radius(scan.alphas, kind)
    for run in scan.runs:
        if not run.complete or kind not in run.scans1d:
            continue
        curv = quadratic_curvature(scan.alphas, run.scans1d[kind]["nll"], radius)
        _, _, tail = run.run_id.rpartition("-seed")
        seed = int(tail) if tail.isdigit() else -1
        out.setdefault(run.group, []).append((seed, float(np.nanmean(curv))))
    return out


@dataclass
class Curvatures:
    """Per-run curvatures of a landscape study, one cell per (method, setting) and direction
    kind: ``cells[kind]["none@depth2"]`` (runs,) and ``seeds[kind][...]`` alike."""

    cells: dict[str, dict[str, np.ndarray]]
    seeds: dict[str, dict[str, np.ndarray]]
    depth: dict[str, int]  # setting -> hidden layers
    nll: dict[str, dict[str, float]]  # setting -> method -> mean training NLL at theta
    radius: dict[str, float]  # kind -> fit half-width used


def curvature_cells(results: Any, kinds: tuple[str, ...] = ("sgd", "filter")) -> Curvatures:
    """Curvatures of every setting of a landscape study's scans, for each direction kind the
    scans hold (a kind no setting scanned is left out; one that only some scanned raises)."""
    scans = load_scans(results)
    out = Curvatures({}, {}, {}, {}, {})
    for sid, scan in scans.items():
        out.depth[sid] = int(results.setting_config(sid).get("model", {}).get("depth", 0))
        out.nll[sid] = {m: float(np.mean([r.loss_at_theta[0] for r in scan.runs
                                          if r.group == m and r.complete] or [np.nan]))
                        for m in ("none", "sdae")}
        for kind in kinds:
            by = run_curvatures_by_seed(scan, kind)
            if not by:
                continue
            out.radius[kind] = fit_radius(scan.alphas, kind)
            for m in ("none", "sdae"):
                if m not in by:
                    raise ConfigError(f"landscape scan of setting {sid!r} has no complete run of "
                                      f"method {m!r} along {kind!r} directions")
                out.cells.setdefault(kind, {})[f"{m}@{sid}"] = np.array([c for _, c in by[m]])
                out.seeds.setdefault(kind, {})[f"{m}@{sid}"] = np.array([x for x, _ in by[m]])
    for kind, cells in out.cells.items():
        missing = [sid for sid in scans if f"none@{sid}" not in cells]
        if missing:
            raise ConfigError(f"landscape scans of {', '.join(missing)} have no {kind!r} "
                              "directions while others do; rescan them with the same directions")
    return out


def _ms(v: np.ndarray) -> str:
    return f"{np.mean(v):.3g} +- {np.std(v, ddof=1):.2g}" if len(v) > 1 else f"{np.mean(v):.3g}"
