"""Exponential moving average of a generator's weights (``train.ema``).

Not part of the reference (its GANs train 50-100 epochs, ``train.ema: 0`` is the reference). In a
CPU-sized run the adversarial game is far from settled: from one iteration to the next the
generator swings between colour casts and repaints a checkerboard from its transposed
convolutions. The average of its recent weights (Karras et al., 2018; Yazıcı et al., 2019) keeps
what the iterates agree on and drops the swings, for free: training still updates the raw weights,
the average is only read. With ``train.ema > 0`` the saved ``generator_X`` is the average (the
state file keeps both, so a resumed run continues the same average bit for bit).

Example:
    >>> import torch
    >>> net = torch.nn.Linear(2, 1, bias=False)
    >>> _ = torch.nn.init.zeros_(net.weight)
    >>> ema = WeightAverage(net, decay=0.5)
    >>> _ = torch.nn.init.ones_(net.weight)
    >>> ema.update(net)
    >>> ema.module.weight.tolist()
    [[0.5, 0.5]]
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def ema_update_(average: nn.Module, current: nn.Module, decay: float) -> None:
    """``average ← decay · average + (1 − decay) · current`` for parameters (in place); buffers
    (BatchNorm statistics, counters) are copied from ``current``.

    Example:
        >>> a, c = torch.nn.BatchNorm1d(1), torch.nn.BatchNorm1d(1)
        >>> _ = torch.nn.init.zeros_(a.weight), torch.nn.init.ones_(c.weight), c.running_mean.fill_(3.0)
        >>> ema_update_(a, c, decay=0.75)
        >>> a.weight.item(), a.running_mean.item()
        (0.25, 3.0)
    """
    with torch.no_grad():
        for a, c in zip(average.parameters(), current.parameters()):
            a.lerp_(c.detach(), 1.0 - decay)
        for a, c in zip(average.buffers(), current.buffers()):
            a.copy_(c)


class WeightAverage:
    """Holds the averaged copy of ``net`` (``.module``, eval-only, no gradients).

    Example:
        >>> avg = WeightAverage(torch.nn.Linear(2, 2), decay=0.99)
        >>> avg.module.training, any(p.requires_grad for p in avg.module.parameters())
        (False, False)
    """

    def __init__(self, net: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"train.ema must be in (0, 1), got {decay}")
        self.decay = decay
        self.module = copy.deepcopy(net).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    def update(self, net: nn.Module) -> None:
        ema_update_(self.module, net, self.decay)

    def state_dict(self) -> dict:
        return self.module.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state)
