"""Diverse anchors and hard negatives against slow, literal implementations of the reference.

The diverse-anchor oracle transcribes gandtr's loop (github.com/mohwald/gandtr, MIT licence); it
lives in ``tests/oracles.py``, shared with ``benchmarks/mining.py``.
"""

from __future__ import annotations

import pytest
import torch

from dsa_plugin.mining import (
    AnchorSampler,
    DiverseAnchorSampler,
    InvalidSelectionError,
    NotEnoughClustersError,
    RandomAnchorSampler,
    band_bounds,
    diverse_anchors,
    hard_negatives,
)
from oracles import reference_diverse_anchors


def unit(pool, dim, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(dim, pool, generator=g), dim=0)  # D x Qp


def quantised_unit(pool, dim, seed):
    """Distinct ±1/sqrt(D) vectors (D a power of 4): exact dot products, so many exact ties."""
    g = torch.Generator().manual_seed(seed)
    signs = torch.randint(0, 2, (pool * 2, dim), generator=g).float() * 2 - 1
    signs = torch.unique(signs, dim=0)
    signs = signs[torch.randperm(signs.shape[0], generator=g)[:pool]]
    assert signs.shape[0] == pool
    return (signs / dim**0.5).t().contiguous()


SETTINGS = [  # (Qp, Q, D, exclude, include)
    (200, 40, 16, 0.2, 0.8),
    (300, 60, 32, 0.2, 0.8),
    (120, 120, 8, 0.2, 0.8),  # picks the whole pool: the band shrinks to one item
    (250, 60, 64, 0.0, 1.0),
    (250, 60, 64, 0.5, 0.5),
    (101, 50, 16, 0.1, 0.3),
    (120, 30, 4, 1.0, 1.0),
]


@pytest.mark.parametrize("qp,q,d,exclude,include", SETTINGS)
def test_deterministic_matches_literal_reference(qp, q, d, exclude, include):
    qvecs = unit(qp, d, seed=qp + q + d)
    expected = reference_diverse_anchors(qvecs, q, exclude, include, deterministic=True)
    ours = diverse_anchors(qvecs.t(), q, similar_exclude=exclude, similar_include=include, deterministic=True)
    assert ours.tolist() == expected
    # Row-major [Qp, D] input (copied internally to the reference layout) gives the same picks.
    assert diverse_anchors(qvecs.t().contiguous(), q, similar_exclude=exclude, similar_include=include,
                           deterministic=True).tolist() == expected


@pytest.mark.parametrize("qp,q,d", [(150, 50, 16), (400, 120, 16), (200, 80, 64)])
def test_deterministic_matches_literal_reference_with_ties(qp, q, d):
    qvecs = quantised_unit(qp, d, seed=q)
    most = torch.mm(qvecs.t(), qvecs).fill_diagonal_(-2).max(dim=1).values
    assert most.unique().numel() < qp // 3  # the input really is full of ties
    expected = reference_diverse_anchors(qvecs, q, 0.2, 0.8, deterministic=True)
    assert diverse_anchors(qvecs.t(), q, deterministic=True).tolist() == expected
    # The Gram path sees the same exact similarities.
    assert diverse_anchors(qvecs.t(), q, deterministic=True, gram_budget_bytes=1 << 30).tolist() == expected


def test_random_mode_equals_literal_with_same_rng_state_and_is_reproducible():
    qvecs = unit(400, 32, seed=3)
    torch.manual_seed(123)
    expected = reference_diverse_anchors(qvecs, 60, 0.2, 0.8, deterministic=False)
    ours = diverse_anchors(qvecs.t(), 60, generator=torch.Generator().manual_seed(123))
    assert ours.tolist() == expected
    again = diverse_anchors(qvecs.t(), 60, generator=torch.Generator().manual_seed(123))
    other = diverse_anchors(qvecs.t(), 60, generator=torch.Generator().manual_seed(124))
    assert again.tolist() == ours.tolist()
    assert other.tolist() != ours.tolist()


def test_gram_path_matches_vector_path_on_random_data():
    qvecs = unit(300, 32, seed=9)
    gen = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    plain = diverse_anchors(qvecs.t(), 60, generator=gen())
    gram = diverse_anchors(qvecs.t(), 60, generator=gen(), gram_budget_bytes=1 << 30)
    assert gram.tolist() == plain.tolist()


