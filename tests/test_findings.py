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
    assert parse_only("f10, F1") == ["F1a", "F1b", "F10a", "F10b", "F10c", "F10d"]
    assert parse_only("F10b") == ["F10b"] and parse_only("f10d,F10A") == ["F10a", "F10d"]
    assert parse_only("f6b,F9") == ["F6b", "F9a", "F9b", "F9c"]
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
    """F1a: rise of error without pre-training from 2 to 3 layers; F1b: that rise minus the
    rise with pre-training. Planted rise 0.5 pp per layer (sdae flat): both +0.5."""
    planted = _depth_errors(0.5, 0)
    for fid in ("F1a", "F1b"):
        res = evaluate_finding(fid, {"depth": FakeDepthResults(planted)}, n_boot=500)
        assert res.verdict == REPRODUCED and res.value == pytest.approx(0.5, abs=0.1)
        assert res.details and res.details[0]["hidden layers"] == 1
        null = evaluate_finding(fid, {"depth": FakeDepthResults(_depth_errors(0.0, 1, n=100))},
                                n_boot=500)
        assert null.verdict == NOT_REPRODUCED
    # pre-training rising as fast: F1a holds, the interaction F1b does not
    both = {k: v + (0.5 * (k[0] - 1) if k[1] == "sdae" else 0) for k, v in _depth_errors(0.5, 2, n=100).items()}
    assert evaluate_finding("F1a", {"depth": FakeDepthResults(both)}, n_boot=500).verdict == REPRODUCED
    assert evaluate_finding("F1b", {"depth": FakeDepthResults(both)}, n_boot=500).verdict == NOT_REPRODUCED
    # a rise at 1 -> 2 layers only is not F1 (which looks beyond 2 layers)
    early = {k: v + (0.5 if k == (2, "none") or k == (3, "none") else 0) - (0.5 * (k[0] - 1) if k[1] == "none" else 0)
             for k, v in _depth_errors(0.5, 3, n=100).items()}
    assert evaluate_finding("F1a", {"depth": FakeDepthResults(early)}, n_boot=500).verdict == NOT_REPRODUCED
    shallow = {k: v for k, v in planted.items() if k[0] < 3}
    res = evaluate_finding("F1a", {"depth": FakeDepthResults(shallow)}, n_boot=100)
    assert not res.available and "compares 2 hidden layers with deeper nets" in res.notes[0]


def test_f2_robust_spread_planted_and_null_per_depth():
    """log(IQR none / IQR sdae): planted 3x spread without pre-training at every depth, one
    outlier per cell changes nothing (an SD would be dominated by it); equal spreads: not
    claimed (an IQR is noisier than an SD: ruling out a 10% effect takes ~300 runs per cell)."""
    rng = np.random.default_rng(4)
    errs = {}
    for d in (1, 2, 3):
        errs[(d, "none")] = 2.0 + 0.3 * rng.standard_normal(60)
        errs[(d, "sdae")] = 1.5 + 0.1 * rng.standard_normal(60)
        errs[(d, "sdae")][0] = 40.0  # a seed that failed to train
    res = evaluate_finding("F2", {"depth": FakeDepthResults(errs)}, n_boot=500)
    assert res.verdict == REPRODUCED and res.value == pytest.approx(math.log(3), abs=0.3)
    assert [row["hidden layers"] for row in res.details] == [1, 2, 3]
    assert all(row["verdict"] == REPRODUCED for row in res.details)
    same = {k: 2.0 + 0.2 * rng.standard_normal(60) for k in errs}
    res = evaluate_finding("F2", {"depth": FakeDepthResults(same)}, n_boot=500)
    assert res.verdict != REPRODUCED and res.lo < 0 < res.hi  # no effect claimed


class FakeWidthResults(FakeDepthResults):
    """A width study: settings w<units> of one depth (2), planted median errors per cell."""

    name = "width"

    def setting_ids(self):
        return sorted({f"w{w}" for w, _ in self._errors})

    def setting_config(self, s):
        return {"model": {"depth": 2, "width": int(s[1:])}}

    def errors(self, s, m):
        return self._errors[(int(s[1:]), m)]

    @property
    def runs(self):
        return [FakeRun(f"w{w}", m, i, e) for (w, m), v in self._errors.items()
                for i, e in enumerate(v)]


def _width_errors(narrow: tuple[float, float], wide: tuple[float, float], seed: int, n: int = 60):
    rng = np.random.default_rng(seed)
    out = {}
    for w, (none, sdae) in ((25, narrow), (800, wide)):
        out[(w, "none")] = none * np.exp(0.03 * rng.standard_normal(n))
        out[(w, "sdae")] = sdae * np.exp(0.03 * rng.standard_normal(n))
    return out


def test_f6_parts_planted_and_null():
    """The studies' pattern (MNIST, 1 layer): 25 units 3.6 / 5.7 (hurts), 800 units 1.82 / 1.4
    (helps). F6a: log(1.82/1.4) + log(5.7/3.6) = 0.72; F6b: log(5.7/3.6) = 0.46; F6c: 0.26."""
    studies = _width_errors((3.6, 5.7), (1.82, 1.4), 0)
    want = {"F6a": math.log(1.82 / 1.4) + math.log(5.7 / 3.6), "F6b": math.log(5.7 / 3.6),
            "F6c": math.log(1.82 / 1.4)}
    for fid, v in want.items():
        res = evaluate_finding(fid, {"width": FakeWidthResults(studies)}, n_boot=500)
        assert res.verdict == REPRODUCED and res.value == pytest.approx(v, abs=0.03), fid
    # helps everywhere by the same factor: F6c holds; F6a (no difference) and F6b (no harm) do not
    uniform = _width_errors((3.0, 2.0), (1.5, 1.0), 1)
    verdicts = {fid: evaluate_finding(fid, {"width": FakeWidthResults(uniform)}, n_boot=500).verdict
                for fid in want}
    assert verdicts == {"F6a": NOT_REPRODUCED, "F6b": NOT_REPRODUCED, "F6c": REPRODUCED}


