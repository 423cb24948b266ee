"""Networks of CUT, RCF GAN and RCF^N GAN (docs/gan.md §variants).

* CUT: ``generator_X`` (instance norm), ``discriminator_Y`` (instance norm) and ``featdown`` (the patch
  MLP, its input channels read off the generator's tapped layers), each kaiming-initialised from its
  own generator seeded with ``train.seed`` as the reference seeds before every network.
* RCF GAN / RCF^N GAN: HED GAN / HED^N GAN with :class:`~dsa_plugin.models.rcf.RCF` as ``detector``
  (and ``detector_frozen``), loaded from ``model.rcf_weights`` or randomly initialised with a warning.

Example:
    >>> from dsa_plugin.gan.config import load_config
    >>> from dsa_plugin.gan.networks import build_networks
    >>> nets = build_networks(load_config("cut-tiny"))
    >>> sorted(nets)
    ['discriminator_Y', 'featdown', 'generator_X']
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn

from dsa_plugin.models import init_weights
from dsa_plugin.models.patch_mlp import PatchSampleMLP, feature_channels, parse_layers
from dsa_plugin.models.rcf import RCF, load_rcf, rcf_preprocess

__all__ = ["build_rcf", "build_featdown", "build_zoo_networks", "calibrate_random_detector", "RandomRCFWarning"]


class RandomRCFWarning(UserWarning):
    """Training runs with a randomly initialised RCF because no pretrained weights were given."""


def _seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@torch.no_grad()
def calibrate_random_detector(detector: nn.Module, fusion: nn.Conv2d, preprocess, seed: int = 0,
                              target_std: float = 2.0, target_mean: float = -1.0) -> nn.Module:
    """Rescale a random detector's fusion so its logits on a blocky synthetic image have
    ``target_std`` / ``target_mean`` (HED's :func:`dsa_plugin.gan.networks.calibrate_random_hed` and
    RCF's): otherwise every sigmoid edge map is flat and the edge loss vanishes."""
    g = _seeded(seed)
    blocks = torch.rand(2, 3, 8, 8, generator=g) * 2 - 1
    image = torch.nn.functional.interpolate(blocks, size=(64, 64), mode="nearest")
    fusion.bias.zero_()
    logits = detector(preprocess(image), no_sigmoid=True)
    gain = target_std / max(float(logits.std()), 1e-8)
    fusion.weight.mul_(gain)
    fusion.bias.fill_(target_mean - gain * float(logits.mean()))
    return detector


def build_rcf(cfg) -> RCF:
    """The pretrained RCF of ``model.rcf_weights``, or a kaiming-initialised, calibrated one with a warning."""
    if cfg.model.rcf_weights:
        return load_rcf(cfg.model.rcf_weights, device="cpu", frozen=False)
    warnings.warn("model.rcf_weights is null: training with a randomly initialised RCF (a random local-contrast "
                  "detector, not the paper's edge detector). Set model.rcf_weights=rcf (the published "
                  "rcf_bsds500_pascal_model.pth, downloaded) or a path / URL for the reference's setting.",
                  RandomRCFWarning, stacklevel=2)
    rcf = RCF(width=cfg.model.hed_width)
    init_weights(rcf, "kaiming", cfg.model.init_gain, generator=_seeded(cfg.train.seed))
    with torch.no_grad():  # zero-mean first filters: blind to flat brightness, like a real edge detector
        first = rcf.conv1_1.weight
        first -= first.mean(dim=(1, 2, 3), keepdim=True)
    return calibrate_random_detector(rcf, rcf.score_fuse, rcf_preprocess, seed=cfg.train.seed)


def build_featdown(cfg, generator: nn.Module) -> PatchSampleMLP:
    """CUT's patch MLP for ``generator``'s ``loss.nce_layers`` (kaiming_p2p, seeded as the reference)."""
    channels = feature_channels(generator, parse_layers(cfg.loss.nce_layers))
    net = PatchSampleMLP(channels, nc=cfg.model.mlp_nc)
    return init_weights(net, "kaiming", cfg.model.init_gain, generator=_seeded(cfg.train.seed))


def build_zoo_networks(cfg, generator: nn.Module, discriminator: nn.Module) -> dict[str, nn.Module]:
    """CPU networks of ``cut``, ``rcfgan`` or ``rcfngan``, named as in the reference, around the
    variant's ResNet ``generator`` and PatchGAN ``discriminator`` (built by :mod:`.networks`)."""
    nets: dict[str, nn.Module] = {"generator_X": generator, "discriminator_Y": discriminator}
    if cfg.variant == "cut":
        nets["featdown"] = build_featdown(cfg, nets["generator_X"])
        return nets
    rcf = build_rcf(cfg)
    if cfg.variant == "rcfngan":
        nets["detector"] = rcf.train()
        nets["detector_frozen"] = copy.deepcopy(rcf).eval().requires_grad_(False)
    else:
        nets["detector"] = rcf.eval().requires_grad_(False)
    return nets
