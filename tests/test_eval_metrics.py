"""mAP / mP@k against hand-computed values and an independent, literal implementation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dsa_plugin.evaluation.metrics import (
    GroundTruthError,
    average_precision,
    compute_map,
    detect_protocol,
    evaluate_ranks,
    rank_database,
    revisited_gnd,
)

# ---------------------------------------------------------------- literal reference (slow, obvious)


def literal_query(ranking, ok, junk, kappas):
    """Walk the ranking once, dropping junk, and integrate the PR curve with trapezoids."""
    ok, junk = set(int(i) for i in ok), set(int(i) for i in junk)
    clean = []  # the ranking with junk removed, positives only kept as flags
    for item in ranking:
        item = int(item)
        if item in ok:
            clean.append(True)
        elif item in junk:
            continue
        else:
            clean.append(False)
    ap = 0.0
    found = 0
    hits = []
    for position, is_pos in enumerate(clean):
        if not is_pos:
            continue
        left = 1.0 if position == 0 else found / position
        right = (found + 1) / (position + 1)
        ap += (left + right) / 2.0 / len(ok)
        found += 1
        hits.append(position + 1)
    precisions = []
    for k in kappas:
        if not hits:
            precisions.append(0.0)
            continue
        cut = min(k, hits[-1])
        precisions.append(sum(1 for h in hits if h <= cut) / cut)
    return ap, precisions


def literal_map(ranks, gnd, kappas):
    aps, prs = [], []
    for i, g in enumerate(gnd):
        if len(g["ok"]) == 0:
            continue
        ap, p = literal_query(ranks[:, i], g["ok"], g.get("junk", []), kappas)
        aps.append(ap)
        prs.append(p)
    return float(np.mean(aps)), np.mean(np.array(prs), axis=0)


# ---------------------------------------------------------------- hand-built cases


def one(ranking, ok, junk=(), kappas=()):
    return compute_map(np.array(ranking)[:, None], [{"ok": list(ok), "junk": list(junk)}], kappas)


def test_all_positives_first_is_perfect():
    r = one([3, 1, 0, 2, 4], ok=[3, 1], kappas=(1, 5, 10))
    assert r.map == pytest.approx(1.0)
    # k' = min(k, rank of last positive = 2): P@5 = 2/2
    assert r.mpr.tolist() == pytest.approx([1.0, 1.0, 1.0])


def test_single_positive_second_is_a_quarter():
    # trapezoid between P0 = 0/1 and P1 = 1/2
    assert one([0, 1, 2], ok=[1]).map == pytest.approx(0.25)


def test_junk_before_positive_is_removed():
    assert one([2, 0, 1], ok=[0], junk=[2]).map == pytest.approx(1.0)
    assert one([2, 0, 1], ok=[0]).map == pytest.approx(0.25)


def test_junk_after_positives_changes_nothing_but_junk_between_does():
    assert one([0, 1, 2, 3], ok=[0, 1], junk=[2]).map == pytest.approx(1.0)
    # positives at 0 and 2 with an unlabelled negative between: (1 + (1/2 + 2/3) / 2) / 2
    assert one([0, 2, 1], ok=[0, 1]).map == pytest.approx((1 + (0.5 + 2 / 3) / 2) / 2)
    # the same item declared junk: it vanishes and both positives are on top
    assert one([0, 2, 1], ok=[0, 1], junk=[2]).map == pytest.approx(1.0)


def test_missing_positive_in_truncated_ranking_counts_against_ap():
    # 2 positives, only one retrieved (at the top): AP = 1/2
    assert one([0, 5, 6], ok=[0, 9]).map == pytest.approx(0.5)


def test_precision_at_k_uses_last_positive_cap():
    r = one([5, 0, 6, 7, 8, 9, 10, 11, 12, 13, 1], ok=[0, 1], kappas=(1, 5, 10))
    # hits at ranks 2 and 11: P@1 = 0/1, P@5 = 1/5, P@10 = 1/10
    assert r.mpr.tolist() == pytest.approx([0.0, 0.2, 0.1])


def test_queries_without_positives_are_skipped():
    ranks = np.array([[0, 0, 1], [1, 1, 0], [2, 2, 2]])
    gnd = [{"ok": [1], "junk": []}, {"ok": [], "junk": [0]}, {"ok": [1]}]
    r = compute_map(ranks, gnd, kappas=(1,))
    assert math.isnan(r.aps[1]) and np.isnan(r.prs[1]).all()
    assert r.map == pytest.approx((0.25 + 1.0) / 2)
    assert r.num_evaluated == 2
    assert r.as_dict()["num_queries"] == 3


def test_no_query_with_positives_gives_nan():
    r = compute_map(np.array([[0], [1]]), [{"ok": []}], kappas=(1,))
    assert math.isnan(r.map)


def test_average_precision_examples():
    assert average_precision([0, 2], 2) == pytest.approx((1.0 + (0.5 + 2 / 3) / 2) / 2)
    assert average_precision([], 3) == 0.0
    with pytest.raises(ValueError):
        average_precision([0], 0)


def test_revisited_settings_hand_case():
    # db 0..5; query: easy {0}, hard {3}, junk {1}
    g = [{"easy": np.array([0]), "hard": np.array([3]), "junk": np.array([1])}]
    ranks = np.array([3, 1, 0, 2, 4, 5])[:, None]
    res = evaluate_ranks(ranks, g, kappas=(1,))
    assert res["protocol"] == "revisited"
    # easy: ok {0}, junk {1, 3} -> 0 first after removing junk
    assert res["easy"]["map"] == pytest.approx(1.0)
    # medium: ok {0, 3}, junk {1}: clean ranking 3, 0, 2 -> both on top
    assert res["medium"]["map"] == pytest.approx(1.0)
    # hard: ok {3}, junk {0, 1}: 3 first
    assert res["hard"]["map"] == pytest.approx(1.0)
    ranks2 = np.array([0, 2, 3, 1, 4, 5])[:, None]
    res2 = evaluate_ranks(ranks2, g, kappas=(1,))
    assert res2["easy"]["map"] == pytest.approx(1.0)
    assert res2["medium"]["map"] == pytest.approx((1 + (0.5 + 2 / 3) / 2) / 2)
    # hard: junk 0 removed, clean ranking 2, 3 -> positive second
    assert res2["hard"]["map"] == pytest.approx(0.25)


def test_revisited_mapping_matches_definition():
    g = [{"easy": [1, 2], "hard": [3], "junk": [4]}]
    assert sorted(revisited_gnd(g, "easy")[0]["junk"].tolist()) == [3, 4]
    assert sorted(revisited_gnd(g, "medium")[0]["ok"].tolist()) == [1, 2, 3]
    assert sorted(revisited_gnd(g, "hard")[0]["junk"].tolist()) == [1, 2, 4]


# ---------------------------------------------------------------- random rankings vs literal


@pytest.mark.parametrize("seed", range(25))
def test_random_rankings_match_literal_implementation(seed):
    rng = np.random.default_rng(seed)
    n, q = int(rng.integers(5, 60)), int(rng.integers(1, 8))
    ranks = np.stack([rng.permutation(n) for _ in range(q)], axis=1)
    gnd = []
    for _ in range(q):
        perm = rng.permutation(n)
        n_ok = int(rng.integers(0, max(1, n // 3)))
        n_junk = int(rng.integers(0, max(1, n // 4)))
        gnd.append({"ok": perm[:n_ok], "junk": perm[n_ok : n_ok + n_junk]})
    if all(len(g["ok"]) == 0 for g in gnd):
        gnd[0]["ok"] = np.array([int(ranks[-1, 0])])
    kappas = (1, 5, 10)
    res = compute_map(ranks, gnd, kappas)
    ref_map, ref_pr = literal_map(ranks, gnd, kappas)
    assert res.map == pytest.approx(ref_map, abs=1e-12)
    np.testing.assert_allclose(res.mpr, ref_pr, atol=1e-12)
    for i, g in enumerate(gnd):
        if len(g["ok"]):
            ap, pr = literal_query(ranks[:, i], g["ok"], g["junk"], kappas)
            assert res.aps[i] == pytest.approx(ap, abs=1e-12)
            np.testing.assert_allclose(res.prs[i], pr, atol=1e-12)


def test_random_revisited_matches_literal():
    rng = np.random.default_rng(7)
    n, q = 40, 5
    ranks = np.stack([rng.permutation(n) for _ in range(q)], axis=1)
    gnd = []
    for _ in range(q):
        perm = rng.permutation(n)
        gnd.append({"easy": perm[:4], "hard": perm[4:7], "junk": perm[7:10]})
    res = evaluate_ranks(ranks, gnd)
    for setting, (ok_keys, junk_keys) in {
        "easy": (["easy"], ["junk", "hard"]),
        "medium": (["easy", "hard"], ["junk"]),
        "hard": (["hard"], ["junk", "easy"]),
    }.items():
        lit = [
            {"ok": np.concatenate([g[k] for k in ok_keys]), "junk": np.concatenate([g[k] for k in junk_keys])}
            for g in gnd
        ]
        m, pr = literal_map(ranks, lit, (1, 5, 10))
        assert res[setting]["map"] == pytest.approx(m, abs=1e-12)
        assert [res[setting][f"mp@{k}"] for k in (1, 5, 10)] == pytest.approx(pr.tolist(), abs=1e-12)


# ---------------------------------------------------------------- ranking, bad input


def test_rank_database_orders_by_dot_product():
    import torch

    db = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.7071, 0.7071]])
    q = torch.tensor([[0.0, 1.0], [1.0, 0.1]])
    ranks = rank_database(db, q)
    assert ranks[:, 0].tolist() == [1, 2, 0]
    assert ranks[:, 1].tolist() == [0, 2, 1]


def test_bad_ground_truth_is_named():
    with pytest.raises(GroundTruthError, match="gnd\\[0\\].*'ok'"):
        compute_map(np.array([[0]]), [{"easy": [0]}])
    with pytest.raises(GroundTruthError, match="lacks \\['hard'\\]"):
        revisited_gnd([{"easy": [0], "junk": []}], "medium")
    with pytest.raises(GroundTruthError, match="expected 'ok'"):
        detect_protocol([{"positives": [0]}])
    with pytest.raises(ValueError, match="query columns"):
        compute_map(np.zeros((3, 2), dtype=int), [{"ok": [0]}])