def test_duplicates_never_picked_twice():
    # All-identical descriptors: every max similarity ties; the reference can re-pick (docs/reference.md §ties).
    x = torch.nn.functional.normalize(torch.ones(60, 8), dim=1)
    picks = diverse_anchors(x, 60, generator=torch.Generator().manual_seed(0))
    assert sorted(picks.tolist()) == list(range(60))
    picks = diverse_anchors(x, 30, deterministic=True)
    assert len(set(picks.tolist())) == 30


def test_band_bounds_reference_arithmetic():
    assert band_bounds(10000, 0.2, 0.8) == (1999, 8000)  # 1 - 0.8 = 0.19999999999999996
    assert band_bounds(9999, 0.2, 0.8) == (1999, 7999)
    assert band_bounds(1, 0.2, 0.8) == (0, 1)
    assert band_bounds(10, 1.0, 1.0) == (0, 1)


def test_edge_cases_and_bad_input():
    x = torch.nn.functional.normalize(torch.randn(10, 4), dim=1)
    assert diverse_anchors(x, 0).numel() == 0
    assert diverse_anchors(x, 1).tolist() == [0]
    with pytest.raises(ValueError, match="num=11"):
        diverse_anchors(x, 11)
    with pytest.raises(ValueError, match="similar_exclude"):
        diverse_anchors(x, 3, similar_exclude=0.9, similar_include=0.1)
    bad = x.clone()
    bad[2, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        diverse_anchors(bad, 3)
    with pytest.raises(ValueError, match="Qp x D"):
        diverse_anchors(torch.randn(10), 3)


def test_sampler_objects():
    x = torch.nn.functional.normalize(torch.randn(50, 8), dim=1)
    sampler = DiverseAnchorSampler(0.2, 0.8, deterministic=True)
    assert sampler(x, 7).tolist() == diverse_anchors(x, 7, deterministic=True).tolist()
    assert len(sampler.last_stats["new_query_max_scores"]) == 6
    assert -1.0 <= sampler.last_stats["average_new_query_max_score"] <= 1.0
    assert RandomAnchorSampler()(x, 4).tolist() == [0, 1, 2, 3]
    assert not RandomAnchorSampler.needs_descriptors and DiverseAnchorSampler.needs_descriptors


def literal_negatives(qvecs, poolvecs, qclusters, pool_clusters, nnum):
    """cirtorch's loop, literally, with a stable descending sort (ties by pool position)."""
    scores = torch.mm(poolvecs.t(), qvecs)
    scores, ranks = torch.sort(scores, dim=0, descending=True, stable=True)
    nidxs, dists = [], []
    for q in range(qvecs.shape[1]):
        clusters = [qclusters[q]]
        nidx, r = [], 0
        while len(nidx) < nnum:
            potential = ranks[r, q].item()
            if pool_clusters[potential] not in clusters:
                nidx.append(potential)
                clusters.append(pool_clusters[potential])
                dists.append(torch.pow(qvecs[:, q] - poolvecs[:, potential] + 1e-6, 2).sum(dim=0).sqrt().item())
            r += 1
        nidxs.append(nidx)
    return nidxs, dists


@pytest.mark.parametrize("q,p,d,clusters,nnum",
                         [(30, 200, 16, 12, 5), (50, 120, 8, 6, 5), (10, 400, 32, 150, 20), (20, 60, 4, 4, 3)])
def test_hard_negatives_match_literal_cirtorch(q, p, d, clusters, nnum):
    g = torch.Generator().manual_seed(q * p)
    qvecs = torch.nn.functional.normalize(torch.randn(d, q, generator=g), dim=0)
    poolvecs = torch.nn.functional.normalize(torch.randn(d, p, generator=g), dim=0)
    qcl = torch.randint(0, clusters, (q,), generator=g).tolist()
    pcl = torch.randint(0, clusters, (p,), generator=g).tolist()
    expected, dists = literal_negatives(qvecs, poolvecs, qcl, pcl, nnum)
    ours = hard_negatives(qvecs.t(), poolvecs.t(), qcl, pcl, nnum)
    assert ours.indices.tolist() == expected
    assert torch.allclose(ours.distances.flatten(), torch.tensor(dists), atol=1e-6)
    # Tiny chunks and the top-K growth path give the same answer.
    assert hard_negatives(qvecs.t(), poolvecs.t(), qcl, pcl, nnum, chunk_bytes=1).indices.tolist() == expected


def test_hard_negatives_with_exact_ties_and_big_own_cluster():
    # Quantised descriptors tie a lot; a big anchor cluster fills the top of every ranking.
    poolvecs = quantised_unit(300, 16, seed=1)
    qvecs = poolvecs[:, :40]
    pcl = [0] * 150 + [1 + i % 9 for i in range(150)]
    qcl = [0] * 40
    expected, _ = literal_negatives(qvecs, poolvecs, qcl, pcl, 5)
    assert hard_negatives(qvecs.t(), poolvecs.t(), qcl, pcl, 5).indices.tolist() == expected


def test_hard_negatives_not_enough_clusters():
    x = torch.nn.functional.normalize(torch.randn(20, 8), dim=1)
    with pytest.raises(NotEnoughClustersError, match="only 2 cluster"):
        hard_negatives(x[:3], x, [0, 0, 0], [i % 3 for i in range(20)], 3)
    assert hard_negatives(x[:3], x, [0, 1, 2], [i % 3 for i in range(20)], 0).indices.shape == (3, 0)


def test_hard_negatives_when_the_own_cluster_fills_the_top_of_the_ranking():
    # 100 near-duplicates of each anchor's direction in its own cluster: the first 64 ranks (the
    # initial top-K) hold no usable negative, so the search must grow K.
    g = torch.Generator().manual_seed(11)
    anchor = torch.nn.functional.normalize(torch.randn(16, 1, generator=g), dim=0)
    near = torch.nn.functional.normalize(anchor + 0.05 * torch.randn(16, 100, generator=g), dim=0)
    far = torch.nn.functional.normalize(torch.randn(16, 200, generator=g), dim=0)
    poolvecs = torch.cat([near, far], dim=1)
    pcl = [0] * 100 + [1 + i % 40 for i in range(200)]
    expected, _ = literal_negatives(anchor, poolvecs, [0], pcl, 5)
    ours = hard_negatives(anchor.t(), poolvecs.t(), [0], pcl, 5)
    assert ours.indices.tolist() == expected
    assert all(i >= 100 for i in ours.indices.flatten().tolist())


# ---- the base class contract (pytorch-metric-learning's BaseMiner: no autograd, output checked) ----


class _Returns(AnchorSampler):
    """A sampler that returns what it is told to, and records whether autograd was on."""

    def __init__(self, result):
        super().__init__()
        self.result, self.grad_enabled = result, None

    def select(self, descriptors, num, generator=None):
        self.grad_enabled = torch.is_grad_enabled()
        return self.result(descriptors, num) if callable(self.result) else self.result


def test_select_runs_without_autograd():
    x = torch.randn(20, 4, requires_grad=True)
    sampler = _Returns(lambda d, num: (d @ d.t()).sum(dim=1).argsort()[:num])
    picked = sampler(x, 5)
    assert sampler.grad_enabled is False
    assert picked.dtype == torch.long and not picked.requires_grad
    assert torch.is_grad_enabled()  # restored for the caller
    diverse = DiverseAnchorSampler(deterministic=True)
    assert diverse(torch.nn.functional.normalize(x, dim=1), 5).shape == (5,)


@pytest.mark.parametrize("bad, message", [
    (torch.tensor([0, 1]), r"shape \(2,\); expected \(3,\)"),
    (torch.tensor([0, 1, 2, 3]), r"shape \(4,\); expected \(3,\)"),
    (torch.tensor([[0, 1, 2]]), r"shape \(1, 3\)"),
    (torch.tensor([0, 1, 1]), r"1 repeated position"),
    (torch.tensor([0, 1, 10]), r"outside 0\.\.9"),
    (torch.tensor([-1, 1, 2]), r"outside 0\.\.9"),
    (torch.tensor([0.0, 1.0, 2.0]), r"torch.float32 positions"),
    (torch.tensor([True, False, True]), r"torch.bool positions"),
    ([0, 1, 2], r"returned list, not a tensor"),
])
def test_what_select_returns_is_checked(bad, message):
    with pytest.raises(InvalidSelectionError, match=message):
        _Returns(bad)(torch.randn(10, 4), 3)


def test_valid_selections_pass_as_long():
    x = torch.randn(10, 4)
    assert _Returns(torch.tensor([9, 0, 4], dtype=torch.int32))(x, 3).tolist() == [9, 0, 4]
    assert _Returns(torch.tensor([9, 0, 4], dtype=torch.int32))(x, 3).dtype == torch.long
    assert _Returns(torch.empty(0, dtype=torch.long))(x, 0).tolist() == []
    assert RandomAnchorSampler()(x, 10).tolist() == list(range(10))
    with pytest.raises(ValueError, match="cannot select 11"):
        _Returns(torch.arange(11))(x, 11)
