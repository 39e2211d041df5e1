"""Findings: the verdict rule on planted, null and noisy effects; the statistics on planted
structure; bootstrap determinism; finding evaluation from (fake) stored results."""

from __future__ import annotations

import math

import numpy as np
import pytest

from trajviz.errors import ConfigError
from trajviz.reproduce.findings import (FINDINGS, INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED, bootstrap,
                              curves_on_grid, evaluate_finding, log_sd_ratio,
                              log_total_variance_ratio, mean_curve_gap, median_contrast,
                              parse_only, same_cost_grid, verdict)

DIFF = median_contrast({"a": 1.0, "b": -1.0})


def _cells(shift: float, noise: float, n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"a": shift + noise * rng.standard_normal(n), "b": noise * rng.standard_normal(n)}


def _verdict(cells, delta=0.2, seed=0):
    value, lo, hi, _ = bootstrap(DIFF, cells, n_boot=1000, seed=seed)
    return verdict(lo, hi, delta), (value, lo, hi)


def test_planted_effect_is_reproduced():
    v, (value, lo, hi) = _verdict(_cells(shift=1.0, noise=0.2, n=30, seed=1))
    assert v == REPRODUCED
    assert 0.8 < value < 1.2 and lo > 0


def test_null_effect_is_not_reproduced():
    v, (value, lo, hi) = _verdict(_cells(shift=0.0, noise=0.1, n=200, seed=2))
    assert v == NOT_REPRODUCED
    assert hi < 0.2


def test_opposite_effect_is_not_reproduced():
    v, _ = _verdict(_cells(shift=-1.0, noise=0.2, n=30, seed=3))
    assert v == NOT_REPRODUCED


def test_noisy_effect_is_inconclusive():
    v, (value, lo, hi) = _verdict(_cells(shift=0.3, noise=2.0, n=8, seed=4))
    assert v == INCONCLUSIVE
    assert lo < 0 < 0.2 <= hi


def test_verdict_rule_edges():
    assert verdict(0.01, 0.5, 0.2) == REPRODUCED
    assert verdict(0.01, 0.1, 0.2) == NOT_REPRODUCED  # significant but below the smallest effect
    assert verdict(-0.1, 0.5, 0.2) == INCONCLUSIVE
    assert verdict(math.nan, math.nan, 0.2) == INCONCLUSIVE
    with pytest.raises(ConfigError):
        verdict(0.0, 1.0, 0.0)


def test_bootstrap_is_seeded():
    cells = _cells(0.5, 1.0, 10, 5)
    assert bootstrap(DIFF, cells, n_boot=300, seed=7) == bootstrap(DIFF, cells, n_boot=300, seed=7)
    assert bootstrap(DIFF, cells, n_boot=300, seed=7) != bootstrap(DIFF, cells, n_boot=300, seed=8)


def test_bootstrap_refuses_interval_when_undefined():
    value, lo, hi, frac = bootstrap(DIFF, {"a": np.zeros(0), "b": np.ones(3)}, n_boot=50)
    assert math.isnan(value) and math.isnan(lo) and math.isnan(hi)


def test_log_sd_ratio_recovers_planted_ratio():
    rng = np.random.default_rng(0)
    cells = {"a": 3.0 * rng.standard_normal(4000), "b": rng.standard_normal(4000)}
    assert log_sd_ratio([("a", "b")])(cells) == pytest.approx(math.log(3.0), abs=0.05)
    # equal values: the quantization floor keeps the statistic finite
    flat = {"a": np.ones(5), "b": np.ones(5)}
    assert log_sd_ratio([("a", "b")], resolution=0.3)(flat) == 0.0


def test_log_total_variance_ratio_recovers_planted_ratio():
    rng = np.random.default_rng(1)
    cells = {"a": 2.0 * rng.standard_normal((3000, 5)), "b": rng.standard_normal((3000, 5))}
    assert log_total_variance_ratio([("a", "b")])(cells) == pytest.approx(math.log(4.0), abs=0.1)


def test_same_cost_gap_recovers_planted_offset():
    x = np.linspace(-1, -3, 10)
    runs_a = np.stack([np.stack([x, 0.5 * x + 0.3], -1) for _ in range(4)])
    runs_b = np.stack([np.stack([x, 0.5 * x + 0.1], -1) for _ in range(4)])
    grid = same_cost_grid([runs_a, runs_b])
    assert grid[0] == pytest.approx(-3) and grid[-1] == pytest.approx(-1)
    cells = {"a": curves_on_grid(runs_a, grid), "b": curves_on_grid(runs_b, grid)}
    assert mean_curve_gap([("a", "b")])(cells) == pytest.approx(0.2)
    # disjoint ranges: no grid
    assert len(same_cost_grid([runs_a, runs_b - np.array([5.0, 0])])) == 0


def test_parse_only():
    assert parse_only(None) == list(FINDINGS)
    assert parse_only("f10, F1") == ["F1", "F10a", "F10b", "F10c", "F10d"]
    assert parse_only("F10b") == ["F10b"] and parse_only("f10d,F10A") == ["F10a", "F10d"]
    with pytest.raises(ConfigError, match="F11"):
        parse_only("F1,F11")


class FakeRun:
    def __init__(self, setting, method, seed, err):
        self.setting, self.method, self.seed, self.diverged = setting, method, seed, False
        self.test_error = err


