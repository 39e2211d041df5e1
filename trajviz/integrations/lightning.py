"""A Lightning callback that records the trajectory of the model it trains (extra
``lightning``: ``pip install 'trajviz[lightning]'``)::

    from trajviz.integrations.lightning import TrajectoryCallback

    callback = TrajectoryCallback("runs/mine.h5", probe_x, probe_y, run_id="seed0", seed=0)
    trainer = lightning.pytorch.Trainer(max_epochs=10, callbacks=[callback])
    trainer.fit(model, train_loader)

Step 0 is recorded at ``on_train_start``, then a checkpoint at the end of every epoch (or
every ``every_n_steps`` optimizer steps), and the final step with the final parameters at
``on_train_end``. The model evaluated is ``pl_module``, on its device; only the global rank
zero process evaluates and writes. The callback's state is saved in the trainer's checkpoints,
so ``trainer.fit(..., ckpt_path=...)`` continues the same recording: checkpoints recorded
after the one the training resumes from are dropped and recorded again. An exception in
training closes the file with the run unfinished. docs/recorder.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trajviz.integrations import require

# first: a missing extra is reported before torch loads
pl = require("lightning.pytorch", "lightning", "trajviz.integrations.lightning")

from trajviz.integrations._recording import TrajectoryRecording  # noqa: E402


class TrajectoryCallback(pl.Callback):
    """Records ``pl_module``'s outputs on a probe set into a trajviz file while it trains.

    Args:
        path, probe_inputs, probe_targets: as for :class:`trajviz.Recorder`.
        every_n_steps: a checkpoint every that many optimizer steps (``trainer.global_step``);
            None: at the end of every ``every_n_epochs``-th epoch.
        log_metrics: also store the trainer's logged scalar metrics (``callback_metrics``,
            '/' in names becoming '.') with each checkpoint.
        **recorder_options: any keyword of :class:`trajviz.Recorder` (``run_id``, ``seed``,
            ``group``, ``mode``, ``output``, ``inputs_fn``, ``outputs_fn``, ...).
    """

    def __init__(self, path: str | Path, probe_inputs: Any, probe_targets: Any = None, *,
                 every_n_steps: int | None = None, every_n_epochs: int = 1,
                 log_metrics: bool = True, **recorder_options: Any):
        super().__init__()
        self.recording = TrajectoryRecording(path, probe_inputs, probe_targets,
                                             every_n_steps=every_n_steps,
                                             every_n_epochs=every_n_epochs,
                                             log_metrics=log_metrics, **recorder_options)

    @property
    def state_key(self) -> str:
        return self._generate_state_key(path=str(self.recording.path),
                                        run_id=self.recording.run_id)

    @staticmethod
    def _epoch(trainer: "pl.Trainer", batch_idx: int | None = None) -> float:
        if batch_idx is None:
            return float(trainer.current_epoch + 1)
        n = trainer.num_training_batches
        if isinstance(n, int) and n > 0:
            return trainer.current_epoch + min(1.0, (batch_idx + 1) / n)
        return float("nan")

    def on_train_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if not trainer.is_global_zero:
            return
        resumed = trainer.global_step > 0
        self.recording.start(pl_module, trainer.global_step, float(trainer.current_epoch),
                             resume_last_step=trainer.global_step if resumed else None)

    def on_train_batch_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule",
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        if trainer.is_global_zero and self.recording.due_at_step(trainer.global_step):
            self.recording.record(pl_module, trainer.global_step, self._epoch(trainer, batch_idx),
                                  trainer.callback_metrics)

    def on_train_epoch_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if trainer.is_global_zero and self.recording.due_at_epoch_end(trainer.current_epoch + 1):
            self.recording.record(pl_module, trainer.global_step, self._epoch(trainer),
                                  trainer.callback_metrics)

    def on_train_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if trainer.is_global_zero:
            self.recording.finish(pl_module, trainer.global_step, float(trainer.current_epoch),
                                  trainer.callback_metrics)

    def on_exception(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule",
                     exception: BaseException) -> None:
        self.recording.abort()

    def state_dict(self) -> dict[str, Any]:
        return self.recording.state()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.recording.load_state(state_dict)
