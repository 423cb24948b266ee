"""Base class of anchor samplers: pick ``num`` anchors out of a pool of candidate descriptors.

Subclasses implement one method, :meth:`AnchorSampler.select` (pytorch-metric-learning's
``BaseMiner`` style: the base class validates the input, runs the selection without autograd,
checks what it returns and keeps the statistics of the last call; the subclass only selects).
The tuple loader calls a sampler once per epoch on the descriptors of a random pool of
(anchor, positive) pairs.
"""

from __future__ import annotations

import torch
from torch import Tensor


class InvalidSelectionError(RuntimeError):
    """A sampler's :meth:`~AnchorSampler.select` broke its contract (count, range, repeats, type)."""


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
        """``num`` distinct pool positions (LongTensor[num]) chosen by :meth:`select`, checked.

        The selection runs under ``torch.no_grad()`` (mining never backpropagates). Raises
        ``ValueError`` for bad input and :class:`InvalidSelectionError` when ``select`` returns
        anything but ``num`` distinct integer positions in ``[0, Qp)``.
        """
        if descriptors.dim() != 2:
            raise ValueError(f"descriptors must be a Qp x D matrix, got shape {tuple(descriptors.shape)}")
        pool = descriptors.shape[0]
        if not 0 <= num <= pool:
            raise ValueError(f"cannot select {num} anchors from a pool of {pool} descriptors (allowed: 0..{pool})")
        self.last_stats = {}
        with torch.no_grad():
            picked = self.select(descriptors, num, generator)
        return self._checked(picked, num, pool)

    def _checked(self, picked: Tensor, num: int, pool: int) -> Tensor:
        name = type(self).__name__
        if not isinstance(picked, Tensor):
            raise InvalidSelectionError(f"{name}.select returned {type(picked).__name__}, not a tensor")
        if picked.dtype.is_floating_point or picked.dtype.is_complex or picked.dtype == torch.bool:
            raise InvalidSelectionError(f"{name}.select returned {picked.dtype} positions, not integers")
        if picked.shape != (num,):
            raise InvalidSelectionError(f"{name}.select returned shape {tuple(picked.shape)}; expected ({num},)")
        if num and (int(picked.min()) < 0 or int(picked.max()) >= pool):
            raise InvalidSelectionError(
                f"{name}.select returned positions outside 0..{pool - 1}: min {int(picked.min())}, max "
                f"{int(picked.max())}"
            )
        if torch.unique(picked).numel() != num:
            raise InvalidSelectionError(
                f"{name}.select returned {num - torch.unique(picked).numel()} repeated position(s)"
            )
        return picked.long()

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class RandomAnchorSampler(AnchorSampler):
    """cirtorch's rule: the first ``num`` items of the (already random) pool order.

    Example:
        >>> import torch
        >>> sampler = RandomAnchorSampler()
        >>> sampler.needs_descriptors
        False
    """

    needs_descriptors = False

    def select(self, descriptors: Tensor, num: int, generator: torch.Generator | None = None) -> Tensor:
        return torch.arange(num, dtype=torch.long)
