"""Any ``torch.nn.Module`` as a function of one flat parameter vector, for :func:`scan_model`.

:class:`ModuleLayout` lays a model's parameters (``named_parameters()`` order, shared ones once)
end to end as one (P,) vector, as :class:`~trajviz.landscape.params.ParamLayout` does for the
project's MLPs, so the direction generators and the Hessian code work on both. Parameters with
two or more dimensions (linear and convolution weights, embeddings) have rows: the slices along
their first dimension (an output unit, an output channel of a convolution, one embedding), which
filter normalization rescales one by one (Li et al. 2018). Parameters with at most one dimension
are biases and the gains and shifts of normalization layers; the reference code of Li et al.
(``net_plotter.normalize_directions_for_weights``, option ``ignore='biasbn'``) either zeroes them
in a direction or sets them to the parameter itself, and so does :func:`filter_normalize`.

:class:`ModuleLoss` evaluates the model at ``theta + coeffs @ directions`` with
:func:`torch.func.functional_call` (the model's own tensors are never written), in eval mode,
so batch-norm layers use, and do not update, their running statistics; it gives gradients and
Hessian-vector products of the mean loss for the ``sgd`` and ``hessian`` directions.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call

from trajviz.errors import ConfigError
from trajviz.landscape.hessian import HVP

log = logging.getLogger(__name__)

LossFn = Callable[[Any, Tensor], Tensor]
ErrorFn = Callable[[Any, Tensor], "Tensor | float | None"]
#: what the 1-D parameters (biases, normalization layers) of a random direction get
BIAS_BN = ("zero", "keep")


@dataclass(frozen=True)
class ModuleLayout:
    """Names and shapes of a model's floating-point parameters, in flat-vector order."""

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]

    @classmethod
    def of(cls, model: nn.Module) -> "ModuleLayout":
        named = [(n, p) for n, p in model.named_parameters() if p.is_floating_point()]
        if not named:
            raise ConfigError(f"model {type(model).__name__} has no floating-point parameters "
                              "to scan")
        return cls(tuple(n for n, _ in named), tuple(tuple(p.shape) for _, p in named))

    @property
    def offsets(self) -> list[int]:
        out = [0]
        for shape in self.shapes:
            out.append(out[-1] + int(np.prod(shape, dtype=np.int64)))
        return out

    @property
    def size(self) -> int:
        """P, the number of parameters."""
        return self.offsets[-1]

    def weight_rows(self) -> list[tuple[int, int, int]]:
        """(offset, n_rows, row_length) of every parameter with two or more dimensions; a row
        is a slice along the first dimension (an output unit or output channel)."""
        off = self.offsets
        return [(off[i], s[0], int(np.prod(s[1:], dtype=np.int64)))
                for i, s in enumerate(self.shapes) if len(s) >= 2]

    def vector_slices(self) -> list[tuple[int, int]]:
        """(offset, size) of every parameter with at most one dimension (biases, the weights
        and biases of normalization layers)."""
        off = self.offsets
        return [(off[i], off[i + 1] - off[i]) for i, s in enumerate(self.shapes) if len(s) <= 1]

    def flatten(self, state: Mapping[str, Any]) -> np.ndarray:
        """(P,) float64 vector of a name -> array mapping holding (at least) these parameters."""
        missing = [n for n in self.names if n not in state]
        if missing:
            raise ConfigError(f"parameters lack {missing[0]!r} (the model has "
                              f"{', '.join(self.names[:6])}{', ...' if len(self.names) > 6 else ''})")
        out = []
        for n, shape in zip(self.names, self.shapes):
            v = state[n]
            arr = (v.detach().cpu().double().numpy() if isinstance(v, Tensor)
                   else np.asarray(v, dtype=np.float64))
            if arr.shape != shape:
                raise ConfigError(f"parameter {n!r} has shape {arr.shape}, the model's has {shape}")
            out.append(arr.ravel())
        return np.concatenate(out)

    def views(self, vec: Tensor) -> dict[str, Tensor]:
        """name -> view of ``vec`` (P,) shaped as that parameter."""
        off = self.offsets
        return {n: vec[off[i]:off[i + 1]].view(s)
                for i, (n, s) in enumerate(zip(self.names, self.shapes))}


