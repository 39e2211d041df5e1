"""Recording function-space trajectories from any PyTorch training loop.

:class:`Recorder` evaluates a model on a fixed probe set and appends the softmax outputs, with
any scalar metrics, as one checkpoint of a run in a trajviz file (docs/format.md)::

    rec = trajviz.Recorder("runs/mine.h5", probe_x, probe_y, run_id="seed0", seed=0)
    for epoch in range(10):
        train_one_epoch(model)
        rec.record(model, step=..., train_nll=...)
    rec.save_params(model)
    rec.close()

The experiment runner (``trajviz record``) writes through the same class.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from trajviz.errors import FormatError
from trajviz.store import COMPLETE, ExperimentWriter, RunWriter, probe_sha256

OUTPUT_KINDS = ("logits", "probs", "log_probs")

log = logging.getLogger(__name__)


class RunRecorder:
    """One run inside a :class:`Recorder`'s file."""

    def __init__(self, owner: "Recorder", writer: RunWriter):
        self._owner = owner
        self._writer = writer
        self.run_id = writer.run_id
        self.has_final_params = False

    @property
    def n_checkpoints(self) -> int:
        return self._writer.n_checkpoints

    def record(self, model: torch.nn.Module, step: int, *, epoch: float | None = None,
               store_params: bool = False, **metrics: float) -> None:
        """Evaluate ``model`` on the probe set and append a checkpoint at update ``step``."""
        probs = self._owner.probabilities(model)
        params = _numpy_state(model) if store_params else None
        self.append(probs, step, epoch=epoch, params=params, **metrics)

    def append(self, probabilities: np.ndarray, step: int, *, epoch: float | None = None,
               params: Mapping[str, np.ndarray] | None = None, **metrics: float) -> None:
        """Append a checkpoint from probabilities already computed, (N, C)."""
        self._writer.append(step, probabilities, metrics, epoch=epoch, params=params)

    def save_params(self, model_or_state: torch.nn.Module | Mapping[str, Any],
                    which: str = "final") -> None:
        """Store parameters (a module, or a name -> array mapping) under ``params/<which>``.

        ``which="final"`` is what :meth:`finish` needs before it may mark the run complete."""
        state = (_numpy_state(model_or_state) if isinstance(model_or_state, torch.nn.Module)
                 else {k: np.asarray(torch.as_tensor(v).detach().cpu()) for k, v in model_or_state.items()})
        self._writer.write_params(state, which)
        if which == "final":
            self.has_final_params = True

    def set_attrs(self, **attrs: Any) -> None:
        self._writer.set_attrs(**attrs)

    def finish(self, status: str = COMPLETE) -> None:
        """Mark the run ``status`` (``--resume`` skips complete and diverged runs).

        A complete run has its final parameters (docs/format.md): ``status="complete"`` before
        ``save_params(..., which="final")`` raises ``ValueError``."""
        if status == COMPLETE and not self.has_final_params:
            raise ValueError(f"run {self.run_id!r}: save_params(model) before finish(): a complete "
                             "run has its final parameters (docs/format.md)")
        self._writer.finish(status)


def _numpy_state(model: torch.nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()
            if v.dtype.is_floating_point}


