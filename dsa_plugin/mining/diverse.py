"""Diverse anchor mining (Mohwald et al., ICCV 2023; docs/reference.md §diverse-anchors) in O(Qp) memory.

The reference keeps a growing Qp x k matrix of similarities to the picked anchors, takes its
row-wise max and argsorts the whole pool at every step. The row-wise max of a growing matrix is a
running element-wise max, and the argsort is only ever read at one position, so this
implementation keeps one Qp vector and does a selection (k-th value) per step: the same picks in
O(Qp) memory and O(Qp·D) time per step (one vector-matrix product).

Tie-breaking (the reference's CPU argsort is not stable, docs/reference.md §ties): items are
ordered by (max similarity, pool position), i.e. a *stable* ascending sort. Picked items are
masked to +inf, so they always sort to the tail and are never picked twice (the reference relies
on their self-similarity ~1 doing that, which fails for duplicate images). On inputs where every
picked item has a larger self-similarity than any other item's max similarity (any set of
distinct unit vectors), this is exactly the reference's order.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from tqdm.auto import tqdm

from dsa_plugin.mining.base import AnchorSampler


def band_bounds(valid: int, similar_exclude: float, similar_include: float) -> tuple[int, int]:
    """Sorted positions ``[lower, upper)`` of the band, with the reference's exact arithmetic.

    ``valid`` = pool size minus the number of anchors picked so far. ``1 - 0.8`` is
    0.19999999999999996 in floating point, so ``lower`` is one below ``0.2 * valid`` whenever
    ``valid`` is a multiple of 5 (valid=10000 gives (1999, 8000)); kept on purpose.

    Example:
        >>> band_bounds(10000, 0.2, 0.8)
        (1999, 8000)
    """
    upper = max(int(valid * (1 - similar_exclude)), 1)
    lower = min(int(valid * (1 - similar_include)), upper - 1)
    return lower, upper


def _item_at_rank(values: Tensor, rank: int) -> int:
    """Pool position of the item at ``rank`` in the stable ascending order of ``values``; O(Qp)."""
    value, index = torch.kthvalue(values, rank + 1)
    equal = values == value
    if int(torch.count_nonzero(equal)) == 1:  # the usual case: no tie, kthvalue's index is the item
        return int(index)
    below = int(torch.count_nonzero(values < value))
    return int(torch.nonzero(equal).flatten()[rank - below])


def _gram(columns: Tensor, block_rows: int) -> Tensor:
    """Qp x Qp similarities, computed in row blocks straight into the result (no transient copy)."""
    pool = columns.shape[1]
    gram = torch.empty(pool, pool, dtype=columns.dtype, device=columns.device)
    for start in range(0, pool, block_rows):
        stop = min(start + block_rows, pool)
        torch.mm(columns[:, start:stop].t(), columns, out=gram[start:stop])
    return gram


def _check(descriptors: Tensor, num: int, similar_exclude: float, similar_include: float) -> None:
    if descriptors.dim() != 2:
        raise ValueError(f"descriptors must be a Qp x D matrix, got shape {tuple(descriptors.shape)}")
    if not descriptors.is_floating_point():
        raise ValueError(f"descriptors must be floating point, got {descriptors.dtype}")
    if not 0 <= num <= descriptors.shape[0]:
        raise ValueError(
            f"num={num} anchors cannot be picked from a pool of {descriptors.shape[0]} (allowed: "
            f"0..{descriptors.shape[0]})"
        )
    for name, value in (("similar_exclude", similar_exclude), ("similar_include", similar_include)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {value}")
    if similar_exclude > similar_include:
        raise ValueError(f"similar_exclude ({similar_exclude}) must be <= similar_include ({similar_include})")
    # A sum is NaN/inf iff some entry is (barring overflow), without a Qp x D temporary.
    if not bool(torch.isfinite(descriptors.sum())) and not bool(torch.isfinite(descriptors).all()):
        raise ValueError("descriptors contain NaN or inf; diverse anchor mining needs finite similarities")


def diverse_anchors_with_scores(
    descriptors: Tensor,
    num: int,
    *,
    similar_exclude: float = 0.2,
    similar_include: float = 0.8,
    generator: torch.Generator | None = None,
    deterministic: bool = False,
    gram_budget_bytes: int = 0,
    progress: bool = False,
) -> tuple[Tensor, Tensor]:
    """:func:`diverse_anchors` plus each new anchor's max similarity to the ones before it.

    Returns:
        (LongTensor[num] pool positions, Tensor[max(num - 1, 0)] scores; the reference logs their mean).

    Example:
        >>> import torch
        >>> x = torch.nn.functional.normalize(torch.randn(40, 8, generator=torch.Generator().manual_seed(0)), dim=1)
        >>> picks, scores = diverse_anchors_with_scores(x, 5, generator=torch.Generator().manual_seed(0))
        >>> picks.shape, scores.shape, picks[0].item()
        (torch.Size([5]), torch.Size([4]), 0)
    """
    _check(descriptors, num, similar_exclude, similar_include)
    pool = descriptors.shape[0]
    device = descriptors.device
    if num == 0:
        return torch.empty(0, dtype=torch.long, device=device), torch.empty(0, dtype=descriptors.dtype, device=device)
    # D x Qp contiguous is cirtorch's layout and the fastest for a vector-matrix product on CPU
    # (and gives the reference's mm(qvecs.t(), qvecs[:, i]) bit for bit); `qvecs.t()` is free.
    columns = descriptors.t()
    if not columns.is_contiguous():
        columns = columns.contiguous()
    elem = columns.element_size()
    gram = None
    if gram_budget_bytes and pool * pool * elem <= gram_budget_bytes:
        gram = _gram(columns, block_rows=max(1, min(pool, (64 << 20) // max(1, pool * elem))))

    running = torch.full((pool,), -math.inf, dtype=columns.dtype, device=device)
    picked = torch.empty(num, dtype=torch.long)
    scores = torch.empty(num - 1, dtype=columns.dtype, device=device)
    picked[0] = idx = 0  # the pool order is random already: its first item is a uniform pick
    gen_device = generator.device if generator is not None else torch.device("cpu")
    for step in tqdm(range(1, num), desc="diverse anchors", disable=not progress, leave=False):
        sims = gram[idx] if gram is not None else columns[:, idx] @ columns
        torch.maximum(running, sims, out=running)
        running[idx] = math.inf
        lower, upper = band_bounds(pool - step, similar_exclude, similar_include)
        if deterministic:
            rank = upper - 1
        else:
            rank = lower + int(torch.randint(upper - lower, (1,), generator=generator, device=gen_device))
        idx = _item_at_rank(running, rank)
        scores[step - 1] = running[idx]
        picked[step] = idx
    return picked.to(device), scores


def diverse_anchors(
    descriptors: Tensor,
    num: int,
    *,
    similar_exclude: float = 0.2,
    similar_include: float = 0.8,
    generator: torch.Generator | None = None,
    deterministic: bool = False,
    gram_budget_bytes: int = 0,
    progress: bool = False,
) -> Tensor:
    """Greedy diverse selection of ``num`` anchors from a pool of L2-normalised descriptors.

    The first anchor is pool position 0 (the pool is in random order). Each next anchor is drawn
    uniformly (with ``generator``; the global RNG when ``None``, as the reference) from the band
    ``[lower, upper)`` (see :func:`band_bounds`) of the pool sorted ascending by each item's max
    similarity to the anchors picked so far, i.e. the middle quantiles between ``similar_include``
    and ``similar_exclude``: neither the most dissimilar (outliers) nor near-duplicates of picked
    ones. ``deterministic`` takes the last item of the band instead. Ties: stable by pool position;
    no item is picked twice.

    Args:
        descriptors: Tensor[Qp, D] on any device; pass ``qvecs.t()`` of a cirtorch D x Qp matrix
            to avoid a copy.
        num: Q, the number of anchors, 0 <= Q <= Qp.
        gram_budget_bytes: precompute the Qp x Qp similarity matrix (in row blocks) when it fits
            this many bytes; faster on GPUs, O(Qp^2) memory. 0 (default) never does.
        progress: show a tqdm bar.

    Returns:
        LongTensor[Q] of distinct pool positions in pick order, on the descriptors' device.

    Example:
        >>> x = torch.nn.functional.normalize(torch.randn(100, 8), dim=1)
        >>> a = diverse_anchors(x, 10, generator=torch.Generator().manual_seed(0))
        >>> a.shape, int(a[0]), len(set(a.tolist()))
        (torch.Size([10]), 0, 10)
    """
    return diverse_anchors_with_scores(
        descriptors, num, similar_exclude=similar_exclude, similar_include=similar_include, generator=generator,
        deterministic=deterministic, gram_budget_bytes=gram_budget_bytes, progress=progress,
    )[0]


class DiverseAnchorSampler(AnchorSampler):
    """Callable sampler around :func:`diverse_anchors` that remembers the scores it logged.

    Example:
        >>> sampler = DiverseAnchorSampler(0.2, 0.8)
        >>> x = torch.nn.functional.normalize(torch.randn(50, 8), dim=1)
        >>> sampler(x, 5, torch.Generator().manual_seed(1)).shape
        torch.Size([5])
        >>> sorted(sampler.last_stats)
        ['average_new_query_max_score', 'new_query_max_scores']
    """

    def __init__(
        self,
        similar_exclude: float = 0.2,
        similar_include: float = 0.8,
        deterministic: bool = False,
        gram_budget_bytes: int = 0,
        progress: bool = False,
    ) -> None:
        super().__init__()
        _check(torch.zeros(1, 1), 0, similar_exclude, similar_include)
        self.similar_exclude = similar_exclude
        self.similar_include = similar_include
        self.deterministic = deterministic
        self.gram_budget_bytes = gram_budget_bytes
        self.progress = progress

    def select(self, descriptors: Tensor, num: int, generator: torch.Generator | None = None) -> Tensor:
        picked, scores = diverse_anchors_with_scores(
            descriptors, num, similar_exclude=self.similar_exclude, similar_include=self.similar_include,
            generator=generator, deterministic=self.deterministic, gram_budget_bytes=self.gram_budget_bytes,
            progress=self.progress,
        )
        values = scores.tolist()
        self.last_stats = {
            "average_new_query_max_score": sum(values) / len(values) if values else float("nan"),
            "new_query_max_scores": values,
        }
        return picked

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(similar_exclude={self.similar_exclude}, similar_include={self.similar_include}, "
            f"deterministic={self.deterministic})"
        )
