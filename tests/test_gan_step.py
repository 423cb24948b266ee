"""One training iteration equals a slow, literal re-implementation of the reference's step order.

The ``reference_*`` functions below are written straight from docs/reference.md §gan-losses,
§gan-step-order and §gan-schedule (and the reference's epoch classes): every network call the
reference makes is made, with autograd on, in the same order, including the teacher
recomputation and the logging-only student pass. They are also the baseline of
``benchmarks/gan_step.py``.
"""

from __future__ import annotations

import copy

import pytest
import torch

from dsa_plugin.gan.config import load_config
from dsa_plugin.gan.networks import build_networks, build_optimizers
from dsa_plugin.gan.variant_steps import make_step

pytestmark = pytest.mark.usefixtures("one_thread")

# ------------------------------------------------------------------------------------------------
# literal reference


def ref_preprocess(x):
    """rgb2bgr_pre, then meanstd_pre: undo (0.5, 0.5) normalisation, subtract Caffe BGR means / 255."""
    bgr = torch.stack([x[:, 2], x[:, 1], x[:, 0]], dim=1)
    bgr = bgr * 0.5 + 0.5
    means = [0.40787054, 0.45752458, 0.48109378]
    return torch.stack([(bgr[:, c] - means[c]) / 1.0 for c in range(3)], dim=1)


def ref_adversarial(pred, is_target_real):
    """DiscriminatorLoss(MSE): target filled with int(not is_target_real) -> real 0, fake 1."""
    target = torch.full(pred.shape, int(not is_target_real), dtype=torch.float32)
    return torch.nn.MSELoss()(pred, target)


def ref_hed_optimizer(hed, lr=1e-6, wd=2e-4, betas=(0.9, 0.999)):
    """Adam with the reference per-group multipliers (hed.py:85-112), written out by hand."""
    lr_mult = {"conv": (1, 2), "conv5": (100, 200), "score": (0.01, 0.02), "fusion": (0.001, 0.002)}
    groups = {}
    for name, p in hed.named_parameters():
        head = name.split(".")[0]
        key = {"vgg5": "conv5", "fusion": "fusion"}.get(head, "score" if head.startswith("score") else "conv")
        kind = 0 if name.endswith("weight") else 1
        groups.setdefault((key, kind), []).append(p)
    return torch.optim.Adam(
        [
            {"params": ps, "lr": lr * lr_mult[k][kind], "weight_decay": wd * (1 - kind)}
            for (k, kind), ps in groups.items()
        ],
        lr=lr,
        betas=betas,
        weight_decay=wd,
    )


def ref_adam(net, lr=2e-4):
    return torch.optim.Adam(net.parameters(), lr=lr, betas=(0.5, 0.999), weight_decay=0)


def reference_hedngan_iteration(G, D, S, T, opt_G, opt_D, opt_E, real_X, real_Y, w_adv=1.0, w_edge=5.0, w_hed=1.0):
    fake_Y = G(real_X)
    # (1) discriminator
    opt_D.zero_grad()
    pred_real = D(real_Y)
    pred_fake = D(fake_Y.detach())
    D_real = w_adv * ref_adversarial(pred_real, True)
    D_fake = w_adv * ref_adversarial(pred_fake, False)
    loss_D = (D_real + D_fake) * 0.5
    loss_D.backward()
    opt_D.step()
    # (2) detector: the teacher is recomputed with autograd, as the reference does
    opt_E.zero_grad()
    target_M = T(ref_preprocess(real_X), no_sigmoid=True)
    real_M = S(ref_preprocess(real_X), no_sigmoid=True)
    E_real = w_hed * torch.nn.L1Loss()(real_M, target_M)
    fake_M = S(ref_preprocess(fake_Y.detach()), no_sigmoid=True)
    E_fake = w_hed * torch.nn.L1Loss()(fake_M, target_M)
    (E_real + E_fake).backward()
    opt_E.step()
    # (3) generator, with the updated student; teacher again and the logging-only student pass
    fake_E = S(ref_preprocess(fake_Y))
    real_E = T(ref_preprocess(real_X))
    real_E_check = S(ref_preprocess(real_X))  # noqa: F841  (logged only)
    opt_G.zero_grad()
    pred_fake = D(fake_Y)
    G_gan = w_adv * ref_adversarial(pred_fake, True)
    G_hed = w_edge * torch.nn.L1Loss()(fake_E, real_E)
    loss_G = G_gan + G_hed
    loss_G.backward()
    opt_G.step()
    return {"D": loss_D, "D_real": D_real, "D_fake": D_fake, "E_real": E_real, "E_fake": E_fake,
            "G_gan": G_gan, "G_hed": G_hed, "G": loss_G}


