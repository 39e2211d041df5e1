"""``trajviz reproduce``: every finding of Erhan et al. (2009, 2010) by one call.

:func:`reproduce` reads the study files (runs/studies/*.toml, :mod:`.studies`), records whatever
results are missing (:mod:`.run`; finished runs are not redone), runs the landscape scans F9
needs (:mod:`.landscape`), computes each finding's statistic, interval and verdict
(:mod:`trajviz.findings`), draws the figures (:mod:`.figures`) and writes the report
(:mod:`trajviz.report`). Output layout under ``output``::

    results/<study>/<setting>.h5             one trajviz file per study setting
    results/landscape/<setting>.landscape.h5 F9's scans
    figures/<name>.pdf, .png (.gif)          the figures
    report.md, report.html, findings.json    the report
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from trajviz.reproduce.studies import PROFILES, Setting, Study, load_studies, result_path

log = logging.getLogger(__name__)

__all__ = ["reproduce", "ReproduceResult", "load_studies", "Study", "Setting", "result_path",
           "PROFILES", "DEFAULT_STUDIES"]

DEFAULT_STUDIES = Path("runs/studies")


@dataclass
class ReproduceResult:
    """What :func:`reproduce` produced: findings, report files, figures and timings."""

    findings: list
    report: list[Path]
    figures: dict[str, list[Path]]
    seconds: dict[str, float]
    settings: list


def reproduce(*, profile: str = "quick", only: str | Sequence[str] | None = None,
              output: str | Path = "reproduce-quick", studies_dir: str | Path = DEFAULT_STUDIES,
              seed: int = 0, n_boot: int = 2000, figures: bool = True, progress: bool = False,
              command: str = "") -> ReproduceResult:
    """Record missing results, then compute findings, figures and the report.

    ``only``: finding ids (``"F1,F10"`` or a list); default all. ``seed`` seeds the bootstrap
    and the embeddings. Returns a :class:`ReproduceResult`.
    """
    from trajviz import __version__
    from trajviz.findings import FINDINGS, evaluate_finding, parse_only
    from trajviz.report import ReportMeta, write_report
    from trajviz.reproduce.results import read_results
    from trajviz.reproduce.run import needed_studies, run_missing

    ids = parse_only(",".join(only) if isinstance(only, (list, tuple)) else only)
    output = Path(output)
    results_dir = output / "results"
    studies = load_studies(studies_dir, profile)  # validates every config before training
    wanted = [s for i in ids for s in FINDINGS[i].studies]
    plan = needed_studies(studies, dict.fromkeys(wanted))
    if "landscape" in [s.name for s in plan]:
        from trajviz.reproduce.landscape import scan_settings

        scan_settings(studies["landscape"])  # fail now, not after training
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    settings = run_missing(plan, results_dir, progress=progress)
    seconds["training"] = time.perf_counter() - t0
    for s in settings:
        if s.status == "recorded":
            seconds[f"training {s.study}/{s.setting}"] = s.seconds
    if "landscape" in [s.name for s in plan] and "F9" in ids:
        from trajviz.reproduce.landscape import run_scans

        t = time.perf_counter()
        run_scans(studies["landscape"], results_dir, progress=progress)
        seconds["landscape scans"] = time.perf_counter() - t
    t = time.perf_counter()
    results = read_results({s.name: s for s in plan}, results_dir)
    findings = [evaluate_finding(i, results, seed=seed, n_boot=n_boot) for i in ids]
    seconds["findings"] = time.perf_counter() - t
    figs: dict[str, list[Path]] = {}
    from trajviz.reproduce.figures import FIGURES, FigureContext, make_figures

    if figures:
        t = time.perf_counter()
        figs = make_figures(FigureContext(results, seed=seed), ids, output / "figures")
        seconds["figures"] = time.perf_counter() - t
    seconds["total"] = time.perf_counter() - t0
    rows = [{"study": s.study, "setting": s.setting, "file": str(s.path.relative_to(output)),
             "runs": s.n_runs, "status": s.status, "seconds": f"{s.seconds:.1f}"} for s in settings]
    meta = ReportMeta(profile=profile, command=command or f"trajviz reproduce --profile {profile}",
                      version=__version__, seconds=seconds, settings=rows, figures=figs,
                      captions={f.name: f.caption for f in FIGURES},
                      figure_findings={f.name: f.findings for f in FIGURES},
                      n_boot=n_boot, seed=seed)
    report = write_report(findings, meta, output)
    return ReproduceResult(findings=findings, report=report, figures=figs, seconds=seconds,
                           settings=settings)
