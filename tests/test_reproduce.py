"""trajviz reproduce: study files, resumable recording, --only, the report, the figure scripts.

One tiny reproduction (tests/reproduce_tiny.py: digits subsets, 3 seeds, 2 epochs) is recorded
once per module and shared; tests that change results work on copies.
"""

from __future__ import annotations

import json
import runpy
import shutil
import sys
from pathlib import Path

import pytest

from trajviz.cli import main
from trajviz.errors import ConfigError
from trajviz.reproduce.findings import FINDINGS, VERDICTS
from trajviz.reproduce import reproduce
from trajviz.reproduce.figures import FIGURES, figure_spec
from trajviz.reproduce.studies import PROFILES, copy_studies, load_studies, packaged_studies, parse_study
from trajviz.store import ExperimentFile

sys.path.insert(0, str(Path(__file__).parent))
from reproduce_tiny import write_tiny_studies  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    base = tmp_path_factory.mktemp("reproduce")
    studies = write_tiny_studies(base / "studies")
    out = base / "out"
    res = reproduce(profile="quick", output=out, studies_dir=studies, n_boot=200, figures=False)
    return studies, out, res


# --------------------------------------------------------------------------- study files


def test_packaged_studies_validate_for_every_profile():
    for profile in PROFILES:
        studies = load_studies(None, profile)
        needed = {s for f in FINDINGS.values() for s in f.studies}
        assert needed <= set(studies), f"{profile}: studies missing for some findings"
    full = load_studies(None, "full")
    assert len(full["depth"].setting("depth1").config.seeds) == 400
    assert full["depth"].setting("depth1").config.dataset.name == "mnist"
    tiny = load_studies(None, "tiny")
    assert tiny["depth"].setting("depth2").config.train.epochs <= 2


def test_packaged_studies_load_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no runs/ here: the studies come with the package
    studies = load_studies(None, "quick")
    assert studies["depth"].path.parent == Path(str(packaged_studies()))
    assert studies["depth"].setting("depth4").config.model.depth == 4


def test_studies_have_one_source(tmp_path):
    """The packaged files are the only study files in the repository: no second copy to drift."""
    import tomllib

    def is_study(path: Path) -> bool:
        try:
            return "study" in tomllib.loads(path.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError):
            return False  # not a study file (e.g. a deliberately broken fixture)

    packaged = Path(str(packaged_studies())).resolve()
    elsewhere = [p for p in ROOT.rglob("*.toml")
                 if packaged not in p.resolve().parents and not {".venv", ".git"} & set(p.parts)
                 and is_study(p)]
    assert elsewhere == []


def test_copy_studies_round_trips_and_never_replaces(tmp_path, capsys):
    assert main(["reproduce", "--copy-studies", str(tmp_path / "mine"), "-q"]) == 0
    copies = sorted(p.name for p in (tmp_path / "mine").iterdir())
    assert copies == sorted(p.name for p in Path(str(packaged_studies())).glob("*.toml"))
    ours, theirs = load_studies(tmp_path / "mine", "quick"), load_studies(None, "quick")
    assert {k: [s.config for s in v.settings] for k, v in ours.items()} == \
        {k: [s.config for s in v.settings] for k, v in theirs.items()}
    (tmp_path / "mine" / "depth.toml").write_text("# edited")
    assert main(["reproduce", "--copy-studies", str(tmp_path / "mine"), "-q"]) == 1
    assert "exists" in capsys.readouterr().err
    assert (tmp_path / "mine" / "depth.toml").read_text() == "# edited"
    with pytest.raises(ConfigError, match="does not exist"):
        load_studies(tmp_path / "nope", "quick")
    copy_studies(tmp_path / "other")
    assert len(list((tmp_path / "other").glob("*.toml"))) == len(copies)


def _study(**over):
    data = {"study": "s", "base": {"seeds": [0]},
            "settings": [{"id": "a", "set": {"model.depth": 1}}],
            "profiles": {"quick": {"set": {"dataset.name": "digits"}}, "full": {}}}
    data.update(over)
    return data