def reference_hedgan_iteration(G, D, H, opt_G, opt_D, real_X, real_Y, w_adv=1.0, w_edge=5.0):
    fake_Y = G(real_X)
    fake_E = H(ref_preprocess(fake_Y))
    real_E = H(ref_preprocess(real_X))
    opt_D.zero_grad()
    D_real = w_adv * ref_adversarial(D(real_Y), True)
    D_fake = w_adv * ref_adversarial(D(fake_Y.detach()), False)
    loss_D = (D_real + D_fake) * 0.5
    loss_D.backward()
    opt_D.step()
    opt_G.zero_grad()
    G_gan = w_adv * ref_adversarial(D(fake_Y), True)
    G_hed = w_edge * torch.nn.L1Loss()(fake_E, real_E)
    (G_gan + G_hed).backward()
    opt_G.step()
    return {"D": loss_D, "D_real": D_real, "D_fake": D_fake, "G_gan": G_gan, "G_hed": G_hed}


def reference_cyclegan_iteration(GX, GY, DX, DY, opts, real_X, real_Y, w_cycle=10.0):
    """Pool not yet full (first iterations): every fake is stored and returned unchanged."""
    fake_Y = GX(real_X)
    rec_X = GY(fake_Y)
    fake_X = GY(real_Y)
    rec_Y = GX(fake_X)
    opts["generator_X"].zero_grad()
    loss_GX = ref_adversarial(DX(fake_Y), True) + w_cycle * torch.nn.L1Loss()(rec_X, real_X)
    opts["generator_Y"].zero_grad()
    loss_GY = ref_adversarial(DY(fake_X), True) + w_cycle * torch.nn.L1Loss()(rec_Y, real_Y)
    loss_GX.backward()
    loss_GY.backward()
    opts["generator_X"].step()
    opts["generator_Y"].step()
    out = {"G_X": loss_GX, "G_Y": loss_GY}
    for name, D, real, fake in (("D_X", DX, real_Y, fake_Y), ("D_Y", DY, real_X, fake_X)):
        opts["discriminator" + name[1:]].zero_grad()
        loss = (ref_adversarial(D(real), True) + ref_adversarial(D(fake.detach()), False)) * 0.5
        loss.backward()
        opts["discriminator" + name[1:]].step()
        out[name] = loss
    return out


# ------------------------------------------------------------------------------------------------
# helpers




def tiny_cfg(variant, **extra):
    over = {"variant": variant, "model.ngf": 8, "model.n_blocks": 1, "model.ndf": 8, "model.n_layers": 2,
            "data.crop_size": 32, "model.hed_width": 0.25}
    if variant == "cyclegan":
        over.update({"model.norm": "instance", "model.init_type": "normal"})
    over.update(extra)
    return load_config(None, over)


def batches(n, b=2, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.rand(b, 3, size, size, generator=g) * 2 - 1, torch.rand(b, 3, size, size, generator=g) * 2 - 1)
            for _ in range(n)]


def snapshot(net):
    return {k: v.clone() for k, v in net.state_dict().items()}


def assert_same_state(a, b, atol):
    for key in a:
        assert torch.allclose(a[key].float(), b[key].float(), atol=atol, rtol=0), key


# ------------------------------------------------------------------------------------------------
# tests


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_hedngan_iterations_match_literal_reference():
    cfg = tiny_cfg("hedngan")
    nets = build_networks(cfg)
    ref = {k: copy.deepcopy(v) for k, v in nets.items()}
    ref["detector_frozen"].requires_grad_(True)  # reference: the teacher is only absent from optimizers
    ours = make_step(cfg, nets, build_optimizers(cfg, nets))
    opt_G, opt_D = ref_adam(ref["generator_X"]), ref_adam(ref["discriminator_Y"])
    opt_E = ref_hed_optimizer(ref["detector"])
    teacher0 = snapshot(nets["detector_frozen"])

    for it, (day, night) in enumerate(batches(3)):
        got, visuals = ours(day, night)
        want = reference_hedngan_iteration(ref["generator_X"], ref["discriminator_Y"], ref["detector"],
                                           ref["detector_frozen"], opt_G, opt_D, opt_E, day, night)
        for key, value in want.items():
            assert abs(got[key].item() - value.item()) <= 1e-5, (it, key, got[key].item(), value.item())
        # student == teacher at the start: the real-image term is exactly zero
        # (docs/reference.md §first-detector-step)
        if it == 0:
            assert got["E_real"].item() == 0.0
        assert visuals["edge_fake"].shape == (2, 1, 32, 32)
    assert got["E_real"].item() > 0  # later steps are informative
    for name in ("generator_X", "discriminator_Y", "detector"):
        assert_same_state(snapshot(nets[name]), snapshot(ref[name]), atol=1e-5)
    assert_same_state(snapshot(nets["detector_frozen"]), teacher0, atol=0)  # the teacher never moves
    assert all(p.grad is None for p in nets["detector_frozen"].parameters())
    assert not torch.equal(snapshot(nets["detector"])["vgg5.1.weight"], teacher0["vgg5.1.weight"])  # student learns


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_hedgan_iterations_match_and_detector_stays_frozen():
    cfg = tiny_cfg("hedgan")
    nets = build_networks(cfg)
    ref = {k: copy.deepcopy(v) for k, v in nets.items()}
    ref["detector"].requires_grad_(True)
    ours = make_step(cfg, nets, build_optimizers(cfg, nets))
    opt_G, opt_D = ref_adam(ref["generator_X"]), ref_adam(ref["discriminator_Y"])
    hed0 = snapshot(nets["detector"])
    for day, night in batches(2):
        got, _ = ours(day, night)
        want = reference_hedgan_iteration(ref["generator_X"], ref["discriminator_Y"], ref["detector"],
                                          opt_G, opt_D, day, night)
        for key, value in want.items():
            assert abs(got[key].item() - value.item()) <= 1e-5, key
    assert_same_state(snapshot(nets["detector"]), hed0, atol=0)
    assert_same_state(snapshot(nets["generator_X"]), snapshot(ref["generator_X"]), atol=1e-5)


