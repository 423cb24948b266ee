"""Learned whitening "lw" (docs/reference.md §whitening): learn from matching pairs, load, apply.

The whitening is a dict ``{'m': (D, 1) float64, 'P': (D, D) float64}``, the layout of the
published ``*_lw.pkl`` files. Descriptors in this package are rows (``[N, D]``); the dict keeps
the column convention of the files (``m`` is a column vector, ``v' = P (v - m)``).

Learning:

1. ``m`` = mean of the query descriptors;
2. ``S`` = covariance of the matching-pair differences ``(x_q - x_p)``;
3. ``P1 = L^-1`` with ``S = L L^T`` (Cholesky; diagonal loading 1e-10, x10 per retry, when ``S``
   is not positive definite);
4. ``Y = P1 (X - m)`` over *all* descriptors, eigenvectors ``E`` of ``Y Y^T`` by descending eigenvalue;
5. ``P = E^T P1``.

So ``P S P^T = I`` (whitened pair differences have identity covariance) and
``P (X - m)(X - m)^T P^T`` is diagonal (projected descriptors are decorrelated).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from dsa_plugin.core.safe_pickle import PickleFileError, dump_pickle, load_pickle


class WhiteningError(ValueError):
    """A whitening file or dict does not have the ``{'m': (D,1), 'P': (D,D)}`` layout."""


def _to_numpy64(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def cholesky_with_loading(S: np.ndarray, max_tries: int = 20) -> np.ndarray:
    """Lower Cholesky factor of ``S``, adding ``alpha * I`` (1e-10, x10 each retry) until it is positive definite.

    Example:
        >>> import numpy as np
        >>> cholesky_with_loading(np.diag([4.0, 9.0]))
        array([[2., 0.],
               [0., 3.]])
    """
    eye = np.eye(S.shape[0])
    alpha = 0.0
    for _ in range(max_tries + 1):
        try:
            return np.linalg.cholesky(S + alpha * eye)
        except np.linalg.LinAlgError:
            alpha = 1e-10 if alpha == 0.0 else alpha * 10.0
    raise np.linalg.LinAlgError(
        f"matching-pair covariance is not positive definite even with {alpha:.0e} diagonal loading "
        "(non-finite descriptors, or far too few pairs?)"
    )


def learn_whitening(X, qidxs: Sequence[int], pidxs: Sequence[int]) -> dict[str, np.ndarray]:
    """Learn lw whitening from descriptors and matching (query, positive) pairs.

    Args:
        X: ``[N, D]`` descriptors (rows; numpy or torch), computed without whitening.
        qidxs, pidxs: equal-length row indices of matching pairs.

    Returns:
        ``{'m': (D, 1) float64, 'P': (D, D) float64}`` (the published ``*_lw.pkl`` layout).

    Example:
        >>> X = np.random.default_rng(0).normal(size=(50, 4))
        >>> w = learn_whitening(X, list(range(0, 50, 2)), list(range(1, 50, 2)))
        >>> w["m"].shape, w["P"].shape
        ((4, 1), (4, 4))
    """
    X = _to_numpy64(X)
    if X.ndim != 2:
        raise ValueError(f"X must be [N, D] descriptors, got shape {X.shape}")
    q = np.asarray(qidxs, dtype=np.int64).reshape(-1)
    p = np.asarray(pidxs, dtype=np.int64).reshape(-1)
    if q.size != p.size or q.size == 0:
        raise ValueError(f"qidxs and pidxs must be non-empty and of equal length, got {q.size} and {p.size}")
    n = X.shape[0]
    bad = np.concatenate([q, p])
    if bad.min() < 0 or bad.max() >= n:
        raise ValueError(f"pair indices must be in [0, {n}), got range [{bad.min()}, {bad.max()}]")
    Xc = X.T  # columns, as the definition is written
    m = Xc[:, q].mean(axis=1, keepdims=True)
    diff = Xc[:, q] - Xc[:, p]
    S = diff @ diff.T / diff.shape[1]
    P1 = np.linalg.inv(cholesky_with_loading(S))
    Y = P1 @ (Xc - m)
    eigval, eigvec = np.linalg.eigh(Y @ Y.T)  # symmetric: eigh gives real, orthonormal vectors
    order = np.argsort(eigval)[::-1]
    P = eigvec[:, order].T @ P1
    return {"m": m, "P": P}


def validate_whitening(w: Mapping, source: str = "whitening") -> dict[str, np.ndarray]:
    """Check and normalise a whitening dict: ``m`` to (D, 1), ``P`` (d, D) with d <= D, float64.

    Example:
        >>> import numpy as np
        >>> w = validate_whitening({"m": np.zeros(4), "P": np.eye(4)})
        >>> w["m"].shape, w["P"].dtype
        ((4, 1), dtype('float64'))
    """
    if not isinstance(w, Mapping):
        raise WhiteningError(f"{source}: expected a dict with keys 'm' and 'P', got {type(w).__name__}")
    missing = [k for k in ("m", "P") if k not in w]
    if missing:
        raise WhiteningError(
            f"{source}: missing key(s) {missing} (found {sorted(map(str, w))}); expected {{'m': (D,1), 'P': (D,D)}}"
        )
    m, P = _to_numpy64(w["m"]), _to_numpy64(w["P"])
    if m.ndim == 1:
        m = m[:, None]
    if m.ndim != 2 or m.shape[1] != 1:
        raise WhiteningError(f"{source}: key 'm' must have shape (D, 1), got {m.shape}")
    D = m.shape[0]
    if P.ndim != 2 or P.shape[1] != D or P.shape[0] > D:
        raise WhiteningError(
            f"{source}: key 'P' must have shape (D, D) = ({D}, {D}) (or (d, {D}) with d <= {D}), got {P.shape}"
        )
    if not (np.isfinite(m).all() and np.isfinite(P).all()):
        raise WhiteningError(f"{source}: 'm' or 'P' holds non-finite values")
    return {"m": m, "P": P}


def load_whitening(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Load a published-format ``*_lw.pkl`` (``{'m': (D,1), 'P': (D,D)}``), refusing non-numpy pickles."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"whitening file not found: {path}")
    try:
        w = load_pickle(path)
    except PickleFileError as err:
        raise WhiteningError(str(err)) from None
    return validate_whitening(w, source=str(path))


def save_whitening(w: Mapping, path: str | os.PathLike) -> Path:
    """Write ``w`` in the published ``*_lw.pkl`` layout (atomic)."""
    w = validate_whitening(w)
    return dump_pickle({"m": w["m"], "P": w["P"]}, path)


def _work_dtype(device: torch.device) -> torch.dtype:
    # float64 as the reference computes it; MPS has no float64
    return torch.float32 if device.type == "mps" else torch.float64


def apply_whitening(X: torch.Tensor, w: Mapping, dimensions: int | None = None) -> torch.Tensor:
    """Whiten descriptor rows: ``v <- P[:d] (v - m)``, then L2 normalisation (``/ (||.|| + 1e-6)``).

    Args:
        X: ``[N, D]`` descriptors (any device; the result keeps device and dtype).
        w: ``{'m', 'P'}`` as returned by :func:`learn_whitening` / :func:`load_whitening`.
        dimensions: keep the first ``d`` whitened dimensions (None: all).

    Returns:
        ``[N, d]`` whitened, L2-normalised descriptors.

    Example:
        >>> import numpy as np, torch
        >>> w = {"m": np.zeros((2, 1)), "P": np.array([[2.0, 0.0], [0.0, 1.0]])}
        >>> apply_whitening(torch.tensor([[1.0, 2.0]]), w).round(decimals=4)
        tensor([[0.7071, 0.7071]])
    """
    w = validate_whitening(w)
    if X.ndim != 2 or X.shape[1] != w["m"].shape[0]:
        raise WhiteningError(f"descriptors {tuple(X.shape)} do not match the whitening's D = {w['m'].shape[0]}")
    dt = _work_dtype(X.device)
    P = torch.as_tensor(w["P"][: dimensions or None], dtype=dt, device=X.device)
    m = torch.as_tensor(w["m"][:, 0], dtype=dt, device=X.device)
    Y = (X.to(dt) - m) @ P.T
    Y = Y / (Y.norm(dim=1, keepdim=True) + 1e-6)
    return Y.to(X.dtype)


class Whitening(nn.Module):
    """Module form of :func:`apply_whitening` for ``[N, D]`` descriptor rows (buffers follow ``.to(device)``).

    Example:
        >>> import numpy as np, torch
        >>> white = Whitening({"m": np.zeros((2, 1)), "P": np.eye(2)}, dimensions=1)
        >>> white(torch.tensor([[3.0, 4.0]])).round(decimals=4)
        tensor([[1.]])
    """

    def __init__(self, w: Mapping, dimensions: int | None = None):
        super().__init__()
        w = validate_whitening(w)
        d = dimensions or w["P"].shape[0]
        self.register_buffer("m", torch.as_tensor(w["m"][:, 0], dtype=torch.float64))
        self.register_buffer("P", torch.as_tensor(w["P"][:d], dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dt = _work_dtype(x.device)
        y = (x.to(dt) - self.m.to(dt)) @ self.P.to(dt).T
        return (y / (y.norm(dim=1, keepdim=True) + 1e-6)).to(x.dtype)
