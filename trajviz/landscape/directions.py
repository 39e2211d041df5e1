"""Directions in parameter space along which the loss is scanned, as (n, P) flat vectors.

Every generator takes an explicit ``numpy.random.Generator``; :func:`direction_rng` derives it
from the scan seed, the run and the direction kind, so each (run, kind) gets its own stream and
a scan repeats exactly. The scan stores the directions it used (docs/format.md).

Kinds:

- ``sgd`` -- Erhan et al. (JMLR 2010, sec. 6.4): stochastic gradients of the training NLL on
  random minibatches at the probed parameters, each scaled to unit norm;
- ``gaussian`` -- standard normal over all parameters, scaled to unit norm;
- ``filter`` -- Li et al., "Visualizing the Loss Landscape of Neural Nets" (NeurIPS 2018):
  normal directions whose every weight row (the incoming weights of one unit, the "filter" of a
  dense layer, one output channel of a convolution) is rescaled to the norm of the matching row
  of the weights; bias entries (and normalization layers') are set to 0, as Li et al. do, or
  to the parameters themselves on request. Not unit norm: alpha = 1 moves each row by its own norm;
- ``hessian`` -- top eigenvectors of the Hessian of the training NLL (Lanczos), unit norm;
- ``pca`` -- principal directions of the run's stored parameter trajectory around its final
  point (Li et al. 2018, sec. 7), unit norm; needs ``record.params = "all"``;
- ``toward:RUN`` -- the straight line to run RUN's parameters: alpha = 1 reaches them
  (Goodfellow et al. 2015 interpolation); one direction, not normalized.
"""

from __future__ import annotations

import zlib
from typing import TYPE_CHECKING, Union

import numpy as np
import torch

from trajviz.errors import ConfigError
from trajviz.landscape.params import ParamLayout, mean_nll

if TYPE_CHECKING:
    from trajviz.landscape.modules import ModuleLayout

#: a flat parameter layout: the project's MLPs (ParamLayout) or any module's (ModuleLayout); the
#: random generators need only ``size``, ``weight_rows()`` and ``vector_slices()``
Layout = Union[ParamLayout, "ModuleLayout"]

#: direction kinds; ``toward:RUN`` takes a run id after the colon
KINDS = ("sgd", "gaussian", "filter", "hessian", "pca", "toward")


def parse_kind(text: str) -> tuple[str, str | None]:
    """``"sgd"`` -> ("sgd", None); ``"toward:none-seed1"`` -> ("toward", "none-seed1")."""
    kind, sep, arg = text.partition(":")
    if kind not in KINDS:
        raise ConfigError(f"direction {text!r}: unknown; choose one of sgd, gaussian, filter, "
                          "hessian, pca, toward:RUN")
    if kind == "toward" and not arg:
        raise ConfigError(f"direction {text!r}: toward needs a run id, e.g. toward:none-seed1")
    if kind != "toward" and sep:
        raise ConfigError(f"direction {text!r}: only toward takes an argument (toward:RUN)")
    return kind, arg or None


def direction_rng(seed: int, run_id: str, kind: str) -> np.random.Generator:
    """The random stream of one (scan seed, run, direction kind)."""
    return np.random.default_rng(
        np.random.SeedSequence([int(seed), zlib.crc32(run_id.encode()), zlib.crc32(kind.encode())]))


def unit_rows(v: np.ndarray) -> np.ndarray:
    """Each row of ``v`` (n, P) scaled to unit norm (zero rows stay zero)."""
    norms = np.linalg.norm(v, axis=-1, keepdims=True)
    return v / np.where(norms > 0, norms, 1.0)


def gaussian_directions(layout: Layout, n: int, rng: np.random.Generator, *,
                        bias_bn: str | None = None) -> np.ndarray:
    """(n, P) unit-norm standard-normal directions. ``bias_bn="zero"`` sets the entries of the
    parameters with at most one dimension (biases, normalization layers) to 0 before scaling."""
    raw = rng.standard_normal((n, layout.size))
    if bias_bn == "zero":
        for off, size in layout.vector_slices():
            raw[:, off:off + size] = 0.0
    return unit_rows(raw)


