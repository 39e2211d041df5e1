"""The fast training engine: hand-derived, fused SGD steps for K stacked sigmoid MLPs.

The reference path (:func:`trajviz.training.runner.finetune` and :func:`trajviz.training.sdae.pretrain_sdae`
with ``engine.backend = "autograd"``) builds a graph per step, asks autograd for the gradients,
then subtracts ``lr * grad`` parameter by parameter. The steps here compute the same update with
the gradients derived by hand (sigmoid MLP + softmax NLL; tied or untied denoising autoencoder
with a cross-entropy reconstruction) and fuse each weight's gradient product into its update::

    W <- (1 - 2 lr l2) W - lr * H^T dZ            one torch.baddbmm_ per layer, no dW tensor

into activation buffers allocated once per minibatch size. This removes autograd bookkeeping,
the optimizer loop, the gradient tensors and their extra pass over memory, and per-step
allocation. The arithmetic is the same as the reference's up to rounding: tests/test_engine.py
checks equality in float64 and closeness in float32.

The steps are device-agnostic: they run wherever the net's tensors live (``engine.device``).
"""

from __future__ import annotations

import logging
from typing import Callable, Sequence

import torch
from torch import Tensor

from trajviz.training.nets import StackedMLP

log = logging.getLogger(__name__)

#: Training backends selectable with ``engine.backend``.
BACKENDS = ("fast", "autograd")

_sigmoid_backward = torch.ops.aten.sigmoid_backward


def _sigmoid_backward_into(grad_h: Tensor, h: Tensor, out: Tensor) -> Tensor:
    """out <- grad_h * h * (1 - h), the gradient through h = sigmoid(a), in one fused kernel."""
    return _sigmoid_backward.grad_input(grad_h, h, grad_input=out)


def _softmax_nll_grad_(logits: Tensor, y: Tensor, scale: float) -> Tensor:
    """In place: logits (K, B, C) -> scale * (softmax(logits) - onehot(y)), the gradient of the
    summed NLL times ``scale`` with respect to the logits. ``y`` is (K, B) long."""
    logits.sub_(logits.amax(-1, keepdim=True)).exp_()
    logits.div_(logits.sum(-1, keepdim=True))
    logits.scatter_add_(-1, y.unsqueeze(-1), torch.full_like(logits[..., :1], -1.0))
    return logits.mul_(scale)


class _Buffers:
    """Activation and gradient buffers of one minibatch size."""

    def __init__(self, sizes: Sequence[int], k: int, b: int, dtype: torch.dtype, device: torch.device):
        opts = dict(dtype=dtype, device=device)
        self.x = torch.empty(k, b, sizes[0], **opts)
        self.y = torch.empty(k, b, dtype=torch.long, device=device)
        # acts[l]: output of layer l (sigmoid for hidden layers, logits for the last)
        self.acts = [torch.empty(k, b, s, **opts) for s in sizes[1:]]
        # grads[l]: gradient w.r.t. the pre-activation of layer l (layer 0 needs none below it)
        self.grads = [torch.empty(k, b, s, **opts) for s in sizes[1:-1]]
        # gradients w.r.t. hidden outputs, stored transposed (K, width, B): computed as
        # W dZ^T, a product that streams W row by row (dZ W^T would read W transposed; with a
        # minibatch of 10 that runs at half the speed, benchmarks/bench_engine.py)
        self.grad_h = [torch.empty(k, s, b, **opts) for s in sizes[1:-1]]


