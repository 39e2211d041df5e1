"""Greedy layer-wise unsupervised pre-training of a :class:`~trajviz.training.nets.StackedMLP`.

Stacked denoising autoencoders (Vincent et al., ICML 2008), as used by Erhan et al. (2009, 2010):
layer l is trained to reconstruct its clean input from a masked copy, bottom layer first, each
on the representation computed by the (frozen) layers below it.
"""

from __future__ import annotations

import logging
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from trajviz.config import PretrainConfig
from trajviz.training.fast import BACKENDS, SDAEStep
from trajviz.errors import ConfigError
from trajviz.training.nets import StackedMLP, uniform_init
from trajviz.progress import progress_bar

log = logging.getLogger(__name__)


def mask_noise(x: Tensor, level: float, generators: Sequence[torch.Generator]) -> Tensor:
    """Masking noise: in every example, a random subset of exactly round(level * d) inputs is
    set to 0. ``x`` is (K, B, d); net k's noise comes from ``generators[k]`` alone."""
    k_nets, batch, d = x.shape
    n_masked = int(round(level * d))
    if n_masked == 0:
        return x
    noise = torch.stack([torch.rand(batch, d, generator=g, dtype=torch.float32)
                         for g in generators]).to(x.device)
    masked = noise.argsort(dim=-1)[..., :n_masked]
    return x.scatter(-1, masked, 0.0)


def sdae_loss(x: Tensor, x_tilde: Tensor, w: Tensor, b: Tensor, w_dec: Tensor, c: Tensor) -> Tensor:
    """Reconstruction cross-entropy, summed over inputs and averaged over the minibatch, summed
    over the K nets (so each net's gradient is that of its own loss).

    x, x_tilde: (K, B, d) clean and corrupted inputs; w (K, d, h), b (K, 1, h) encoder;
    w_dec (K, h, d), c (K, 1, d) decoder.
    """
    h = torch.sigmoid(torch.matmul(x_tilde, w) + b)
    recon_logits = torch.matmul(h, w_dec) + c
    per_example = F.binary_cross_entropy_with_logits(recon_logits, x, reduction="none").sum(-1)
    return per_example.mean(dim=1).sum()


def pretrain_sdae(net: StackedMLP, x: Tensor, cfg: PretrainConfig,
                  generators: Sequence[torch.Generator], *, n_layers: int | None = None,
                  progress: bool = False, backend: str = "fast") -> list[list[float]]:
    """Pre-train the hidden layers of ``net`` in place as a stack of denoising autoencoders.

    ``x`` (n, d) are the training inputs in [0, 1]; net k draws its example order, its masking
    noise and (untied) decoder init from ``generators[k]``. ``n_layers``: pre-train only the
    bottom ones (None = every hidden layer). Returns, per layer, the mean reconstruction loss of
    each epoch averaged over nets (for monitoring and tests). ``backend``: ``"fast"``
    (:class:`trajviz.training.fast.SDAEStep`, hand-derived fused updates) or ``"autograd"`` (the
    reference); both draw the same randomness and compute the same updates.
    """
    if backend not in BACKENDS:
        raise ConfigError(f"engine.backend = {backend!r}: choose one of {', '.join(BACKENDS)}")
    k_nets, n = net.n_nets, x.shape[0]
    history: list[list[float]] = []
    for layer in range(net.depth if n_layers is None else min(n_layers, net.depth)):
        w, b = net.weights[layer], net.biases[layer]
        d_in, d_hid = w.shape[1], w.shape[2]
        w.requires_grad_(True)
        b.requires_grad_(True)
        c = torch.zeros(k_nets, 1, d_in, dtype=w.dtype, device=w.device, requires_grad=True)
        if cfg.tied:
            w_dec = None
            params = [w, b, c]
        else:
            w_dec = torch.stack([uniform_init(d_hid, d_in, g, w.dtype) for g in generators])
            w_dec = w_dec.to(w.device).requires_grad_(True)
            params = [w, b, c, w_dec]
        fast = SDAEStep(w, b, c, w_dec, cfg.lr) if backend == "fast" else None
        epochs_loss: list[float] = []
        bar = progress_bar(range(cfg.epochs), enabled=progress,
                           desc=f"pre-train layer {layer + 1}/{net.depth}", unit="epoch")
        for _ in bar:
            perms = torch.stack([torch.randperm(n, generator=g) for g in generators]).to(x.device)
            total, count = 0.0, 0
            if fast is not None:  # the epoch's updates net-group by net-group (trajviz.training.fast)
                idxs = [perms[:, s:s + cfg.batch_size] for s in range(0, n, cfg.batch_size)]
                total = fast.run(x, idxs, list(zip(net.weights[:layer], net.biases[:layer])),
                                 lambda clean, part: mask_noise(clean, cfg.corruption,
                                                                list(generators)[part]))
                count = n
            else:
                for start in range(0, n, cfg.batch_size):
                    idx = perms[:, start:start + cfg.batch_size]
                    with torch.no_grad():
                        clean = net.hidden(x[idx], layer) if layer else x[idx]
                        corrupted = mask_noise(clean, cfg.corruption, generators)
                    loss = sdae_loss(clean, corrupted, w, b,
                                     w.transpose(1, 2) if w_dec is None else w_dec, c)
                    grads = torch.autograd.grad(loss, params)
                    with torch.no_grad():
                        for p, g in zip(params, grads):
                            p.sub_(cfg.lr * g)
                    total += float(loss.detach()) * idx.shape[1]
                    count += idx.shape[1]
            epochs_loss.append(total / max(count, 1) / k_nets)
            bar.set_postfix(recon=f"{epochs_loss[-1]:.3f}")
            log.debug("sdae layer %d epoch loss %.4f", layer, epochs_loss[-1])
        w.requires_grad_(False)
        b.requires_grad_(False)
        history.append(epochs_loss)
    return history
