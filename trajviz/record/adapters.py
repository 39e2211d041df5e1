"""How :class:`~trajviz.record.Recorder` feeds a probe set to any model, and reads class
probabilities from whatever the model returns.

Probe inputs may be one array, or several (a tuple, fed positionally, or a dict, fed as keyword
arguments, e.g. ``input_ids`` and ``attention_mask``). Arrays keep their kind: integer arrays
(token ids) stay integer (numpy ints become ``torch.long``), floating numpy arrays become
float32, and floating tensors take the model's parameter dtype when fed.

A model's return value is reduced to class scores by :func:`extract_scores` (a tensor as is; an
object with ``.logits``; a dict's ``"logits"`` entry or its only tensor; a tuple's first entry),
or by the user's ``outputs_fn`` (a callable, a key or attribute name, or an index). Scores of
shape (N, C) are turned into probabilities according to the declared kind (``logits``,
``probs``, ``log_probs``); scores of shape (N,) or (N, 1) are one score per example of a binary
model and become two-class probabilities ``[1 - p, p]``. :func:`check_scores` refuses, in one
line naming what it saw, values that cannot be of the declared kind.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any, Callable, Mapping, Union

import numpy as np
import torch

from trajviz.errors import DataError, ModelOutputError
from trajviz.store import probe_sha256

log = logging.getLogger(__name__)

OUTPUT_KINDS = ("logits", "probs", "log_probs")

#: probe inputs after :func:`as_probe_inputs`: one tensor, a tuple or a dict of tensors
ProbeInputs = Union[torch.Tensor, tuple, dict]
#: a user's ``outputs_fn``: a function of the model's return value, a key/attribute name, an index
OutputsFn = Union[Callable[[Any], Any], str, int, None]
#: a user's ``inputs_fn``: ``inputs_fn(model, batch) -> model output``
InputsFn = Union[Callable[[torch.nn.Module, Any], Any], None]

#: tolerance of the probability checks (as the store's readers use)
PROB_TOL = 1e-3


def _as_tensor(value: Any, where: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach()
    try:
        arr = np.asarray(value)
    except Exception as exc:  # ragged lists and the like
        raise DataError(f"{where} cannot be read as an array ({exc})") from None
    if arr.dtype.kind == "f":
        return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
    if arr.dtype.kind in "iu":
        return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.int64))  # ids stay integer
    if arr.dtype.kind == "b":
        return torch.from_numpy(np.ascontiguousarray(arr))
    raise DataError(f"{where} has dtype {arr.dtype}; probe inputs must be numbers or booleans "
                    "(pass inputs_fn to feed anything else)")


def as_probe_inputs(inputs: Any) -> ProbeInputs:
    """One tensor, a tuple or a dict of tensors, every entry with the same first dimension N.

    Numpy floats become float32, numpy integers int64, tensors are kept as they are."""
    if isinstance(inputs, Mapping):
        if not inputs:
            raise DataError("probe_inputs is an empty dict")
        out: ProbeInputs = {str(k): _as_tensor(v, f"probe_inputs[{k!r}]") for k, v in inputs.items()}
    elif isinstance(inputs, tuple) and inputs:  # several inputs (a list is one array)
        out = tuple(_as_tensor(v, f"probe_inputs[{i}]") for i, v in enumerate(inputs))
    else:
        out = _as_tensor(inputs, "probe_inputs")
    sizes = {name: (t.shape[0] if t.ndim else None) for name, t in entries(out)}
    if None in sizes.values():
        bad = next(k for k, v in sizes.items() if v is None)
        raise DataError(f"{bad} is a scalar; probe inputs need a first dimension of examples")
    if len(set(sizes.values())) > 1:
        listed = ", ".join(f"{k}: {v}" for k, v in sizes.items())
        raise DataError(f"probe inputs disagree on the number of examples ({listed})")
    return out


def entries(inputs: ProbeInputs) -> list[tuple[str, torch.Tensor]]:
    """(name, tensor) of each entry: ``probe_inputs`` for one tensor, ``probe_inputs[i]`` or
    ``probe_inputs['key']`` otherwise."""
    if isinstance(inputs, dict):
        return [(f"probe_inputs[{k!r}]", v) for k, v in inputs.items()]
    if isinstance(inputs, tuple):
        return [(f"probe_inputs[{i}]", v) for i, v in enumerate(inputs)]
    return [("probe_inputs", inputs)]


def structure(inputs: ProbeInputs) -> str:
    """``"tensor"``, ``"tuple"`` or ``"dict"``."""
    return "dict" if isinstance(inputs, dict) else "tuple" if isinstance(inputs, tuple) else "tensor"


def named_arrays(inputs: ProbeInputs) -> dict[str, np.ndarray]:
    """The entries as numpy arrays, keyed as stored in a file: ``""`` for one tensor, the dict
    key, or the tuple position as a string."""
    if isinstance(inputs, dict):
        return {k: v.cpu().numpy() for k, v in inputs.items()}
    if isinstance(inputs, tuple):
        return {str(i): v.cpu().numpy() for i, v in enumerate(inputs)}
    return {"": inputs.cpu().numpy()}


def n_examples(inputs: ProbeInputs) -> int:
    return int(entries(inputs)[0][1].shape[0])


def inputs_sha256(inputs: ProbeInputs) -> str:
    """Identity of a probe set (docs/format.md). One array: :func:`trajviz.store.probe_sha256`
    (shape, then float32 bytes). Several: SHA-256 of ``"tuple"`` or ``"dict"``, then for each
    entry in order its name and its own ``probe_sha256`` hex digest."""
    arrays = named_arrays(inputs)
    if structure(inputs) == "tensor":
        return probe_sha256(arrays[""])
    digest = hashlib.sha256(structure(inputs).encode())
    for name, arr in arrays.items():
        digest.update(b"\0" + name.encode() + b"\0" + probe_sha256(arr).encode())
    return digest.hexdigest()


def batch_of(inputs: ProbeInputs, start: int, stop: int, device: torch.device,
             float_dtype: torch.dtype | None) -> ProbeInputs:
    """Rows [start, stop) of every entry, on ``device``; floating entries cast to ``float_dtype``."""
    def move(t: torch.Tensor) -> torch.Tensor:
        t = t[start:stop]
        if float_dtype is not None and t.is_floating_point() and t.dtype != float_dtype:
            return t.to(device=device, dtype=float_dtype)
        return t.to(device)

    if isinstance(inputs, dict):
        return {k: move(v) for k, v in inputs.items()}
    if isinstance(inputs, tuple):
        return tuple(move(v) for v in inputs)
    return move(inputs)


def feed(model: torch.nn.Module, batch: ProbeInputs) -> Any:
    """The default ``inputs_fn``: ``model(x)``, ``model(*batch)`` or ``model(**batch)``."""
    if isinstance(batch, dict):
        return model(**batch)
    if isinstance(batch, tuple):
        return model(*batch)
    return model(batch)


def model_device_dtype(model: torch.nn.Module) -> tuple[torch.device, torch.dtype | None]:
    """Where the model lives and the dtype of its floating parameters (None if it has none)."""
    for t in (*model.parameters(), *model.buffers()):
        if t.is_floating_point():
            return t.device, t.dtype
    first = next((t for t in (*model.parameters(), *model.buffers())), None)
    return (first.device if first is not None else torch.device("cpu")), None


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    if isinstance(value, Mapping):
        return f"a dict with keys {list(value)[:8]}"
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)} entries"
    return f"a {type(value).__name__}"


def extract_scores(out: Any, outputs_fn: OutputsFn = None) -> torch.Tensor:
    """Class scores from a model's return value (see the module's docstring)."""
    if outputs_fn is not None:
        if callable(outputs_fn):
            scores = outputs_fn(out)
        elif isinstance(outputs_fn, str):
            if isinstance(out, Mapping) and outputs_fn in out:
                scores = out[outputs_fn]
            elif hasattr(out, outputs_fn):
                scores = getattr(out, outputs_fn)
            else:
                raise ModelOutputError(f"outputs_fn={outputs_fn!r}: the model returned "
                                       f"{_describe(out)}, which has no entry {outputs_fn!r}")
        elif isinstance(outputs_fn, int) and isinstance(out, (tuple, list)):
            if not -len(out) <= outputs_fn < len(out):
                raise ModelOutputError(f"outputs_fn={outputs_fn}: the model returned "
                                       f"{_describe(out)}")
            scores = out[outputs_fn]
        else:
            raise ModelOutputError(f"outputs_fn={outputs_fn!r}: expected a function, a key or "
                                   f"attribute name, or an index; the model returned "
                                   f"{_describe(out)}")
        if not isinstance(scores, torch.Tensor):
            raise ModelOutputError(f"outputs_fn gave {_describe(scores)}; it must give a tensor "
                                   "of class scores, (N, C) or (N,)")
        return scores
    if isinstance(out, torch.Tensor):
        return out
    logits = getattr(out, "logits", None)  # Hugging Face ModelOutput (also a dict) and the like
    if isinstance(logits, torch.Tensor):
        return logits
    if isinstance(out, Mapping):
        if isinstance(out.get("logits"), torch.Tensor):
            return out["logits"]
        tensors = [k for k, v in out.items() if isinstance(v, torch.Tensor)]
        if len(tensors) == 1:
            return out[tensors[0]]
        raise ModelOutputError(f"the model returned a dict with keys {list(out)[:8]} and no "
                               "'logits'; name the entry of class scores: outputs_fn='KEY'")
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    raise ModelOutputError(f"the model returned {_describe(out)}; pass outputs_fn (a function "
                           "of it giving class scores, a key or attribute name, or an index)")


def to_probabilities(scores: torch.Tensor, kind: str) -> torch.Tensor:
    """(N, C) float32 probabilities from class scores of ``kind`` (see :func:`check_scores`
    for the shapes allowed); one score per example becomes ``[1 - p, p]``."""
    scores = scores.detach().float()
    if scores.ndim == 2 and scores.shape[1] == 1:
        scores = scores[:, 0]
    if scores.ndim == 1:
        p = {"logits": torch.sigmoid, "probs": lambda s: s, "log_probs": torch.exp}[kind](scores)
        return torch.stack([1 - p, p], dim=1)
    if kind == "logits":
        return torch.softmax(scores, dim=-1)
    if kind == "log_probs":
        return scores.exp()
    return scores


def check_scores(scores: torch.Tensor, kind: str, n_rows: int, warn: bool = True) -> None:
    """Refuse, in one line naming what was seen, scores that cannot be class scores of
    ``kind`` for ``n_rows`` examples: a shape other than (N, C), (N, 1) or (N,); NaN or infinite
    values; probabilities outside [0, 1] or rows not summing to 1; log-probabilities above 0 or
    rows whose exp does not sum to 1. Logits that look like probabilities get a warning (if
    ``warn``)."""
    shape = tuple(scores.shape)
    if scores.ndim not in (1, 2) or shape[0] != n_rows:
        raise ModelOutputError(
            f"the model's class scores have shape {shape} for a batch of {n_rows} probe examples; "
            f"Recorder needs ({n_rows}, C), or ({n_rows},) for one score per example "
            "(pass outputs_fn to reduce them)")
    if not scores.is_floating_point():
        raise ModelOutputError(f"the model's class scores are {scores.dtype}, not floats "
                               "(predicted labels cannot be recorded; return scores)")
    s = scores.detach().float()
    if not torch.isfinite(s).all():
        bad = int((~torch.isfinite(s)).sum())
        raise ModelOutputError(f"the model's outputs hold {bad} NaN or infinite values "
                               f"(of {s.numel()}); nothing was written")
    single = s.ndim == 1 or s.shape[1] == 1
    lo, hi = float(s.min()), float(s.max())
    seen = f"values in [{lo:.4g}, {hi:.4g}]"
    if kind == "probs":
        if lo < -PROB_TOL or hi > 1 + PROB_TOL:
            hint = "pass output='logits'" if lo < 0 or hi > 1 else ""
            if hi <= PROB_TOL and not single:
                hint = "pass output='log_probs'"
            raise ModelOutputError(f"output='probs', but the model's outputs are not probabilities "
                                   f"({seen}); {hint}")
        if not single:
            sums = s.sum(dim=1)
            if float((sums - 1).abs().max()) > PROB_TOL:
                raise ModelOutputError(
                    f"output='probs', but the model's rows sum to {float(sums.min()):.4g}.."
                    f"{float(sums.max()):.4g}, not 1 (independent sigmoids? pass output='logits' "
                    "for scores, or outputs_fn to give one probability per class)")
    elif kind == "log_probs":
        if hi > PROB_TOL:
            raise ModelOutputError(f"output='log_probs', but the model's outputs are not "
                                   f"log-probabilities ({seen}, some above 0); pass output='logits'")
        if not single:
            sums = torch.logsumexp(s, dim=1)
            if float(sums.abs().max()) > PROB_TOL:
                raise ModelOutputError(
                    f"output='log_probs', but exp of the model's rows sums to "
                    f"{float(sums.exp().min()):.4g}..{float(sums.exp().max()):.4g}, not 1; "
                    "pass output='logits'")
    elif kind == "logits":
        if (warn and not single and lo >= 0 and hi <= 1
                and float((s.sum(dim=1) - 1).abs().max()) <= PROB_TOL):
            log.warning("the model's outputs look like probabilities (rows in [0, 1] summing to "
                        "1), but output='logits' applies a softmax to them; pass output='probs' "
                        "if they are")
    else:
        raise ValueError(f"output {kind!r}: choose one of {', '.join(OUTPUT_KINDS)}")


def check_probabilities(probs: np.ndarray, step: int) -> None:
    """What readers accept (docs/format.md): finite values in [0, 1]. Refuses in one line."""
    if not np.isfinite(probs).all():
        raise ModelOutputError(f"the model's outputs at step {step} hold NaN or infinite values "
                               "(training diverged?); that checkpoint was not written")
    lo, hi = float(probs.min()), float(probs.max())
    if lo < -PROB_TOL or hi > 1 + PROB_TOL:
        raise ModelOutputError(f"the model's outputs at step {step} are not probabilities "
                               f"(values in [{lo:.4g}, {hi:.4g}]); that checkpoint was not written")
