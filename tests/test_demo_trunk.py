"""The memoised frozen trunk of the demo's VGG16: same outputs and gradients as the plain network,
one trunk forward per distinct image, and a store that round-trips."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from dsa_plugin.demo.trunk import MemoSequential, freeze_all_but_last_convs, image_key


def _layers() -> list[nn.Module]:
    torch.manual_seed(0)
    return [nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
            nn.Conv2d(8, 4, 3, padding=1), nn.ReLU()]


def test_freeze_all_but_last_convs_returns_the_first_trainable_layer():
    layers = _layers()
    assert freeze_all_but_last_convs(layers, 1) == 5
    assert not any(p.requires_grad for layer in layers[:5] for p in layer.parameters())
    assert all(p.requires_grad for p in layers[5].parameters())
    with pytest.raises(ValueError, match="trainable_convs must be in 1..3"):
        freeze_all_but_last_convs(_layers(), 4)


def test_memoised_trunk_gives_the_plain_outputs_and_gradients():
    layers = _layers()
    frozen = freeze_all_but_last_convs(layers, 1)
    plain = nn.Sequential(*layers)
    memo = MemoSequential(*layers, frozen=frozen)  # the same modules: same weights
    x = torch.rand(3, 3, 16, 12)
    for _ in range(2):  # the second pass is served from the store
        memo.zero_grad()
        memo(x).square().sum().backward()
        got = layers[5].weight.grad.clone()
        plain.zero_grad()
        plain(x).square().sum().backward()
        torch.testing.assert_close(got, layers[5].weight.grad, rtol=1e-5, atol=1e-6)
    assert (memo.misses, memo.hits) == (3, 3)
    assert list(memo.state_dict()) == list(plain.state_dict())  # checkpoints look unwrapped


def test_key_is_the_content_not_the_tensor_object():
    x = torch.rand(3, 8, 8)
    assert image_key(x) == image_key(x.clone())
    y = x.clone()
    y[0, 0, 0] += 1e-7
    assert image_key(x) != image_key(y)
    assert image_key(x) != image_key(x.double())


def test_store_round_trip(tmp_path):
    layers = _layers()
    memo = MemoSequential(*layers, frozen=freeze_all_but_last_convs(layers, 1))
    x = torch.rand(2, 3, 16, 12)
    expected = memo(x).detach()
    memo.save(tmp_path / "trunk.pt")
    other = MemoSequential(*layers, frozen=memo.frozen).load(tmp_path / "trunk.pt")
    torch.testing.assert_close(other(x), expected)
    assert (other.hits, other.misses) == (2, 0)