class FakeDepthResults:
    """Duck-typed StudyResults of a depth study with planted per-seed errors (%)."""

    name = "depth"

    def __init__(self, errors: dict[tuple[int, str], np.ndarray]):
        self._errors = errors

    def setting_ids(self):
        return sorted({f"depth{d}" for d, _ in self._errors})

    def setting_config(self, s):
        return {"model": {"depth": int(s[5:])}}

    def methods(self, setting=None):
        return ["none", "sdae"]

    def errors(self, s, m):
        return self._errors[(int(s[5:]), m)]

    def error_resolution(self, s):
        return 0.1

    @property
    def runs(self):
        return [FakeRun(f"depth{d}", m, i, e) for (d, m), v in self._errors.items()
                for i, e in enumerate(v)]


def _depth_errors(rise: float, seed: int, n: int = 20, noise: float = 0.05):
    rng = np.random.default_rng(seed)
    out = {}
    for d in (1, 2, 3):
        out[(d, "none")] = 2.0 + rise * (d - 1) + noise * rng.standard_normal(n)
        out[(d, "sdae")] = 1.5 + noise * rng.standard_normal(n)
    return out


def test_f1_planted_and_null():
    planted = evaluate_finding("F1", {"depth": FakeDepthResults(_depth_errors(0.5, 0))}, n_boot=500)
    assert planted.verdict == REPRODUCED
    assert planted.value == pytest.approx(1.0, abs=0.1)
    assert planted.details and planted.details[0]["hidden layers"] == 1
    null = evaluate_finding("F1", {"depth": FakeDepthResults(_depth_errors(0.0, 1, n=100))},
                            n_boot=500)
    assert null.verdict == NOT_REPRODUCED


def test_finding_records_how_its_interval_was_made():
    planted = evaluate_finding("F1", {"depth": FakeDepthResults(_depth_errors(0.5, 0))}, n_boot=300)
    assert planted.interval == "BCa" and planted.to_dict()["interval"] == "BCa"
    assert not any(n.startswith("interval:") for n in planted.notes)
    # identical runs: BCa is undefined, the percentile interval [v, v] is used and said so
    flat = evaluate_finding("F1", {"depth": FakeDepthResults(_depth_errors(0.5, 0, noise=0.0))},
                            n_boot=300)
    assert flat.interval == "percentile" and flat.lo == flat.hi == pytest.approx(flat.value)
    assert any(n.startswith("interval: BCa is undefined") for n in flat.notes)


def test_missing_study_is_reported_not_raised():
    res = evaluate_finding("F7", {}, n_boot=100)
    assert res.verdict == INCONCLUSIVE and not res.available
    assert "hist" in res.notes[0]


def test_a_broken_finding_fails_rather_than_reading_as_not_evaluated(monkeypatch):
    """Missing data (ConfigError) is "not evaluated"; a broken import inside a finding is a bug
    and must reach the caller, not hide in a note."""
    import dataclasses

    from trajviz.errors import ConfigError
    from trajviz.reproduce import findings

    def broken_import(*args):
        raise ImportError("No module named 'trajviz.reproduce.gone'")

    def missing_data(*args):
        raise ConfigError("study depth has no runs of method sdae")

    results = {"depth": FakeDepthResults(_depth_errors(0.5, 0))}
    monkeypatch.setitem(findings.FINDINGS, "F1",
                        dataclasses.replace(findings.FINDINGS["F1"], compute=missing_data))
    res = evaluate_finding("F1", results, n_boot=100)
    assert not res.available and res.notes == ["not evaluated: study depth has no runs of method sdae"]
    monkeypatch.setitem(findings.FINDINGS, "F1",
                        dataclasses.replace(findings.FINDINGS["F1"], compute=broken_import))
    with pytest.raises(ImportError, match="trajviz.reproduce.gone"):
        evaluate_finding("F1", results, n_boot=100)


def test_analysis_side_does_not_import_torch():
    import subprocess
    import sys

    code = ("import sys, trajviz.reproduce.findings, trajviz.reproduce.report, trajviz.plots.studies, "
            "trajviz.reproduce.figures, trajviz.reproduce.results; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


class _TrajectoryStudy:
    """What F10's parts read of a study's results: one setting, its file, its methods."""

    def __init__(self, path):
        self.name, self.files = "trajectories", {"depth2": path}

    def setting_ids(self):
        return ["depth2"]

    def methods(self, setting=None):
        return ["none", "sdae"]


def test_f10_parts_on_planted_trajectories(tmp_path):
    """none and sdae nets that start apart, move together, part at checkpoint 5, with the
    pre-trained ones parting less: all four parts reproduce; on a null file none of the
    separation parts does."""
    from synthetic_trajectories import apart_together_parting, write_plain_h5py

    path = write_plain_h5py(tmp_path / "t.h5", apart_together_parting(
        5, T=10, rate_b=0.25, names=("none", "sdae")))
    res = {"trajectories": _TrajectoryStudy(path)}
    out = {i: evaluate_finding(i, res, seed=0, n_boot=300) for i in parse_only("F10")}
    assert [r.verdict for r in out.values()] == ["reproduced"] * 4, {
        i: (r.verdict, r.notes) for i, r in out.items()}
    assert out["F10a"].value == 1.0 and out["F10a"].p_value <= 0.05
    assert out["F10b"].p_value <= 0.05 and len(out["F10b"].details) == 10
    assert out["F10c"].value_text.startswith("none: 5 [")
    d = out["F10d"]
    assert d.lo <= d.value <= d.hi and d.value > math.log(1.1)
    null = write_plain_h5py(tmp_path / "n.h5", apart_together_parting(
        5, T=10, same_distribution=True, names=("none", "sdae"), seed=3))
    res = {"trajectories": _TrajectoryStudy(null)}
    for i in ("F10a", "F10b"):
        assert evaluate_finding(i, res, seed=0, n_boot=100).verdict != "reproduced"
