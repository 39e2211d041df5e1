"""Curvature of the training loss from Hessian-vector products (no Hessian is ever formed).

- :func:`hvp_operator`: v -> H v for the mean training NLL at flat parameters theta, by double
  backward (Pearlmutter 1994), accumulated over data chunks.
- :func:`lanczos_top`: top eigenpairs by the Lanczos method with full re-orthogonalization
  (Golub & Van Loan, Matrix Computations, 4th ed., 10.1); used for the top Hessian eigenvalue and
  the ``hessian`` scan directions.
- :func:`power_iteration`: the eigenvalue of largest magnitude, the simplest check of the above.
- :func:`hutchinson_trace`: tr H estimated as the mean of v^T H v over Rademacher vectors v
  (Hutchinson 1990), with its standard error.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import Tensor

from trajviz.landscape.params import ParamLayout, mean_nll

HVP = Callable[[Tensor], Tensor]


def hvp_operator(layout: ParamLayout, theta: np.ndarray | Tensor, x: Tensor, y: Tensor, *,
                 chunk: int = 8192, dtype: torch.dtype = torch.float64) -> HVP:
    """v (P,) -> H v (P,), H the Hessian of the mean NLL over (x, y) at ``theta``."""
    th0 = torch.as_tensor(np.asarray(theta), dtype=dtype, device=x.device)
    xs = x.to(dtype)
    n = x.shape[0]

    def hvp(v: Tensor) -> Tensor:
        v = v.to(dtype)
        out = torch.zeros_like(th0)
        for s in range(0, n, chunk):
            th = th0.detach().requires_grad_(True)
            xb, yb = xs[s:s + chunk], y[s:s + chunk]
            loss = mean_nll(layout, th, xb, yb) * (xb.shape[0] / n)
            (g,) = torch.autograd.grad(loss, th, create_graph=True)
            (hv,) = torch.autograd.grad(g @ v, th)
            out += hv
        return out

    return hvp


def lanczos_top(hvp: HVP, dim: int, k: int, *, n_iter: int, rng: np.random.Generator,
                dtype: torch.dtype = torch.float64, device: torch.device | str = "cpu"
                ) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` largest (algebraic) eigenvalues (k,) and unit eigenvectors (k, dim) of the
    symmetric operator ``hvp``, from ``n_iter`` Lanczos steps (at most ``dim``) started at a
    random vector drawn from ``rng``. Exact when ``n_iter >= dim``."""
    m = max(min(n_iter, dim), min(k, dim))
    q = torch.as_tensor(rng.standard_normal(dim), dtype=dtype, device=device)
    q = q / q.norm()
    basis = [q]
    alphas: list[float] = []
    betas: list[float] = []
    for j in range(m):
        w = hvp(basis[j]).to(dtype)
        a = float(w @ basis[j])
        alphas.append(a)
        q_mat = torch.stack(basis)
        for _ in range(2):  # full re-orthogonalization, twice is enough (Kahan)
            w = w - q_mat.T @ (q_mat @ w)
        b = float(w.norm())
        if j == m - 1 or b <= 1e-10 * max(1.0, abs(a)):
            break
        betas.append(b)
        basis.append(w / b)
    t = np.diag(alphas) + np.diag(betas[:len(alphas) - 1], 1) + np.diag(betas[:len(alphas) - 1], -1)
    evals, evecs = np.linalg.eigh(t)
    order = np.argsort(evals)[::-1][:k]
    q_mat = torch.stack(basis[:len(alphas)]).cpu().numpy()
    vecs = evecs[:, order].T @ q_mat
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    return evals[order], vecs


def power_iteration(hvp: HVP, dim: int, *, n_iter: int, rng: np.random.Generator, tol: float = 1e-6,
                    dtype: torch.dtype = torch.float64, device: torch.device | str = "cpu") -> float:
    """The eigenvalue of largest magnitude of ``hvp``, by power iteration (Rayleigh quotient)."""
    v = torch.as_tensor(rng.standard_normal(dim), dtype=dtype, device=device)
    v = v / v.norm()
    lam = 0.0
    for _ in range(n_iter):
        w = hvp(v).to(dtype)
        new = float(w @ v)
        norm = float(w.norm())
        if norm == 0.0:
            return 0.0
        v = w / norm
        if abs(new - lam) <= tol * max(1.0, abs(new)):
            return new
        lam = new
    return lam


def hutchinson_trace(hvp: HVP, dim: int, *, n_probes: int, rng: np.random.Generator,
                     dtype: torch.dtype = torch.float64, device: torch.device | str = "cpu"
                     ) -> tuple[float, float]:
    """Hutchinson's estimate of tr H and its standard error over ``n_probes`` Rademacher probes."""
    values = []
    for _ in range(n_probes):
        v = torch.as_tensor(rng.choice([-1.0, 1.0], size=dim), dtype=dtype, device=device)
        values.append(float(v @ hvp(v).to(dtype)))
    arr = np.asarray(values)
    sem = float(arr.std(ddof=1) / np.sqrt(len(arr))) if len(arr) > 1 else float("nan")
    return float(arr.mean()), sem
