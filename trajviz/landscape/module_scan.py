"""Landscapes and flatness of any ``torch.nn.Module``: :func:`scan_model`.

The same directions, 1-D scans, 2-D grids, Hessian measures and landscape file as
:func:`~trajviz.landscape.scan_file` gives the project's MLPs, for a model, a loss function and
data given in Python. The file reads back with :func:`~trajviz.landscape.load_result`, and
:func:`~trajviz.landscape.flatness_table` and ``trajviz plot landscape`` take it as they take a
scan of an experiment file.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from trajviz.errors import ConfigError
from trajviz.landscape import directions as dirs
from trajviz.landscape.hessian import hutchinson_trace, lanczos_top
from trajviz.landscape.modules import (BIAS_BN, Batches, ErrorFn, LossFn, ModuleLayout, ModuleLoss,
                                       classification_error, flat_parameters, state_of,
                                       trajectory_matrix)
from trajviz.landscape.results import LandscapeResult, load_result
from trajviz.landscape.scan import ScanSettings, Subject, scan_subjects
from trajviz.store import LandscapeWriter

log = logging.getLogger(__name__)

#: ScanSettings fields that describe how scan_file picks its data; scan_model is given its data
_FILE_ONLY = {"split": "pass the split to scan as data (and the training data as train_data)",
              "n_examples": "pass the subset to scan as data",
              "checkpoint": "load the checkpoint into the model",
              "dtype": "the model is evaluated in its own dtype"}


def scan_model(model: nn.Module, loss_fn: LossFn, data: Any, output: str | Path, *,
               settings: ScanSettings = ScanSettings(), train_data: Any = None,
               trajectory: Any = None, toward: Mapping[str, Any] | None = None,
               bias_bn: str = "zero", error_fn: ErrorFn | None = classification_error,
               batch_size: int = 1024, run_id: str = "model", group: str = "model",
               mode: str = "create", progress: bool = False) -> LandscapeResult:
    """Scan ``loss_fn`` around ``model``'s parameters and write a landscape file.

    Args:
        model: any module; it is scanned on its own device, in eval mode (batch-norm layers use
            their running statistics and do not update them; dropout is off). Its parameters
            are never written (points are evaluated with :func:`torch.func.functional_call`)
            and every submodule's train/eval mode is restored afterwards.
        loss_fn: ``loss_fn(outputs, targets)`` -> the batch's mean loss (e.g.
            ``nn.CrossEntropyLoss()``); the scan's ``nll`` columns hold its mean over all examples.
        data: what the loss is scanned on: ``(inputs, targets)`` tensors or arrays (``inputs``
            may be a tuple of tensors, given to the model as positional arguments, or a dict,
            given as keyword arguments), or a DataLoader yielding such pairs.
        output: landscape file to write (docs/format.md, "Landscape files").
        settings: directions, alphas, grid, seed and Hessian options as for
            :func:`~trajviz.landscape.scan_file`; ``toward:NAME`` names a key of ``toward``.
            ``split``, ``n_examples``, ``checkpoint`` and ``dtype`` choose data or parameters
            from a file and must keep their defaults here.
        train_data: the training data, as ``data``; the ``sgd`` (its minibatches) and
            ``hessian`` directions and the Hessian measures always use it. Default: ``data``.
        trajectory: the parameters along training, for ``pca`` directions: a list of models or
            state dicts, a (T, P) array, or a name -> (T, ...) mapping such as
            ``ExperimentFile(path).params(run_id, "trajectory")`` of a file whose Recorder
            stored parameters. Directions are principal directions of the differences to the
            model's parameters (Li et al. 2018, sec. 7).
        toward: name -> model or state dict, for ``toward:NAME`` directions: alpha = 1 reaches
            its parameters (buffers such as batch-norm statistics stay the scanned model's).
        bias_bn: in ``filter`` and ``gaussian`` directions, parameters with at most one
            dimension (biases, normalization layers' weights and biases) get 0 (``"zero"``, Li
            et al.'s ``ignore='biasbn'``) or, in filter directions, the parameters themselves
            (``"keep"``, their code's other choice; gaussian directions keep their random entries).
        error_fn: ``error_fn(outputs, targets)`` -> the batch's mean error; default: the
            classification error of (B, C) scores against (B,) labels (NaN for other outputs).
        batch_size: examples per forward pass when data are tensors.
        run_id, group: the run's name and group in the file (a flatness table's rows).
        mode: ``"create"``, ``"resume"`` (keep finished rows; same settings) or ``"overwrite"``.

    Returns:
        the file read back (:class:`~trajviz.landscape.LandscapeResult`).
    """
    settings.validate()
    defaults = ScanSettings()
    for name, how in _FILE_ONLY.items():
        if getattr(settings, name) != getattr(defaults, name):
            raise ConfigError(f"settings.{name} = {getattr(settings, name)!r} applies to scan_file; "
                              f"scan_model scans the data it is given ({how})")
    if bias_bn not in BIAS_BN:
        raise ConfigError(f"bias_bn {bias_bn!r}: choose one of {', '.join(BIAS_BN)}")
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    layout = ModuleLayout.of(model)
    scanned = Batches(data, batch_size=batch_size, what="data")
    train = scanned if train_data is None else Batches(train_data, batch_size=batch_size,
                                                       what="train_data")
    kinds = [dirs.parse_kind(d) for d in settings.directions]
    targets: dict[str, np.ndarray] = {}
    for kind, target in kinds:
        if kind == "toward":
            if not toward or target not in toward:
                raise ConfigError(f"direction toward:{target}: pass the model to go toward as "
                                  f"toward={{{target!r}: other_model}}")
            targets[target] = layout.flatten(state_of(toward[target]))
    traj = None
    if any(k == "pca" for k, _ in kinds):
        if trajectory is None:
            raise ConfigError("pca directions need the parameter trajectory: pass trajectory=")
        traj = trajectory_matrix(trajectory, layout)

    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        loss = ModuleLoss(model, layout, loss_fn, error_fn)
        theta = flat_parameters(model, layout)
        subject = _module_subject(run_id, group, layout, loss, theta, scanned, train, targets, traj,
                                  bias_bn)
        extra = {"model": type(model).__name__, "n_params": layout.size, "bias_bn": bias_bn,
                 "n_examples_data": _count(scanned), "n_examples_train": _count(train)}
        config = dict(dataclasses.asdict(settings), scan_model=extra)
        writer = LandscapeWriter(output, config_json=json.dumps(config, sort_keys=True),
                                 source=f"scan_model({type(model).__name__})", mode=mode)
        try:
            scan_subjects(writer, [subject], settings, progress=progress)
        finally:
            writer.close()
    finally:
        for m, was_training in modes.items():
            m.training = was_training
    return load_result(output)


def _count(batches: Batches) -> int | None:
    try:
        return len(batches)
    except ConfigError:
        return None


def _module_subject(run_id: str, group: str, layout: ModuleLayout, loss: ModuleLoss,
                    theta: torch.Tensor, data: Batches, train: Batches,
                    targets: dict[str, np.ndarray], trajectory: np.ndarray | None,
                    bias_bn: str) -> Subject:
    theta64 = theta.detach().double().cpu().numpy()
    device = theta.device

    def evaluate(d: np.ndarray, coeffs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        dt = torch.as_tensor(np.asarray(d), dtype=theta.dtype, device=device)
        return loss.evaluate(theta, dt, coeffs, data)

    def directions(kind: str, target: str | None, settings: ScanSettings,
                   rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Any]]:
        n, extra = settings.n_directions, {}
        if kind == "sgd":
            n_train = len(train)
            grads = []
            for _ in range(n):
                idx = rng.choice(n_train, size=min(settings.sgd_batch_size, n_train), replace=False)
                grads.append(loss.gradient(theta, *train.sample(idx)).cpu().double().numpy())
            d = dirs.unit_rows(np.stack(grads))
        elif kind == "gaussian":
            d = dirs.gaussian_directions(layout, n, rng, bias_bn=bias_bn)
        elif kind == "filter":
            d = dirs.filter_directions(layout, theta64, n, rng, bias_bn=bias_bn)
        elif kind == "hessian":
            hvp = loss.hvp_operator(theta, train)
            extra["eigenvalues"], d = lanczos_top(hvp, layout.size, n,
                                                  n_iter=max(settings.hessian_iters, 2 * n + 10),
                                                  rng=rng, device=device)
        elif kind == "pca":
            traj = trajectory
            scale = max(1.0, float(np.abs(theta64).max()))
            if np.allclose(traj[-1], theta64, rtol=0, atol=1e-6 * scale):
                traj = traj[:-1]  # the model is the trajectory's last point
            d, extra["explained_variance"] = dirs.pca_directions(np.vstack([traj, theta64]), n)
        elif kind == "toward":
            d = dirs.toward_direction(theta64, targets[target])
            extra["target"] = target
        else:  # parse_kind admits only the kinds above
            raise ConfigError(f"direction kind {kind!r} has no generator")
        return d, extra

    def hessian(settings: ScanSettings, rng: np.random.Generator) -> tuple[float, float, float]:
        hvp = loss.hvp_operator(theta, train)
        vals, _ = lanczos_top(hvp, layout.size, 1, n_iter=settings.hessian_iters, rng=rng,
                              device=device)
        trace, sem = hutchinson_trace(hvp, layout.size, n_probes=settings.hutchinson_probes,
                                      rng=rng, device=device)
        return float(vals[0]), trace, sem

    return Subject(run_id, layout.size, {"group": group}, evaluate, directions, hessian)
