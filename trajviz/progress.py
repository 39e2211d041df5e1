"""Progress bars (tqdm) that the library shows only when asked: silent by default, in tests
and under ``--quiet``."""

from __future__ import annotations

from typing import Any, Iterable


def progress_bar(iterable: Iterable[Any] | None = None, *, enabled: bool, **kwargs: Any) -> Any:
    """A tqdm bar when ``enabled``, else a bar that shows nothing (same interface)."""
    from tqdm.auto import tqdm

    return tqdm(iterable, disable=not enabled, leave=False, dynamic_ncols=True, **kwargs)
