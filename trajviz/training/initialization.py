"""How a run's net is initialized before fine-tuning: the pre-training method spec, applied.

A method spec (:class:`~trajviz.config.MethodSpec`, grammar in docs/config.md) names a base
pre-training method and the studies' modifications of it:

- ``BASE`` in ``none`` (random init only), ``sdae`` (:func:`~trajviz.training.sdae.pretrain_sdae`),
  ``rbm`` (:func:`~trajviz.training.rbm.pretrain_rbm`);
- ``layers=K``: pre-train only the bottom K hidden layers (Erhan et al. 2010, sec. 7; F8 (b));
- ``reinit=L,...``: pre-train every layer, then put hidden layers L back to their random initial
  weights and zero biases (Erhan et al. 2009, sec. 6, "pre-training only some layers"; F8 (a));
- ``hist``: resample every weight of each pre-trained layer independently from the histogram of
  that layer's pre-trained weights, biases from the biases' histogram (Erhan et al. 2010,
  sec. 6.2, "marginal conditioning"; F7).

Randomness: pre-training, then histogram resampling, draw from net k's ``pretrain`` generator
in that order. Re-initialized layers get back exactly the weights the net had before
pre-training, which came from its ``init`` stream: with ``pretrain.shared_init`` (the paired
design) the same draw a ``none`` run of that seed starts from, so a comparison isolates what
pre-training of the other layers did; without it, an independent draw of the same distribution.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from trajviz.config import PRETRAIN_METHODS, MethodSpec, PretrainConfig, parse_method
from trajviz.errors import ConfigError
from trajviz.training.nets import StackedMLP
from trajviz.training.sdae import pretrain_sdae
from trajviz.training.rbm import pretrain_rbm

log = logging.getLogger(__name__)

#: base method -> greedy layer-wise pre-trainer (net, x, cfg, generators, n_layers=, progress=).
#: config.PRETRAIN_METHODS must list exactly these plus "none" (a test checks).
PRETRAINERS: dict[str, Callable[..., list[list[float]]]] = {
    "sdae": pretrain_sdae,
    "rbm": pretrain_rbm,
}
#: pre-trainers taking ``backend=`` (engine.backend: "fast" or "autograd"; trajviz/training/fast.py).
_HAS_FAST_PATH = {"sdae"}


def histogram_sample(values: Tensor, n: int, bins: int, generator: torch.Generator) -> Tensor:
    """``n`` independent draws from the histogram of ``values`` (1-D): a bin is chosen with
    probability proportional to its count, then a point uniformly inside it.

    Returns float64 on the CPU. Constant ``values`` give that constant.
    """
    v = values.detach().reshape(-1).double().cpu()
    lo, hi = float(v.min()), float(v.max())
    if hi <= lo:
        return torch.full((n,), lo, dtype=torch.float64)
    counts = torch.histc(v, bins=bins, min=lo, max=hi)
    which = torch.multinomial(counts, n, replacement=True, generator=generator)
    width = (hi - lo) / bins
    return lo + (which.double() + torch.rand(n, generator=generator, dtype=torch.float64)) * width


@torch.no_grad()
def histogram_init(net: StackedMLP, layers: Sequence[int], generators: Sequence[torch.Generator],
                   bins: int = 100) -> None:
    """Replace, in place, the weights and biases of the given layers (0-based) of every net by
    independent draws from the histograms of that net's own layer weights and layer biases.

    The marginal distribution of each layer's weights is kept; their arrangement (which input
    connects to which unit with what weight) is new. Net k draws from ``generators[k]``.
    """
    for layer in layers:
        for params in (net.weights, net.biases):
            p = params[layer]
            for k, g in enumerate(generators):
                fresh = histogram_sample(p[k], p[k].numel(), bins, g)
                p[k].copy_(fresh.view(p[k].shape).to(p.dtype))


def method_attrs(method: str | MethodSpec, depth: int) -> dict[str, Any]:
    """Run attributes describing a method spec (docs/format.md): ``method`` (the spec),
    ``pretrain_layers`` (hidden layers pre-trained, bottom first), ``reinit_layers`` (1-based),
    ``histogram_init``. The base method goes in the run's ``pretrain`` attribute."""
    spec = parse_method(method) if isinstance(method, str) else method
    return {"method": spec.spec, "pretrain_layers": spec.pretrained_layers(depth),
            "reinit_layers": np.asarray(spec.reinit, dtype=np.int64),
            "histogram_init": spec.histogram}


def apply_method(net: StackedMLP, method: str | MethodSpec, x: Tensor, cfg: PretrainConfig,
                 generators: Sequence[torch.Generator], *, progress: bool = False,
                 backend: str = "fast") -> list[list[float]]:
    """Initialize the randomly initialized ``net`` in place as ``method`` says (module docstring).

    ``x`` (n, d): training inputs in [0, 1]. ``generators[k]``: net k's pre-training stream.
    Returns the pre-trainer's per-layer monitoring history (empty for ``none``).
    ``backend`` (``engine.backend``) reaches the pre-trainers that have a fast path (sdae).
    """
    spec = parse_method(method) if isinstance(method, str) else method
    if spec.base == "none":
        return []
    try:
        pretrainer = PRETRAINERS[spec.base]
    except KeyError:
        raise ConfigError(f"pre-training method {spec.base!r} has no implementation; choose one of "
                          f"{', '.join(PRETRAIN_METHODS)}") from None
    bad = [l for l in spec.reinit if l > net.depth]
    if bad or (spec.layers is not None and spec.layers > net.depth):
        raise ConfigError(f"method {spec.spec!r} names a hidden layer beyond the net's "
                          f"depth {net.depth}")
    initial = {l - 1: (net.weights[l - 1].clone(), net.biases[l - 1].clone()) for l in spec.reinit}
    n_layers = spec.pretrained_layers(net.depth)
    options = {"backend": backend} if spec.base in _HAS_FAST_PATH else {}
    history = pretrainer(net, x, cfg, generators, n_layers=n_layers, progress=progress, **options)
    with torch.no_grad():
        for layer, (w0, _) in initial.items():
            net.weights[layer].copy_(w0)
            net.biases[layer].zero_()
    if spec.histogram:
        kept = [l for l in range(n_layers) if l not in initial]
        histogram_init(net, kept, generators, bins=cfg.hist_bins)
    log.debug("method %s: pre-trained %d layers, re-initialized %s, histogram %s", spec.spec,
              n_layers, sorted(l + 1 for l in initial), spec.histogram)
    return history
