"""Flat parameter vectors of the studies' MLPs, and the batched evaluation of many points
``theta + C @ D`` (one coefficient row per point) in one pass.

A net's parameters are handled as one flat vector (P,): the :func:`~trajviz.training.nets.mlp_module`
state-dict arrays ("0.weight" (out, in), "0.bias" (out,), "2.weight", ...) concatenated in layer
order, weight before bias. Directions are vectors of the same layout.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from trajviz.errors import FormatError

#: upper bound on floats held by one hidden activation block (points x examples x units) of the
#: "batched" strategy
_BLOCK_FLOATS = 1 << 21  # 8 MiB of float32: fastest of 2^17..2^23 in benchmarks/bench_landscape.py
#: upper bound on floats of one block's activations (examples x widest layer) of the per-point
#: strategies
_ROW_FLOATS = 1 << 22
#: below this many activations per point (examples x units of the layers after the input), a
#: point's products are too small to hide per-call cost, and "batched" wins
_SMALL_POINT = 1 << 18

STRATEGIES = ("auto", "reuse", "plain", "batched")


def choose_strategy(sizes: list[int], n: int, k: int, m: int, device: torch.device) -> str:
    """How :class:`PointEvaluator` evaluates ``k`` points along ``m`` directions of a net of
    layer ``sizes`` on ``n`` examples; a rule measured on one CPU core with
    benchmarks/bench_landscape.py (docs/benchmarks.md, "Landscape scans"):

    - not a CPU: "batched" (one kernel per layer for all points);
    - a point's activations, ``n * sum(sizes[1:])``, under 2^18: "batched" (small products:
      per-call cost dominates; 1.7-3.3x the loop where "reuse" gave 1.3-2.0x);
    - fewer than ``2 (m + 1)`` points: "plain" (the ``1 + m`` first-layer products of "reuse"
      would cost more than the points' own);
    - else "reuse" (1.6x the best loop on 784-800-800-10, where "batched" gave 1.2x and "plain"
      1.0x).
    """
    if device.type != "cpu":
        return "batched"
    if n * sum(sizes[1:]) < _SMALL_POINT:
        return "batched"
    if k < 2 * (m + 1):
        return "plain"
    return "reuse"


@dataclass(frozen=True)
class ParamLayout:
    """Names and shapes of an MLP's parameters, in flat-vector order."""

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]

    @classmethod
    def from_state(cls, state: Mapping[str, np.ndarray]) -> "ParamLayout":
        """The layout of a :func:`~trajviz.training.nets.mlp_module` state dict."""
        def key(name: str) -> tuple[int, int]:
            layer, _, kind = name.partition(".")
            if not layer.isdigit() or kind not in ("weight", "bias"):
                raise FormatError(f"parameter {name!r} is not an mlp_module name "
                                  "('<layer>.weight' or '<layer>.bias')")
            return int(layer), 0 if kind == "weight" else 1

        names = tuple(sorted(state, key=key))
        if len(names) % 2 or any(key(n)[1] != i % 2 for i, n in enumerate(names)):
            raise FormatError(f"parameters {list(state)} are not weight/bias pairs of an MLP")
        return cls(names, tuple(tuple(int(s) for s in np.shape(state[n])) for n in names))

    @property
    def offsets(self) -> list[int]:
        out = [0]
        for shape in self.shapes:
            out.append(out[-1] + int(np.prod(shape)))
        return out

    @property
    def size(self) -> int:
        """P, the number of parameters."""
        return self.offsets[-1]

    @property
    def n_layers(self) -> int:
        return len(self.names) // 2

    @property
    def sizes(self) -> list[int]:
        """Layer sizes [n_inputs, hidden..., n_classes]."""
        return [self.shapes[0][1]] + [self.shapes[2 * l][0] for l in range(self.n_layers)]

    def flatten(self, state: Mapping[str, np.ndarray]) -> np.ndarray:
        """(P,) float64 vector of a state dict."""
        missing = [n for n in self.names if n not in state]
        if missing:
            raise FormatError(f"parameters lack {missing[0]!r}")
        for n, shape in zip(self.names, self.shapes):
            if tuple(np.shape(state[n])) != shape:
                raise FormatError(f"parameter {n!r} has shape {np.shape(state[n])}, expected {shape}")
        return np.concatenate([np.asarray(state[n], dtype=np.float64).ravel() for n in self.names])

    def unflatten(self, vec: np.ndarray) -> dict[str, np.ndarray]:
        off = self.offsets
        return {n: np.asarray(vec[off[i]:off[i + 1]]).reshape(s)
                for i, (n, s) in enumerate(zip(self.names, self.shapes))}

    def layer_views(self, vec: Tensor) -> list[tuple[Tensor, Tensor]]:
        """(weight (..., out, in), bias (..., out)) views per layer of (..., P) vectors."""
        off, lead = self.offsets, vec.shape[:-1]
        return [(vec[..., off[2 * l]:off[2 * l + 1]].reshape(*lead, *self.shapes[2 * l]),
                 vec[..., off[2 * l + 1]:off[2 * l + 2]])
                for l in range(self.n_layers)]

    def weight_rows(self) -> list[tuple[int, int, int]]:
        """(offset, n_rows, row_length) of every weight matrix (rows = output units)."""
        off = self.offsets
        return [(off[2 * l], self.shapes[2 * l][0], self.shapes[2 * l][1])
                for l in range(self.n_layers)]

    def vector_slices(self) -> list[tuple[int, int]]:
        """(offset, size) of every bias vector."""
        off = self.offsets
        return [(off[2 * l + 1], self.shapes[2 * l + 1][0]) for l in range(self.n_layers)]


