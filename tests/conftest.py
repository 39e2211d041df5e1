"""Shared fixtures: tiny configs that train in a second or two."""

from __future__ import annotations

import os
import re

import pytest

from trajviz.config import ExperimentConfig, config_from_dict

TINY = {
    "name": "tiny",
    "seeds": [0, 1],
    "dataset": {"name": "shapeset", "n_train": 200, "n_valid": 50, "n_test": 60},
    "model": {"depth": 2, "width": 16},
    "pretrain": {"methods": ["none", "sdae"], "epochs": 1, "lr": 0.01},
    "train": {"epochs": 2, "lr": 0.1, "batch_size": 10},
    "probe": {"split": "test", "n": 40},
}


def generators(*seeds: int) -> list:
    """One seeded torch.Generator per seed (each net of a stack draws from its own)."""
    import torch

    out = []
    for seed in seeds:
        g = torch.Generator()
        g.manual_seed(seed)
        out.append(g)
    return out


@pytest.fixture
def tiny_dict() -> dict:
    import copy

    return copy.deepcopy(TINY)


@pytest.fixture
def tiny_config() -> ExperimentConfig:
    return config_from_dict(TINY)


# --------------------------------------------------------------------------- extras under CI
# A test of an optional integration skips where its extra is not installed, with a reason that
# names it ("... pip install 'trajviz[ray]' ..."). `make test` installs the extras and lists
# them in TRAJVIZ_TEST_EXTRAS: there such a skip is a failure, so CI cannot pass by skipping.
_EXTRA = re.compile(r"trajviz\[([A-Za-z0-9_,-]+)\]")


def required_extras() -> set[str]:
    """The extras this run must have (TRAJVIZ_TEST_EXTRAS, comma-separated; empty outside CI)."""
    return {e.strip() for e in os.environ.get("TRAJVIZ_TEST_EXTRAS", "").split(",") if e.strip()}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if not report.skipped or not isinstance(report.longrepr, tuple):
        return
    reason = str(report.longrepr[2])
    missing = {e for m in _EXTRA.finditer(reason) for e in m.group(1).split(",")} & required_extras()
    if missing:
        report.outcome = "failed"
        report.longrepr = (f"skipped for a missing extra that this run requires "
                           f"(TRAJVIZ_TEST_EXTRAS): {', '.join(sorted(missing))}: {reason}")
