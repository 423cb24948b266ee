"""Literal re-implementations of the reference's CUT / RCF pieces for tests/test_gan_zoo.py.

Written straight from the reference's description (gandtr ``rcf.py``, ``PatchSampleF``,
``PatchNCELoss`` / ``MultilayerPatchNCELoss``, ``SupervisedCutEpoch``, ``SupervisedHedNGanEpoch``
and the RCF wrappers of ``train/rcfngan.yml``): every call the reference makes, with autograd on,
in its order. Patch positions: the reference draws them with NumPy's global RNG; here they come
from a torch.Generator that the test seeds like the step's.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

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
            count = int(min(num_patches, feat_reshape.shape[1]))
            patch_id = torch.randperm(feat_reshape.shape[1], generator=rng)[:count]
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