def flat_parameters(model: nn.Module, layout: ModuleLayout) -> Tensor:
    """(P,) copy of the model's parameters, on its device, in its parameters' dtype."""
    params = dict(model.named_parameters())
    return torch.cat([params[n].detach().reshape(-1) for n in layout.names])


def state_of(obj: Any) -> Mapping[str, Any]:
    """A module's parameters (and buffers) as a mapping; a mapping as it is."""
    if isinstance(obj, nn.Module):
        return {**dict(obj.named_buffers()), **dict(obj.named_parameters())}
    if isinstance(obj, Mapping):
        return obj
    raise ConfigError(f"expected an nn.Module or a name -> tensor mapping, got {type(obj).__name__}")


def trajectory_matrix(trajectory: Any, layout: ModuleLayout) -> np.ndarray:
    """(T, P) float64 parameter trajectory from a (T, P) array, a sequence of modules or state
    dicts, or a name -> (T, ...) mapping (what :meth:`ExperimentFile.params` returns with
    ``"trajectory"``; buffers in it are ignored)."""
    if isinstance(trajectory, Mapping):
        first = trajectory[layout.names[0]] if layout.names[0] in trajectory else None
        if first is None:
            raise ConfigError(f"trajectory lacks parameter {layout.names[0]!r}")
        t = int(np.shape(first)[0])
        arrays = {n: np.asarray(trajectory[n]) for n in layout.names if n in trajectory}
        return np.stack([layout.flatten({n: a[i] for n, a in arrays.items()}) for i in range(t)])
    if isinstance(trajectory, (np.ndarray, Tensor)):
        arr = np.asarray(trajectory.detach().cpu() if isinstance(trajectory, Tensor) else trajectory,
                         dtype=np.float64)
        if arr.ndim != 2 or arr.shape[1] != layout.size:
            raise ConfigError(f"trajectory has shape {arr.shape}, expected (T, {layout.size}) "
                              "(the model's flat parameters)")
        return arr
    if isinstance(trajectory, Sequence) and not isinstance(trajectory, (str, bytes)):
        return np.stack([layout.flatten(state_of(s)) for s in trajectory])
    raise ConfigError(f"trajectory: expected a (T, P) array, a list of models or state dicts, or "
                      f"a name -> (T, ...) mapping, got {type(trajectory).__name__}")


# --------------------------------------------------------------------------- data


def _to(obj: Any, device: torch.device, dtype: torch.dtype | None = None) -> Any:
    """Tensors in ``obj`` (nested tuples, lists, dicts) moved to ``device``; floating ones
    cast to ``dtype`` when given."""
    if isinstance(obj, Tensor):
        if dtype is not None and obj.is_floating_point():
            return obj.to(device=device, dtype=dtype)
        return obj.to(device)
    if isinstance(obj, (tuple, list)):
        return type(obj)(_to(o, device, dtype) for o in obj)
    if isinstance(obj, dict):
        return {k: _to(v, device, dtype) for k, v in obj.items()}
    return obj


def _as_tensor(a: Any) -> Any:
    if isinstance(a, Tensor) or a is None:
        return a
    if isinstance(a, (tuple, list)):
        return type(a)(_as_tensor(v) for v in a)
    if isinstance(a, dict):
        return {k: _as_tensor(v) for k, v in a.items()}
    arr = np.asarray(a)
    return torch.as_tensor(arr.astype(np.float32) if arr.dtype == np.float64 else arr)


def _length(inputs: Any) -> int:
    if isinstance(inputs, Tensor):
        return int(inputs.shape[0])
    if isinstance(inputs, (tuple, list)) and inputs:
        return _length(inputs[0])
    if isinstance(inputs, dict) and inputs:
        return _length(next(iter(inputs.values())))
    raise ConfigError(f"cannot tell the number of examples of inputs of type {type(inputs).__name__}")


def _index(inputs: Any, idx: Tensor | slice) -> Any:
    if isinstance(inputs, Tensor):
        return inputs[idx]
    if isinstance(inputs, (tuple, list)):
        return type(inputs)(_index(v, idx) for v in inputs)
    return {k: _index(v, idx) for k, v in inputs.items()}


