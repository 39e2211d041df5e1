import torch

from conftest import generators as gens
from trajviz.config import DatasetConfig, PretrainConfig
from trajviz.data import load_dataset
from trajviz.training.nets import StackedMLP
from trajviz.training.sdae import mask_noise, pretrain_sdae


def test_masking_noise_zeroes_a_fixed_size_subset():
    x = torch.ones(2, 7, 20)
    y = mask_noise(x, 0.25, gens(0, 1))
    assert torch.all((y == 0).sum(-1) == 5)
    assert not torch.equal(y[0], y[1])
    assert torch.equal(mask_noise(x, 0.0, gens(0, 1)), x)


def test_dae_lowers_reconstruction_loss_and_changes_only_hidden_layers():
    data = load_dataset(DatasetConfig(name="shapeset", n_train=600, n_valid=10, n_test=10))
    x = torch.as_tensor(data.train.x)
    net = StackedMLP.init([100, 32, 32, 2], gens(0, 1))
    top_before = net.weights[-1].clone()
    first_before = net.weights[0].clone()
    history = pretrain_sdae(net, x, PretrainConfig(epochs=4, lr=0.01, corruption=0.25),
                            gens(10, 11))
    assert len(history) == 2
    for losses in history:
        assert losses[-1] < losses[0]
    assert torch.equal(net.weights[-1], top_before)  # softmax layer stays random
    assert not torch.equal(net.weights[0], first_before)


def test_untied_decoder_also_trains():
    data = load_dataset(DatasetConfig(name="shapeset", n_train=300, n_valid=10, n_test=10))
    net = StackedMLP.init([100, 16, 2], gens(0))
    history = pretrain_sdae(net, torch.as_tensor(data.train.x),
                            PretrainConfig(epochs=3, tied=False), gens(1))
    assert history[0][-1] < history[0][0]
