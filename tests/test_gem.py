"""GeM pooling and cirtorch-compatible GeM networks (docs/reference.md §embedding-state-dict, §embedding-training)."""
from __future__ import annotations

import torch

from dsa_plugin.models.checkpoint_files import state_dict_sha256
from dsa_plugin.models.checkpoints import load_gem, save_network
from dsa_plugin.models.gem import GeM, GeMNet, embed, gem, gem_resnet101, gem_small, gem_vgg16


def test_gem_matches_formula_and_limits():
    x = torch.rand(2, 4, 5, 7, generator=torch.Generator().manual_seed(0))
    for p in (1.0, 3.0, 4.5):
        expected = (x.clamp(min=1e-6) ** p).mean(dim=(2, 3), keepdim=True) ** (1 / p)
        torch.testing.assert_close(gem(x, p), expected)
    torch.testing.assert_close(gem(x, 1.0), x.mean(dim=(2, 3), keepdim=True))
    big = gem(x, 200.0)
    assert torch.allclose(big, x.amax(dim=(2, 3), keepdim=True), atol=0.02)


def test_gem_module_parameter():
    pool = GeM()
    assert pool.p.shape == (1,) and pool.p.item() == 3.0 and pool.p.requires_grad
    assert [k for k in pool.state_dict()] == ["p"]
    x = torch.rand(2, 3, 4, 4)
    torch.testing.assert_close(pool(x), gem(x, 3.0))
    pool(x).sum().backward()
    assert pool.p.grad is not None and torch.isfinite(pool.p.grad).all()


def test_gemnet_columns_unit_norm_and_meta():
    net = gem_small(outputdim=16).eval()
    x = torch.rand(3, 3, 40, 52)
    out = net(x)
    assert out.shape == (16, 3)  # D x B, cirtorch convention
    torch.testing.assert_close(out.norm(dim=0), torch.ones(3), atol=1e-4, rtol=0)
    # literal: features -> GeM -> L2N
    f = net.features(x)
    d = (f.clamp(min=1e-6) ** 3).mean(dim=(2, 3)) ** (1 / 3)
    torch.testing.assert_close(out.t(), d / (d.norm(dim=1, keepdim=True) + 1e-6))
    assert net.meta == {"architecture": "small", "local_whitening": False, "pooling": "gem", "regional": False,
                        "whitening": False, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                        "outputdim": 16}


class _RowsNet(torch.nn.Module):
    def forward(self, x):
        return torch.arange(x.shape[0] * 5, dtype=torch.float32).view(x.shape[0], 5)


def test_embed_handles_both_orientations():
    net = gem_small(outputdim=8).eval()
    x = torch.rand(3, 3, 32, 32)
    torch.testing.assert_close(embed(net, x), net(x).t())
    rows = _RowsNet()
    torch.testing.assert_close(embed(rows, x), rows(x))
    sq = gem_small(outputdim=4).eval()  # D == B: cirtorch meta -> columns
    x4 = torch.rand(4, 3, 32, 32)
    torch.testing.assert_close(embed(sq, x4), sq(x4).t())
    assert embed(net, x[:1]).shape == (1, 8)


def test_vgg16_and_resnet101_keys_as_published():
    vgg = gem_vgg16(device="meta")  # keys and shapes only: no memory, instant
    sd = vgg.state_dict()
    idx = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
    chans = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    expected = [(f"features.{i}.{s}", shape) for i, c, cin in zip(idx, chans, [3] + chans[:-1])
                for s, shape in (("weight", (c, cin, 3, 3)), ("bias", (c,)))] + [("pool.p", (1,))]
    assert [(k, tuple(v.shape)) for k, v in sd.items()] == expected
    assert len(sd) == 27 and vgg.meta["outputdim"] == 512
    r101 = gem_resnet101(device="meta")
    sd = r101.state_dict()
    assert len(sd) == 625 and r101.meta["outputdim"] == 2048
    assert tuple(sd["features.0.weight"].shape) == (64, 3, 7, 7) and "features.0.bias" not in sd
    assert "features.1.running_mean" in sd and "features.6.22.conv3.weight" in sd
    assert "features.7.0.downsample.0.weight" in sd and "features.7.1.downsample.0.weight" not in sd
    assert tuple(sd["pool.p"].shape) == (1,)


def test_load_gem_reference_embedding_file(tmp_path):
    vgg = gem_vgg16()
    with torch.no_grad():
        vgg.pool.p.fill_(2.7)
    params = {"architecture": "cirnet", "cir_architecture": "vgg16", "local_whitening": False,
              "pooling": "gem", "pretrained": True, "regional": False, "whitening": False}
    save_network(tmp_path / "embed_best.pth", vgg, params, runtime={"wrappers": "cirfaketuplebatch"})
    net = load_gem(tmp_path / "embed_best.pth")
    assert isinstance(net, GeMNet) and net.meta["architecture"] == "vgg16" and not net.training
    assert state_dict_sha256(net.state_dict()) == state_dict_sha256(vgg.state_dict())
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(net(x), vgg.eval()(x))


def test_standardized_small_net_ignores_exposure_and_colour_cast(tmp_path):
    from dsa_plugin.evaluation.networks import network_from_checkpoint
    from dsa_plugin.models.gem import standardize

    torch.manual_seed(0)
    x = torch.rand(2, 3, 40, 56) * 4 - 2
    gain, offset = torch.tensor([0.3, 0.5, 0.2]).view(1, 3, 1, 1), torch.tensor([-1.0, 0.4, 0.1]).view(1, 3, 1, 1)
    torch.testing.assert_close(standardize(x * gain + offset, eps=0.0), standardize(x, eps=0.0), atol=1e-4, rtol=1e-4)

    net = gem_small(outputdim=16, standardize=True).eval()
    plain = gem_small(outputdim=16).eval()
    assert net.meta["standardize"] and "standardize" not in plain.meta
    moved = (net(x) - net(x * gain + offset)).abs().max()
    assert moved < 0.01 and (plain(x) - plain(x * gain + offset)).abs().max() > 10 * moved
    # the Standardize layer shifts the conv keys by one; checkpoints with or without params load back
    assert "features.1.weight" in net.state_dict() and "features.0.weight" not in net.state_dict()
    save_network(tmp_path / "n.pth", net, {"architecture": "gem_small", "outputdim": 16, "standardize": True})
    for obj in (torch.load(tmp_path / "n.pth", weights_only=True), net.state_dict()):
        loaded = network_from_checkpoint(obj).eval()
        torch.testing.assert_close(loaded(x), net(x))
