"""Architectures: state-dict keys/shapes exactly as docs/reference.md §state-dicts, sizes, counts, init."""
from __future__ import annotations

import math

import pytest
import torch

from dsa_plugin.models import (
    HED,
    HEDPreprocess,
    NLayerDiscriminator,
    ResnetGenerator,
    build_generator,
    hed_preprocess,
    init_weights,
)

# ---- expected layouts, written out from docs/reference.md §state-dicts (not derived from our modules) ----


def _bn(prefix: str, c: int) -> list[tuple[str, tuple]]:
    return [(f"{prefix}.weight", (c,)), (f"{prefix}.bias", (c,)), (f"{prefix}.running_mean", (c,)),
            (f"{prefix}.running_var", (c,)), (f"{prefix}.num_batches_tracked", ())]


def spec_generator(norm: str, n_blocks: int = 9) -> list[tuple[str, tuple]]:
    """docs/reference.md §state-dicts (batch and instance norm).

    For ``n_blocks`` residual blocks at model.10 ...; ngf 64.
    """
    inst = norm == "instance"
    out: list[tuple[str, tuple]] = []

    def conv(idx, shape, bn_idx=None, c=None):
        out.append((f"model.{idx}.weight", shape))
        if inst:
            out.append((f"model.{idx}.bias", (shape[0],)))
        elif bn_idx is not None:
            out.extend(_bn(f"model.{bn_idx}", c))

    conv(1, (64, 3, 7, 7), 2, 64)
    conv(4, (128, 64, 3, 3), 5, 128)
    conv(7, (256, 128, 3, 3), 8, 256)
    for b in range(10, 10 + n_blocks):
        for ci, ni in ((1, 2), (5, 6)):
            out.append((f"model.{b}.conv_block.{ci}.weight", (256, 256, 3, 3)))
            if inst:
                out.append((f"model.{b}.conv_block.{ci}.bias", (256,)))
            else:
                out.extend(_bn(f"model.{b}.conv_block.{ni}", 256))
    up1 = 10 + n_blocks
    for idx, shape, c in ((up1, (256, 128, 3, 3), 128), (up1 + 3, (128, 64, 3, 3), 64)):
        out.append((f"model.{idx}.weight", shape))  # ConvTranspose: (in, out, k, k)
        if inst:
            out.append((f"model.{idx}.bias", (c,)))
        else:
            out.extend(_bn(f"model.{idx + 1}", c))
    head = up1 + 7
    out += [(f"model.{head}.weight", (3, 64, 7, 7)), (f"model.{head}.bias", (3,))]
    return out


def spec_discriminator(norm: str) -> list[tuple[str, tuple]]:
    """docs/reference.md §state-dicts, discriminator."""
    out = [("model.0.weight", (64, 3, 4, 4)), ("model.0.bias", (64,))]
    for idx, shape in ((2, (128, 64, 4, 4)), (5, (256, 128, 4, 4)), (8, (512, 256, 4, 4))):
        out.append((f"model.{idx}.weight", shape))
        if norm == "instance":
            out.append((f"model.{idx}.bias", (shape[0],)))
        else:
            out.extend(_bn(f"model.{idx + 1}", shape[0]))
    out += [("model.11.weight", (1, 512, 4, 4)), ("model.11.bias", (1,))]
    return out


def spec_hed() -> list[tuple[str, tuple]]:
    """docs/reference.md §state-dicts, HED."""
    convs = [("vgg1.0", (64, 3, 3, 3)), ("vgg1.2", (64, 64, 3, 3)),
             ("vgg2.1", (128, 64, 3, 3)), ("vgg2.3", (128, 128, 3, 3)),
             ("vgg3.1", (256, 128, 3, 3)), ("vgg3.3", (256, 256, 3, 3)), ("vgg3.5", (256, 256, 3, 3)),
             ("vgg4.1", (512, 256, 3, 3)), ("vgg4.3", (512, 512, 3, 3)), ("vgg4.5", (512, 512, 3, 3)),
             ("vgg5.1", (512, 512, 3, 3)), ("vgg5.3", (512, 512, 3, 3)), ("vgg5.5", (512, 512, 3, 3)),
             ("score1", (1, 64, 1, 1)), ("score2", (1, 128, 1, 1)), ("score3", (1, 256, 1, 1)),
             ("score4", (1, 512, 1, 1)), ("score5", (1, 512, 1, 1)), ("fusion.0", (1, 5, 1, 1))]
    return [e for name, shape in convs for e in ((f"{name}.weight", shape), (f"{name}.bias", (shape[0],)))]