def test_study_resolution_and_range():
    st = parse_study(_study(profiles={"quick": {"set": {"seeds": {"range": [0, 5]}}}, "full": {}}),
                     "quick", Path("s.toml"))
    cfg = st.setting("a").config
    assert cfg.seeds == [0, 1, 2, 3, 4] and cfg.model.depth == 1 and cfg.name == "s-a"


@pytest.mark.parametrize("change, message", [
    ({"bogus": 1}, "unknown key 'bogus'"),
    ({"settings": [{"id": "a", "set": {"model.depth": 9}}]}, "setting 1 .quick profile.*model.depth"),
    ({"settings": [{"id": "a", "set": {"model.depth": 1}}, {"id": "a", "set": {}}]}, "used twice"),
    ({"settings": [{"id": "a", "from": "nope"}]}, "STUDY/SETTING"),
    ({"profiles": {"full": {}}}, r"no \[profiles.quick\]"),
    ({"select": {"seeds": [1], "grid": {"model.depth": [1, 2]}}}, "grid searches keys under train."),
    ({"select": {"seeds": [1], "grid": {"train.lr": [-1.0]}}}, "train.lr = -1.0 .setting 'a'.*>= 0"),
    ({"select": {"seeds": [], "grid": {"train.lr": [0.1]}}}, "select.seeds must be"),
    ({"select": {"seeds": [1], "grid": {"train.lr": [0.1], "x": 1}}}, "select.grid 'x'|grid searches"),
    ({"select": {"seeds": [1]}}, "select.grid must be a table"),
])
def test_study_errors_name_the_problem(change, message):
    with pytest.raises(ConfigError, match=message):
        parse_study(_study(**change), "quick", Path("s.toml"))


def test_bad_study_fails_before_training(tmp_path, capsys):
    studies = write_tiny_studies(tmp_path / "studies")
    text = (studies / "hist.toml").read_text().replace('"model.depth" = 1', '"model.depth" = 9')
    (studies / "hist.toml").write_text(text)
    rc = main(["reproduce", "--studies", str(studies), "-o", str(tmp_path / "out"), "-q"])
    err = capsys.readouterr().err
    assert rc == 1 and len(err.strip().splitlines()) == 1 and "model.depth" in err
    assert not (tmp_path / "out" / "results").exists()


def test_cli_rejects_unknown_finding(tmp_path, capsys):
    rc = main(["reproduce", "--only", "F1,F11", "-o", str(tmp_path / "o"), "-q"])
    err = capsys.readouterr().err
    assert rc == 1 and "F11" in err and "F10" in err


# --------------------------------------------------------------------------- the run


def test_report_has_all_ten_findings(tiny):
    _, out, res = tiny
    assert [f.id for f in res.findings] == list(FINDINGS)
    data = json.loads((out / "findings.json").read_text())
    for f in data["findings"]:
        assert f["verdict"] in VERDICTS
        assert f["statistic"] and f["unit"]
    md = (out / "report.md").read_text()
    for fid in FINDINGS:
        assert f"| {fid} |" in md
    assert "<table>" in (out / "report.html").read_text()
    # F2 uses every run of the depth study; F1 needs a setting deeper than 2 layers and says so
    byid = {f.id: f for f in res.findings}
    assert byid["F2"].n_runs == 12
    assert not byid["F1a"].available and "compares 2 hidden layers" in byid["F1a"].notes[0]


def test_resume_records_nothing_when_complete(tiny, tmp_path):
    studies, out, _ = tiny
    copy = tmp_path / "out"
    shutil.copytree(out / "results", copy / "results")
    f = copy / "results" / "depth" / "depth1.h5"
    before = f.stat().st_mtime_ns
    res = reproduce(profile="quick", only="F1", output=copy, studies_dir=studies, n_boot=100,
                    figures=False)
    assert {s.status for s in res.settings} == {"complete"}
    assert f.stat().st_mtime_ns == before


