"""The reproduction report: ``report.md`` and ``report.html`` (figures inline, the interactive
ones with plotly.js inlined once), and
``findings.json``, from computed :class:`~trajviz.reproduce.findings.FindingResult` objects.

The findings table has, per finding: the statistic that tests it, its value with the BCa
bootstrap 95% interval, the studies' value where they give one, and the verdict computed by the
rule of docs/findings.md. Findings that do not reproduce are stated plainly at the top.
"""

from __future__ import annotations

import base64
import html
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from trajviz.plots.interactive import page_body, plotly_js
from trajviz.reproduce.findings import INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED, FindingResult

VERDICT_RULE = (
    "Each statistic is signed so that the studies' claim predicts a positive value. With "
    "[lo, hi] its bootstrap 95% interval (BCa) and delta the smallest effect of interest: "
    "**reproduced** if lo > 0 and hi >= delta; **not reproduced** if hi < delta (an effect of "
    "size delta is ruled out); **inconclusive** otherwise, or when the statistic cannot be "
    "computed. F10a and F10b are tests (permutation p-value p of a k-NN group accuracy): "
    "**reproduced** if p <= 0.05, **not reproduced** if p > 0.5 (no sign of separation), "
    "**inconclusive** otherwise. F10c: **reproduced** if each group's spread rises for good "
    "after the first checkpoint in at least 95% of bootstrap resamples, **not reproduced** if "
    "some group's does not at the point value nor in at least half of them. See docs/findings.md.")


@dataclass
class ReportMeta:
    """Facts about the run that the report states."""

    profile: str
    command: str
    version: str
    seconds: Mapping[str, float] = field(default_factory=dict)  # part -> wall seconds
    cpu_seconds: Mapping[str, float] = field(default_factory=dict)  # part -> CPU seconds
    settings: Sequence[Mapping[str, Any]] = field(default_factory=list)  # one row per setting
    figures: Mapping[str, Sequence[Path]] = field(default_factory=dict)  # name -> files
    captions: Mapping[str, str] = field(default_factory=dict)
    figure_findings: Mapping[str, Sequence[str]] = field(default_factory=dict)
    n_boot: int = 2000
    seed: int = 0
    designs: Sequence[Mapping[str, Any]] = field(default_factory=list)  # one row per study
    selection: Sequence[Mapping[str, Any]] = field(default_factory=list)  # one row per condition


def is_test(r: FindingResult) -> bool:
    """Findings decided by a p-value (F10a, F10b) rather than an interval."""
    return math.isfinite(r.alpha)


def format_value(r: FindingResult) -> str:
    """``+0.44 [+0.12, +0.80]``, ``0.95 (p = 0.002)``, a value in words, or ``n/a``."""
    if r.value_text:
        return r.value_text
    if not math.isfinite(r.value):
        return "n/a"
    if is_test(r):
        p = f"p = {r.p_value:.2g}" if math.isfinite(r.p_value) else "no test"
        return f"{r.value:.3g} ({p})"
    ci = (f" [{r.lo:+.3g}, {r.hi:+.3g}]" if math.isfinite(r.lo) and math.isfinite(r.hi)
          else " [no interval]")
    return f"{r.value:+.3g}{ci}"


def _criterion(r: FindingResult) -> str:
    """How the verdict was reached, for the finding's section."""
    if is_test(r):
        return f"one-sided permutation test at level {r.alpha:g}; {r.n_runs} runs"
    if r.value_text:
        return f"{r.n_runs} runs"
    return f"smallest effect of interest {r.delta:.3g}; {r.n_runs} runs"