class Batches:
    """(inputs, targets) batches of a data set given as a pair ``(x, y)`` of tensors or arrays
    (``x`` may also be a tuple of tensors, passed to the model as positional arguments, or a
    dict, passed as keyword arguments), or as a ``torch.utils.data.DataLoader`` yielding such
    pairs. Float64 numpy inputs become float32, as a model expects."""

    def __init__(self, data: Any, *, batch_size: int, what: str = "data"):
        self.what = what
        self.batch_size = int(batch_size)
        self.loader = None
        if isinstance(data, torch.utils.data.DataLoader):
            self.loader = data
            self.inputs = self.targets = None
            return
        if not isinstance(data, (tuple, list)) or len(data) != 2:
            raise ConfigError(f"{what}: expected (inputs, targets) or a DataLoader, got "
                              f"{type(data).__name__}{'' if not isinstance(data, (tuple, list)) else f' of {len(data)} items'}")
        self.inputs, self.targets = _as_tensor(data[0]), _as_tensor(data[1])
        n = _length(self.inputs)
        if _length(self.targets) != n:
            raise ConfigError(f"{what}: {n} inputs but {_length(self.targets)} targets")
        if n == 0:
            raise ConfigError(f"{what}: no examples")

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        if self.loader is not None:
            for batch in self.loader:
                if not isinstance(batch, (tuple, list)) or len(batch) != 2:
                    raise ConfigError(f"{self.what}: the DataLoader must yield (inputs, targets) "
                                      f"pairs, it yielded {type(batch).__name__}"
                                      f"{f' of {len(batch)} items' if isinstance(batch, (tuple, list)) else ''}")
                yield batch[0], batch[1]
            return
        n = _length(self.inputs)
        for s in range(0, n, self.batch_size):
            part = slice(s, min(n, s + self.batch_size))  # views, not copies
            yield _index(self.inputs, part), _index(self.targets, part)

    def __len__(self) -> int:
        if self.loader is not None:
            try:
                return len(self.loader.dataset)
            except TypeError:
                raise ConfigError(f"{self.what}: the DataLoader's dataset has no length; pass "
                                  "(inputs, targets) tensors instead") from None
        return _length(self.inputs)

    def sample(self, idx: np.ndarray) -> tuple[Any, Any]:
        """The examples ``idx`` as one batch (a DataLoader's dataset is indexed and collated)."""
        if self.loader is not None:
            try:
                items = [self.loader.dataset[int(i)] for i in idx]
            except (TypeError, NotImplementedError):
                raise ConfigError(f"{self.what}: the DataLoader's dataset cannot be indexed; pass "
                                  "(inputs, targets) tensors instead") from None
            batch = self.loader.collate_fn(items)
            return batch[0], batch[1]
        t = torch.as_tensor(np.asarray(idx, dtype=np.int64))
        return _index(self.inputs, t), _index(self.targets, t)


def classification_error(outputs: Any, targets: Tensor) -> Tensor | None:
    """Mean of ``argmax(outputs) != targets`` for (B, C) scores and (B,) integer labels; None
    (the scan stores NaN) for outputs of any other kind."""
    if (isinstance(outputs, Tensor) and outputs.ndim == 2 and isinstance(targets, Tensor)
            and targets.ndim == 1 and not targets.is_floating_point()
            and targets.shape[0] == outputs.shape[0]):
        return (outputs.argmax(1) != targets).double().mean()
    return None


# --------------------------------------------------------------------------- the loss