def test_f4_is_a_relative_benefit():
    """Pre-training halves the error at every size: the same relative benefit, so F4 is not
    reproduced although the benefit in pp is 5x larger on the small set."""
    rng = np.random.default_rng(5)
    errs = {(150, "none"): 10.0, (150, "sdae"): 5.0, (1197, "none"): 2.0, (1197, "sdae"): 1.0}

    class FakeSize(FakeDepthResults):
        name = "size"

        def setting_ids(self):
            return ["n150", "n1197"]

        def setting_config(self, s):
            return {"dataset": {"n_train": int(s[1:])}}

        def errors(self, s, m):
            return self._errors[(int(s[1:]), m)]

    cells = {k: v * np.exp(0.03 * rng.standard_normal(60)) for k, v in errs.items()}
    res = evaluate_finding("F4", {"size": FakeSize(cells)}, n_boot=500)
    assert res.verdict == NOT_REPRODUCED and abs(res.value) < 0.05
    cells[(150, "none")] = cells[(150, "none")] * 2  # now 4x on the small set, 2x on the large
    res = evaluate_finding("F4", {"size": FakeSize(cells)}, n_boot=500)
    assert res.verdict == REPRODUCED and res.value == pytest.approx(math.log(2), abs=0.05)


def test_finding_records_how_its_interval_was_made():
    planted = evaluate_finding("F1a", {"depth": FakeDepthResults(_depth_errors(0.5, 0))}, n_boot=300)
    assert planted.interval == "BCa" and planted.to_dict()["interval"] == "BCa"
    assert not any(n.startswith("interval:") for n in planted.notes)
    # identical runs: BCa is undefined, the percentile interval [v, v] is used and said so
    flat = evaluate_finding("F1a", {"depth": FakeDepthResults(_depth_errors(0.5, 0, noise=0.0))},
                            n_boot=300)
    assert flat.interval == "percentile" and flat.lo == flat.hi == pytest.approx(flat.value)
    assert any(n.startswith("interval: BCa is undefined") for n in flat.notes)


def test_an_interval_that_excludes_its_point_value_is_not_given():
    """A statistic biased under resampling by more than its spread (the log of a plug-in
    variance of few runs): its interval would exclude the point value; none is given, the note
    says why, and the verdict is inconclusive."""
    from trajviz.reproduce import findings

    rng = np.random.default_rng(8)
    cells = {"a": rng.standard_normal((6, 3, 40)), "b": rng.standard_normal((6, 3, 40))}
    f = findings.Finding("X", "c", "s", "u", 0.1, (), "", lambda *a: None)

    def biased(c):  # centroid distance / radius: grows under resampling
        ca, cb = c["a"].mean(0), c["b"].mean(0)
        r = np.sqrt(((c["a"] - ca) ** 2).sum(-1).mean() + ((c["b"] - cb) ** 2).sum(-1).mean())
        return float(np.log(np.sqrt(((ca - cb) ** 2).sum(-1)).min() / r))

    res = findings._result(f, cells, biased, 0, 400)
    assert math.isfinite(res.value) and math.isnan(res.lo) and math.isnan(res.hi)
    assert res.verdict == INCONCLUSIVE and any("does not contain the point value" in n for n in res.notes)


def test_paired_results_resample_whole_seeds():
    """A depth study recorded with shared_init (paired): the finding says so and its interval
    resamples seeds, so a seed effect shared by both methods cancels."""
    rng = np.random.default_rng(6)
    u = {d: 3.0 * rng.standard_normal(30) for d in (1, 2, 3)}
    errs = {}
    for d in (1, 2, 3):
        errs[(d, "none")] = 10 + u[d] + 0.5 * (d - 1) + 0.05 * rng.standard_normal(30)
        errs[(d, "sdae")] = 10 + u[d] + 0.05 * rng.standard_normal(30)

    class Paired(FakeDepthResults):
        def paired(self, s):
            return True

        def error_seeds(self, s, m):
            return np.arange(30)

    # the seed effect u[d] differs between depths: only F1b's within-depth differences cancel it
    res = evaluate_finding("F1b", {"depth": Paired(errs)}, n_boot=500)
    assert any("paired design" in n for n in res.notes)
    indep = evaluate_finding("F1b", {"depth": FakeDepthResults(errs)}, n_boot=500)
    assert res.hi - res.lo < indep.hi - indep.lo


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
    monkeypatch.setitem(findings.FINDINGS, "F1a",
                        dataclasses.replace(findings.FINDINGS["F1a"], compute=missing_data))
    res = evaluate_finding("F1a", results, n_boot=100)
    assert not res.available and res.notes == ["not evaluated: study depth has no runs of method sdae"]
    monkeypatch.setitem(findings.FINDINGS, "F1a",
                        dataclasses.replace(findings.FINDINGS["F1a"], compute=broken_import))
    with pytest.raises(ImportError, match="trajviz.reproduce.gone"):
        evaluate_finding("F1a", results, n_boot=100)


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
