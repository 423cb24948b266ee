"""Equal-size batching: the one way images of mixed sizes are grouped into batches.

Used by mining (``tuples``), test-time descriptors (``evaluation.descriptors``), the night
translator and the demo's fine-tuning. Items are grouped by their full tensor shape; within a
shape, batch ``k`` holds that shape's items ``k * batch_size ... (k + 1) * batch_size - 1`` in input
order, so the batches (and hence the results) do not depend on how the items are streamed.
Callers put each output back at its item's index, which keeps the input order.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Iterable, Iterator

from torch import Tensor

__all__ = ["batches_by_size"]


def batches_by_size(
    items: Iterable[tuple[int, Tensor]], batch_size: int | None = None, max_buffered: int | None = None
) -> Iterator[tuple[list[int], list[Tensor]]]:
    """Group streamed ``(index, tensor)`` items into ``(indices, tensors)`` batches of one shape.

    A shape's batch is yielded as soon as it holds ``batch_size`` items (``None``: no limit, every
    shape is one batch); the rest are yielded at the end, in the order their shapes first
    appeared. ``max_buffered`` bounds the items held back: when that many wait, the fullest batch
    (the first of equals) is yielded early, smaller than ``batch_size``.

    Example:
        >>> import torch
        >>> xs = [torch.zeros(3, h, 4) for h in (2, 5, 2, 2, 5)]
        >>> [idx for idx, _ in batches_by_size(enumerate(xs), batch_size=2)]
        [[0, 2], [1, 4], [3]]
    """
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    buckets: OrderedDict[tuple[int, ...], list[tuple[int, Tensor]]] = OrderedDict()
    buffered = 0

    def pop(key) -> tuple[list[int], list[Tensor]]:
        nonlocal buffered
        bucket = buckets.pop(key)
        buffered -= len(bucket)
        return [i for i, _ in bucket], [t for _, t in bucket]

    for i, t in items:
        key = tuple(t.shape)
        buckets.setdefault(key, []).append((i, t))
        buffered += 1
        if batch_size is not None and len(buckets[key]) >= batch_size:
            yield pop(key)
        elif max_buffered is not None and buffered >= max_buffered:
            yield pop(max(buckets, key=lambda k: len(buckets[k])))
    while buckets:
        yield pop(next(iter(buckets)))
