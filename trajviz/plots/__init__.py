"""Figures: each function draws on a matplotlib ``Axes`` it is given and returns it, or (the
interactive ones, :mod:`trajviz.plots.interactive`) returns a plotly figure.

Saving files is the caller's job (the CLI, or analysis/ scripts). One module per kind of figure.
The common entry points are importable from here: :func:`plot_trajectories`,
:func:`trajectories_figure`, :func:`landscape_figures`, :func:`write_html`.
"""

from typing import Any

_LAZY = {"plot_trajectories": "trajviz.plots.trajectories",
         "trajectories_figure": "trajviz.plots.interactive",
         "landscape_figures": "trajviz.plots.interactive",
         "write_html": "trajviz.plots.interactive"}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:  # matplotlib and plotly load only when a figure is made
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'trajviz.plots' has no attribute {name!r}")
