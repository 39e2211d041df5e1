"""Recording function-space trajectories from any PyTorch training loop.

:class:`Recorder` evaluates a model on a fixed probe set and appends its class probabilities,
with any scalar metrics, as one checkpoint of a run in a trajviz file (docs/format.md,
docs/recorder.md)::

    with trajviz.Recorder("runs/mine.h5", probe_x, probe_y, run_id="seed0", seed=0) as rec:
        rec.record(model, step=0)
        for epoch in range(10):
            train_one_epoch(model)
            rec.record(model, step=..., train_nll=...)
        rec.save_params(model)

Any model: how a probe batch is fed and how class scores are read from what the model returns
is in :mod:`trajviz.record.adapters` (``inputs_fn`` / ``outputs_fn`` override it). The
experiment runner (``trajviz record``) writes through the same class.
"""

from __future__ import annotations

import json
import logging
import os
import weakref
from pathlib import Path
from typing import Any, ClassVar, Mapping

import numpy as np
import torch

from trajviz.errors import FileLockedError, FormatError, ModelOutputError, OutputExistsError
from trajviz.record.adapters import (OUTPUT_KINDS, InputsFn, OutputsFn, as_probe_inputs,
                                     batch_of, check_probabilities, check_scores, extract_scores,
                                     feed, inputs_sha256, model_device_dtype, n_examples,
                                     named_arrays, structure, to_probabilities)
from trajviz.store import COMPLETE, RUNNING, ExperimentWriter, ProbeInputsRecord, RunWriter

