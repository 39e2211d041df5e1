"""The experiment runner: pre-train and fine-tune the nets of an experiment, recording each
one's probe outputs and metrics at every checkpoint.

Runs of one pre-training method train together, ``engine.nets_per_batch`` at a time, as one
:class:`~trajviz.training.nets.StackedMLP`. Each run draws its randomness from streams derived from its
own seed (and, unless ``pretrain.shared_init``, its method) alone, so a run gives the same numbers
whatever other runs share its batch.
"""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import AbstractSet as Set, Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from trajviz.config import ExperimentConfig, TrainConfig
from trajviz.data import Split, load_dataset
from trajviz.record.background import BackgroundWriter
from trajviz.training.fast import BACKENDS, FinetuneStep
from trajviz.errors import ConfigError, FormatError
from trajviz.training.nets import StackedMLP, layer_sizes
from trajviz.training.initialization import apply_method, method_attrs
from trajviz.progress import progress_bar
from trajviz.record import Recorder, RunRecorder
from trajviz.training.resume import FinetunePosition, Restored, capture, restore, state_key
from trajviz.training.selection import BestCheckpoint
from trajviz.store import DIVERGED, SPLITS, ExperimentWriter

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- randomness


@dataclass
class RunStreams:
    """Independent random streams of one run, derived from its seed (and method, see
    :func:`run_streams`).

    ``init`` draws initial weights, ``order`` the fine-tuning example order and ``pretrain``
    the pre-training order and noise.
    """

    init: torch.Generator
    order: torch.Generator
    pretrain: torch.Generator


def run_streams(seed: int, method: str | None = None) -> RunStreams:
    """The streams of the run of ``seed`` (and pre-training ``method``).

    ``method=None`` (``pretrain.shared_init = true``, the paired design): the streams depend on
    the seed alone, so runs of one seed start from the same random weights, output layer
    included, and see the same example order whatever their method. With a method spec
    (``shared_init = false``, the studies' design) they derive from (seed, method), so every run
    is an independent draw; the same (seed, method) always gives the same streams.
    """
    entropy = seed if method is None else [seed, zlib.crc32(method.encode())]
    children = np.random.SeedSequence(entropy).spawn(3)
    gens = []
    for child in children:
        g = torch.Generator()
        g.manual_seed(int(child.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1)))
        gens.append(g)
    return RunStreams(*gens)


def run_id(method: str, seed: int) -> str:
    """Name of the run group of one (pre-training method, seed)."""
    return f"{method}-seed{seed}"


# --------------------------------------------------------------------------- training


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"engine.device = {name!r}: not a torch device; use cpu, cuda, cuda:N or auto") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"engine.device = {name!r}: CUDA is not available here; use cpu or auto")
    return device


