"""Learned whitening: defining properties, a literal re-derivation, published-format pickles."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch

from dsa_plugin.evaluation.whitening import (
    Whitening,
    WhiteningError,
    apply_whitening,
    cholesky_with_loading,
    learn_whitening,
    load_whitening,
    save_whitening,
)


def synthetic_pairs(D=8, n_groups=60, per_group=4, seed=0):
    """Descriptors of n_groups landmarks, per_group noisy views each, anisotropic noise; all pairs of a group."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n_groups, D)) * 2.0
    mix = rng.normal(size=(D, D)) * np.linspace(0.1, 1.0, D)
    X = np.repeat(centers, per_group, axis=0) + rng.normal(size=(n_groups * per_group, D)) @ mix
    qidxs, pidxs = [], []
    for g in range(n_groups):
        ids = range(g * per_group, (g + 1) * per_group)
        for a in ids:
            for b in ids:
                if a < b:
                    qidxs.append(a)
                    pidxs.append(b)
    return X, qidxs, pidxs


def test_whitened_pair_differences_have_identity_covariance():
    X, q, p = synthetic_pairs()
    w = learn_whitening(X, q, p)
    assert w["m"].shape == (8, 1) and w["P"].shape == (8, 8)
    assert w["m"].dtype == np.float64 and w["P"].dtype == np.float64
    diff = (X[q] - X[p]).T
    S = diff @ diff.T / diff.shape[1]
    np.testing.assert_allclose(w["P"] @ S @ w["P"].T, np.eye(8), atol=1e-9)


def test_projected_descriptors_are_decorrelated_and_sorted():
    X, q, p = synthetic_pairs(seed=1)
    w = learn_whitening(X, q, p)
    Y = w["P"] @ (X.T - w["m"])
    C = Y @ Y.T
    off = C - np.diag(np.diag(C))
    assert np.abs(off).max() < 1e-8 * np.abs(np.diag(C)).max()
    assert np.all(np.diff(np.diag(C)) <= 1e-9)  # descending variance order
    # m is the mean of the *query* descriptors
    np.testing.assert_allclose(w["m"][:, 0], X[q].mean(axis=0))


def test_matches_literal_derivation_up_to_row_signs():
    X, q, p = synthetic_pairs(D=6, seed=2)
    Xc = X.T
    m = np.mean(Xc[:, q], axis=1).reshape(-1, 1)
    d = Xc[:, q] - Xc[:, p]
    S = d @ d.T / len(q)
    L = np.linalg.cholesky(S)
    P1 = np.linalg.solve(L, np.eye(6))
    vals, vecs = np.linalg.eig((P1 @ (Xc - m)) @ (P1 @ (Xc - m)).T)
    order = np.argsort(-vals.real)
    P_ref = vecs[:, order].real.T @ P1
    w = learn_whitening(torch.from_numpy(X), q, p)  # torch input accepted too
    signs = np.sign(np.sum(w["P"] * P_ref, axis=1))
    np.testing.assert_allclose(w["P"] * signs[:, None], P_ref, atol=1e-8)
    np.testing.assert_allclose(w["m"], m)


def test_rank_deficient_covariance_gets_diagonal_loading():
    X, q, p = synthetic_pairs(D=16, n_groups=3, per_group=2)  # 3 pairs for 16 dims: singular S
    w = learn_whitening(X, q, p)
    assert np.isfinite(w["P"]).all()
    L = cholesky_with_loading(np.zeros((3, 3)))
    assert np.isfinite(L).all() and np.all(np.diag(L) > 0)


def test_published_format_pickle_loads_and_applies(tmp_path):
    rng = np.random.default_rng(3)
    D = 5
    lw = {"m": rng.normal(size=(D, 1)), "P": rng.normal(size=(D, D))}
    path = tmp_path / "retrievalSfM120k-vgg16-gem_lw.pkl"
    with open(path, "wb") as f:
        pickle.dump(lw, f, protocol=2)  # as older tooling writes them
    w = load_whitening(path)
    np.testing.assert_array_equal(w["P"], lw["P"])
    x = torch.from_numpy(rng.normal(size=(4, D))).float()
    ref = (lw["P"] @ (x.double().numpy().T - lw["m"])).T
    ref = ref / (np.linalg.norm(ref, axis=1, keepdims=True) + 1e-6)
    np.testing.assert_allclose(apply_whitening(x, w).numpy(), ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(Whitening(w)(x).numpy(), ref, rtol=1e-5, atol=1e-6)
    # reduced dimensionality keeps the leading rows
    assert apply_whitening(x, w, dimensions=3).shape == (4, 3)


def test_save_roundtrip(tmp_path):
    X, q, p = synthetic_pairs(D=4)
    w = learn_whitening(X, q, p)
    path = save_whitening(w, tmp_path / "sub" / "lw.pkl")
    back = load_whitening(path)
    np.testing.assert_array_equal(back["P"], w["P"])
    assert not [f for f in os.listdir(path.parent) if f.endswith(".tmp")]


def test_bad_whitening_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope_lw.pkl"):
        load_whitening(tmp_path / "nope_lw.pkl")
    bad = tmp_path / "bad_lw.pkl"
    with open(bad, "wb") as f:
        pickle.dump({"m": np.zeros((3, 1))}, f)
    with pytest.raises(WhiteningError, match=r"bad_lw.pkl.*missing key\(s\) \['P'\]"):
        load_whitening(bad)
    with open(bad, "wb") as f:
        pickle.dump({"m": np.zeros((3, 1)), "P": np.zeros((4, 4))}, f)
    with pytest.raises(WhiteningError, match="'P' must have shape"):
        load_whitening(bad)
    with open(bad, "wb") as f:
        pickle.dump([1, 2], f)
    with pytest.raises(WhiteningError, match="expected a dict"):
        load_whitening(bad)
    with pytest.raises(WhiteningError, match="do not match"):
        apply_whitening(torch.zeros(2, 7), {"m": np.zeros((3, 1)), "P": np.eye(3)})


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_pickles_with_code_are_refused(tmp_path):
    path = tmp_path / "evil_lw.pkl"
    with open(path, "wb") as f:
        pickle.dump({"m": _Evil(), "P": np.eye(2)}, f)
    with pytest.raises(WhiteningError, match="evil_lw.pkl.*system"):
        load_whitening(path)


def test_bad_pairs():
    X = np.zeros((4, 2))
    with pytest.raises(ValueError, match="equal length"):
        learn_whitening(X, [0, 1], [2])
    with pytest.raises(ValueError, match="pair indices"):
        learn_whitening(X, [0], [9])