class ModuleLoss:
    """Mean ``loss_fn`` (and error) of ``model`` over a data set, as a function of flat
    parameters. ``loss_fn(outputs, targets)`` must return the batch's mean loss (as
    ``nn.CrossEntropyLoss()`` does); batches are weighted by their sizes, so every value is
    the mean over all examples. The model must be in eval mode while this is used."""

    def __init__(self, model: nn.Module, layout: ModuleLayout, loss_fn: LossFn,
                 error_fn: ErrorFn | None = classification_error):
        self.model = model
        self.layout = layout
        self.loss_fn = loss_fn
        self.error_fn = error_fn
        first = next(p for n, p in model.named_parameters() if n == layout.names[0])
        self.device = first.device
        self.dtype = first.dtype
        # Hessian-vector products and gradients run in float64, as for the project's MLPs
        # (MPS has no float64); a model that cannot run in float64 falls back to its own dtype
        self.precise = torch.float64 if self.device.type != "mps" else self.dtype

    def _call(self, theta: Tensor, inputs: Any, dtype: torch.dtype | None = None) -> Any:
        params = self.layout.views(theta)
        if dtype is not None and dtype != self.dtype:
            params.update({n: b.to(dtype) for n, b in self.model.named_buffers()
                           if b.is_floating_point()})
        if isinstance(inputs, dict):
            return functional_call(self.model, params, (), inputs)
        args = tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)
        return functional_call(self.model, params, args)

    def _batch_loss(self, theta: Tensor, inputs: Any, targets: Any, dtype: torch.dtype) -> Tensor:
        cast = dtype if dtype != self.dtype else None
        out = self._call(theta, _to(inputs, self.device, cast), dtype=cast)
        return self.loss_fn(out, _to(targets, self.device, cast))

    @torch.no_grad()
    def evaluate(self, theta: Tensor, directions: Tensor, coeffs: np.ndarray,
                 data: Batches) -> tuple[np.ndarray, np.ndarray]:
        """Mean loss and error, two (K,) float64 arrays, at ``theta + coeffs @ directions``
        for the K rows of ``coeffs`` (K, m); one pass over ``data`` serves all K points."""
        c = torch.as_tensor(np.asarray(coeffs, dtype=np.float64).reshape(-1, directions.shape[0]),
                            dtype=self.dtype, device=self.device)
        k = c.shape[0]
        loss = torch.zeros(k, dtype=torch.float64, device=self.device)
        err = torch.zeros_like(loss)
        n = 0
        for inputs, targets in data:
            x, y = _to(inputs, self.device), _to(targets, self.device)
            b = _length(x)
            for i in range(k):
                point = theta + c[i] @ directions if directions.shape[0] else theta
                out = self._call(point, x)
                loss[i] += self.loss_fn(out, y).double() * b
                e = self.error_fn(out, y) if self.error_fn is not None else None
                err[i] += (torch.as_tensor(e, dtype=torch.float64, device=self.device) * b
                           if e is not None else float("nan"))
            n += b
        if n == 0:
            raise ConfigError(f"{data.what}: the DataLoader yielded no examples")
        return (loss / n).cpu().numpy(), (err / n).cpu().numpy()

    def gradient(self, theta: Tensor, inputs: Any, targets: Any) -> Tensor:
        """(P,) gradient of the mean loss of one batch at ``theta``, in float64 when it can."""
        for dtype in dict.fromkeys((self.precise, self.dtype)):
            t = theta.detach().to(dtype).requires_grad_(True)
            try:
                (g,) = torch.autograd.grad(self._batch_loss(t, inputs, targets, dtype), t)
            except RuntimeError as exc:
                if dtype == self.dtype or "type" not in str(exc).lower():
                    raise
                self._fall_back(exc)
                continue
            return g.detach()
        raise AssertionError("unreachable")

    def _fall_back(self, exc: Exception) -> None:
        log.warning("the model does not run in float64 (%s); gradients and Hessian products "
                    "use its own dtype %s", str(exc).splitlines()[0], self.dtype)
        self.precise = self.dtype

    def hvp_operator(self, theta: Tensor, data: Batches) -> HVP:
        """v (P,) -> H v (P,), H the Hessian of the mean loss over ``data`` at ``theta``, by
        double backward (Pearlmutter 1994) summed over batches, in float64 when it can."""
        def hvp(v: Tensor) -> Tensor:
            while True:
                dtype = self.precise
                try:
                    return _hvp(dtype, v)
                except RuntimeError as exc:
                    if dtype == self.dtype or "type" not in str(exc).lower():
                        raise
                    self._fall_back(exc)

        def _hvp(dtype: torch.dtype, v: Tensor) -> Tensor:
            th0 = theta.detach().to(dtype)
            vv = v.to(device=self.device, dtype=dtype)
            out = torch.zeros_like(th0)
            n = 0
            for inputs, targets in data:
                b = _length(inputs)
                th = th0.clone().requires_grad_(True)
                loss = self._batch_loss(th, inputs, targets, dtype) * b
                (g,) = torch.autograd.grad(loss, th, create_graph=True)
                (hv,) = torch.autograd.grad(g @ vv, th)
                out += hv
                n += b
            return out / max(n, 1)

        return hvp
