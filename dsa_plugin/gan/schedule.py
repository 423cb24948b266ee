"""The reference's ``lambda_p2p`` learning-rate schedule (docs/reference.md §gan-schedule).

Factor at 0-based epoch ``e``: ``1 - max(0, e + 1 - n_const) / (n_decay + 1)`` with
``n_const = epochs - n_decay``; stepped once at the end of every epoch. The last epoch uses
``base / (n_decay + 1)``, never 0.

Example:
    >>> [round(lambda_p2p(e, epochs=50, n_epochs_decay=25), 4) for e in (0, 24, 25, 49)]
    [1.0, 1.0, 0.9615, 0.0385]
"""

from __future__ import annotations

import functools

import torch


def lambda_p2p(epoch: int, epochs: int, n_epochs_decay: int) -> float:
    """Multiplicative lr factor at 0-based ``epoch``.

    Example:
        >>> [round(lambda_p2p(e, epochs=4, n_epochs_decay=2), 4) for e in range(4)]
        [1.0, 1.0, 0.6667, 0.3333]
    """
    n_const = epochs - n_epochs_decay
    return 1.0 - max(0, epoch + 1 - n_const) / float(n_epochs_decay + 1)


def make_scheduler(optimizer: torch.optim.Optimizer, epochs: int, n_epochs_decay: int
                   ) -> torch.optim.lr_scheduler.LambdaLR:
    """LambdaLR applying :func:`lambda_p2p` to every parameter group (HED multipliers kept)."""
    factor = functools.partial(lambda_p2p, epochs=epochs, n_epochs_decay=n_epochs_decay)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
