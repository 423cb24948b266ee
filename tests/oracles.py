"""Slow, literal oracles of the reference algorithms, shared by the tests and the benchmarks.

``reference_diverse_anchors`` transcribes the diverse-anchor loop of gandtr
(``DiverseAnchorsDataset._select_positive_pairs_db`` in
``mdir/components/data/dataset/cirtorch_datasets.py``, github.com/mohwald/gandtr, MIT licence,
described in docs/reference.md §diverse-anchors): a growing Qp x k similarity matrix, a row max
and a full argsort of the pool every step. It is the one copy of that oracle; ``tests/test_mining.py``
imports it, and ``benchmarks/mining.py`` imports it as its baseline (with ``tests/`` on ``sys.path``).
"""

from __future__ import annotations

import torch


def reference_diverse_anchors(qvecs: torch.Tensor, qsize: int, similar_exclude: float = 0.2,
                              similar_include: float = 0.8, deterministic: bool = False,
                              stable: bool = True) -> list[int]:
    """Pool positions picked by the reference loop, on a D x Qp matrix of unit columns.

    ``deterministic``: take the last item of the band (the reference's non-shuffling mode) instead
    of a ``torch.randint`` draw from the *global* RNG. ``stable``: the one deliberate difference
    from the reference, whose CPU argsort is unstable, so the order of exact ties is
    implementation-defined there (docs/reference.md §ties); ``stable=False`` runs the call as written.
    """
    qpool_size = qvecs.shape[1]
    idx = 0
    idxs = [idx]
    dists = torch.empty(qpool_size, 0, device=qvecs.device)
    for _ in range(qsize - 1):
        dist = torch.mm(qvecs.t(), qvecs[:, idx : idx + 1])
        dists = torch.cat([dists, dist], dim=1)
        most_similar = dists.max(dim=1)[0]
        valid_size = qpool_size - len(idxs)
        similar_split = max(int(valid_size * (1 - similar_exclude)), 1)
        dissimilar_split = min(int(valid_size * (1 - similar_include)), similar_split - 1)
        order = most_similar.argsort(stable=True) if stable else most_similar.argsort()
        dissimilar_part = order[dissimilar_split:similar_split]
        if deterministic:
            choice = dissimilar_part.shape[0] - 1
        else:
            choice = torch.randint(dissimilar_part.shape[0], (1,)).item()
        idx = dissimilar_part[choice].item()
        idxs.append(idx)
    return idxs
