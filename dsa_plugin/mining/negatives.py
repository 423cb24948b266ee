"""Hard-negative mining with cirtorch's rule, vectorised (docs/reference.md §hard-negatives).

For each anchor, pool images are ranked by descending similarity (ties: by pool position) and
accepted in that order unless their cluster is the anchor's (potential positives) or the cluster
of an already accepted negative (at most one per cluster), until ``nnum`` are accepted.
cirtorch walks every ranking in Python; here the walk is a few tensor operations over the top-K
of each ranking (K grows for the rare anchors that need more).
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import torch
from torch import Tensor


class NotEnoughClustersError(ValueError):
    """The negative pool has fewer distinct clusters (other than an anchor's own) than ``nnum``."""


class HardNegatives(NamedTuple):
    """``indices``: LongTensor[Q, nnum] pool positions in rank order; ``distances``: Tensor[Q, nnum]
    cirtorch's logged l2 distance ``sqrt(sum((a - n + 1e-6)^2))``."""

    indices: Tensor
    distances: Tensor


def _as_long(values: Sequence[int] | Tensor, device: torch.device, what: str, length: int) -> Tensor:
    out = torch.as_tensor(values, dtype=torch.long, device=device).flatten()
    if out.numel() != length:
        raise ValueError(f"{what} has {out.numel()} entries but there are {length} descriptors")
    return out


def _first_of_cluster(clusters: Tensor) -> Tensor:
    """Mask [R, K]: True where a row's cluster id occurs for the first time (left to right)."""
    ordered, perm = torch.sort(clusters, dim=1, stable=True)
    first = torch.ones_like(ordered, dtype=torch.bool)
    first[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    return torch.zeros_like(first).scatter_(1, perm, first)


def _ranked_top(scores: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Top-k (values, positions) of each row, ordered by descending value then ascending position."""
    values, positions = torch.topk(scores, k, dim=1, largest=True, sorted=False)
    by_pos = torch.argsort(positions, dim=1)
    values, positions = values.gather(1, by_pos), positions.gather(1, by_pos)
    order = torch.sort(values, dim=1, descending=True, stable=True).indices
    return values.gather(1, order), positions.gather(1, order)


def _mine_rows(scores: Tensor, anchor_clusters: Tensor, pool_clusters: Tensor, nnum: int, k: int):
    """Negatives of each row of ``scores`` [R, P] from its top-k; returns (positions [R, nnum], done [R])."""
    pool = scores.shape[1]
    k = min(k, pool)
    values, positions = _ranked_top(scores, k)
    clusters = pool_clusters[positions]
    keep = (clusters != anchor_clusters[:, None]) & _first_of_cluster(clusters)
    count = keep.cumsum(dim=1)
    take = keep & (count <= nnum)
    done = count[:, -1] >= nnum
    if k < pool:
        # Items tied with the k-th value may lie outside the top-k; the walk is exact only if the
        # last accepted negative scores strictly above that value, or if nothing else ties with it.
        last_value = torch.where(take, values, torch.full_like(values, float("inf"))).min(dim=1).values
        kth = values[:, -1]
        ambiguous = (last_value <= kth) & ((scores >= kth[:, None]).sum(dim=1) > k)
        done &= ~ambiguous
    out = torch.zeros(scores.shape[0], nnum, dtype=torch.long, device=scores.device)
    rows = done.nonzero().flatten()
    if rows.numel():
        out[rows] = positions[rows][take[rows]].view(-1, nnum)
    return out, done


def hard_negatives(
    anchor_desc: Tensor,
    pool_desc: Tensor,
    anchor_clusters: Sequence[int] | Tensor,
    pool_clusters: Sequence[int] | Tensor,
    nnum: int,
    chunk_bytes: int = 256 << 20,
) -> HardNegatives:
    """cirtorch's hard negatives: per anchor, the ``nnum`` most similar pool images, at most one per
    cluster and never from the anchor's cluster.

    Args:
        anchor_desc: Tensor[Q, D] (``qvecs.t()`` of a cirtorch D x Q matrix is fine).
        pool_desc: Tensor[P, D] on the same device.
        anchor_clusters, pool_clusters: cluster id per anchor / per pool image.
        nnum: negatives per anchor (0 gives an empty [Q, 0] result).
        chunk_bytes: anchors are processed in chunks whose Q_chunk x P score matrix fits this.

    Returns:
        :class:`HardNegatives` with pool positions (LongTensor[Q, nnum]) and distances.

    Raises:
        NotEnoughClustersError: an anchor has fewer than ``nnum`` other clusters in the pool
            (cirtorch runs off the end of its ranking with an IndexError instead).

    Example:
        >>> a = torch.eye(2, 3); p = torch.eye(3)
        >>> hard_negatives(a, p, [0, 1], [0, 1, 2], 1).indices.tolist()
        [[1], [0]]
    """
    if anchor_desc.dim() != 2 or pool_desc.dim() != 2 or anchor_desc.shape[1] != pool_desc.shape[1]:
        raise ValueError(
            f"need anchor_desc [Q, D] and pool_desc [P, D] with the same D, got {tuple(anchor_desc.shape)} and "
            f"{tuple(pool_desc.shape)}"
        )
    if nnum < 0:
        raise ValueError(f"nnum must be >= 0, got {nnum}")
    device = pool_desc.device
    num, pool = anchor_desc.shape[0], pool_desc.shape[0]
    a_clusters = _as_long(anchor_clusters, device, "anchor_clusters", num)
    p_clusters = _as_long(pool_clusters, device, "pool_clusters", pool)
    if nnum == 0 or num == 0:
        empty = torch.zeros(num, nnum, dtype=torch.long, device=device)
        return HardNegatives(empty, torch.zeros(num, nnum, dtype=pool_desc.dtype, device=device))

    indices = torch.empty(num, nnum, dtype=torch.long, device=device)
    chunk = max(1, chunk_bytes // max(1, pool * pool_desc.element_size()))
    for start in range(0, num, chunk):
        stop = min(start + chunk, num)
        # Same product as cirtorch (pool x anchors), so scores match it bit for bit on its layout.
        scores = torch.mm(pool_desc, anchor_desc[start:stop].t()).t()
        rows = torch.arange(stop - start, device=device)
        k = max(64, 8 * (nnum + 1))
        while rows.numel():
            found, done = _mine_rows(scores[rows], a_clusters[start:stop][rows], p_clusters, nnum, k)
            indices[start + rows[done]] = found[done]
            rows = rows[~done]
            if rows.numel() and k >= pool:
                _raise_not_enough(int(rows[0]) + start, a_clusters, p_clusters, nnum)
            k *= 4
    negatives = pool_desc[indices]  # [Q, nnum, D]
    distances = (anchor_desc[:, None, :] - negatives + 1e-6).pow(2).sum(dim=-1).sqrt()
    return HardNegatives(indices, distances)


def _raise_not_enough(anchor: int, anchor_clusters: Tensor, pool_clusters: Tensor, nnum: int) -> None:
    own = int(anchor_clusters[anchor])
    others = len(set(pool_clusters.tolist()) - {own})
    raise NotEnoughClustersError(
        f"anchor {anchor} (cluster {own}): the negative pool of {pool_clusters.numel()} images has only {others} "
        f"cluster(s) other than the anchor's, but nnum={nnum} negatives from distinct clusters are needed; "
        f"use a larger pool (poolsize), fewer negatives (nnum), or a db with more clusters"
    )