class Recorder:
    """Writes function-space trajectories of one or more runs into a trajviz HDF5 file.

    Args:
        path: output file.
        probe_inputs: (N, ...) tensor or array fed to the model as is (any shape it accepts).
        probe_targets: (N,) int labels, or None (stored as -1).
        run_id, seed, group, pretrain: metadata of the default run used by :meth:`record`;
            more runs can be added with :meth:`start_run`.
        n_classes: number of outputs; inferred from the first evaluation if None.
        name: experiment name; config: a JSON-serialisable dict stored with the file.
        mode: ``"create"`` (refuse an existing file), ``"resume"`` (append runs to a file
            recorded on the same probe set), ``"overwrite"``.
        output: what the model returns: ``"logits"`` (softmax applied), ``"probs"`` or
            ``"log_probs"``.
        batch_size: probe examples per forward pass.
    """

    def __init__(self, path: str | Path, probe_inputs: Any, probe_targets: Any = None, *,
                 run_id: str = "run0", seed: int | None = None, group: str | None = None,
                 pretrain: str = "none", n_classes: int | None = None, name: str = "",
                 config: Mapping[str, Any] | str | None = None, mode: str = "create",
                 output: str = "logits", batch_size: int = 4096):
        if output not in OUTPUT_KINDS:
            raise ValueError(f"output {output!r}: choose one of {', '.join(OUTPUT_KINDS)}")
        self.path = Path(path)
        self.probe_inputs = torch.as_tensor(np.asarray(probe_inputs, dtype=np.float32)
                                            if not isinstance(probe_inputs, torch.Tensor)
                                            else probe_inputs)
        n = int(self.probe_inputs.shape[0])
        targets = (np.full(n, -1, dtype=np.int64) if probe_targets is None
                   else np.asarray(probe_targets, dtype=np.int64).reshape(-1))
        if targets.shape[0] != n:
            raise FormatError(f"probe_targets has {targets.shape[0]} labels for {n} probe inputs")
        self.probe_targets = targets
        self.output = output
        self.batch_size = batch_size
        self._config_json = config if isinstance(config, str) else json.dumps(config or {}, sort_keys=True)
        self._name = name
        self._mode = mode
        self._n_classes = n_classes
        self._writer: ExperimentWriter | None = None
        self._default_meta = dict(run_id=run_id, seed=seed, group=group, pretrain=pretrain)
        self._default: RunRecorder | None = None
        self.probe_sha256 = probe_sha256(self.probe_inputs.detach().cpu().numpy())
        if n_classes is not None:
            self._open(n_classes)

    # --- file
    def _open(self, n_classes: int) -> ExperimentWriter:
        if self._writer is None:
            self._writer = ExperimentWriter(
                self.path, probe_targets=self.probe_targets, probe_sha=self.probe_sha256,
                n_classes=n_classes, name=self._name, config_json=self._config_json, mode=self._mode)
            self._n_classes = n_classes
        return self._writer

    def completed_runs(self) -> set[str]:
        if self._writer is None:
            raise RuntimeError("completed_runs needs n_classes given at construction")
        return self._writer.completed_runs()

    def start_run(self, run_id: str, *, seed: int | None = None, group: str | None = None,
                  pretrain: str = "none", config: Mapping[str, Any] | str | None = None,
                  **attrs: Any) -> RunRecorder:
        """Begin a run (restarting an unfinished one of the same id)."""
        if self._n_classes is None:
            raise RuntimeError("start_run needs n_classes: pass it to Recorder(...)")
        cfg = config if isinstance(config, str) else (
            json.dumps(config, sort_keys=True) if config is not None else self._config_json)
        writer = self._open(self._n_classes).start_run(
            run_id, seed=seed, pretrain=pretrain, group=group, config_json=cfg, **attrs)
        return RunRecorder(self, writer)

    def continue_run(self, run_id: str) -> RunRecorder:
        """Append to the unfinished run ``run_id`` after its last complete checkpoint (used by
        the runner to resume a training from its resume state)."""
        return RunRecorder(self, self.store.continue_run(run_id))

    @property
    def store(self) -> ExperimentWriter:
        """The file's writer (the runner keeps resume state through it); needs n_classes."""
        if self._n_classes is None:
            raise RuntimeError("the store needs n_classes: pass it to Recorder(...)")
        return self._open(self._n_classes)

    # --- evaluation
    @torch.no_grad()
    def probabilities(self, model: torch.nn.Module) -> np.ndarray:
        """Softmax outputs of ``model`` on the probe set, (N, C) float32."""
        was_training = model.training
        model.eval()
        try:
            device = next((p.device for p in model.parameters()), torch.device("cpu"))
            chunks = []
            for start in range(0, self.probe_inputs.shape[0], self.batch_size):
                out = model(self.probe_inputs[start:start + self.batch_size].to(device)).float()
                if self.output == "logits":
                    out = torch.softmax(out, dim=-1)
                elif self.output == "log_probs":
                    out = out.exp()
                chunks.append(out.cpu())
        finally:
            model.train(was_training)
        return torch.cat(chunks).numpy()

    # --- the default run
    def _default_run(self, n_classes: int) -> RunRecorder:
        if self._default is None:
            if self._n_classes is None:
                self._n_classes = n_classes
            meta = self._default_meta
            self._default = self.start_run(meta["run_id"], seed=meta["seed"], group=meta["group"],
                                           pretrain=meta["pretrain"])
        return self._default

    def record(self, model: torch.nn.Module, step: int, *, epoch: float | None = None,
               store_params: bool = False, **metrics: float) -> None:
        """Append a checkpoint of the default run: the model's outputs on the probe set."""
        probs = self.probabilities(model)
        run = self._default_run(probs.shape[1])
        run.append(probs, step, epoch=epoch,
                   params=_numpy_state(model) if store_params else None, **metrics)

    def save_params(self, model: torch.nn.Module, which: str = "final") -> None:
        """Store the default run's parameters under ``params/<which>``.

        With ``which="final"`` (the default), :meth:`close` then marks the run complete; without
        final parameters the run stays ``running`` (docs/format.md)."""
        if self._default is None:
            raise RuntimeError("save_params before any record(): nothing to attach them to")
        self._default.save_params(model, which)

    def close(self) -> None:
        """Close the file. The default run, if any, is marked complete when its final parameters
        were saved (:meth:`save_params`); otherwise it stays ``running``, with a warning, since a
        complete run has its final parameters (docs/format.md)."""
        try:
            if self._default is not None:
                default, self._default = self._default, None
                if default.has_final_params:
                    default.finish()
                else:
                    log.warning("run %r left 'running': no final parameters were saved "
                                "(call save_params(model) before close() to mark it complete)",
                                default.run_id)
        finally:  # a failed final write must not leave the file (and its lock) open
            if self._writer is not None:
                self._writer.close()

    def __enter__(self) -> "Recorder":
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        if exc_type is not None:
            self._default = None  # an exception leaves the run unfinished, for resume to redo
        self.close()
