"""report.md / report.html / findings.json from finding results: table, plain statements, figures
inline, undefined values written as such."""

from __future__ import annotations

import json
import math

from trajviz.reproduce.findings import INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED, FindingResult
from trajviz.reproduce.report import ReportMeta, format_value, plain_statement, write_report


def _res(fid, verdict, value, lo, hi, **kw):
    return FindingResult(id=fid, claim=f"claim {fid}", statistic=f"stat {fid}", unit="pp",
                         delta=0.2, value=value, lo=lo, hi=hi, verdict=verdict,
                         reference="+0.44", **kw)


def test_report_files(tmp_path):
    from matplotlib.figure import Figure

    fig = Figure()
    fig.add_subplot().plot([0, 1])
    png = tmp_path / "figures" / "depth_boxplots.png"
    png.parent.mkdir()
    fig.savefig(png)
    results = [_res("F1", REPRODUCED, 0.5, 0.1, 0.9, details=[{"hidden layers": 1, "x": "a|b"}]),
               _res("F2", NOT_REPRODUCED, -0.3, -0.6, -0.1),
               _res("F3", INCONCLUSIVE, math.nan, math.nan, math.nan, notes=["no overlap"])]
    meta = ReportMeta(profile="quick", command="trajviz reproduce", version="0",
                      seconds={"total": 1.0}, cpu_seconds={"total": 0.5},
                      figures={"depth_boxplots": [png]}, captions={"depth_boxplots": "Boxes."},
                      figure_findings={"depth_boxplots": ("F1", "F2")})
    md, page, js = write_report(results, meta, tmp_path)
    text = md.read_text()
    assert "| F1 | claim F1 | stat F1 | +0.5 [+0.1, +0.9] | pp | +0.44 | reproduced |" in text
    assert "1 reproduced, 1 not reproduced, 1 inconclusive" in text
    assert "![depth_boxplots](figures/depth_boxplots.png)" in text
    assert "a/b" in text  # a '|' inside a cell cannot break the table
    html = page.read_text()
    assert "data:image/png;base64," in html and "class='ok'" in html
    data = json.loads(js.read_text())
    assert data["findings"][2]["value"] is None


def test_plain_statements():
    assert "reproduces at the quick scale" in plain_statement(
        _res("F1", REPRODUCED, 0.5, 0.1, 0.9), "quick")
    assert "does not reproduce" in plain_statement(_res("F2", NOT_REPRODUCED, -0.3, -0.6, -0.1), "quick")
    s = plain_statement(_res("F3", INCONCLUSIVE, 0.1, math.nan, math.nan, notes=["few runs"]), "quick")
    assert "no interval" in s and "few runs" in s
    assert format_value(_res("F4", INCONCLUSIVE, math.nan, math.nan, math.nan)) == "n/a"


def test_findings_decided_by_a_test_show_their_p_value(tmp_path):
    """F10a/F10b carry a p-value and a level instead of an interval; F10c a value in words."""
    start = _res("F10a", REPRODUCED, 1.0, math.nan, math.nan, p_value=0.002, alpha=0.05)
    stay = _res("F10b", INCONCLUSIVE, 0.65, math.nan, math.nan, p_value=0.076, alpha=0.05)
    gone = _res("F10a", NOT_REPRODUCED, 0.15, math.nan, math.nan, p_value=0.63, alpha=0.05)
    words = _res("F10c", INCONCLUSIVE, math.nan, math.nan, math.nan,
                 value_text="none: 6 [4, 9]; sdae: none")
    assert format_value(start) == "1 (p = 0.002)"
    assert "reproduces" in plain_statement(start, "quick")
    assert "between 0.05 and 0.5" in plain_statement(stay, "quick")
    assert "no sign of separation" in plain_statement(gone, "quick")
    assert format_value(words) == "none: 6 [4, 9]; sdae: none"
    meta = ReportMeta(profile="quick", command="c", version="0")
    md, _, js = write_report([start, stay, words], meta, tmp_path)
    text = md.read_text()
    assert "| F10a | claim F10a | stat F10a | 1 (p = 0.002) |" in text
    assert "one-sided permutation test at level 0.05" in text
    data = json.loads(js.read_text())["findings"]
    assert data[0]["p_value"] == 0.002 and data[0]["alpha"] == 0.05 and data[0]["lo"] is None
    assert data[2]["value_text"].startswith("none: 6")


# --------------------------------------------------------------------------- README's table


def _findings_json(tmp_path):
    from trajviz.reproduce.report import ReportMeta, write_report

    results = [_res("F1a", REPRODUCED, 0.5, 0.1, 0.9),
               _res("F3", INCONCLUSIVE, math.nan, math.nan, math.nan, notes=["no overlap"]),
               _res("F6b", INCONCLUSIVE, 0.2, math.nan, math.nan, notes=["no interval: ..."])]
    write_report(results, ReportMeta(profile="quick", command="c", version="0"), tmp_path)
    return tmp_path / "findings.json"


def test_readme_table_states_what_findings_json_holds(tmp_path, capsys):
    from trajviz.cli import main
    from trajviz.reproduce.report import readme_table

    path = _findings_json(tmp_path)
    table = readme_table(json.loads(path.read_text()))
    lines = table.splitlines()
    assert lines[0].startswith("| finding | claim |") and len(lines) == 5
    assert "| F1a | claim F1a | stat F1a | +0.5 [+0.1, +0.9] | pp | +0.44 | **reproduced** |" in table
    assert "(p = 0.002)" in readme_table({"findings": [
        {**json.loads(path.read_text())["findings"][0], "p_value": 0.002, "alpha": 0.05}]})
    assert "| F3 |" in table and "| n/a |" in table and "+0.2 [no interval]" in table
    assert main(["report", "readme-table", str(path)]) == 0
    assert capsys.readouterr().out == table
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- findings-table: old -->\n| old |\n<!-- /findings-table -->\nafter\n")
    assert main(["report", "readme-table", str(path), "--readme", str(readme), "-q"]) == 0
    text = readme.read_text()
    assert text.startswith("intro\n<!-- findings-table: written by") and text.endswith(
        table + "<!-- /findings-table -->\nafter\n")
    # errors: one line, nothing written
    readme.write_text("no markers\n")
    assert main(["report", "readme-table", str(path), "--readme", str(readme), "-q"]) == 1
    assert readme.read_text() == "no markers\n"
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    assert main(["report", "readme-table", str(bad), "-q"]) == 1
    bad.write_text('{"x": 1}')
    assert main(["report", "readme-table", str(bad), "-q"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(e.startswith("trajviz report: error:") for e in err)
    out = tmp_path / "t.md"
    assert main(["report", "readme-table", str(path), "-o", str(out), "-q"]) == 0
    assert out.read_text() == table
    assert main(["report", "readme-table", str(path), "-o", str(out), "-q"]) == 1  # no overwrite


def test_readme_table_matches_the_committed_quick_run():
    """README's findings table is the one `trajviz report readme-table` writes from the quick
    run's findings.json committed as docs/findings-quick.json (never typed by hand)."""
    from pathlib import Path

    from trajviz.reproduce.report import README_END, readme_table

    root = Path(__file__).resolve().parents[1]
    data = json.loads((root / "docs" / "findings-quick.json").read_text())
    assert data["profile"] == "quick"
    readme = (root / "README.md").read_text()
    start = readme.index("<!-- findings-table:")
    block = readme[readme.index("\n", start) + 1:readme.index(README_END)]
    assert block == readme_table(data)
