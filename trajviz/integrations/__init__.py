"""Training-framework integrations, each an optional extra installed by name:

- :mod:`trajviz.integrations.lightning`: :class:`~trajviz.integrations.lightning.TrajectoryCallback`
  for a ``lightning.pytorch.Trainer`` (``pip install 'trajviz[lightning]'``);
- :mod:`trajviz.integrations.huggingface`:
  :class:`~trajviz.integrations.huggingface.TrajectoryCallback` for a ``transformers.Trainer``
  (``pip install 'trajviz[huggingface]'``).

Both record through :class:`trajviz.Recorder` and take its options (docs/recorder.md).
Importing a module whose framework is missing raises :class:`~trajviz.errors.MissingExtraError`,
one line naming the extra to install.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from trajviz.errors import MissingExtraError


def require(module: str, extra: str, what: str) -> ModuleType:
    """Import ``module`` or raise :class:`MissingExtraError` naming the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(f"{what} needs {module.split('.')[0]}, which is not installed "
                                f"({exc.msg}); install it with: pip install 'trajviz[{extra}]'"
                                ) from None
