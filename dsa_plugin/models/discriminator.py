"""PatchGAN discriminator with the reference's state-dict layout (docs/reference.md §discriminator, §state-dicts)."""
from __future__ import annotations

import torch
from torch import nn

from .generator import make_norm, uses_bias

__all__ = ["NLayerDiscriminator"]


class NLayerDiscriminator(nn.Module):
    """PatchGAN: 4x4 convs (stride 2 for the first ``n_layers``, then two stride-1), LeakyReLU 0.2,
    raw patch logits (no sigmoid).

    Input ``[B, input_nc, H, W]``; a 256x256 input gives ``[B, 1, 30, 30]`` for ``n_layers=3``.

    Example:
        >>> d = NLayerDiscriminator(norm="instance")
        >>> d(torch.zeros(1, 3, 256, 256)).shape
        torch.Size([1, 1, 30, 30])
    """

    def __init__(self, input_nc: int = 3, ndf: int = 64, n_layers: int = 3, norm: str = "batch") -> None:
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"n_layers must be >= 1, got {n_layers}")
        bias = uses_bias(norm)
        self.norm = norm
        self.meta = {"in_channels": input_nc, "out_channels": 1}
        kw, padw = 4, 1
        layers: list[nn.Module] = [nn.Conv2d(input_nc, ndf, kernel_size=kw, stride=2, padding=padw),
                                   nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2 ** n, 8)
            stride = 2 if n < n_layers else 1
            layers += [nn.Conv2d(ndf * prev, ndf * mult, kernel_size=kw, stride=stride, padding=padw, bias=bias),
                       make_norm(norm, ndf * mult),
                       nn.LeakyReLU(0.2, True)]
        layers += [nn.Conv2d(ndf * mult, 1, kernel_size=kw, stride=1, padding=padw)]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)