def test_resume_adds_only_missing_runs(tiny, tmp_path):
    studies, out, _ = tiny
    copy = tmp_path / "out"
    shutil.copytree(out / "results", copy / "results")
    more = tmp_path / "studies"
    shutil.copytree(studies, more)
    text = (more / "depth.toml").read_text().replace("seeds = [0, 1, 2]", "seeds = [0, 1, 2, 3]")
    (more / "depth.toml").write_text(text)
    path = copy / "results" / "depth" / "depth1.h5"
    with ExperimentFile(path) as f:
        old = f.outputs("none-seed0")
    res = reproduce(profile="quick", only="F2", output=copy, studies_dir=more, n_boot=100,
                    figures=False)
    assert {s.status for s in res.settings} == {"recorded"}
    with ExperimentFile(path) as f:
        assert {"none-seed3", "sdae-seed3"} <= set(f.run_ids())
        assert (f.outputs("none-seed0") == old).all()  # kept, not redone
    assert res.findings[0].n_runs == 16


def test_only_records_what_its_findings_need(tiny, tmp_path):
    studies, _, _ = tiny
    res = reproduce(profile="quick", only="F8", output=tmp_path / "o", studies_dir=studies,
                    n_boot=100, figures=True)
    assert [f.id for f in res.findings] == ["F8"]
    assert sorted(p.name for p in (tmp_path / "o" / "results").iterdir() if p.is_dir()) == ["partial"]
    timings = json.loads((tmp_path / "o" / "results" / "timings.json").read_text())
    assert set(timings) == {"partial/depth2"} and timings["partial/depth2"]["cpu_seconds"] > 0
    assert set(res.figures) == {"partial_bars"}
    assert "| F8 |" in (tmp_path / "o" / "report.md").read_text()


@pytest.mark.parametrize("name", [f.name for f in FIGURES])
def test_figure_script_writes_nonempty_files(tiny, tmp_path, name, monkeypatch):
    studies, out, _ = tiny
    script = ROOT / "analysis" / f"{name}.py"
    assert script.exists()
    monkeypatch.setattr(sys, "argv", [str(script), str(out), "--studies", str(studies),
                                      "-o", str(tmp_path), "-q"])
    with pytest.raises(SystemExit) as done:
        runpy.run_path(str(script), run_name="__main__")
    assert done.value.code == 0
    files = list(tmp_path.iterdir())
    suffixes = {p.suffix for p in files}
    kind = figure_spec(name).kind
    assert suffixes == {"gif": {".gif"}, "html": {".html"}}.get(kind, {".pdf", ".png"})
    assert all(p.stat().st_size > 1000 for p in files)


def test_needed_studies_takes_only_reused_settings(tmp_path):
    from trajviz.reproduce.run import needed_studies

    studies = load_studies(write_tiny_studies(tmp_path / "s"), "quick")
    plan = needed_studies(studies, ["width"])
    assert [(s.name, [x.id for x in s.settings]) for s in plan] == [
        ("depth", ["depth1"]), ("width", ["w4", "w8"])]
    with pytest.raises(ConfigError, match="no study 'nope'"):
        needed_studies(studies, ["nope"])


# --------------------------------------------------------------------------- model selection


def _select_studies(tmp_path: Path, grid: str, epochs: int = 2) -> Path:
    studies = write_tiny_studies(tmp_path / "studies")
    text = (studies / "depth.toml").read_text().replace(
        "[profiles.quick]\n", "[profiles.quick]\nselect = { seeds = [1000], grid = { "
        + grid + " } }\n").replace("epochs = 2\n", f"epochs = {epochs}\n", 1).replace(
        "seeds = [0, 1, 2]", "seeds = [0, 1]")
    (studies / "depth.toml").write_text(text)
    return studies