#: probe inputs up to this size (bytes) are stored in the file by default (``store_inputs=None``)
STORE_INPUTS_MAX_BYTES = 64 * 2**20

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
        check_probabilities(probs, step)
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
        """Mark the run ``status`` (``mode="resume"`` skips complete and diverged runs).

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

    Use it as a context manager: an exception (or Ctrl-C) inside the block closes the file,
    valid, with the default run left unfinished (``status="running"``) for a later
    ``mode="resume"`` to redo or :meth:`continue_default_run` to continue.

    Args:
        path: output file.
        probe_inputs: the fixed probe set, N examples: one (N, ...) tensor or array, or several
            (a tuple, fed as ``model(*batch)``; a dict, fed as ``model(**batch)``). Numpy floats
            become float32, numpy integers stay integer (int64: token ids for an embedding).
        probe_targets: (N,) int labels, or None (stored as -1).
        run_id, seed, group, pretrain: metadata of the default run used by :meth:`record`;
            more runs can be added with :meth:`start_run`.
        n_classes: number of outputs; inferred from the first evaluation if None.
        name: experiment name (default: the file's stem); config: a JSON-serialisable dict
            stored with the file.
        mode: ``"create"`` (refuse an existing file), ``"resume"`` (append runs to a file
            recorded on the same probe set), ``"overwrite"``.
        output: what the model's class scores are: ``"logits"`` (softmax applied), ``"probs"``
            or ``"log_probs"``. One score per example, shape (N,) or (N, 1), is a binary model:
            a logit (sigmoid applied), a probability or a log-probability of class 1. Checked
            at the first evaluation, before anything is written.
        batch_size: probe examples per forward pass.
        inputs_fn: ``inputs_fn(model, batch) -> output``, how to feed one probe batch (the
            inputs' structure, rows sliced, on the model's device); default ``model(batch)``,
            ``model(*batch)`` or ``model(**batch)``.
        outputs_fn: how to get class scores from what the model returns: a function of it, a
            key or attribute name (``"logits"``), or an index. Default: a tensor as is, an
            object's ``.logits``, a dict's ``"logits"`` or only tensor, a tuple's first entry.
        store_inputs: keep the probe inputs in the file, so an analysis can re-evaluate a model
            on them (``True``), or only their checksum and shapes (``False``); None: store them
            when they take at most 64 MiB (:data:`STORE_INPUTS_MAX_BYTES`).
    """

    #: realpath -> the Recorder of this process that has the file open
    _holders: ClassVar[dict[str, "weakref.ref[Recorder]"]] = {}

    def __init__(self, path: str | Path, probe_inputs: Any, probe_targets: Any = None, *,
                 run_id: str = "run0", seed: int | None = None, group: str | None = None,
                 pretrain: str = "none", n_classes: int | None = None, name: str | None = None,
                 config: Mapping[str, Any] | str | None = None, mode: str = "create",
                 output: str = "logits", batch_size: int = 4096, inputs_fn: InputsFn = None,
                 outputs_fn: OutputsFn = None, store_inputs: bool | None = None):
        if output not in OUTPUT_KINDS:
            raise ValueError(f"output {output!r}: choose one of {', '.join(OUTPUT_KINDS)}")
        if mode not in ("create", "resume", "overwrite"):
            raise ValueError(f"mode {mode!r}: choose create, resume or overwrite")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size {batch_size!r}: must be a positive integer")
        if inputs_fn is not None and not callable(inputs_fn):
            raise ValueError(f"inputs_fn {inputs_fn!r}: must be a function (model, batch) -> output")
        self.path = Path(path)
        if mode == "create" and self.path.exists():
            raise OutputExistsError(f"{self.path} exists; pass mode='resume' to continue it or "
                                    "mode='overwrite' to replace it")
        self.probe_inputs = as_probe_inputs(probe_inputs)
        n = n_examples(self.probe_inputs)
        targets = (np.full(n, -1, dtype=np.int64) if probe_targets is None
                   else np.asarray(probe_targets, dtype=np.int64).reshape(-1))
        if targets.shape[0] != n:
            raise FormatError(f"probe_targets has {targets.shape[0]} labels for {n} probe inputs")
        self.probe_targets = targets
        self.output = output
        self.batch_size = batch_size
        self.inputs_fn = inputs_fn
        self.outputs_fn = outputs_fn
        self._config_json = config if isinstance(config, str) else json.dumps(config or {}, sort_keys=True)
        self._name = self.path.stem if name is None else name
        self._mode = mode
        self._n_classes = n_classes
        self._writer: ExperimentWriter | None = None
        self._closed_by: str | None = None
        self._default_meta = dict(run_id=run_id, seed=seed, group=group, pretrain=pretrain)
        self._default: RunRecorder | None = None
        self._continue: tuple[int | None, int | None] | None = None
        self._checked = False
        self.probe_sha256 = inputs_sha256(self.probe_inputs)
        arrays = named_arrays(self.probe_inputs)
        nbytes = sum(a.nbytes for a in arrays.values())
        store = nbytes <= STORE_INPUTS_MAX_BYTES if store_inputs is None else bool(store_inputs)
        if store_inputs is None and not store:
            log.info("probe inputs take %.0f MiB: the file keeps their checksum and shapes only "
                     "(store_inputs=True keeps them)", nbytes / 2**20)
        self._inputs_record = ProbeInputsRecord(structure(self.probe_inputs), arrays, store)
        if n_classes is not None:
            self._open(n_classes)

    # --- file
    def _open(self, n_classes: int | None) -> ExperimentWriter:
        if self._writer is None:
            if self._closed_by is not None:
                raise FileLockedError(f"{self.path}: this Recorder is closed ({self._closed_by}); "
                                      "make a new one")
            key = os.path.realpath(self.path)
            earlier = self._holders.get(key)
            earlier = earlier() if earlier is not None else None
            if earlier is not None and earlier is not self and earlier._writer is not None:
                log.warning("%s: closing the earlier Recorder of this file, left open in this "
                            "process; its unfinished run stays 'running'", self.path)
                earlier._abandon("another Recorder of the same file was opened in this process")
            self._writer = ExperimentWriter(
                self.path, probe_targets=self.probe_targets, probe_sha=self.probe_sha256,
                n_classes=n_classes, name=self._name, config_json=self._config_json,
                mode=self._mode, probe_inputs=self._inputs_record)
            self._n_classes = self._writer.n_classes
            self._holders[key] = weakref.ref(self)
        return self._writer

    def _abandon(self, why: str) -> None:
        """Close the file without finishing the default run (it stays 'running')."""
        self._default = None
        self._closed_by = why
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close(wait=False)

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

    def continue_run(self, run_id: str, *, keep: int | None = None) -> RunRecorder:
        """Append to the unfinished run ``run_id`` after its last complete checkpoint (used by
        the runner to resume a training from its resume state); ``keep``: after only its first
        ``keep`` checkpoints, the later ones dropped."""
        return RunRecorder(self, self.store.continue_run(run_id, keep=keep))

    @property
    def store(self) -> ExperimentWriter:
        """The file's writer (the runner keeps resume state through it); needs n_classes."""
        if self._n_classes is None:
            raise RuntimeError("the store needs n_classes: pass it to Recorder(...)")
        return self._open(self._n_classes)

    def continue_default_run(self, *, keep: int | None = None, last_step: int | None = None) -> None:
        """Continue the default run, if the file holds it unfinished, instead of restarting it:
        :meth:`record` appends after its checkpoints. ``keep``: keep only its first ``keep``
        checkpoints; ``last_step``: keep only those up to that step (both: the fewer). Used
        by the training callbacks when a training resumes from its checkpoint, which may be
        older than the last recorded checkpoint. Needs ``mode="resume"``; takes effect at the
        next :meth:`record`."""
        if self._mode != "resume":
            raise ValueError("continue_default_run needs mode='resume'")
        if self._default is not None:
            raise RuntimeError("continue_default_run before the first record()")
        self._continue = (keep, last_step)

    # --- evaluation
    @torch.no_grad()
    def probabilities(self, model: torch.nn.Module) -> np.ndarray:
        """Class probabilities of ``model`` on the probe set, (N, C) float32, evaluated in eval
        mode on the model's device. The first call checks the outputs against ``output``."""
        was_training = model.training
        model.eval()
        n = n_examples(self.probe_inputs)
        try:
            device, dtype = model_device_dtype(model)
            chunks = []
            for start in range(0, n, self.batch_size):
                batch = batch_of(self.probe_inputs, start, start + self.batch_size, device, dtype)
                scores = extract_scores((self.inputs_fn or feed)(model, batch), self.outputs_fn)
                check_scores(scores, self.output, min(self.batch_size, n - start),
                             warn=not self._checked and start == 0)
                probs = to_probabilities(scores, self.output).cpu()
                if chunks and probs.shape[1] != chunks[0].shape[1]:
                    raise ModelOutputError(f"the model gave {chunks[0].shape[1]} class scores "
                                           f"for one probe batch and {probs.shape[1]} for another")
                chunks.append(probs)
        finally:
            model.train(was_training)
        probs = torch.cat(chunks).numpy()
        if not self._checked:
            self._check_classes(probs.shape[1])
            self._checked = True
        return probs

    def _check_classes(self, c: int) -> None:
        if self._n_classes is not None and c != self._n_classes:
            raise ModelOutputError(f"the model gives scores for {c} classes, but n_classes is "
                                   f"{self._n_classes}")
        top = int(self.probe_targets.max()) if self.probe_targets.size else -1
        if top >= c:
            raise ModelOutputError(f"probe_targets hold labels up to {top}, but the model gives "
                                   f"scores for {c} classes (one score per example counts as 2)")

    # --- the default run
    def _default_run(self, n_classes: int) -> RunRecorder:
        if self._default is None:
            if self._n_classes is None:
                self._n_classes = n_classes
            meta = self._default_meta
            if self._continue is not None:
                writer = self._open(self._n_classes)
                if writer.run_status(meta["run_id"]) == RUNNING:
                    keep, last_step = self._continue
                    steps = writer.run_steps(meta["run_id"])
                    k = len(steps) if keep is None else min(int(keep), len(steps))
                    if last_step is not None:
                        k = min(k, int(np.argmax(np.append(steps > last_step, True))))
                    self._default = RunRecorder(self, writer.continue_run(meta["run_id"], k))
                    return self._default
            self._default = self.start_run(meta["run_id"], seed=meta["seed"], group=meta["group"],
                                           pretrain=meta["pretrain"])
        return self._default

    @property
    def n_checkpoints(self) -> int:
        """Checkpoints the default run holds so far (0 before the first :meth:`record`)."""
        return 0 if self._default is None else self._default.n_checkpoints

    def record(self, model: torch.nn.Module, step: int, *, epoch: float | None = None,
               store_params: bool = False, **metrics: float) -> None:
        """Append a checkpoint of the default run: the model's outputs on the probe set."""
        probs = self.probabilities(model)
        check_probabilities(probs, step)
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
            writer, self._writer = self._writer, None
            if writer is not None:
                self._closed_by = "close() was called"
                writer.close()

    def __enter__(self) -> "Recorder":
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        if exc_type is not None:
            # the run stays unfinished, for resume to redo or continue_default_run to continue; the
            # user's exception (KeyboardInterrupt included) is the one that propagates
            self._default = None
            try:
                self.close()
            except Exception as again:
                log.warning("%s: closing after %s failed too: %s", self.path, exc_type.__name__,
                            again)
            return
        self.close()
