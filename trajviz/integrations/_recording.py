"""What the training callbacks share: when to record, the :class:`~trajviz.Recorder`'s life
(opened by the process that writes, closed at the end of training or on an error), and the
state that lets a resumed training continue its recording. No framework is imported here."""

from __future__ import annotations

import inspect
import logging
import math
from pathlib import Path
from typing import Any, Mapping

import torch

from trajviz.record import Recorder

log = logging.getLogger(__name__)

_RECORDER_OPTIONS = tuple(p for p in inspect.signature(Recorder).parameters
                          if p not in ("path", "probe_inputs", "probe_targets"))


#: logged values a checkpoint stores anyway (``epoch``), or that are arguments of ``record``
_NOT_METRICS = frozenset({"epoch", "step", "model", "store_params"})


def scalar_metrics(values: Mapping[str, Any]) -> dict[str, float]:
    """The finite scalars of a framework's logged values, names made HDF5-safe ('/' -> '.');
    ``epoch`` and ``step`` are left out (every checkpoint has them)."""
    out = {}
    for name, value in values.items():
        if name in _NOT_METRICS:
            continue
        if isinstance(value, torch.Tensor):
            if value.numel() != 1:
                continue
            value = value.item()
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out[str(name).replace("/", ".")] = float(value)
    return out


class TrajectoryRecording:
    """Records one training run into a trajviz file through a :class:`~trajviz.Recorder`.

    ``every_n_steps``: a checkpoint every that many optimizer steps; otherwise one at the end
    of every ``every_n_epochs``-th epoch. Step 0 is recorded when training starts, and the
    final step when it ends (with the final parameters, which mark the run complete).
    ``recorder_options``: any keyword of :class:`~trajviz.Recorder` (``run_id``, ``seed``,
    ``group``, ``mode``, ``output``, ``inputs_fn``, ``outputs_fn``, ``store_inputs``, ...).
    """

    def __init__(self, path: str | Path, probe_inputs: Any, probe_targets: Any = None, *,
                 every_n_steps: int | None = None, every_n_epochs: int = 1,
                 log_metrics: bool = True, **recorder_options: Any):
        unknown = sorted(set(recorder_options) - set(_RECORDER_OPTIONS))
        if unknown:
            raise TypeError(f"unknown Recorder option {unknown[0]!r}; the options are "
                            f"{', '.join(_RECORDER_OPTIONS)}")
        for name, value in (("every_n_steps", every_n_steps), ("every_n_epochs", every_n_epochs)):
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} {value!r}: must be a positive integer")
        self.path = Path(path)
        self.probe_inputs = probe_inputs
        self.probe_targets = probe_targets
        self.every_n_steps = every_n_steps
        self.every_n_epochs = every_n_epochs
        self.log_metrics = log_metrics
        self.options = dict(recorder_options)
        self.run_id = str(self.options.get("run_id", "run0"))
        self.recorder: Recorder | None = None
        self.last_step: int | None = None
        self._resume: dict[str, Any] | None = None

    # --- when
    def due_at_step(self, step: int) -> bool:
        return (self.every_n_steps is not None and step != self.last_step
                and step % self.every_n_steps == 0)

    def due_at_epoch_end(self, epochs_done: int) -> bool:
        return self.every_n_steps is None and epochs_done % self.every_n_epochs == 0

    # --- the recorder's life
    def start(self, model: torch.nn.Module, step: int, epoch: float | None = None, *,
              resume_last_step: int | None = None) -> None:
        """Open the file and record ``step`` (0 for a fresh training). A training resumed from
        a checkpoint continues the recording instead: with the state :meth:`load_state` got,
        it keeps the checkpoints that state counts; else (``resume_last_step``) those up to
        that step."""
        if self._resume is not None or resume_last_step is not None:
            options = {**self.options, "mode": "resume"}
            self.recorder = Recorder(self.path, self.probe_inputs, self.probe_targets, **options)
            keep = None if self._resume is None else int(self._resume["n_checkpoints"])
            self.recorder.continue_default_run(keep=keep, last_step=resume_last_step)
            self.last_step = None if self._resume is None else self._resume.get("last_step")
            log.info("%s: continuing run %r of a resumed training", self.path, self.run_id)
            return
        self.recorder = Recorder(self.path, self.probe_inputs, self.probe_targets, **self.options)
        self.record(model, step, epoch)

    def record(self, model: torch.nn.Module, step: int, epoch: float | None = None,
               metrics: Mapping[str, Any] | None = None) -> None:
        if self.recorder is None or step == self.last_step:
            return
        values = scalar_metrics(metrics or {}) if self.log_metrics else {}
        self.recorder.record(model, step=int(step), epoch=epoch, **values)
        self.last_step = int(step)

    def finish(self, model: torch.nn.Module, step: int, epoch: float | None = None,
               metrics: Mapping[str, Any] | None = None) -> None:
        """Record the final step (unless just recorded), store the final parameters (the run is
        then complete) and close the file."""
        if self.recorder is None:
            return
        try:
            self.record(model, step, epoch, metrics)
            self.recorder.save_params(model)
        except BaseException:
            self.abort()
            raise
        recorder, self.recorder = self.recorder, None
        recorder.close()

    def abort(self) -> None:
        """Close the file, the run left unfinished (training raised)."""
        recorder, self.recorder = self.recorder, None
        if recorder is not None:
            recorder.__exit__(RuntimeError, None, None)

    # --- resuming
    def state(self) -> dict[str, Any]:
        """What a training checkpoint keeps: the run and how many checkpoints it holds."""
        if self.recorder is None:
            return dict(self._resume or {})
        return {"path": str(self.path), "run_id": self.run_id,
                "n_checkpoints": self.recorder.n_checkpoints, "last_step": self.last_step}

    def load_state(self, state: Mapping[str, Any]) -> None:
        if not state:
            return
        if state.get("run_id") != self.run_id:
            log.warning("the checkpoint's recording state is for run %r, not %r; ignored",
                        state.get("run_id"), self.run_id)
            return
        self._resume = dict(state)