def mean_nll(layout: ParamLayout, theta: Tensor, x: Tensor, y: Tensor) -> Tensor:
    """Mean NLL of the net with flat parameters ``theta`` (P,) on (x (N, d), y (N,)); differentiable
    in ``theta`` to any order (used for gradients and Hessian-vector products)."""
    h = x
    layers = layout.layer_views(theta)
    for l, (w, b) in enumerate(layers):
        h = h @ w.T + b
        if l < len(layers) - 1:
            h = torch.sigmoid(h)
    return F.cross_entropy(h, y)


class PointEvaluator:
    """Training NLL and classification error at many points ``theta + coeffs @ directions``.

    One call evaluates K points (rows of ``coeffs``, (K, m)) in one of three ways, all giving
    the same numbers (up to float rounding):

    - ``"reuse"``: the first layer's pre-activations are linear in the coefficients, so
      ``x W0^T`` and ``x D0_j^T`` are computed once per block of examples and each point's are
      their combination; the later layers run point by point as plain matrix products over the
      block. Saves almost all of the first layer's FLOPs, which pays when the first layer is
      wide (784 inputs: half of a 784-800-800-10 net's FLOPs) and there are more points than
      directions.
    - ``"plain"``: point by point, the whole forward pass with the point's weights (what a
      loop over model copies does, without the copies), in large blocks of examples.
    - ``"batched"``: all points of a chunk in one batched product per layer (first layer as in
      ``"reuse"``); fewest operator calls, so it pays where each point's work is too small to
      hide the per-call cost, and on a GPU.

    ``strategy="auto"`` picks by :func:`choose_strategy` (a rule measured with
    benchmarks/bench_landscape.py and documented in docs/benchmarks.md).
    """

    def __init__(self, layout: ParamLayout, theta: np.ndarray | Tensor, directions: np.ndarray | Tensor,
                 x: Tensor, y: Tensor, *, dtype: torch.dtype = torch.float32, strategy: str = "auto"):
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy {strategy!r}: choose one of {', '.join(STRATEGIES)}")
        self.layout = layout
        dev = x.device
        self.x = x.to(dtype)
        self.y = y.to(dev)
        self.theta = torch.as_tensor(np.asarray(theta), dtype=dtype, device=dev)
        d = torch.as_tensor(np.asarray(directions), dtype=dtype, device=dev)
        self.directions = d.reshape(-1, layout.size)
        self.dtype = dtype
        self.strategy = strategy

    @property
    def n_dims(self) -> int:
        return int(self.directions.shape[0])

    @torch.no_grad()
    def __call__(self, coeffs: np.ndarray, max_points: int = 64) -> tuple[np.ndarray, np.ndarray]:
        """Mean NLL and error, two (K,) float64 arrays, at the K points of ``coeffs`` (K, m)."""
        c = torch.as_tensor(np.asarray(coeffs, dtype=np.float64).reshape(-1, self.n_dims),
                            dtype=self.dtype, device=self.x.device)
        strategy = self.strategy
        if strategy == "auto":
            strategy = choose_strategy(self.layout.sizes, self.x.shape[0], c.shape[0], self.n_dims,
                                       self.x.device)
        nll, err = [], []
        for s in range(0, c.shape[0], max_points):
            chunk = c[s:s + max_points]
            a, b = (self._batched(chunk) if strategy == "batched"
                    else self._per_point(chunk, reuse=strategy == "reuse"))
            nll.append(a)
            err.append(b)
        return np.concatenate(nll), np.concatenate(err)

    def _first_layer_terms(self, xb: Tensor, w0: Tensor, b0: Tensor, dw0: Tensor,
                           db0: Tensor) -> tuple[Tensor, Tensor]:
        """x W0^T + b0 (B, o) and x D0_j^T + db0_j (m, B, o)."""
        pre0 = torch.addmm(b0, xb, w0.T)
        pre_d = torch.einsum("bi,moi->mbo", xb, dw0) + db0[:, None, :]
        return pre0, pre_d

    def _per_point(self, c: Tensor, reuse: bool) -> tuple[np.ndarray, np.ndarray]:
        k, m = c.shape
        base = self.layout.layer_views(self.theta)
        dirs = self.layout.layer_views(self.directions)
        coef = c.double().cpu().tolist()  # Python floats: alpha= of in-place adds
        n = self.x.shape[0]
        rows = max(1, min(n, _ROW_FLOATS // max(self.layout.sizes[1:])))
        tot_nll = torch.zeros(k, dtype=torch.float64, device=c.device)
        tot_err = torch.zeros_like(tot_nll)
        for s in range(0, n, rows):
            xb, yb = self.x[s:s + rows], self.y[s:s + rows]
            if reuse:
                pre0, pre_d = self._first_layer_terms(xb, *base[0], *dirs[0])
            for i in range(k):
                if reuse:
                    h = torch.add(pre0, pre_d[0], alpha=coef[i][0])
                    for j in range(1, m):
                        h.add_(pre_d[j], alpha=coef[i][j])
                    layers = range(1, len(base))
                else:
                    h = xb
                    layers = range(len(base))
                for l in layers:
                    if l > 0:
                        h = torch.sigmoid_(h)  # h is this point's own product here, never xb
                    w, b = base[l]
                    wk, bk = w.clone(), b.clone()
                    for j in range(m):
                        wk.add_(dirs[l][0][j], alpha=coef[i][j])
                        bk.add_(dirs[l][1][j], alpha=coef[i][j])
                    h = torch.addmm(bk, h, wk.T)
                tot_nll[i] += F.cross_entropy(h, yb, reduction="none").double().sum()
                tot_err[i] += (h.argmax(1) != yb).sum()
        n = max(1, n)
        return (tot_nll / n).cpu().numpy(), (tot_err / n).cpu().numpy()

    def _batched(self, c: Tensor) -> tuple[np.ndarray, np.ndarray]:
        k = c.shape[0]
        base = self.layout.layer_views(self.theta)
        dirs = self.layout.layer_views(self.directions)  # (m, out, in), (m, out)
        # per-point weights of the layers after the first: W + sum_j c_kj D_j, as (K, in, out)
        later = []
        for (w, b), (dw, db) in list(zip(base, dirs))[1:]:
            wk = w + torch.einsum("km,moi->koi", c, dw)
            bk = b + c @ db
            later.append((wk.transpose(1, 2).contiguous(), bk[:, None, :]))
        width = max(self.layout.sizes[1:])
        rows = max(1, min(self.x.shape[0], _BLOCK_FLOATS // max(1, k * width)))
        tot_nll = torch.zeros(k, dtype=torch.float64, device=c.device)
        tot_err = torch.zeros_like(tot_nll)
        n_classes = self.layout.sizes[-1]
        for s in range(0, self.x.shape[0], rows):
            xb, yb = self.x[s:s + rows], self.y[s:s + rows]
            pre0, pre_d = self._first_layer_terms(xb, *base[0], *dirs[0])
            h = pre0[None] + torch.einsum("km,mbo->kbo", c, pre_d)  # (K, B, o)
            for l, (wk, bk) in enumerate(later):
                h = torch.baddbmm(bk, torch.sigmoid(h), wk)
            bsz = xb.shape[0]
            yy = yb.expand(k, bsz).reshape(-1)
            nll = F.cross_entropy(h.reshape(k * bsz, n_classes), yy, reduction="none")
            tot_nll += nll.view(k, bsz).double().sum(1)
            tot_err += (h.argmax(-1) != yb).double().sum(1)
        n = max(1, self.x.shape[0])
        return (tot_nll / n).cpu().numpy(), (tot_err / n).cpu().numpy()
