"""Resuming a batch's fine-tuning mid-run, from the state kept with its latest checkpoint.

With ``engine.resume_state`` on, every checkpoint of a batch is written together with the
batch's *training state*, in the same journaled transaction (so the file's checkpoints and the
state can never be out of step; docs/reliability.md). It holds everything that decides the
rest of the run:

- the nets' parameters, in the training dtype (the exact bits, float32 or float64);
- every random stream of every net (:class:`~trajviz.training.runner.RunStreams`: ``init``,
  ``order``, ``pretrain``, torch generators stored as their uint8 state): ``order`` as it was
  before drawing the example order of the epoch the checkpoint falls in, so a mid-epoch
  checkpoint (``record.every_steps``) redraws the same order and skips the minibatches done;
- which nets still train (a diverged net stops) and the model selection so far
  (:class:`~trajviz.training.selection.BestCheckpoint`);
- the update count and how many checkpoints were recorded.

Fine-tuning is plain SGD: there is no optimizer state; the fused steps
(:mod:`trajviz.training.fast`) keep only scratch buffers, and no update is pending at a
checkpoint. No numpy generator is drawn from while training (numpy only derives the streams'
seeds and generates the data, both redone from the config).

Pre-training: the checkpoint at step 0 comes after pre-training, so its state holds the
pre-trained weights, and a batch killed any time after it resumes without pre-training again.
We store the weights rather than redo pre-training because that costs nothing more (it is the
step-0 state) while pre-training can take as long as many fine-tuning epochs (10 epochs per
layer by default). A batch killed during pre-training starts over (its result is the same:
every draw comes from the seeds).

A state is used only if it was written for the same runs (method, seeds of the batch) and the
same engine settings (device, dtype, backend, nets per batch), since these change a net's last
bits; otherwise the batch starts over, as it would without a state.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from trajviz.training.nets import StackedMLP
from trajviz.training.selection import BestCheckpoint

log = logging.getLogger(__name__)

#: version of the state's layout; a state of another version is not used (the batch starts over)
STATE_VERSION = 1
STREAMS = ("init", "order", "pretrain")
_SELECTION = ("step", "epoch", "valid_error", "valid_nll", "test_error", "test_nll")


@dataclass
class FinetunePosition:
    """Where fine-tuning stands: ``step`` updates done; ``order_states``, the ``order``
    generators' states before drawing the example order of the epoch holding update ``step +
    1`` (restoring them and skipping ``step mod updates-per-epoch`` minibatches continues the
    run exactly); ``taken``: the checkpoint at ``step`` is already recorded."""

    step: int = 0
    order_states: list[torch.Tensor] = field(default_factory=list)
    taken: bool = False


def state_key(run_ids: Sequence[str]) -> str:
    """Name of a batch's state in the file: its first run's id (batches never share runs)."""
    return run_ids[0]


def capture(net: StackedMLP, streams: Sequence[Any], position: FinetunePosition,
            alive: np.ndarray, best: BestCheckpoint, n_checkpoints: int, run_ids: Sequence[str],
            engine: dict[str, Any]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The batch's state now, as (arrays, meta) for :meth:`trajviz.store.ExperimentWriter.write_resume_state`.

    Arrays are copies (training goes on while the writer thread stores them)."""
    arrays: dict[str, np.ndarray] = {}
    for l, (w, b) in enumerate(zip(net.weights, net.biases)):
        arrays[f"weights/{l}"] = w.detach().to("cpu", copy=True).numpy()
        arrays[f"biases/{l}"] = b.detach().to("cpu", copy=True).numpy()
    for name in STREAMS:
        states = (position.order_states if name == "order"
                  else [getattr(s, name).get_state() for s in streams])
        arrays[f"rng/{name}"] = np.stack([s.numpy() for s in states]).astype(np.uint8)
    arrays["alive"] = np.asarray(alive, dtype=np.uint8).copy()
    for name in _SELECTION:
        arrays[f"selection/{name}"] = np.array(getattr(best, name), copy=True)
    meta = {"version": STATE_VERSION, "runs": list(run_ids), "engine": engine,
            "step": int(position.step), "n_checkpoints": int(n_checkpoints)}
    return arrays, meta


@dataclass
class Restored:
    """A batch as its state left it: the nets, the mask of nets still training, the model
    selection so far, the position to continue from, and the checkpoints already recorded."""

    net: StackedMLP
    alive: np.ndarray
    best: BestCheckpoint
    position: FinetunePosition
    n_checkpoints: int


def restore(arrays: dict[str, np.ndarray], meta: dict[str, Any], streams: Sequence[Any],
            run_ids: Sequence[str], engine: dict[str, Any], sizes: Sequence[int],
            dtype: torch.dtype, device: torch.device) -> Restored:
    """Rebuild a batch from its state; sets every generator of ``streams`` to its stored state.

    Raises ValueError saying why if the state does not belong to this batch and these engine
    settings, or does not fit the nets (the caller then starts the batch over)."""
    if meta.get("version") != STATE_VERSION:
        raise ValueError(f"it has layout version {meta.get('version')!r}, not {STATE_VERSION}")
    if meta.get("runs") != list(run_ids):
        raise ValueError(f"it is of runs {meta.get('runs')}, not {list(run_ids)}")
    if meta.get("engine") != engine:
        raise ValueError(f"it was written with engine settings {meta.get('engine')}, "
                         f"now {engine}")
    k = len(run_ids)
    np_dtype = torch.empty((), dtype=dtype).numpy().dtype

    def array(name: str, shape: tuple[int, ...], kind: np.dtype) -> np.ndarray:
        arr = arrays.get(name)
        if arr is None:
            raise ValueError(f"it has no {name}")
        if arr.shape != shape or arr.dtype != kind:
            raise ValueError(f"its {name} is {arr.dtype}{list(arr.shape)}, "
                             f"expected {np.dtype(kind)}{list(shape)}")
        return arr

    weights, biases = [], []
    for l, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        weights.append(torch.from_numpy(array(f"weights/{l}", (k, fan_in, fan_out), np_dtype)).to(device))
        biases.append(torch.from_numpy(array(f"biases/{l}", (k, 1, fan_out), np_dtype)).to(device))
    layers = {name for name in arrays if name.startswith(("weights/", "biases/"))}
    if len(layers) != 2 * len(weights):
        raise ValueError(f"it has {len(layers) // 2} layers, the nets {len(weights)}")
    n_state = streams[0].init.get_state().numel()
    states = {name: array(f"rng/{name}", (k, n_state), np.dtype(np.uint8)) for name in STREAMS}
    alive = array("alive", (k,), np.dtype(np.uint8)).astype(bool)
    best = BestCheckpoint(k)
    for name in _SELECTION:
        current = getattr(best, name)
        setattr(best, name, array(f"selection/{name}", current.shape, current.dtype).copy())
    step, n_checkpoints = meta.get("step"), meta.get("n_checkpoints")
    if not isinstance(step, int) or not isinstance(n_checkpoints, int) or step < 0 or n_checkpoints < 1:
        raise ValueError(f"its step {step!r} / checkpoint count {n_checkpoints!r} are not valid")
    try:
        for j, stream in enumerate(streams):
            for name in STREAMS:
                getattr(stream, name).set_state(torch.from_numpy(states[name][j].copy()))
    except RuntimeError as exc:
        raise ValueError(f"a generator state is invalid ({exc})") from None
    position = FinetunePosition(step, [s.order.get_state() for s in streams], taken=True)
    return Restored(StackedMLP(weights, biases), alive, best, position, n_checkpoints)
