"""Average precision and mAP with the standard retrieval protocols.

Semantics are those of the standard revisited Oxford/Paris evaluation (cirtorch
``utils/evaluate.py``, docs/reference.md §map):

- rank positions of the positives (0-based) are reduced by the number of junk images ranked
  ahead of each of them, i.e. junk images are removed from the ranking;
- AP uses trapezoidal interpolation: ``AP = sum_j (P0_j + P1_j) / 2 / n_pos`` with
  ``P0_j = j / r_j`` (1 when ``r_j == 0``) and ``P1_j = (j + 1) / (r_j + 1)``;
- ``n_pos`` is the length of the ``ok`` list (positives missing from a truncated ranking count);
- queries with an empty ``ok`` list are skipped from every mean (their AP is NaN);
- mP@k uses the standard definition ``k' = min(k, rank of the last positive)`` and
  ``P@k = #positives within k' / k'``.

Protocols: ``old`` (gnd entries with ``ok``/``junk``: Oxford5k, Paris6k, Tokyo 24/7
``247tokyo1k``, folder datasets) and ``revisited`` (``easy``/``hard``/``junk``: ROxford5k,
RParis6k), evaluated as Easy (ok = easy, junk = junk + hard), Medium (ok = easy + hard,
junk = junk) and Hard (ok = hard, junk = junk + easy).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import torch

DEFAULT_KAPPAS: tuple[int, ...] = (1, 5, 10)
REVISITED_SETTINGS = ("easy", "medium", "hard")


class GroundTruthError(ValueError):
    """A ground-truth entry does not have the layout of the requested protocol."""


@dataclass(frozen=True)
class MapResult:
    """Outcome of :func:`compute_map` (the fields of the standard ``compute_map``).

    ``map``: mean AP over queries that have positives; ``aps``: per-query AP (NaN when skipped);
    ``mpr``: mean precision at each kappa; ``prs``: per-query precision at each kappa, ``[Q, K]``.
    """

    map: float
    aps: np.ndarray
    mpr: np.ndarray
    prs: np.ndarray
    kappas: tuple[int, ...]

    @property
    def num_evaluated(self) -> int:
        return int(np.count_nonzero(~np.isnan(self.aps)))

    def as_dict(self) -> dict:
        """JSON-friendly summary: ``{'map', 'mp@k'..., 'num_queries', 'num_evaluated'}``."""
        out = {"map": float(self.map)}
        for k, v in zip(self.kappas, self.mpr):
            out[f"mp@{k}"] = float(v)
        out["num_queries"] = int(len(self.aps))
        out["num_evaluated"] = self.num_evaluated
        return out


def average_precision(positive_ranks: np.ndarray | Sequence[int], num_positives: int) -> float:
    """Trapezoidal AP from the sorted 0-based ranks of the retrieved positives (junk removed).

    Args:
        positive_ranks: ``[n]`` increasing 0-based ranks of the positives found in the ranking.
        num_positives: number of positives of the query (``n >= len(positive_ranks)``).

    Example:
        >>> average_precision([0, 2], 2)  # hits at 1st and 3rd place
        0.7916666666666666
    """
    if num_positives <= 0:
        raise ValueError(f"num_positives must be > 0, got {num_positives}")
    r = np.asarray(positive_ranks, dtype=np.float64)
    if r.size == 0:
        return 0.0
    j = np.arange(r.size, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        p0 = np.where(r == 0, 1.0, j / np.where(r == 0, 1.0, r))
    p1 = (j + 1.0) / (r + 1.0)
    return float(np.sum(p0 + p1) / (2.0 * num_positives))


def _as_index_array(value, key: str, query: int) -> np.ndarray:
    arr = np.asarray(value if value is not None else [], dtype=np.int64).reshape(-1)
    if arr.size and arr.min() < 0:
        raise GroundTruthError(f"gnd[{query}]['{key}'] holds a negative db index ({arr.min()})")
    return arr


def _ranked_keys(inverse: np.ndarray, lists: Sequence[np.ndarray], stride: int) -> np.ndarray:
    """Sorted unique keys ``query * stride + position`` of the listed db items found in each ranking."""
    cols = np.repeat(np.arange(len(lists)), [x.size for x in lists])
    if not cols.size:
        return np.zeros(0, dtype=np.int64)
    pos = inverse[np.concatenate(lists), cols]
    keep = pos >= 0  # items missing from a truncated ranking are never retrieved
    return np.unique(cols[keep] * stride + pos[keep])


def _ap_chunk(ranks, oks, junks, n_ok, size, kappas):
    """AP and P@k of a block of queries at once, working on the positions of positives and junk only."""
    n, nq = ranks.shape
    inverse = np.full((size, nq), -1, dtype=np.int64)  # inverse[d, i]: position of db item d for query i
    inverse[ranks, np.arange(nq)[None, :]] = np.arange(n, dtype=np.int64)[:, None]
    stride = n + 1
    key = _ranked_keys(inverse, oks, stride)
    jkey = _ranked_keys(inverse, junks, stride)
    col, pos = key // stride, key % stride
    col_start = col * stride
    # junk strictly ahead of a positive (same query) shifts it up by one place
    r = pos - (np.searchsorted(jkey, key, side="left") - np.searchsorted(jkey, col_start, side="left"))
    j = np.arange(key.size) - np.searchsorted(key, col_start, side="left")  # positives ahead of it
    p0 = np.where(r == 0, 1.0, j / np.maximum(r, 1))
    p1 = (j + 1.0) / (r + 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        ap = np.bincount(col, weights=p0 + p1, minlength=nq) / (2.0 * n_ok)
    empty = n_ok == 0
    ap[empty] = np.nan  # no positives: skipped from the mean, as the standard code does
    prs = np.full((nq, len(kappas)), np.nan)
    if kappas:
        pos1 = r + 1  # 1-based rank of each retrieved positive, junk removed
        last = np.zeros(nq, dtype=np.int64)
        np.maximum.at(last, col, pos1)
        for t, k in enumerate(kappas):
            kq = np.minimum(last, k)
            hits = np.bincount(col, weights=(pos1 <= kq[col]).astype(np.float64), minlength=nq)
            prs[:, t] = np.where(last > 0, hits / np.maximum(kq, 1), 0.0)
        prs[empty] = np.nan
    return ap, prs


def compute_map(
    ranks: np.ndarray | torch.Tensor,
    gnd: Sequence[Mapping],
    kappas: Sequence[int] = (),
) -> MapResult:
    """mAP (and mP@k) of a ranking under the ok/junk protocol.

    Args:
        ranks: ``[N, Q]`` db indices, column ``i`` is the ranking of query ``i`` (best first);
            ``N`` may be smaller than the db (a truncated ranking).
        gnd: ``Q`` dicts with ``'ok'`` (positive db indices) and optionally ``'junk'``.
        kappas: the k of mP@k.

    Example:
        >>> ranks = np.array([[1], [0], [2]])  # query 0 ranks db items 1, 0, 2
        >>> compute_map(ranks, [{"ok": [0], "junk": [1]}]).map  # junk 1 is removed -> hit at top
        1.0
    """
    ranks = ranks.cpu().numpy() if isinstance(ranks, torch.Tensor) else np.asarray(ranks)
    if ranks.ndim != 2:
        raise ValueError(f"ranks must be [N, Q] (db x queries), got shape {tuple(ranks.shape)}")
    nq = len(gnd)
    if ranks.shape[1] != nq:
        raise ValueError(f"ranks has {ranks.shape[1]} query columns but gnd has {nq} entries")
    kappas = tuple(int(k) for k in kappas)
    oks, junks = [], []
    for i, g in enumerate(gnd):
        if "ok" not in g:
            raise GroundTruthError(f"gnd[{i}] has no 'ok' key (keys: {sorted(g)}); the old protocol needs ok/junk")
        oks.append(_as_index_array(g["ok"], "ok", i))
        junks.append(_as_index_array(g.get("junk"), "junk", i))
    n_ok = np.array([o.size for o in oks], dtype=np.float64)
    size = max([int(ranks.max()) + 1 if ranks.size else 0] + [int(a.max()) + 1 for a in oks + junks if a.size])
    aps = np.full(nq, np.nan)
    prs = np.full((nq, len(kappas)), np.nan)
    # bounded memory: a few [N, chunk] matrices at a time
    chunk = max(1, min(nq, 2_000_000 // max(1, ranks.shape[0])))
    for a in range(0, nq, chunk):
        b = min(nq, a + chunk)
        aps[a:b], prs[a:b] = _ap_chunk(ranks[:, a:b], oks[a:b], junks[a:b], n_ok[a:b], size, kappas)
    valid = ~np.isnan(aps)
    if not valid.any():
        mean_ap = float("nan")
        mpr = np.full(len(kappas), np.nan)
    else:
        mean_ap = float(aps[valid].mean())
        mpr = prs[valid].mean(axis=0) if kappas else np.zeros(0)
    return MapResult(map=mean_ap, aps=aps, mpr=np.asarray(mpr, dtype=np.float64), prs=prs, kappas=kappas)


def detect_protocol(gnd: Sequence[Mapping]) -> str:
    """``'old'`` when entries have ``ok`` (as the reference decides), ``'revisited'`` for easy/hard.

    Example:
        >>> detect_protocol([{"ok": [0], "junk": []}]), detect_protocol([{"easy": [0], "hard": [], "junk": []}])
        ('old', 'revisited')
    """
    if not gnd:
        raise GroundTruthError("gnd is empty: no queries to evaluate")
    first = gnd[0]
    if "ok" in first:
        return "old"
    if "easy" in first and "hard" in first:
        return "revisited"
    raise GroundTruthError(
        f"gnd[0] has keys {sorted(first)}; expected 'ok'[/'junk'] (old protocol) or 'easy'/'hard'/'junk' (revisited)"
    )


def revisited_gnd(gnd: Sequence[Mapping], setting: str) -> list[dict]:
    """Map easy/hard/junk entries to ok/junk for the Easy, Medium or Hard setting.

    Example:
        >>> revisited_gnd([{"easy": [0], "hard": [1], "junk": [2]}], "medium")
        [{'ok': array([0, 1]), 'junk': array([2])}]
    """
    parts = {
        "easy": (("easy",), ("junk", "hard")),
        "medium": (("easy", "hard"), ("junk",)),
        "hard": (("hard",), ("junk", "easy")),
    }
    if setting not in parts:
        raise ValueError(f"unknown revisited setting '{setting}'; allowed: {list(parts)}")
    ok_keys, junk_keys = parts[setting]
    out = []
    for i, g in enumerate(gnd):
        missing = [k for k in ("easy", "hard", "junk") if k not in g]
        if missing:
            raise GroundTruthError(
                f"gnd[{i}] lacks {missing} (keys: {sorted(g)}); the revisited protocol needs easy/hard/junk"
            )
        out.append(
            {
                "ok": np.concatenate([_as_index_array(g[k], k, i) for k in ok_keys]),
                "junk": np.concatenate([_as_index_array(g[k], k, i) for k in junk_keys]),
            }
        )
    return out


def evaluate_ranks(
    ranks: np.ndarray | torch.Tensor,
    gnd: Sequence[Mapping],
    kappas: Sequence[int] = DEFAULT_KAPPAS,
    protocol: str | None = None,
) -> dict:
    """Evaluate a ranking with the protocol its gnd calls for; JSON-friendly result.

    Returns ``{'protocol': 'old', 'map', 'mp@k'..., ...}`` or
    ``{'protocol': 'revisited', 'easy': {...}, 'medium': {...}, 'hard': {...}}``.

    Example:
        >>> import numpy as np
        >>> ranks = np.array([[1], [0], [2]])        # db positions, best first, one column per query
        >>> evaluate_ranks(ranks, [{"ok": [0], "junk": []}], kappas=(1,))["map"]  # cirtorch's trapezoid AP
        0.25
    """
    protocol = protocol or detect_protocol(gnd)
    if protocol == "old":
        return {"protocol": "old", **compute_map(ranks, gnd, kappas).as_dict()}
    if protocol == "revisited":
        return {
            "protocol": "revisited",
            **{s: compute_map(ranks, revisited_gnd(gnd, s), kappas).as_dict() for s in REVISITED_SETTINGS},
        }
    raise ValueError(f"unknown protocol '{protocol}'; allowed: 'old', 'revisited'")


def rank_database(db: torch.Tensor, queries: torch.Tensor) -> np.ndarray:
    """Rank db rows by dot-product similarity to each query row, best first.

    Args:
        db: ``[N, D]`` descriptors; queries: ``[Q, D]`` descriptors.

    Returns:
        ``[N, Q]`` int64 ranks (column ``i`` = db indices for query ``i``); ties keep db order.

    Example:
        >>> import torch
        >>> db = torch.eye(3)
        >>> rank_database(db, torch.tensor([[0.1, 0.9, 0.0]]))[:, 0]
        array([1, 0, 2])
    """
    if db.ndim != 2 or queries.ndim != 2 or db.shape[1] != queries.shape[1]:
        raise ValueError(
            f"need db [N, D] and queries [Q, D] with equal D, got {tuple(db.shape)} and {tuple(queries.shape)}"
        )
    scores = (db.double() @ queries.double().T).cpu().numpy()
    return np.argsort(-scores, axis=0, kind="stable")
