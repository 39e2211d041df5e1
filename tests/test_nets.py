import math

import numpy as np
import torch

from conftest import generators as gens
from trajviz.training.nets import StackedMLP, layer_sizes, mlp_module


def test_init_ranges_and_zero_biases():
    net = StackedMLP.init([100, 400, 400, 2], gens(0, 1))
    for w, b in zip(net.weights, net.biases):
        bound = 1 / math.sqrt(w.shape[1])
        assert w.abs().max() <= bound
        assert w.abs().max() > 0.95 * bound  # the whole range is used
        assert abs(float(w.mean())) < 0.05 * bound
        assert torch.all(b == 0)


def test_each_net_depends_only_on_its_generator():
    a = StackedMLP.init([5, 7, 3], gens(3, 4))
    b = StackedMLP.init([5, 7, 3], gens(4))
    for wa, wb in zip(a.weights, b.weights):
        assert torch.equal(wa[1], wb[0])
    assert not torch.equal(a.weights[0][0], a.weights[0][1])


def test_stacked_forward_equals_plain_module():
    net = StackedMLP.init(layer_sizes(6, 3, 8, 4), gens(0, 1, 2), dtype=torch.float64)
    x = torch.rand(5, 6, dtype=torch.float64)
    logits = net.logits(x)
    assert logits.shape == (3, 5, 4)
    for k in range(3):
        module = net.to_module(k)
        assert torch.allclose(module(x), logits[k])


def test_state_dict_round_trip():
    net = StackedMLP.init([4, 5, 2], gens(0, 1))
    states = [net.state_dict(k) for k in range(2)]
    assert set(states[0]) == set(mlp_module([4, 5, 2]).state_dict())
    again = StackedMLP.from_state_dicts(states)
    for w1, w2 in zip(net.weights, again.weights):
        assert torch.equal(w1, w2)
    sub = net.select([1])
    np.testing.assert_array_equal(sub.weights[0][0].numpy(), net.weights[0][1].numpy())