def layout(module: torch.nn.Module) -> list[tuple[str, tuple]]:
    return [(k, tuple(v.shape)) for k, v in module.state_dict().items()]


# ---- keys, shapes, counts ----


@pytest.mark.parametrize("norm,entries,params", [("batch", 140, 11_383_427), ("instance", 48, 11_378_179)])
def test_generator_9_blocks_keys_shapes_and_count(norm, entries, params):
    g = ResnetGenerator(norm=norm)
    spec = spec_generator(norm, 9)
    assert len(spec) == entries
    assert layout(g) == spec  # full ordered key list and every shape
    assert sum(p.numel() for p in g.parameters()) == params
    if norm == "batch":
        assert g.state_dict()["model.2.num_batches_tracked"].dtype == torch.int64


def test_generator_small_n_blocks_layout():
    for norm in ("batch", "instance"):
        assert layout(ResnetGenerator(n_blocks=2, norm=norm)) == spec_generator(norm, 2)


@pytest.mark.parametrize("norm,entries,params", [("batch", 22, 2_765_633), ("instance", 10, 2_764_737)])
def test_discriminator_keys_shapes_and_count(norm, entries, params):
    d = NLayerDiscriminator(norm=norm)
    assert len(spec_discriminator(norm)) == entries
    assert layout(d) == spec_discriminator(norm)
    assert sum(p.numel() for p in d.parameters()) == params


def test_hed_keys_shapes_and_count():
    h = HED()
    assert len(spec_hed()) == 38
    assert layout(h) == spec_hed()
    assert sum(p.numel() for p in h.parameters()) == 14_716_171
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in h.modules())


# ---- shapes of outputs ----


@pytest.mark.parametrize("hw,expected", [((36, 44), (36, 44)), ((30, 42), (32, 44)), ((33, 37), (36, 40))])
def test_generator_output_size_is_4_ceil(hw, expected):
    g = ResnetGenerator(n_blocks=1, ngf=8, norm="instance").eval()
    y = g(torch.rand(2, 3, *hw) * 2 - 1)
    assert y.shape == (2, 3, *expected)
    assert y.abs().max() <= 1.0  # Tanh


def test_discriminator_patch_map_size():
    d = NLayerDiscriminator(ndf=8, norm="instance")
    assert d(torch.zeros(1, 3, 256, 256)).shape == (1, 1, 30, 30)
    assert d(torch.zeros(1, 3, 272, 362)).shape == (1, 1, 32, 43)


def test_hed_output_size_sigmoid_and_logits():
    h = HED().eval()
    x = hed_preprocess(torch.rand(2, 3, 36, 44) * 2 - 1)
    with torch.no_grad():
        logits = h(x, no_sigmoid=True)
        probs = h(x)
    assert logits.shape == probs.shape == (2, 1, 36, 44)
    torch.testing.assert_close(probs, torch.sigmoid(logits))


def test_hed_preprocess_is_bgr_01_minus_caffe_means():
    x = torch.rand(2, 3, 5, 6) * 2 - 1
    y = hed_preprocess(x)
    x01 = (x + 1) / 2
    means = torch.tensor([104.00698793, 116.66876762, 122.67891434]) / 255  # B, G, R
    for c_out, c_in in enumerate((2, 1, 0)):
        torch.testing.assert_close(y[:, c_out], x01[:, c_in] - means[c_out])
    torch.testing.assert_close(HEDPreprocess()(x), y)
    x.requires_grad_(True)
    hed_preprocess(x).sum().backward()
    assert torch.all(x.grad == 0.5)
    with pytest.raises(ValueError, match="B, 3, H, W"):
        hed_preprocess(torch.zeros(3, 5, 5))


