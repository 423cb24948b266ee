"""Reference weight initialisation ("kaiming_p2p" / "normal_p2p", docs/reference.md §weight-init).

Credit: the scheme follows ``init_weights`` in ``models/networks.py`` of CycleGAN's code,
github.com/junyanz/pytorch-CycleGAN-and-pix2pix, Copyright (c) 2017, Jun-Yan Zhu and Taesung Park,
BSD 2-Clause licence, as gandtr uses it (with gandtr's default gain of 0.2 instead of 0.02).
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["init_weights", "INIT_TYPES"]

INIT_TYPES = ("kaiming", "normal")


@torch.no_grad()
def init_weights(net: nn.Module, init_type: str = "kaiming", gain: float = 0.2,
                 generator: torch.Generator | None = None) -> nn.Module:
    """Initialise ``net`` in place like the reference and return it.

    Conv*/Linear weights: ``kaiming`` = kaiming_normal_(a=0, fan_in) (std sqrt(2/fan_in); for
    ConvTranspose fan_in is taken from dim 1 = out_channels, as torch does), ``normal`` = N(0, gain).
    Their biases are zeroed. BatchNorm2d: weight ~ N(1, gain), bias 0. Note gain defaults to 0.2, the
    reference's value, not upstream CycleGAN's 0.02. Seed with ``torch.manual_seed`` before calling to
    reproduce the reference's draws (it seeds 0 right before each network), or pass ``generator``.

    Example:
        >>> from dsa_plugin.models import ResnetGenerator
        >>> _ = torch.manual_seed(0); g = init_weights(ResnetGenerator(n_blocks=1), "kaiming")
    """
    if init_type not in INIT_TYPES:
        raise ValueError(f"unknown init_type {init_type!r}; allowed: {', '.join(INIT_TYPES)}")
    for module in net.modules():
        cls = type(module).__name__
        weight = getattr(module, "weight", None)
        if weight is not None and ("Conv" in cls or "Linear" in cls):
            if init_type == "normal":
                nn.init.normal_(weight, 0.0, gain, generator=generator)
            else:
                nn.init.kaiming_normal_(weight, a=0, mode="fan_in", generator=generator)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)
        elif "BatchNorm2d" in cls and weight is not None:
            nn.init.normal_(weight, 1.0, gain, generator=generator)
            nn.init.zeros_(module.bias)
    return net
