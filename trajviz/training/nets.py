"""The studies' networks: sigmoid MLPs with a softmax output, K of them stacked on a leading axis.

:class:`StackedMLP` holds the parameters of K nets of one architecture as tensors with a leading
net axis, so the K nets train together as batched matrix products. Net k's parameters depend
only on its own generator, never on which other nets share the stack.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor, nn


def layer_sizes(n_inputs: int, depth: int, width: int, n_classes: int) -> list[int]:
    """[n_inputs, width x depth, n_classes]."""
    return [n_inputs] + [width] * depth + [n_classes]


def uniform_init(fan_in: int, fan_out: int, generator: torch.Generator,
                 dtype: torch.dtype = torch.float32) -> Tensor:
    """Weights U[-1/sqrt(fan_in), 1/sqrt(fan_in)] as a (fan_in, fan_out) matrix."""
    bound = 1.0 / math.sqrt(fan_in)
    w = torch.rand(fan_in, fan_out, generator=generator, dtype=torch.float64)
    return ((2 * w - 1) * bound).to(dtype)


@dataclass
class StackedMLP:
    """K sigmoid MLPs; ``weights[l]`` is (K, fan_in, fan_out), ``biases[l]`` is (K, 1, fan_out).

    The last layer is the softmax layer (its outputs are logits); all others are sigmoid.
    """

    weights: list[Tensor]
    biases: list[Tensor]

    @classmethod
    def init(cls, sizes: Sequence[int], generators: Sequence[torch.Generator],
             dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> "StackedMLP":
        """Random init, biases 0; net k draws every layer, bottom first, from ``generators[k]``."""
        weights, biases = [], []
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            w = torch.stack([uniform_init(fan_in, fan_out, g, dtype) for g in generators])
            weights.append(w.to(device))
            biases.append(torch.zeros(len(generators), 1, fan_out, dtype=dtype, device=device))
        return cls(weights, biases)

    @property
    def n_nets(self) -> int:
        return int(self.weights[0].shape[0])

    @property
    def sizes(self) -> list[int]:
        return [int(self.weights[0].shape[1])] + [int(w.shape[2]) for w in self.weights]

    @property
    def depth(self) -> int:
        return len(self.weights) - 1

    def parameters(self) -> list[Tensor]:
        return [p for wb in zip(self.weights, self.biases) for p in wb]

    def hidden(self, x: Tensor, n_layers: int) -> Tensor:
        """Activations after the first ``n_layers`` sigmoid layers; x is (B, d) or (K, B, d)."""
        h = x
        for w, b in zip(self.weights[:n_layers], self.biases[:n_layers]):
            h = torch.sigmoid(torch.matmul(h, w) + b)
        return h

    def logits(self, x: Tensor) -> Tensor:
        """(K, B, C) logits; x is (B, d), shared by all nets, or (K, B, d), one batch per net."""
        h = self.hidden(x, self.depth)
        return torch.matmul(h, self.weights[-1]) + self.biases[-1]

    def select(self, index: Sequence[int]) -> "StackedMLP":
        idx = torch.as_tensor(list(index), dtype=torch.long, device=self.weights[0].device)
        return StackedMLP([w[idx] for w in self.weights], [b[idx] for b in self.biases])

    def state_dict(self, k: int) -> dict[str, Tensor]:
        """Net k's parameters named as in :func:`mlp_module`'s ``state_dict``."""
        out = {}
        for layer, (w, b) in enumerate(zip(self.weights, self.biases)):
            out[f"{2 * layer}.weight"] = w[k].T.detach().cpu()
            out[f"{2 * layer}.bias"] = b[k, 0].detach().cpu()
        return out

    @classmethod
    def from_state_dicts(cls, states: Sequence[dict[str, Tensor]],
                         dtype: torch.dtype = torch.float32) -> "StackedMLP":
        """Stack nets given as :func:`mlp_module` state dicts."""
        n_layers = len(states[0]) // 2
        weights = [torch.stack([torch.as_tensor(s[f"{2 * l}.weight"]).T for s in states]).to(dtype)
                   for l in range(n_layers)]
        biases = [torch.stack([torch.as_tensor(s[f"{2 * l}.bias"])[None, :] for s in states]).to(dtype)
                  for l in range(n_layers)]
        return cls(weights, biases)

    def to_module(self, k: int) -> nn.Sequential:
        """Net k as a plain ``nn.Sequential`` (Linear, Sigmoid, ..., Linear -> logits)."""
        module = mlp_module(self.sizes).to(self.weights[0].dtype)
        module.load_state_dict(self.state_dict(k))
        return module


def mlp_module(sizes: Sequence[int]) -> nn.Sequential:
    """The same architecture as one plain module: Linear/Sigmoid pairs, a final Linear (logits)."""
    layers: list[nn.Module] = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(fan_in, fan_out))
        if i < len(sizes) - 2:
            layers.append(nn.Sigmoid())
    return nn.Sequential(*layers)