def filter_normalize(direction: np.ndarray, theta: np.ndarray, layout: Layout, *,
                     bias_bn: str = "zero") -> np.ndarray:
    """Li et al. (2018) filter normalization of one (P,) direction: each row of every weight
    (its slice along the first dimension: an output unit, an output channel of a convolution)
    rescaled to the norm of the same row of ``theta``. The entries of parameters with at most
    one dimension (biases, normalization layers) are set to 0 (``bias_bn="zero"``, Li et al.'s
    ``ignore='biasbn'``) or to the parameters themselves (``"keep"``, their code's other choice)."""
    out = np.zeros_like(np.asarray(direction, dtype=np.float64))
    for off, rows, cols in layout.weight_rows():
        d = np.asarray(direction[off:off + rows * cols], dtype=np.float64).reshape(rows, cols)
        w = np.asarray(theta[off:off + rows * cols], dtype=np.float64).reshape(rows, cols)
        dn = np.linalg.norm(d, axis=1, keepdims=True)
        out[off:off + rows * cols] = (d * np.linalg.norm(w, axis=1, keepdims=True)
                                      / np.where(dn > 0, dn, 1.0)).ravel()
    if bias_bn == "keep":
        for off, size in layout.vector_slices():
            out[off:off + size] = theta[off:off + size]
    elif bias_bn != "zero":
        raise ConfigError(f"bias_bn {bias_bn!r}: choose zero or keep")
    return out


def filter_directions(layout: Layout, theta: np.ndarray, n: int, rng: np.random.Generator, *,
                      bias_bn: str = "zero") -> np.ndarray:
    """(n, P) filter-normalized random directions."""
    raw = rng.standard_normal((n, layout.size))
    return np.stack([filter_normalize(d, theta, layout, bias_bn=bias_bn) for d in raw])


def sgd_directions(layout: ParamLayout, theta: np.ndarray, x: torch.Tensor, y: torch.Tensor, n: int,
                   rng: np.random.Generator, batch_size: int = 10) -> np.ndarray:
    """(n, P) unit-norm gradients of the mean NLL on ``n`` random minibatches of (x, y)."""
    th = torch.as_tensor(theta, dtype=torch.float64, device=x.device)
    out = []
    for _ in range(n):
        idx = torch.as_tensor(rng.choice(x.shape[0], size=min(batch_size, x.shape[0]), replace=False),
                              device=x.device)
        t = th.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(mean_nll(layout, t, x[idx].double(), y[idx]), t)
        out.append(g.cpu().numpy())
    return unit_rows(np.stack(out))


def hessian_directions(layout: ParamLayout, theta: np.ndarray, x: torch.Tensor, y: torch.Tensor,
                       n: int, rng: np.random.Generator, n_iter: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """Top ``n`` Hessian eigenvalues (n,) and unit eigenvectors (n, P) of the mean NLL."""
    from trajviz.landscape.hessian import hvp_operator, lanczos_top

    hvp = hvp_operator(layout, theta, x, y)
    vals, vecs = lanczos_top(hvp, layout.size, n, n_iter=max(n_iter, 2 * n + 10), rng=rng,
                             device=x.device)
    return vals, vecs


def pca_directions(trajectory: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Top ``n`` principal directions (n, P) of a parameter trajectory (T, P) taken relative to
    its last point, and the fraction of variance each explains (n,). Signs are fixed so that
    each direction's largest-magnitude entry is positive. At most T - 1 directions exist."""
    traj = np.asarray(trajectory, dtype=np.float64)
    diffs = traj[:-1] - traj[-1]
    if diffs.shape[0] < 1:
        raise ConfigError("pca directions need a trajectory of at least 2 stored checkpoints")
    _, s, vt = np.linalg.svd(diffs, full_matrices=False)  # uncentred, as Li et al.
    k = min(n, vt.shape[0])
    vecs = vt[:k]
    signs = np.sign(vecs[np.arange(k), np.abs(vecs).argmax(1)])
    var = s ** 2
    return vecs * signs[:, None], var[:k] / max(var.sum(), 1e-300)


def toward_direction(theta: np.ndarray, other: np.ndarray) -> np.ndarray:
    """(1, P): ``other - theta``, so alpha = 1 reaches ``other``."""
    return (np.asarray(other, dtype=np.float64) - np.asarray(theta, dtype=np.float64))[None]