def test_cyclegan_iterations_match_literal_reference():
    cfg = tiny_cfg("cyclegan", **{"train.batch_size": 1})
    nets = build_networks(cfg)
    # the reference seeds 0 before each network: both generators (and both discriminators) start equal
    assert_same_state(snapshot(nets["generator_X"]), snapshot(nets["generator_Y"]), atol=0)
    ref = {k: copy.deepcopy(v) for k, v in nets.items()}
    ours = make_step(cfg, nets, build_optimizers(cfg, nets))
    opts = {k: ref_adam(v) for k, v in ref.items()}
    for day, night in batches(3, b=1):
        got, _ = ours(day, night)
        want = reference_cyclegan_iteration(ref["generator_X"], ref["generator_Y"], ref["discriminator_X"],
                                            ref["discriminator_Y"], opts, day, night)
        for key, value in want.items():
            assert abs(got[key].item() - value.item()) <= 1e-5, key
    for name in nets:
        assert_same_state(snapshot(nets[name]), snapshot(ref[name]), atol=1e-5)


def test_losses_use_real0_fake1_labels_and_lambda_p2p():
    from dsa_plugin.gan.losses import discriminator_loss, lsgan_loss
    from dsa_plugin.gan.schedule import lambda_p2p

    zeros, ones = torch.zeros(1, 1, 3, 3), torch.ones(1, 1, 3, 3)
    assert lsgan_loss(zeros, real=True).item() == 0.0 and lsgan_loss(ones, real=False).item() == 0.0
    total, real, fake = discriminator_loss(ones, zeros, weight=2.0)
    assert (real.item(), fake.item(), total.item()) == (2.0, 2.0, 2.0)
    factors = [lambda_p2p(e, 50, 25) for e in range(50)]
    assert factors[:25] == [1.0] * 25
    assert factors[25] == pytest.approx(1 - 1 / 26) and factors[49] == pytest.approx(1 / 26)
    cyc = [lambda_p2p(e, 100, 50) for e in (49, 50, 99)]
    assert cyc == pytest.approx([1.0, 1 - 1 / 51, 1 / 51])


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_optimizers_follow_reference_settings():
    cfg = load_config("hedngan", {"model.hed_width": 0.125, "model.ngf": 8, "model.n_blocks": 0, "model.ndf": 8})
    nets = build_networks(cfg)
    opts = build_optimizers(cfg, nets)
    assert set(opts) == {"generator_X", "discriminator_Y", "detector"}
    g = opts["generator_X"].param_groups[0]
    assert (g["lr"], g["betas"], g["weight_decay"]) == (2e-4, (0.5, 0.999), 0.0)
    got = {grp["name"]: [grp["lr"], grp["weight_decay"]] for grp in opts["detector"].param_groups}
    want = {
        "conv.weight": (1e-6, 2e-4),
        "conv.bias": (2e-6, 0),
        "conv5.weight": (1e-4, 2e-4),
        "conv5.bias": (2e-4, 0),
        "score.weight": (1e-8, 2e-4),
        "score.bias": (2e-8, 0),
        "fusion.weight": (1e-9, 2e-4),
        "fusion.bias": (2e-9, 0),
    }
    assert list(got) == list(want)
    for name, (lr, wd) in want.items():
        assert got[name] == pytest.approx([lr, wd], rel=1e-12, abs=0), name
    assert opts["detector"].param_groups[0]["betas"] == (0.9, 0.999)
    assert not any(p.requires_grad for p in nets["detector_frozen"].parameters())
