"""Shared fixtures: tiny configs that train in a second or two."""

from __future__ import annotations

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
