"""A Hugging Face ``transformers`` callback that records the trajectory of the model a
``Trainer`` trains (extra ``huggingface``: ``pip install 'trajviz[huggingface]'``)::

    from trajviz.integrations.huggingface import TrajectoryCallback

    probe = {"input_ids": ids, "attention_mask": mask}        # fed as model(**batch)
    callback = TrajectoryCallback("runs/mine.h5", probe, labels, run_id="seed0", seed=0)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=train,
                                   callbacks=[callback])
    trainer.train()

Step 0 is recorded at ``on_train_begin``, then a checkpoint at the end of every epoch (or
every ``every_n_steps`` optimizer steps), and the final step with the final parameters at
``on_train_end``. The model is the one the trainer passes to the callback, on its device; the
model's ``.logits`` are read as class scores. Only the process with
``state.is_world_process_zero`` evaluates and writes. ``trainer.train(resume_from_checkpoint=...)``
continues the same recording: checkpoints recorded after the step it resumes from are dropped
and recorded again. docs/recorder.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trajviz.integrations import require

# first: a missing extra is reported before torch loads
transformers = require("transformers", "huggingface", "trajviz.integrations.huggingface")

from trajviz.integrations._recording import TrajectoryRecording  # noqa: E402


class TrajectoryCallback(transformers.TrainerCallback):
    """Records the trained model's outputs on a probe set into a trajviz file.

    Args:
        path, probe_inputs, probe_targets: as for :class:`trajviz.Recorder` (a dict of
            ``input_ids``, ``attention_mask``, ... is fed as ``model(**batch)``).
        every_n_steps: a checkpoint every that many optimizer steps (``state.global_step``);
            None: at the end of every ``every_n_epochs``-th epoch.
        log_metrics: also store the latest values the trainer logged (``loss``,
            ``learning_rate``, ...) with each checkpoint.
        **recorder_options: any keyword of :class:`trajviz.Recorder` (``run_id``, ``seed``,
            ``group``, ``mode``, ``output``, ``inputs_fn``, ``outputs_fn``, ...).
    """

    def __init__(self, path: str | Path, probe_inputs: Any, probe_targets: Any = None, *,
                 every_n_steps: int | None = None, every_n_epochs: int = 1,
                 log_metrics: bool = True, **recorder_options: Any):
        self.recording = TrajectoryRecording(path, probe_inputs, probe_targets,
                                             every_n_steps=every_n_steps,
                                             every_n_epochs=every_n_epochs,
                                             log_metrics=log_metrics, **recorder_options)
        self._logs: dict[str, Any] = {}

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None,
                       **kwargs: Any) -> None:
        if not state.is_world_process_zero:
            return
        resumed = state.global_step > 0
        self.recording.start(model, state.global_step, float(state.epoch or 0.0),
                             resume_last_step=state.global_step if resumed else None)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None,
               **kwargs: Any) -> None:
        self._logs.update(logs or {})

    def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None,
                    **kwargs: Any) -> None:
        if state.is_world_process_zero and self.recording.due_at_step(state.global_step):
            self.recording.record(model, state.global_step, state.epoch, self._logs)

    def on_epoch_end(self, args: Any, state: Any, control: Any, model: Any = None,
                     **kwargs: Any) -> None:
        if state.is_world_process_zero and self.recording.due_at_epoch_end(round(state.epoch or 0)):
            self.recording.record(model, state.global_step, state.epoch, self._logs)

    def on_train_end(self, args: Any, state: Any, control: Any, model: Any = None,
                     **kwargs: Any) -> None:
        if state.is_world_process_zero:
            self.recording.finish(model, state.global_step, state.epoch, self._logs)