def plain_statement(r: FindingResult, profile: str) -> str:
    """One sentence saying what the data show for a finding."""
    scale = f"at the {profile} scale"
    if not r.available:
        return f"{r.id} was not evaluated {scale}: {'; '.join(r.notes)}."
    value = f"{r.statistic} = {format_value(r)}" + ("" if is_test(r) or r.value_text
                                                     else f" {r.unit}")
    if is_test(r):
        if r.verdict == REPRODUCED:
            return f"{r.id} reproduces {scale}: {value}, at most {r.alpha:g}."
        if r.verdict == NOT_REPRODUCED:
            return (f"{r.id} does not reproduce {scale}: {value}; the accuracy is no higher than "
                    "under half of the relabellings of the runs: no sign of separation.")
        why = ("no test was possible or it cannot reach the level with these runs"
               if not math.isfinite(r.p_value) or any("cannot reach" in n for n in r.notes)
               else f"some separation, but p lies between {r.alpha:g} and 0.5")
        return f"{r.id} is inconclusive {scale}: {value}; {why}."
    if r.value_text:
        if r.verdict == REPRODUCED:
            return f"{r.id} reproduces {scale}: {value}."
        if r.verdict == NOT_REPRODUCED:
            return (f"{r.id} does not reproduce {scale}: {value}; at least one group's spread "
                    "does not rise for good, in most bootstrap resamples too.")
        return (f"{r.id} is inconclusive {scale}: {value}; the bootstrap resamples do not agree "
                "on whether each group's spread rises for good.")
    if r.verdict == REPRODUCED:
        return f"{r.id} reproduces {scale}: {value}."
    if r.verdict == NOT_REPRODUCED:
        return (f"{r.id} does not reproduce {scale}: {value}; "
                f"the interval rules out an effect of {r.delta:.3g} {r.unit} or more in the "
                "studies' direction.")
    if not (math.isfinite(r.lo) and math.isfinite(r.hi)):
        return (f"{r.id} is inconclusive {scale}: {value}; no "
                f"interval could be computed ({'; '.join(r.notes) or 'too few runs'}).")
    return (f"{r.id} is inconclusive {scale}: {value}; the "
            "interval includes both no effect and an effect of the smallest size of interest "
            f"({r.delta:.3g}); more seeds would be needed.")


def _md_table(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    if not rows:
        return []
    cols: list[str] = []
    for r in rows:
        cols += [c for c in r if c not in cols]
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        out.append("| " + " | ".join(str(r.get(c, "")).replace("|", "/") for c in cols) + " |")
    return out


def findings_rows(results: Sequence[FindingResult]) -> list[dict[str, str]]:
    return [{"finding": r.id, "claim": r.claim, "statistic": r.statistic,
             "value [95% CI] or (p)": format_value(r), "unit": r.unit, "studies' value": r.reference or "-",
             "verdict": r.verdict} for r in results]


def render_markdown(results: Sequence[FindingResult], meta: ReportMeta, out_dir: Path) -> str:
    lines = [f"# trajviz reproduce: Erhan et al. (2009, 2010), {meta.profile} profile", ""]
    lines += [f"`{meta.command}` (trajviz {meta.version}); BCa bootstrap: {meta.n_boot} resamples, "
              f"seed {meta.seed}.", ""]
    counts = {v: sum(r.verdict == v for r in results) for v in (REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE)}
    lines += [f"**{counts[REPRODUCED]} reproduced, {counts[NOT_REPRODUCED]} not reproduced, "
              f"{counts[INCONCLUSIVE]} inconclusive** out of {len(results)} findings.", ""]
    lines += ["## Findings", ""] + _md_table(findings_rows(results)) + ["", VERDICT_RULE, ""]
    lines += ["## What the data say", ""]
    lines += [f"- {plain_statement(r, meta.profile)}" for r in results] + [""]
    for r in results:
        lines += [f"## {r.id}: {r.claim}", ""]
        lines += [f"- statistic: {r.statistic}", f"- value: {format_value(r)} {r.unit} "
                  f"({_criterion(r)})",
                  f"- studies' value: {r.reference or '-'}", f"- verdict: **{r.verdict}**"]
        lines += [f"- {n}" for n in r.notes] + [""]
        # figures before the finding's table, which can run to dozens of rows
        for name, findings in meta.figure_findings.items():
            if r.id == findings[0] and name in meta.figures:
                for p in meta.figures[name]:
                    rel = p.relative_to(out_dir) if p.is_relative_to(out_dir) else p
                    if p.suffix in (".png", ".gif"):
                        lines += [f"![{name}]({rel.as_posix()})", "",
                                  f"*{meta.captions.get(name, name)}*", ""]
                    elif p.suffix == ".html":
                        lines += [f"[{name} (interactive)]({rel.as_posix()}): "
                                  f"*{meta.captions.get(name, name)}*", ""]
        lines += _md_table(r.details) + ([""] if r.details else [])
    if meta.designs:
        lines += ["## Design", "", DESIGN_NOTE, ""] + _md_table(meta.designs) + [""]
    if meta.selection:
        lines += ["## Model selection", "", SELECTION_NOTE, ""] + _md_table(meta.selection) + [""]
    if meta.settings:
        lines += ["## Runs", ""] + _md_table(meta.settings) + [""]
    if meta.seconds:
        lines += ["## Time", "", TIME_NOTE, ""] + _md_table(_time_rows(meta)) + [""]
    return "\n".join(lines)


DESIGN_NOTE = ("How each study drew its nets: independent (every run its own initial weights and "
               "example order, as in the studies) or paired across methods by seed; and how it "
               "chose its hyper-parameters.")
SELECTION_NOTE = ("Each condition (setting x pre-training method) tried every grid point on the "
                  "selection seeds (not among the reported runs) and trains its reported runs at "
                  "the point of lowest mean validation error (the lowest over each run's "
                  "checkpoints); docs/reproduce.md.")
TIME_NOTE = ("Wall seconds depend on what else the machine runs; CPU seconds (this process, all "
             "threads) measure the work. Settings already complete are not retrained; rows marked "
             "'(earlier)' give the time of their recording.")


def _time_rows(meta: ReportMeta) -> list[dict[str, str]]:
    return [{"part": k, "wall seconds": f"{v:.1f}",
             "CPU seconds": f"{meta.cpu_seconds[k]:.1f}" if k in meta.cpu_seconds else "-"}
            for k, v in meta.seconds.items()]


def _html_table(rows: Sequence[Mapping[str, Any]]) -> str:
    if not rows:
        return ""
    cols: list[str] = []
    for r in rows:
        cols += [c for c in r if c not in cols]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td class='{_css(r.get(c))}'>{html.escape(str(r.get(c, '')))}</td>"
                                    for c in cols) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _css(value: Any) -> str:
    return {REPRODUCED: "ok", NOT_REPRODUCED: "no", INCONCLUSIVE: "maybe"}.get(str(value), "")