class FinetuneStep:
    """Supervised SGD updates of every net of a :class:`StackedMLP`, in place.

    The loss of net k is its minibatch-mean softmax NLL plus ``l2 * sum_l ||W_l||^2`` (weights
    only), the loss of :func:`trajviz.training.runner.finetune_loss`. Backpropagation by hand::

        dZ_L = (softmax(Z_L) - onehot(y)) / B                (K, B, C)
        dH_l = dZ_{l+1} W_{l+1}^T,  dZ_l = dH_l * H_l (1 - H_l)
        W_l <- (1 - 2 lr l2) W_l - lr H_{l-1}^T dZ_l,  b_l <- b_l - lr sum_B dZ_l

    Each ``dH_l`` is computed from the weights before their update, as in the reference.

    Calling the object makes one update of all K nets (batched products over the net axis).
    :meth:`run` makes several consecutive updates, and since nets never interact it may order
    the work net-group by net-group: each group of nets goes through all the updates while its
    weights stay in cache. With a small minibatch on a CPU a step is bound by streaming the
    weights from memory (K = 8 nets of 784-800-800-10 are 41 MB, read ~4 times per update);
    grouping makes a run of updates about 1.5x faster there (benchmarks/bench_engine.py).

    Args:
        net: the nets; their tensors are updated in place.
        lr: learning rate; l2: weight penalty coefficient.
        group_bytes: :meth:`run` steps together the nets whose parameters fit in this many bytes
            (at least one net). None: ``CPU_GROUP_BYTES`` on a CPU, all nets on CUDA (there one
            kernel per product over all nets is what pays).
    """

    #: default parameter bytes per group of :meth:`run` on a CPU (about an L2 cache's worth).
    CPU_GROUP_BYTES = 4 << 20

    def __init__(self, net: StackedMLP, lr: float, l2: float = 0.0, group_bytes: int | None = None):
        self.net = net
        self.lr = float(lr)
        self.l2 = float(l2)
        w = net.weights[0]
        if group_bytes is None:
            group_bytes = self.CPU_GROUP_BYTES if w.device.type == "cpu" else 1 << 62
        net_bytes = sum(p[0].numel() for p in net.parameters()) * w.element_size()
        self.group_size = max(1, min(net.n_nets, group_bytes // max(net_bytes, 1)))
        self._buffers: dict[tuple[int, int], _Buffers] = {}

    def _get(self, k: int, b: int) -> _Buffers:
        buf = self._buffers.get((k, b))
        if buf is None:
            w = self.net.weights[0]
            buf = self._buffers[k, b] = _Buffers(self.net.sizes, k, b, w.dtype, w.device)
        return buf

    @torch.no_grad()
    def __call__(self, x: Tensor, y: Tensor, idx: Tensor) -> None:
        """One update on the minibatch ``x[idx[k]], y[idx[k]]`` of every net k.

        x: (n, d) training inputs; y: (n,) labels; idx: (K, B) example indices per net.
        """
        self._step(x, y, idx, self.net.weights, self.net.biases)

    @torch.no_grad()
    def run(self, x: Tensor, y: Tensor, idxs: Sequence[Tensor]) -> None:
        """Consecutive updates, one per (K, B) index tensor of ``idxs``, net-group by net-group
        (``group_size`` nets at a time). The result is that of calling the object on each."""
        k = self.net.n_nets
        for g0 in range(0, k, self.group_size):
            part = slice(g0, min(g0 + self.group_size, k))
            weights = [w[part] for w in self.net.weights]
            biases = [b[part] for b in self.net.biases]
            for idx in idxs:
                self._step(x, y, idx[part], weights, biases)

    def _step(self, x: Tensor, y: Tensor, idx: Tensor, weights: list[Tensor], biases: list[Tensor]) -> None:
        """Forward pass, backward pass and update of the nets whose (views of) parameters are
        ``weights``/``biases``, on minibatch indices ``idx`` (G, B)."""
        k, b = idx.shape
        buf = self._get(k, b)
        flat = idx.reshape(-1)
        torch.index_select(x, 0, flat, out=buf.x.view(k * b, -1))
        torch.index_select(y, 0, flat, out=buf.y.view(-1))
        acts, grads, grad_h = buf.acts, buf.grads, buf.grad_h
        n_layers = len(weights)
        h = buf.x
        for l in range(n_layers):
            torch.baddbmm(biases[l], h, weights[l], out=acts[l])
            if l < n_layers - 1:
                acts[l].sigmoid_()
            h = acts[l]
        dz = _softmax_nll_grad_(acts[-1], buf.y, 1.0 / b)
        decay = 1.0 - 2.0 * self.lr * self.l2
        for l in range(n_layers - 1, -1, -1):
            below = acts[l - 1] if l else buf.x
            if l:
                # gradient for the layer below, from the weights before this update
                torch.bmm(weights[l], dz.transpose(1, 2), out=grad_h[l - 1])
            weights[l].baddbmm_(below.transpose(1, 2), dz, beta=decay, alpha=-self.lr)
            biases[l].sub_(dz.sum(1, keepdim=True), alpha=self.lr)
            if l:
                dz = _sigmoid_backward_into(grad_h[l - 1].transpose(1, 2), acts[l - 1], grads[l - 1])


class SDAEStep:
    """SGD updates of a denoising autoencoder layer of every net, in place.

    Encoder ``h = sigmoid(x~ W + b)``, decoder ``r = h W' + c`` with ``W' = W^T`` (tied) or its
    own matrix (untied); loss per net: ``sum_d BCE(sigmoid(r), x)`` averaged over the minibatch
    (:func:`trajviz.training.sdae.sdae_loss`; Vincent et al., ICML 2008). By hand::

        dR = (sigmoid(R) - x) / B;   dh = dR W'^T;   dA = dh * h (1 - h)
        dW = x~^T dA  (+ dR^T h if tied);   dW' = h^T dR (untied);   db = sum dA;  dc = sum dR

    Calling the object makes one update of all nets; :meth:`run` makes an epoch's updates
    net-group by net-group, as :meth:`FinetuneStep.run` does.

    Args:
        w, b: the layer's encoder weights (K, d, h) and biases (K, 1, h), updated in place.
        c: decoder biases (K, 1, d); w_dec: untied decoder weights (K, h, d), or None (tied).
        lr: learning rate.
        group_bytes: as for :class:`FinetuneStep` (this layer's weights per net).
    """

    def __init__(self, w: Tensor, b: Tensor, c: Tensor, w_dec: Tensor | None, lr: float,
                 group_bytes: int | None = None):
        self.w, self.b, self.c, self.w_dec = w, b, c, w_dec
        self.lr = float(lr)
        if group_bytes is None:
            group_bytes = FinetuneStep.CPU_GROUP_BYTES if w.device.type == "cpu" else 1 << 62
        net_bytes = (w[0].numel() * (1 if w_dec is None else 2)) * w.element_size()
        self.group_size = max(1, min(w.shape[0], group_bytes // max(net_bytes, 1)))
        self._buffers: dict[tuple[int, int], tuple[Tensor, ...]] = {}

    def _get(self, k: int, b: int) -> tuple[Tensor, ...]:
        buf = self._buffers.get((k, b))
        if buf is None:
            _, d, h = self.w.shape
            opts = dict(dtype=self.w.dtype, device=self.w.device)
            buf = self._buffers[k, b] = (torch.empty(k, b, h, **opts), torch.empty(k, b, d, **opts),
                                         torch.empty(k, b, h, **opts), torch.empty(k, b, h, **opts))
        return buf

    @torch.no_grad()
    def __call__(self, clean: Tensor, corrupted: Tensor) -> Tensor:
        """Update on one minibatch; clean, corrupted: (K, B, d). Returns the loss before the
        update, summed over nets (a 0-dim tensor, as the reference's ``sdae_loss``)."""
        return self._step(clean, corrupted, slice(None))

    @torch.no_grad()
    def run(self, x: Tensor, idxs: Sequence[Tensor], lower: Sequence[tuple[Tensor, Tensor]],
            corrupt: Callable[[Tensor, slice], Tensor]) -> float:
        """Consecutive updates, one per (K, B) index tensor of ``idxs``, net-group by net-group.

        The clean input of a minibatch is ``x[idx]`` passed through the ``lower`` (weights,
        biases) sigmoid layers; ``corrupt(clean, part)`` corrupts it for the nets ``part`` (a
        slice of the net axis) and must draw net k's noise from net k's stream only, so that the
        order of the groups does not change any net's numbers. Returns the sum over updates of
        (loss summed over nets) x minibatch size.
        """
        k = self.w.shape[0]
        total = torch.zeros((), dtype=torch.float64, device=self.w.device)
        for g0 in range(0, k, self.group_size):
            part = slice(g0, min(g0 + self.group_size, k))
            for idx in idxs:
                clean = x[idx[part]]
                for w, b in lower:
                    clean = torch.sigmoid(torch.matmul(clean, w[part]) + b[part])
                loss = self._step(clean, corrupt(clean, part), part)
                total += loss.double() * idx.shape[1]
        return float(total)

    def _step(self, clean: Tensor, corrupted: Tensor, part: slice) -> Tensor:
        k, bsz, _ = clean.shape
        hid, recon, grad_h, grad_a = self._get(k, bsz)
        w, b, c, lr = self.w[part], self.b[part], self.c[part], self.lr
        w_dec = w.transpose(1, 2) if self.w_dec is None else self.w_dec[part]
        torch.baddbmm(b, corrupted, w, out=hid).sigmoid_()
        torch.baddbmm(c, hid, w_dec, out=recon)
        # loss: BCE with logits r against x = softplus(r) - x r, summed over d, mean over B
        loss = (torch.nn.functional.softplus(recon) - clean * recon).sum() / bsz
        dr = recon.sigmoid_().sub_(clean).mul_(1.0 / bsz)
        torch.bmm(dr, w_dec.transpose(1, 2), out=grad_h)  # before W changes
        da = _sigmoid_backward_into(grad_h, hid, grad_a)
        if self.w_dec is None:
            w.baddbmm_(dr.transpose(1, 2), hid, alpha=-lr)  # decoder's share of the tied W
        else:
            w_dec.baddbmm_(hid.transpose(1, 2), dr, alpha=-lr)
        w.baddbmm_(corrupted.transpose(1, 2), da, alpha=-lr)
        b.sub_(da.sum(1, keepdim=True), alpha=lr)
        c.sub_(dr.sum(1, keepdim=True), alpha=lr)
        return loss