def test_model_selection_chooses_per_condition_and_trains_there(tmp_path, monkeypatch):
    """Planted: a learning rate that blows every net up (1e30) against one that trains (2.0).
    Each condition must lose the first as a grid point, train its seeds at the second, store
    the scores, state the choice in the report, and not redo any of it on a rerun."""
    studies = _select_studies(tmp_path, '"train.lr" = [1e30, 2.0]', epochs=30)
    out = tmp_path / "out"
    reproduce(profile="quick", only="F1", output=out, studies_dir=studies, n_boot=50, figures=False)
    for setting in ("depth1", "depth2"):
        summary = json.loads((out / "results" / "depth" / "select" / f"{setting}.json").read_text())
        assert summary["seeds"] == [1000]
        for method in ("none", "sdae"):
            m = summary["methods"][method]
            blown, good = m["points"]
            assert blown["set"] == {"train.lr": 1e30} and good["set"] == {"train.lr": 2.0}
            assert good["mean_valid_error"] < blown["mean_valid_error"]
            assert m["chosen"] == {"train.lr": 2.0}
            with ExperimentFile(out / "results" / blown["file"]) as f:  # stored, resumable
                assert {r.status for r in f.runs()} <= {"complete", "diverged"}
        with ExperimentFile(out / "results" / "depth" / f"{setting}.h5") as f:
            for rid in f.run_ids():
                assert json.loads(f.run_attrs(rid)["config"])["train"]["lr"] == 2.0
                assert f.run_info(rid).seed in (0, 1)  # reported runs are not selection runs
    report = (out / "report.md").read_text()
    assert "## Model selection" in report and "| depth | depth2 | sdae | train.lr = 2.0 |" in report
    found = json.loads((out / "findings.json").read_text())
    assert {(r["setting"], r["method"]) for r in found["selection"]} == {
        (s, m) for s in ("depth1", "depth2") for m in ("none", "sdae")}
    # a rerun trains nothing: neither selection nor results
    import trajviz.training.runner as runner

    monkeypatch.setattr(runner, "record_experiment",
                        lambda *a, **k: pytest.fail("a complete selection was redone"))
    reproduce(profile="quick", only="F1", output=out, studies_dir=studies, n_boot=50, figures=False)


def test_changed_selection_refuses_to_mix_runs(tmp_path):
    studies = _select_studies(tmp_path, '"train.lr" = [0.5]')
    out = tmp_path / "out"
    reproduce(profile="quick", only="F1", output=out, studies_dir=studies, n_boot=50, figures=False)
    text = (studies / "depth.toml").read_text().replace('"train.lr" = [0.5]', '"train.lr" = [0.25]')
    (studies / "depth.toml").write_text(text)
    with pytest.raises(ConfigError, match="train.lr = 0.5, but the study now gives 0.25"):
        reproduce(profile="quick", only="F1", output=out, studies_dir=studies, n_boot=50,
                  figures=False)


def test_every_point_value_lies_inside_its_interval_or_the_finding_says_why(tiny):
    """Over all findings of a real (tiny) reproduction: a finding with an interval contains its
    point value; one without says why in its notes. The same for the per-row intervals of the
    details tables (written 'value [lo, hi]')."""
    import re

    _, out, _ = tiny
    found = json.loads((out / "findings.json").read_text())["findings"]
    assert found
    row_ci = re.compile(r"^([+-][\d.e+-]+) \[([+-][\d.e+-]+), ([+-][\d.e+-]+)\]$")
    for r in found:
        if r["lo"] is not None and r["hi"] is not None:
            assert r["lo"] <= r["value"] <= r["hi"], r["id"]
        else:
            assert r["notes"], f"{r['id']} gives no interval and no reason"
        for row in r["details"]:
            for cell in row.values():
                m = row_ci.match(str(cell))
                if m:
                    v, lo, hi = map(float, m.groups())
                    assert lo <= v <= hi, (r["id"], cell)
