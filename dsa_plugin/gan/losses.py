"""GAN losses of the reference (docs/reference.md §gan-losses).

LSGAN targets follow the reference's convention: **real = 0, fake = 1** (symmetric under MSE, but
the discriminator's outputs mean the opposite of the usual one).

Example:
    >>> pred = torch.zeros(2, 1, 4, 4)
    >>> float(lsgan_loss(pred, real=True)), float(lsgan_loss(pred, real=False))
    (0.0, 1.0)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

REAL_LABEL = 0.0
FAKE_LABEL = 1.0


def lsgan_loss(pred: torch.Tensor, real: bool) -> torch.Tensor:
    """Mean squared error of a patch map ``[B, 1, h, w]`` to the real (0) or fake (1) label.

    Example:
        >>> import torch
        >>> patches = torch.zeros(1, 1, 2, 2)
        >>> lsgan_loss(patches, real=True).item(), lsgan_loss(patches, real=False).item()
        (0.0, 1.0)
    """
    target = torch.full_like(pred, REAL_LABEL if real else FAKE_LABEL, dtype=torch.float32)
    return F.mse_loss(pred.float(), target)


def discriminator_loss(pred_real: torch.Tensor, pred_fake: torch.Tensor, weight: float = 1.0
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``0.5 * (w*MSE(real, 0) + w*MSE(fake, 1))`` and its two weighted terms.

    Example:
        >>> import torch
        >>> total, real, fake = discriminator_loss(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2))
        >>> total.item(), real.item(), fake.item()
        (0.5, 0.0, 1.0)
    """
    loss_real = weight * lsgan_loss(pred_real, real=True)
    loss_fake = weight * lsgan_loss(pred_fake, real=False)
    return (loss_real + loss_fake) * 0.5, loss_real, loss_fake


def l1_loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference (edge, distillation and cycle losses), computed in float32.

    Example:
        >>> import torch
        >>> l1_loss(torch.zeros(2), torch.tensor([1.0, -3.0])).item()
        2.0
    """
    return F.l1_loss(x.float(), y.float())