def nll_and_error(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-net summed NLL and error count; logits (K, B, C), y (B,) or (K, B)."""
    k, b, c = logits.shape
    yy = y.expand(k, b) if y.dim() == 1 else y
    nll = F.cross_entropy(logits.reshape(k * b, c), yy.reshape(-1), reduction="none").view(k, b)
    wrong = (logits.argmax(-1) != yy).to(logits.dtype)
    return nll.sum(1), wrong.sum(1)


@torch.no_grad()
def evaluate(net: StackedMLP, x: torch.Tensor, y: torch.Tensor, batch: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Mean NLL and classification error of every net on (x, y): two (K,) arrays."""
    nll, err, _ = evaluate_and_probe(net, x, y, 0, batch)
    return nll, err


@torch.no_grad()
def evaluate_and_probe(net: StackedMLP, x: torch.Tensor, y: torch.Tensor, n_probe: int,
                       batch: int = 4096) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`evaluate` on (x, y) and :func:`probabilities` of its first ``n_probe`` rows from
    the same forward pass (the probe set is a split's first rows, so a checkpoint needs no
    forward pass of its own for it): (K,), (K,) and (K, n_probe, C) float32."""
    total_nll = torch.zeros(net.n_nets, dtype=torch.float64, device=x.device)
    total_err = torch.zeros_like(total_nll)
    parts = []
    for start in range(0, x.shape[0], batch):
        logits = net.logits(x[start:start + batch])
        nll, err = nll_and_error(logits, y[start:start + batch])
        total_nll += nll.double()
        total_err += err.double()
        if start < n_probe:
            parts.append(torch.softmax(logits[:, :n_probe - start].float(), -1).cpu())
    n = max(x.shape[0], 1)
    probs = (torch.cat(parts, dim=1).numpy() if parts
             else np.zeros((net.n_nets, 0, net.sizes[-1]), dtype=np.float32))
    return (total_nll / n).cpu().numpy(), (total_err / n).cpu().numpy(), probs


@torch.no_grad()
def probabilities(net: StackedMLP, x: torch.Tensor, batch: int = 4096) -> np.ndarray:
    """Softmax outputs of every net on x: (K, N, C) float32."""
    parts = [torch.softmax(net.logits(x[s:s + batch]).float(), -1).cpu()
             for s in range(0, x.shape[0], batch)]
    return torch.cat(parts, dim=1).numpy()


def finetune_loss(net: StackedMLP, xb: torch.Tensor, yb: torch.Tensor, l2: float) -> torch.Tensor:
    """Sum over nets of each net's minibatch-mean NLL (+ l2 * squared weight norm)."""
    nll, _ = nll_and_error(net.logits(xb), yb)
    loss = nll.sum() / xb.shape[1]
    if l2:
        loss = loss + l2 * sum((w * w).sum() for w in net.weights)
    return loss


def checkpoint_steps(n_train: int, cfg: TrainConfig, every_steps: int) -> tuple[int, list[int]]:
    """Updates per epoch and the sorted update counts at which checkpoints are taken."""
    per_epoch = -(-n_train // cfg.batch_size)
    total = per_epoch * cfg.epochs
    steps = {0} | {per_epoch * e for e in range(1, cfg.epochs + 1)}
    if every_steps:
        steps |= set(range(every_steps, total + 1, every_steps))
    return per_epoch, sorted(steps)


def finetune(net: StackedMLP, train: tuple[torch.Tensor, torch.Tensor], cfg: TrainConfig,
             generators: Sequence[torch.Generator], checkpoint: Callable[[int, float], None],
             every_steps: int = 0, *, progress: bool = False,
             active: np.ndarray | None = None, backend: str = "fast",
             position: FinetunePosition | None = None) -> None:
    """Supervised SGD of all nets; ``checkpoint(step, epoch)`` is called at every checkpoint.

    ``position`` (:class:`~trajviz.training.resume.FinetunePosition`): where to start, and,
    updated before every ``checkpoint`` call, where the run stands (what a resume needs). To
    continue a run, pass the position of one of its checkpoints with ``taken`` set, the nets'
    parameters of that checkpoint, and ``generators`` in the states ``position.order_states``:
    the run then goes on exactly as if it had not stopped. None: start at step 0.

    ``active``: optional (K,) bool mask, read at every update (the checkpoint callback may
    clear entries): a net whose entry is False gets no more updates (its learning rate is
    masked to 0; its gradient is replaced by 0, since a diverged net's NaN times 0 is NaN), and
    training stops early once no net is active.

    ``backend``: ``"fast"`` (:class:`trajviz.training.fast.FinetuneStep`: hand-derived gradients fused
    into in-place updates) or ``"autograd"`` (the reference). Both see the same example order and
    compute the same updates; once some nets are inactive, the masked update uses autograd. The
    fast path collects the minibatches up to the next checkpoint and makes their updates in one
    :meth:`~trajviz.training.fast.FinetuneStep.run` (nets are independent, so it may order the work
    net by net, which keeps each net's weights in cache).
    """
    if backend not in BACKENDS:
        raise ConfigError(f"engine.backend = {backend!r}: choose one of {', '.join(BACKENDS)}")
    fast = FinetuneStep(net, cfg.lr, cfg.l2) if backend == "fast" else None
    x, y = train
    n = x.shape[0]
    per_epoch, ckpts = checkpoint_steps(n, cfg, every_steps)
    ckpt_set = set(ckpts)
    params = net.parameters()
    for p in params:
        p.requires_grad_(True)
    if position is None:
        position = FinetunePosition()
    step = position.step
    first_epoch, skip = divmod(step, per_epoch)
    pending: list[torch.Tensor] = []  # fast path: minibatches whose updates are not made yet
    if not position.taken:
        position.order_states = [g.get_state() for g in generators]
        position.taken = True
        checkpoint(step, step / per_epoch)
    for epoch in progress_bar(range(first_epoch, cfg.epochs), enabled=progress, desc="fine-tune",
                              unit="epoch", initial=first_epoch, total=cfg.epochs):
        epoch_states = [g.get_state() for g in generators]
        perms = torch.stack([torch.randperm(n, generator=g) for g in generators]).to(x.device)
        begin = skip * cfg.batch_size if epoch == first_epoch else 0
        for start in range(begin, n, cfg.batch_size):
            idx = perms[:, start:start + cfg.batch_size]
            if active is not None and not active.all():
                if not active.any():
                    log.warning("every net of the batch diverged; fine-tuning stops at step %d", step)
                    break
                grads = _masked_grads(net, x[idx], y[idx], cfg.l2, params, active)
            elif fast is not None:
                pending.append(idx)
                grads = []
            else:
                loss = finetune_loss(net, x[idx], y[idx], cfg.l2)
                grads = torch.autograd.grad(loss, params)
            with torch.no_grad():
                for p, g in zip(params, grads):
                    p.sub_(cfg.lr * g)
            step += 1
            if step in ckpt_set:
                if pending:
                    fast.run(x, y, pending)
                    pending = []
                position.step = step
                position.order_states = (epoch_states if step % per_epoch else
                                         [g.get_state() for g in generators])
                checkpoint(step, step / per_epoch)
        else:
            continue
        break  # the inner loop stopped: no net is active
    if pending:  # every epoch ends at a checkpoint, so this is only a safeguard
        fast.run(x, y, pending)
    for p in params:
        p.requires_grad_(False)


def _masked_grads(net: StackedMLP, xb: torch.Tensor, yb: torch.Tensor, l2: float,
                  params: list[torch.Tensor], active: np.ndarray) -> list[torch.Tensor]:
    """Gradients of :func:`finetune_loss` with inactive nets' entries set to 0: their NaN or
    Inf loss is left out of the sum, so the active nets' gradients stay exactly as they were."""
    keep = torch.as_tensor(np.asarray(active, dtype=bool), device=xb.device)
    nll, _ = nll_and_error(net.logits(xb), yb)
    loss = torch.where(keep, nll, torch.zeros((), dtype=nll.dtype, device=nll.device)).sum() / xb.shape[1]
    if l2:
        loss = loss + l2 * sum((w[keep] * w[keep]).sum() for w in net.weights)
    grads = torch.autograd.grad(loss, params)
    zero = torch.zeros((), dtype=grads[0].dtype, device=grads[0].device)
    return [torch.where(keep.view(-1, *([1] * (g.dim() - 1))), g, zero) for g in grads]


# --------------------------------------------------------------------------- experiments


def _tensors(split: Split, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    return (torch.as_tensor(split.x, dtype=dtype, device=device),
            torch.as_tensor(split.y, dtype=torch.long, device=device))


def planned_runs(cfg: ExperimentConfig) -> list[tuple[str, int]]:
    """(method, seed) of every run of an experiment, in recording order."""
    return [(m, s) for m in cfg.pretrain.methods for s in cfg.seeds]


def _chunks(items: Sequence, size: int) -> Iterator[Sequence]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def record_experiment(cfg: ExperimentConfig, output: str | Path, *, mode: str = "create",
                      progress: bool = False, file_config: ExperimentConfig | None = None) -> Path:
    """Train every run of ``cfg`` and record it into ``output`` (docs/format.md).

    ``mode``: ``"create"``, ``"resume"`` (complete runs are kept, unfinished ones redone) or
    ``"overwrite"``. ``file_config``: the config stored at the file's root, when it is not
    ``cfg`` (``trajviz reproduce`` records each method of a setting at its own selected
    hyper-parameters into one file: the root holds the setting's config, each run its own,
    as always). Returns the output path.
    """
    device = resolve_device(cfg.engine.device)
    dtype = torch.float64 if cfg.engine.dtype == "float64" else torch.float32
    data = load_dataset(cfg.dataset)
    probe_split = data.split(cfg.probe.split)
    if cfg.probe.n > len(probe_split):
        raise ConfigError(f"probe.n = {cfg.probe.n} exceeds the {len(probe_split)} examples of the "
                          f"{cfg.probe.split} split; lower probe.n or raise dataset.n_{cfg.probe.split}")
    probe = probe_split.head(cfg.probe.n) if cfg.probe.n else probe_split
    # the probe inputs are not stored: the config in the file rebuilds them
    recorder = Recorder(output, probe.x, probe.y, n_classes=data.n_classes, name=cfg.name,
                        config=(file_config or cfg).to_json(), mode=mode, store_inputs=False)
    try:
        done = recorder.completed_runs()
        pending = [(m, s) for m, s in planned_runs(cfg) if run_id(m, s) not in done]
        if done:
            log.info("resuming: %d runs complete, %d to do", len(done), len(pending))
        tensors = {name: _tensors(data.split(name), device, dtype) for name in SPLITS}
        probe_rows = (cfg.probe.split, len(probe))  # the probe set: that split's first rows
        sizes = layer_sizes(data.n_inputs, cfg.model.depth, cfg.model.width, data.n_classes)
        # Batches are cut from the planned runs, not the pending ones, and a batch with any
        # run pending is retrained whole (its complete runs are not rewritten): a net's numbers
        # depend, in the last bits, on the batch it trains in, and a resumed experiment must
        # be identical to an uninterrupted one (docs/reliability.md).
        batches = [(m, chunk) for m in cfg.pretrain.methods
                   for chunk in _chunks([s for mm, s in planned_runs(cfg) if mm == m],
                                        cfg.engine.nets_per_batch)
                   if any(run_id(m, s) not in done for s in chunk)]
        # resume states of this config's batches that are no longer to do (finished, or cut
        # differently now) are dropped; those of the batches to do are used or replaced by
        # _train_batch. States of runs this config does not plan are left alone: another
        # config may record into the same file (trajviz reproduce: one per method).
        wanted = {state_key([run_id(m, s) for s in seeds]) for m, seeds in batches}
        planned = {run_id(m, s) for m, s in planned_runs(cfg)}
        for key in recorder.store.resume_state_keys():
            if key in planned and key not in wanted:
                log.info("dropping the resume state %r: no batch to do uses it", key)
                recorder.store.delete_resume_state(key)
        for i, (method, seeds) in enumerate(batches):
            log.info("batch %d/%d: %s, seeds %s", i + 1, len(batches), method, list(seeds))
            _train_batch(cfg, method, list(seeds), sizes, tensors, probe_rows, recorder, device, dtype,
                         progress, done=done)
    finally:
        recorder.close()
    return Path(output)


def _engine_signature(cfg: ExperimentConfig, device: torch.device) -> dict[str, object]:
    """The engine settings a resume state is valid for: those that change a net's last bits."""
    return {"device": device.type, "dtype": cfg.engine.dtype, "backend": cfg.engine.backend,
            "nets_per_batch": cfg.engine.nets_per_batch}


def _saved_state(recorder: Recorder, ids: list[str], done: Set[str], cfg: ExperimentConfig,
                 engine: dict[str, object], streams: list[RunStreams], sizes: list[int],
                 dtype: torch.dtype, device: torch.device) -> Restored | None:
    """The batch restored from its resume state, or None (no usable state: the batch starts
    over; a state that exists but is not used is deleted, saying why)."""
    key = state_key(ids)
    try:
        saved = recorder.store.read_resume_state(key)
    except FormatError as exc:
        log.warning("the resume state of batch %s cannot be used (%s); the batch starts over", key, exc)
        recorder.store.delete_resume_state(key)
        return None
    if saved is None:
        return None
    if not cfg.engine.resume_state:
        log.info("engine.resume_state is off: dropping the resume state of batch %s", key)
        recorder.store.delete_resume_state(key)
        return None
    try:
        restored = restore(*saved, streams, ids, engine, sizes, dtype, device)
        for rid in ids:
            if rid in done:
                continue
            n = recorder.store.continue_run(rid).n_checkpoints
            if n != restored.n_checkpoints:
                raise ValueError(f"run {rid} has {n} checkpoints, the state {restored.n_checkpoints}")
    except (ValueError, FormatError) as exc:
        log.warning("the resume state of batch %s cannot be used: %s; the batch starts over", key, exc)
        recorder.store.delete_resume_state(key)
        return None
    return restored


def _train_batch(cfg: ExperimentConfig, method: str, seeds: list[int], sizes: list[int],
                 tensors: dict, probe_rows: tuple[str, int], recorder: Recorder, device: torch.device,
                 dtype: torch.dtype, progress: bool, done: Set[str] = frozenset()) -> None:
    """Train one batch of nets; runs named in ``done`` train along but are not recorded.

    With ``engine.resume_state``, every checkpoint of the batch is written in one transaction
    with the batch's training state (trajviz.training.resume), and a batch that has such a state
    continues from it instead of starting over."""
    streams = [run_streams(s, None if cfg.pretrain.shared_init else method) for s in seeds]
    ids = [run_id(method, s) for s in seeds]
    key, keep_state = state_key(ids), cfg.engine.resume_state
    engine = _engine_signature(cfg, device)
    restored = _saved_state(recorder, ids, done, cfg, engine, streams, sizes, dtype, device)
    if restored is None:
        net = StackedMLP.init(sizes, [st.init for st in streams], dtype=dtype, device=device)
        attrs = method_attrs(method, cfg.model.depth)
        runs: list[RunRecorder | None] = [
            None if rid in done else
            recorder.start_run(rid, seed=s, pretrain=method.split("+")[0], group=method,
                               config=cfg.to_json(), **attrs)
            for rid, s in zip(ids, seeds)]
        apply_method(net, method, tensors["train"][0], cfg.pretrain, [st.pretrain for st in streams],
                     progress=progress, backend=cfg.engine.backend)
        alive = np.ones(len(seeds), dtype=bool)
        best = BestCheckpoint(len(seeds))  # model selection on validation error (trajviz.training.selection)
        position, n_checkpoints = FinetunePosition(), 0
    else:
        net, alive, best = restored.net, restored.alive, restored.best
        position, n_checkpoints = restored.position, restored.n_checkpoints
        runs = [None if rid in done else recorder.continue_run(rid) for rid in ids]
        log.info("batch %s resumes from its checkpoint at step %d (%d recorded)", key,
                 position.step, n_checkpoints)
    store = recorder.store

    def checkpoint(step: int, epoch: float) -> None:
        nonlocal n_checkpoints
        metrics = {}
        probs = np.zeros((len(seeds), 0, sizes[-1]), dtype=np.float32)
        for split in SPLITS:  # the probe outputs come from the forward pass of their split
            n_probe = probe_rows[1] if split == probe_rows[0] else 0
            nll, err, p = evaluate_and_probe(net, *tensors[split], n_probe)
            metrics[f"{split}_nll"], metrics[f"{split}_error"] = nll, err
            if n_probe:
                probs = p
        writes: list[Callable[[], None]] = []  # run on the writer thread, in one transaction
        for k, run in enumerate(runs):
            if not alive[k]:
                continue
            if not np.isfinite(metrics["train_nll"][k]):
                alive[k] = False
                if run is None:
                    continue
                log.warning("run %s diverged (train NLL %s) at step %d; it is kept, flagged "
                            "'diverged'", run.run_id, metrics["train_nll"][k], step)
                writes.append(partial(run.set_attrs, diverged_step=step, **best.attrs(k)))
                writes.append(partial(run.finish, DIVERGED))
                continue
            if run is None:
                continue
            # copies: the write happens later, on the writer thread, while training goes on
            params = ({n: v.numpy().copy() for n, v in net.state_dict(k).items()}
                      if cfg.record.params == "all" else None)
            writes.append(partial(run.append, probs[k], step, epoch=epoch, params=params,
                                  **{name: float(v[k]) for name, v in metrics.items()}))
        best.update(step, epoch, metrics, nets=alive)
        n_checkpoints += 1
        if keep_state:
            # at most one state waits for the writer thread: a state is a batch's parameters
            # (hundreds of MB at the studies' sizes); this waits only if the previous
            # checkpoint's writes are still not done after a whole interval of training
            writer.flush()
        state = (capture(net, streams, position, alive, best, n_checkpoints, ids, engine)
                 if keep_state else None)
        writer.submit(_write_together, store, writes, key, state)

    # HDF5 writes go to a worker thread, off the training loop's critical path (trajviz.record.background);
    # leaving the block waits for them, so the batch's runs are on disk when it returns.
    with BackgroundWriter() as writer:
        finetune(net, tensors["train"], cfg.train, [st.order for st in streams], checkpoint,
                 cfg.record.every_steps, progress=progress, active=alive,
                 backend=cfg.engine.backend, position=position)
        writes = []
        for k, run in enumerate(runs):
            if alive[k] and run is not None:
                writes += [partial(run.save_params, {n: v for n, v in net.state_dict(k).items()}),
                           partial(run.set_attrs, **best.attrs(k)), run.finish]
        writer.submit(_write_together, store, writes, key, None, finished=True)


def _write_together(store: ExperimentWriter, writes: list[Callable[[], None]], key: str,
                    state: tuple[dict, dict] | None, finished: bool = False) -> None:
    """Make ``writes`` and store the batch's resume ``state`` (or, ``finished``, delete it) as
    one transaction: whenever the process dies, the file's checkpoints and the state agree."""
    with store.atomic():
        if finished:  # first: HDF5 may reuse the freed space for the final parameters
            store.delete_resume_state(key)
        for write in writes:
            write()
        if state is not None:
            store.write_resume_state(key, *state)
