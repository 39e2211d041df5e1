"""F9's data: 1-D loss scans around the final parameters of the landscape study's runs, through
:mod:`trajviz.landscape` (the studies' protocol: 7 stochastic-gradient directions, unit norm,
alpha in [-2.5, 2.5]). Scans are resumable like the training runs: a finished scan is not redone.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from trajviz.errors import ConfigError
from trajviz.reproduce.studies import Setting, Study, result_path

log = logging.getLogger(__name__)

#: scan settings of the studies (Erhan et al. 2010, sec. 6.4); a study's ``scan`` table adjusts them
STUDY_SCAN = {"directions": ["sgd"], "n_directions": 7, "span": 2.5, "points": 51,
              "split": "train", "hessian": False}
#: half-width of the alpha window of the quadratic fit whose curvature measures sharpness
FIT_RADIUS = 0.5


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


def run_curvatures(scan: Any, kind: str = "sgd") -> dict[str, list[float]]:
    """group -> per-run curvature (mean over directions of the quadratic fit's second
    derivative of training NLL, NLL per unit alpha^2) of the complete runs of one scan."""
    from trajviz.landscape import quadratic_curvature

    out: dict[str, list[float]] = {}
    for run in scan.runs:
        if not run.complete or kind not in run.scans1d:
            continue
        curv = quadratic_curvature(scan.alphas, run.scans1d[kind]["nll"], FIT_RADIUS)
        out.setdefault(run.group, []).append(float(np.nanmean(curv)))
    return out


def flatness_cells(results: Any, seed: int = 0) -> tuple[dict[str, np.ndarray],
                                                          list[tuple[str, str]],
                                                          list[dict[str, Any]], list[str]]:
    """Cells for F9: ``none@<setting>`` and ``sdae@<setting>`` per-run curvatures, the pairs to
    compare, a details table and notes (including the depth effect)."""
    scans = load_scans(results)
    cells: dict[str, np.ndarray] = {}
    pairs, details = [], []
    by_depth: dict[int, list[float]] = {}
    for sid, scan in scans.items():
        curv = run_curvatures(scan)
        depth = int(results.setting_config(sid).get("model", {}).get("depth", 0))
        for m in ("none", "sdae"):
            if m not in curv:
                raise ConfigError(f"landscape scan of setting {sid!r} has no complete run of "
                                  f"method {m!r}")
            cells[f"{m}@{sid}"] = np.asarray(curv[m])
            by_depth.setdefault(depth, []).extend(curv[m])
        pairs.append((f"none@{sid}", f"sdae@{sid}"))
        nll0 = {m: [r.loss_at_theta[0] for r in scan.runs if r.group == m and r.complete]
                for m in ("none", "sdae")}
        details.append({"hidden layers": depth,
                        "none: curvature mean +- SD": _ms(cells[f"none@{sid}"]),
                        "sdae: curvature mean +- SD": _ms(cells[f"sdae@{sid}"]),
                        "none: train NLL at theta": f"{np.mean(nll0['none']):.3f}",
                        "sdae: train NLL at theta": f"{np.mean(nll0['sdae']):.3f}"})
    notes = [f"curvature: 2nd derivative of a quadratic fit of training NLL on |alpha| <= "
             f"{FIT_RADIUS} along unit-norm stochastic-gradient directions"]
    if len(by_depth) > 1:
        ds = sorted(by_depth)
        notes.append("depth effect (mean curvature, both methods): " + ", ".join(
            f"{d} layers {np.mean(by_depth[d]):.3g}" for d in ds))
    return cells, pairs, details, notes


def _ms(v: np.ndarray) -> str:
    return f"{np.mean(v):.3g} +- {np.std(v, ddof=1):.2g}" if len(v) > 1 else f"{np.mean(v):.3g}"

