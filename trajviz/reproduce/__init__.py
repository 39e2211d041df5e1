"""``trajviz reproduce``: every finding of Erhan et al. (2009, 2010) by one call.

:func:`reproduce` reads the study files (packaged with trajviz, trajviz/presets/studies/*.toml, or
a directory of edited copies; :mod:`.studies`), records whatever
results are missing (:mod:`.run`, after choosing each condition's hyper-parameters on
validation error, :mod:`.selection`; finished runs are not redone), runs the landscape scans F9
needs (:mod:`.landscape`), computes each finding's statistic, interval and verdict
(:mod:`.findings`, with the bootstrap and verdict rule of :mod:`.statistics`; the studies'
results read by :mod:`.results`), draws the figures (:mod:`.figures`) and writes the report
(:mod:`.report`). :func:`trajviz.reproduce.plan.plan_reproduction` counts what is still
missing and estimates its time without training (:mod:`.plan`; finished runs and batches:
:mod:`.chunks`). Output layout under ``output``::

    results/<study>/<setting>.h5             one trajviz file per study setting
    results/<study>/select/...               model selection runs and summaries (:mod:`.selection`)
    results/landscape/<setting>.landscape.h5 F9's scans
    results/timings.json                     wall and CPU seconds of each setting's recording
    results/shards/<chunk>.h5                ``ray=...`` only: chunks not yet gathered (:mod:`.distributed`)
    figures/<name>.pdf, .png (.gif)          the figures
    report.md, report.html, findings.json    the report
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from trajviz.reproduce.studies import (PROFILES, Setting, Study, copy_studies, load_studies,
                                       packaged_studies, result_path)

log = logging.getLogger(__name__)

__all__ = ["reproduce", "ReproduceResult", "load_studies", "Study", "Setting", "result_path",
           "PROFILES", "DEFAULT_STUDIES", "copy_studies", "packaged_studies"]

#: ``studies_dir`` default: the study files packaged with trajviz (any working directory)
DEFAULT_STUDIES = None


@dataclass
class ReproduceResult:
    """What :func:`reproduce` produced: findings, report files, figures and timings."""

    findings: list
    report: list[Path]
    figures: dict[str, list[Path]]
    seconds: dict[str, float]
    settings: list
    cpu_seconds: dict[str, float]


def reproduce(*, profile: str = "quick", only: str | Sequence[str] | None = None,
              output: str | Path = "reproduce-quick", studies_dir: str | Path | None = DEFAULT_STUDIES,
              seed: int = 0, n_boot: int = 2000, figures: bool = True, progress: bool = False,
              command: str = "", ray: str | None = None, workers: int | None = None,
              chunk: int | None = None, retries: int = 2, task=None) -> ReproduceResult:
    """Record missing results, then compute findings, figures and the report.

    ``only``: finding ids (``"F1,F10"`` or a list); default all. ``studies_dir``: a directory
    of study files; ``None``, the ones packaged with trajviz. ``seed`` seeds the bootstrap
    and the embeddings. ``ray``: record the missing runs as Ray tasks in seed chunks
    (``"local"``, ``"auto"`` or ``"HOST:PORT"``; :mod:`.distributed`) with ``workers`` CPUs
    (``"local"`` only), ``chunk`` seeds per task and ``retries``; ``task`` replaces a chunk's
    task (tests). Returns a :class:`ReproduceResult`.
    """
    from trajviz import __version__
    from trajviz.reproduce.findings import FINDINGS, evaluate_finding, parse_only
    from trajviz.reproduce.report import ReportMeta, write_report
    from trajviz.reproduce.results import read_results
    from trajviz.reproduce.run import check_data, needed_studies, run_missing

    ids = parse_only(",".join(only) if isinstance(only, (list, tuple)) else only)
    output = Path(output)
    results_dir = output / "results"
    studies = load_studies(studies_dir, profile)  # validates every config before training
    wanted = [s for i in ids for s in FINDINGS[i].studies]
    plan = needed_studies(studies, dict.fromkeys(wanted))
    if ray in (None, "local"):  # a cluster's workers read their own data
        check_data(plan)  # missing MNIST files: one line now, not a traceback after an hour
    if "landscape" in [s.name for s in plan]:
        from trajviz.reproduce.landscape import scan_settings

        scan_settings(studies["landscape"])  # fail now, not after training
    seconds: dict[str, float] = {}
    cpu: dict[str, float] = {}
    clock = _Clock(seconds, cpu)
    with clock("training"):
        if ray:
            from trajviz.reproduce.distributed import record_chunk, run_missing_ray

            settings, _ = run_missing_ray(plan, results_dir, ray, workers=workers, retries=retries,
                                          chunk=chunk, progress=progress, task=task or record_chunk)
        else:
            from trajviz.reproduce.distributed import merge_shards

            for study in plan:  # chunks an interrupted --ray run left: keep their runs
                for setting in study.settings:
                    if setting.source is None:
                        merge_shards(setting, results_dir)
            settings = run_missing(plan, results_dir, progress=progress)
    for s in settings:
        if s.status in ("recorded", "complete") and s.seconds:
            key = f"training {s.study}/{s.setting}" + (" (earlier)" if s.status == "complete" else "")
            seconds[key], cpu[key] = s.seconds, s.cpu_seconds
    if "landscape" in [s.name for s in plan] and any(i.startswith("F9") for i in ids):
        from trajviz.reproduce.landscape import run_scans

        with clock("landscape scans"):
            run_scans(studies["landscape"], results_dir, progress=progress)
    with clock("findings"):
        results = read_results({s.name: s for s in plan}, results_dir)
        findings = [evaluate_finding(i, results, seed=seed, n_boot=n_boot) for i in ids]
    figs: dict[str, list[Path]] = {}
    from trajviz.reproduce.figures import FIGURES, FigureContext, make_figures

    if figures:
        with clock("figures"):
            figs = make_figures(FigureContext(results, seed=seed, n_boot=n_boot), ids, output / "figures")
    seconds["total"] = time.perf_counter() - clock.start
    cpu["total"] = time.process_time() - clock.cpu_start
    designs, chosen = design_rows(plan), selection_rows(plan, results_dir)
    rows = [{"study": s.study, "setting": s.setting, "file": str(s.path.relative_to(output)),
             "runs": s.n_runs, "status": s.status, "seconds": f"{s.seconds:.1f}",
             "CPU seconds": f"{s.cpu_seconds:.1f}"} for s in settings]
    meta = ReportMeta(profile=profile, command=command or f"trajviz reproduce --profile {profile}",
                      version=__version__, seconds=seconds, cpu_seconds=cpu, settings=rows, figures=figs,
                      captions={f.name: f.caption for f in FIGURES},
                      figure_findings={f.name: f.findings for f in FIGURES},
                      n_boot=n_boot, seed=seed, designs=designs, selection=chosen)
    report = write_report(findings, meta, output)
    return ReproduceResult(findings=findings, report=report, figures=figs, seconds=seconds,
                           settings=settings, cpu_seconds=cpu)


def design_rows(studies: Sequence[Study]) -> list[dict[str, str]]:
    """One row per study: whether its runs of one seed are paired across methods
    (``pretrain.shared_init``) or independent, and how it chose its hyper-parameters."""
    rows = []
    for st in studies:
        shared = {s.config.pretrain.shared_init for s in st.settings if s.config is not None}
        if not shared:
            design = "reuses other studies' runs"
        elif shared == {False}:
            design = "independent nets (pretrain.shared_init = false)"
        elif shared == {True}:
            design = ("paired: runs of one seed share initial weights and example order "
                      "(pretrain.shared_init = true); intervals resample whole seeds")
        else:
            design = "mixed: some settings paired, some independent"
        if st.select is None:
            how = "as configured (no selection grid)"
        else:
            grid = "; ".join(f"{k} in {{{', '.join(map(repr, v))}}}" for k, v in st.select.grid)
            how = (f"per condition, lowest mean validation error on seeds "
                   f"{_seed_text(st.select.seeds)} over {grid}")
        rows.append({"study": st.name, "design": design, "hyper-parameters": how})
    return rows


def _seed_text(seeds: Sequence[int]) -> str:
    s = list(seeds)
    if len(s) > 2 and s == list(range(s[0], s[0] + len(s))):
        return f"{s[0]}..{s[-1]}"
    return ", ".join(map(str, s))


def selection_rows(studies: Sequence[Study], results_dir: Path) -> list[dict[str, str]]:
    """The chosen grid point of every condition (setting x method) of the studies that select,
    from their stored selection summaries."""
    from trajviz.reproduce.selection import read_selection

    rows = []
    for st in studies:
        for setting in st.settings:
            if setting.source is not None:
                continue
            summary = read_selection(results_dir, st, setting)
            if summary is None:
                continue
            for method, m in summary["methods"].items():
                pts = m["points"]
                rows.append({"study": st.name, "setting": setting.id, "method": method,
                             "chosen": ", ".join(f"{k} = {v!r}" for k, v in m["chosen"].items())
                             or "-",
                             "valid error % (selection seeds)":
                                 f"{100 * m['chosen_valid_error']:.2f}",
                             "grid points": str(len(pts)),
                             "worst point's valid error %":
                                 f"{100 * max(p['mean_valid_error'] for p in pts):.2f}"})
    return rows


class _Clock:
    """Wall and CPU seconds of named parts (the machine may be shared: CPU time is the work)."""

    def __init__(self, wall: dict[str, float], cpu: dict[str, float]):
        self.wall, self.cpu = wall, cpu
        self.start, self.cpu_start = time.perf_counter(), time.process_time()

    def __call__(self, part: str) -> "_Clock":
        self._part = part
        return self

    def __enter__(self) -> None:
        self._t, self._c = time.perf_counter(), time.process_time()

    def __exit__(self, *exc: object) -> None:
        self.wall[self._part] = time.perf_counter() - self._t
        self.cpu[self._part] = time.process_time() - self._c
