"""Base class of anchor samplers: pick ``num`` anchors out of a pool of candidate descriptors.

Subclasses implement one method, :meth:`AnchorSampler.select` (pytorch-metric-learning style:
the base class validates the input and keeps the statistics of the last call, the subclass only
does the selection). The tuple loader calls a sampler once per epoch on the descriptors of a
random pool of (anchor, positive) pairs.
"""

from __future__ import annotations

import torch
from torch import Tensor


class AnchorSampler:
    """Selects anchor positions from a pool of descriptors.

    Attributes:
        needs_descriptors: whether :meth:`select` looks at the descriptors at all (a random sampler
            does not, so the loader can skip extracting the pool).
        last_stats: statistics of the last call (empty before the first one).

    Example:
        >>> class FirstK(AnchorSampler):
        ...     def select(self, descriptors, num, generator=None):
        ...         return torch.arange(num)
        >>> FirstK()(torch.randn(10, 4), 3).tolist()
        [0, 1, 2]
    """

    needs_descriptors: bool = True

    def __init__(self) -> None:
        self.last_stats: dict = {}

    def select(self, descriptors: Tensor, num: int, generator: torch.Generator | None = None) -> Tensor:
        """Return ``num`` distinct pool positions (LongTensor[num]); ``descriptors`` is Tensor[Qp, D]."""
        raise NotImplementedError

    def __call__(self, descriptors: Tensor, num: int, generator: torch.Generator | None = None) -> Tensor:
        if descriptors.dim() != 2:
            raise ValueError(f"descriptors must be a Qp x D matrix, got shape {tuple(descriptors.shape)}")
        pool = descriptors.shape[0]
        if not 0 <= num <= pool:
            raise ValueError(f"cannot select {num} anchors from a pool of {pool} descriptors (allowed: 0..{pool})")
        self.last_stats = {}
        return self.select(descriptors, num, generator)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class RandomAnchorSampler(AnchorSampler):
    """cirtorch's rule: the first ``num`` items of the (already random) pool order."""

    needs_descriptors = False

    def select(self, descriptors: Tensor, num: int, generator: torch.Generator | None = None) -> Tensor:
        return torch.arange(num, dtype=torch.long)
