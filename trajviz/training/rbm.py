"""Greedy layer-wise pre-training of a :class:`~trajviz.training.nets.StackedMLP` as a stack of RBMs (a DBN).

Bernoulli-Bernoulli restricted Boltzmann machines trained by contrastive divergence (CD-k;
Hinton, Neural Computation 14, 2002; Hinton, Osindero & Teh 2006), stacked greedily as in
Erhan et al. (JMLR 2010, sec. 4): RBM l models the mean-field hidden activations of the (frozen)
layers below it, and its weights and hidden biases initialize hidden layer l of the MLP. The
visible biases are used only during pre-training.

As in :mod:`trajviz.training.sdae`, the K nets of the stack train together as batched matrix
products, and net k's randomness (example order, Gibbs samples) comes from ``generators[k]``
alone, so a net's RBMs do not depend on which other nets share its batch.

Gibbs chain, following Hinton's *Practical Guide to Training RBMs* (2010, sec. 3): hidden units
are sampled (binary) whenever they drive the visible units; visible reconstructions are kept as
probabilities; the statistics of the last step use hidden probabilities.
"""

from __future__ import annotations

import logging
from typing import Sequence

import torch
from torch import Tensor

from trajviz.config import PretrainConfig
from trajviz.training.nets import StackedMLP
from trajviz.progress import progress_bar

log = logging.getLogger(__name__)


def bernoulli(p: Tensor, generators: Sequence[torch.Generator]) -> Tensor:
    """Binary samples with probabilities ``p`` (K, B, h); net k's draws from ``generators[k]``."""
    u = torch.stack([torch.rand(p.shape[1:], generator=g, dtype=torch.float32)
                     for g in generators]).to(device=p.device, dtype=p.dtype)
    return (u < p).to(p.dtype)


def cd_step(v0: Tensor, w: Tensor, b: Tensor, c: Tensor, k: int, lr: float,
            generators: Sequence[torch.Generator]) -> Tensor:
    """One CD-k update of K RBMs in place; returns each net's reconstruction error (K,).

    v0: (K, B, d) visible data in [0, 1]; w (K, d, h) weights, b (K, 1, h) hidden biases,
    c (K, 1, d) visible biases. The gradient estimate is averaged over the B examples. The
    reconstruction error is the squared error of the first reconstruction, summed over the
    visible units and averaged over the minibatch.
    """
    batch = v0.shape[1]
    ph0 = torch.sigmoid(torch.matmul(v0, w) + b)
    h = bernoulli(ph0, generators)
    recon_err = None
    for step in range(k):
        vk = torch.sigmoid(torch.matmul(h, w.transpose(1, 2)) + c)
        if step == 0:
            recon_err = ((v0 - vk) ** 2).sum(-1).mean(-1)
        phk = torch.sigmoid(torch.matmul(vk, w) + b)
        if step < k - 1:
            h = bernoulli(phk, generators)
    scale = lr / batch
    w.add_(scale * (torch.matmul(v0.transpose(1, 2), ph0) - torch.matmul(vk.transpose(1, 2), phk)))
    b.add_(scale * (ph0 - phk).sum(1, keepdim=True))
    c.add_(scale * (v0 - vk).sum(1, keepdim=True))
    return recon_err


def reconstruction_error(v: Tensor, w: Tensor, b: Tensor, c: Tensor) -> Tensor:
    """Mean-field reconstruction error of K RBMs on data v (K, B, d) or (B, d): (K,).

    v -> p(h|v) -> p(v|h) without sampling; squared error summed over visible units,
    averaged over examples. Deterministic, so it serves to compare an RBM before and after
    training.
    """
    h = torch.sigmoid(torch.matmul(v, w) + b)
    recon = torch.sigmoid(torch.matmul(h, w.transpose(1, 2)) + c)
    return ((v - recon) ** 2).sum(-1).mean(-1)


@torch.no_grad()
def pretrain_rbm(net: StackedMLP, x: Tensor, cfg: PretrainConfig,
                 generators: Sequence[torch.Generator], *, n_layers: int | None = None,
                 progress: bool = False) -> list[list[float]]:
    """Pre-train the hidden layers of ``net`` in place as a DBN: one CD-k RBM per layer.

    ``x`` (n, d) are the training inputs in [0, 1] (used as visible probabilities, not
    binarized). Uses ``cfg.epochs`` epochs per layer, minibatches of ``cfg.batch_size``,
    learning rate ``cfg.rbm_lr`` and ``cfg.cd_k`` Gibbs steps. Each RBM starts from the MLP's
    random initial weights of that layer, zero hidden biases and zero visible biases.
    ``n_layers``: pre-train only the bottom ones (None = every hidden layer).

    Returns, per layer, each epoch's mean reconstruction error (averaged over nets).
    """
    k_nets, n = net.n_nets, x.shape[0]
    history: list[list[float]] = []
    for layer in range(net.depth if n_layers is None else min(n_layers, net.depth)):
        w, b = net.weights[layer], net.biases[layer]
        c = torch.zeros(k_nets, 1, w.shape[1], dtype=w.dtype, device=w.device)
        epochs_err: list[float] = []
        bar = progress_bar(range(cfg.epochs), enabled=progress,
                           desc=f"RBM layer {layer + 1}/{net.depth}", unit="epoch")
        for _ in bar:
            perms = torch.stack([torch.randperm(n, generator=g) for g in generators]).to(x.device)
            total, count = 0.0, 0
            for start in range(0, n, cfg.batch_size):
                idx = perms[:, start:start + cfg.batch_size]
                v0 = net.hidden(x[idx], layer) if layer else x[idx]
                err = cd_step(v0, w, b, c, cfg.cd_k, cfg.rbm_lr, generators)
                total += float(err.sum()) * idx.shape[1]
                count += idx.shape[1]
            epochs_err.append(total / max(count, 1) / k_nets)
            bar.set_postfix(recon=f"{epochs_err[-1]:.3f}")
            log.debug("rbm layer %d epoch reconstruction error %.4f", layer, epochs_err[-1])
        history.append(epochs_err)
    return history