def _img(path: Path) -> str:
    mime = {".png": "image/png", ".gif": "image/gif"}[path.suffix]
    data = base64.b64encode(path.read_bytes()).decode()
    return f"<img src='data:{mime};base64,{data}' alt='{html.escape(path.stem)}'>"


def _plotly_script(meta: ReportMeta) -> list[str]:
    """plotly.js, inlined once, when the report embeds interactive figures (so the page opens
    offline as one file)."""
    if not any(p.suffix == ".html" for paths in meta.figures.values() for p in paths):
        return []
    return [f"<script type='text/javascript'>{plotly_js()}</script>"]


def render_html(results: Sequence[FindingResult], meta: ReportMeta) -> str:
    e = html.escape
    parts = ["<!doctype html><html><head><meta charset='utf-8'>",
             f"<title>trajviz reproduce ({e(meta.profile)})</title><style>",
             "body{font-family:sans-serif;max-width:1100px;margin:auto;padding:1em;line-height:1.4}",
             "table{border-collapse:collapse;margin:0.5em 0;font-size:0.9em}",
             "td,th{border:1px solid #ccc;padding:3px 6px;text-align:left}",
             ".ok{background:#dfd}.no{background:#fdd}.maybe{background:#ffd}",
             "img{max-width:100%;display:block;margin:0.5em 0}figcaption{font-style:italic}",
             "</style>", *_plotly_script(meta), "</head><body>",
             f"<h1>trajviz reproduce: Erhan et al. (2009, 2010), {e(meta.profile)} profile</h1>",
             f"<p><code>{e(meta.command)}</code> (trajviz {e(meta.version)}); BCa bootstrap: "
             f"{meta.n_boot} resamples, seed {meta.seed}.</p>",
             "<h2>Findings</h2>", _html_table(findings_rows(results)),
             f"<p>{e(VERDICT_RULE).replace('**', '')}</p>", "<h2>What the data say</h2><ul>"]
    parts += [f"<li>{e(plain_statement(r, meta.profile))}</li>" for r in results]
    parts.append("</ul>")
    for r in results:
        parts.append(f"<h2>{e(r.id)}: {e(r.claim)}</h2><ul>")
        parts += [f"<li>statistic: {e(r.statistic)}</li>",
                  f"<li>value: {e(format_value(r))} {e(r.unit)} ({e(_criterion(r))})</li>",
                  f"<li>studies' value: {e(r.reference or '-')}</li>",
                  f"<li>verdict: <b class='{_css(r.verdict)}'>{e(r.verdict)}</b></li>"]
        parts += [f"<li>{e(n)}</li>" for n in r.notes]
        parts.append("</ul>")
        # figures before the finding's table, which can run to dozens of rows
        for name, findings in meta.figure_findings.items():
            if r.id == findings[0] and name in meta.figures:
                for p in meta.figures[name]:
                    if p.suffix in (".png", ".gif"):
                        body = _img(p)
                    elif p.suffix == ".html":
                        body = page_body(p)
                    else:
                        continue
                    parts.append(f"<figure>{body}<figcaption>"
                                 f"{e(meta.captions.get(name, name))}</figcaption></figure>")
        parts.append(_html_table(r.details))
    if meta.designs:
        parts += ["<h2>Design</h2>", f"<p>{html.escape(DESIGN_NOTE)}</p>", _html_table(meta.designs)]
    if meta.selection:
        parts += ["<h2>Model selection</h2>", f"<p>{html.escape(SELECTION_NOTE)}</p>",
                  _html_table(meta.selection)]
    if meta.settings:
        parts += ["<h2>Runs</h2>", _html_table(meta.settings)]
    if meta.seconds:
        parts += ["<h2>Time</h2>", f"<p>{html.escape(TIME_NOTE)}</p>", _html_table(_time_rows(meta))]
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(results: Sequence[FindingResult], meta: ReportMeta, out_dir: str | Path) -> list[Path]:
    """Write report.md, report.html and findings.json into ``out_dir``; returns their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    md, page, js = out_dir / "report.md", out_dir / "report.html", out_dir / "findings.json"
    md.write_text(render_markdown(results, meta, out_dir))
    page.write_text(render_html(results, meta))
    js.write_text(json.dumps({"profile": meta.profile, "findings": [r.to_dict() for r in results],
                              "designs": list(meta.designs), "selection": list(meta.selection)},
                             indent=2))
    return [md, page, js]


# --------------------------------------------------------------------------- README's table

#: the lines that enclose the findings table in README.md (the table between them is written by
#: ``trajviz report readme-table FINDINGS --readme README.md``, never by hand)
README_BEGIN = "<!-- findings-table: written by `trajviz report readme-table {source} --readme README.md`; do not edit by hand -->"
README_END = "<!-- /findings-table -->"


def finding_from_dict(d: Mapping[str, Any]) -> FindingResult:
    """A :class:`FindingResult` back from its ``findings.json`` entry (nulls become NaN)."""
    import dataclasses

    fields = {f.name: f for f in dataclasses.fields(FindingResult)}
    kw = {}
    for k, v in d.items():
        if k not in fields:
            continue
        kw[k] = math.nan if v is None and fields[k].type in ("float", float) else v
    return FindingResult(**kw)


def readme_table(findings: Mapping[str, Any]) -> str:
    """The README's findings table (Markdown) from a stored ``findings.json`` (as loaded): one
    row per finding with its claim, statistic, value (with its interval, or p-value), unit,
    studies' value and verdict, formatted as the report formats them."""
    from trajviz.errors import FormatError

    try:
        rows = [finding_from_dict(r) for r in findings["findings"]]
    except (KeyError, TypeError) as exc:
        raise FormatError(f"not a findings.json of trajviz reproduce ({type(exc).__name__}: "
                          f"{exc})") from None
    out = ["| finding | claim | statistic | value | unit | studies' value | verdict |",
           "|---|---|---|---|---|---|---|"]
    for r in rows:
        cells = [r.id, r.claim, r.statistic, format_value(r), r.unit, r.reference or "-",
                 f"**{r.verdict}**"]
        out.append("| " + " | ".join(str(c).replace("|", "/") for c in cells) + " |")
    return "\n".join(out) + "\n"


def update_readme(readme: str, table: str, source: str) -> str:
    """``readme`` with the block between :data:`README_BEGIN` and :data:`README_END` replaced
    by ``table``; ValueError if the markers are missing."""
    begin = README_BEGIN.format(source=source)
    i = readme.find("<!-- findings-table:")
    j = readme.find(README_END)
    if i < 0 or j < i:
        raise ValueError("the README has no findings-table block (a line starting with "
                         f"'<!-- findings-table:' and a line {README_END!r})")
    return readme[:i] + begin + "\n" + table + readme[j:]