# ---- HED optimizer groups ----


def test_hed_parameter_groups_lrs_and_decay():
    groups = HED().parameter_groups(1e-6, 2e-4)
    lrs = [g["lr"] for g in groups]
    assert lrs == pytest.approx([1e-6, 2e-6, 1e-4, 2e-4, 1e-8, 2e-8, 1e-9, 2e-9], rel=1e-9)
    assert [g["weight_decay"] for g in groups] == pytest.approx([2e-4, 0, 2e-4, 0, 2e-4, 0, 2e-4, 0])
    assert [g["name"] for g in groups] == ["conv.weight", "conv.bias", "conv5.weight", "conv5.bias",
                                           "score.weight", "score.bias", "fusion.weight", "fusion.bias"]
    assert [len(g["params"]) for g in groups] == [10, 10, 3, 3, 5, 5, 1, 1]
    opt = torch.optim.SGD(groups, lr=1.0)  # every group valid for an optimizer, every param once
    assert sum(len(g["params"]) for g in opt.param_groups) == 38


# ---- initialisation ----


def test_init_kaiming_statistics():
    torch.manual_seed(0)
    g = init_weights(ResnetGenerator(n_blocks=9, norm="batch"), "kaiming")  # default gain 0.2
    bn_w = torch.cat([m.weight.flatten() for m in g.modules() if isinstance(m, torch.nn.BatchNorm2d)])
    bn_b = torch.cat([m.bias.flatten() for m in g.modules() if isinstance(m, torch.nn.BatchNorm2d)])
    assert bn_w.numel() > 4000
    assert abs(bn_w.mean().item() - 1.0) < 0.02 and abs(bn_w.std().item() - 0.2) < 0.01
    assert torch.all(bn_b == 0)
    block_conv = g.model[10].conv_block[1].weight  # fan_in 256*9
    assert block_conv.std().item() == pytest.approx(math.sqrt(2 / (256 * 9)), rel=0.02)
    up = g.model[19].weight  # ConvTranspose (256, 128, 3, 3): torch's fan_in is dim 1 = 128 * 9
    assert up.std().item() == pytest.approx(math.sqrt(2 / (128 * 9)), rel=0.02)
    assert torch.all(g.model[26].bias == 0)


def test_init_normal_statistics_and_seeding():
    torch.manual_seed(0)
    d = init_weights(NLayerDiscriminator(norm="instance"), "normal")
    w = d.model[8].weight
    assert abs(w.mean().item()) < 0.005 and w.std().item() == pytest.approx(0.2, rel=0.02)
    assert torch.all(d.model[8].bias == 0)
    torch.manual_seed(0)
    d2 = init_weights(NLayerDiscriminator(norm="instance"), "normal")
    assert torch.equal(d2.model[8].weight, w)
    with pytest.raises(ValueError, match="xavier.*allowed: kaiming, normal"):
        init_weights(d, "xavier")


# ---- construction from reference params ----


def test_build_generator_from_reference_params():
    g = build_generator({"architecture": "official_resnet_generator", "no_antialias": True,
                         "no_antialias_up": True, "input_nc": 3, "output_nc": 3, "n_blocks": 2,
                         "norm_layer": "instance"})
    assert layout(g) == spec_generator("instance", 2)
    with pytest.raises(ValueError, match="unknown norm 'group'"):
        build_generator({"architecture": "official_resnet_generator", "norm_layer": "group"})
    with pytest.raises(ValueError, match="unsupported generator architecture 'unet'"):
        build_generator({"architecture": "unet"})
    with pytest.raises(ValueError, match="no_antialias"):
        build_generator({"architecture": "official_resnet_generator", "no_antialias": False})
    with pytest.raises(ValueError, match=r"unknown generator option\(s\) \['foo'\]"):
        build_generator({"architecture": "official_resnet_generator", "foo": 1})
