"""Evaluate a network on named test sets and on folder datasets; learn whitening from a db.

All evaluators share the test-time pipeline of :mod:`dsa_plugin.evaluation.descriptors`
(thumbnail, CLAHE, multi-scale GeM-p) followed by optional lw whitening, dot-product ranking and
the standard mAP protocols of :mod:`dsa_plugin.evaluation.metrics`.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from dsa_plugin.evaluation.datasets import RetrievalSet, TestSetError, load_folder_dataset, load_test_set
from dsa_plugin.evaluation.descriptors import DEFAULT_SCALES, extract_descriptors
from dsa_plugin.evaluation.metrics import DEFAULT_KAPPAS, evaluate_ranks, rank_database
from dsa_plugin.evaluation.networks import attached_whitening
from dsa_plugin.evaluation.whitening import apply_whitening, learn_whitening


def _whitening_for(net: nn.Module, whitening: Mapping | None | bool) -> Mapping | None:
    # None: use the one attached to the net (if any); False: none at all
    if whitening is False:
        return None
    return whitening if whitening is not None else attached_whitening(net)


def evaluate_retrieval_set(
    net: nn.Module,
    rset: RetrievalSet,
    *,
    whitening: Mapping | None | bool = None,
    kappas: Sequence[int] = DEFAULT_KAPPAS,
    device: str | torch.device = "cpu",
    image_size: int | None = 1024,
    scales: Sequence[float] = DEFAULT_SCALES,
    clahe: bool = True,
    clahe_grid: int = 8,
    batch_size: int = 8,
    progress: bool = True,
) -> dict:
    """Describe db and queries of ``rset``, rank, and evaluate with its protocol (JSON-friendly dict)."""
    kw = dict(device=device, image_size=image_size, scales=scales, clahe=clahe, clahe_grid=clahe_grid,
              batch_size=batch_size, progress=progress)
    t0 = time.perf_counter()
    db = extract_descriptors(net, rset.images, desc=f"{rset.name} db", **kw)
    if rset.all_vs_all:
        q = db.clone()
    else:
        q = extract_descriptors(net, rset.qimages, bbxs=rset.bbxs, desc=f"{rset.name} queries", **kw)
    w = _whitening_for(net, whitening)
    if w is not None:
        db, q = apply_whitening(db, w), apply_whitening(q, w)
    ranks = rank_database(db, q)
    result = evaluate_ranks(ranks, rset.gnd, kappas, protocol=rset.protocol)
    result.update(num_db=len(rset.images), seconds=round(time.perf_counter() - t0, 3), whitened=w is not None)
    return result


def evaluate_test_set(net: nn.Module, name: str, data_root: str | os.PathLike, **kwargs) -> dict:
    """Evaluate on ``<data_root>/test/<name>/`` (roxford5k, rparis6k, 247tokyo1k, oxford5k, paris6k)."""
    return {"dataset": name, **evaluate_retrieval_set(net, load_test_set(name, data_root), **kwargs)}


def _domain_pairs(query_domain: str, db_domain: str) -> list[tuple[str, str]]:
    pairs = [(query_domain, db_domain)]
    if db_domain != query_domain:
        pairs.append((db_domain, db_domain))
    return pairs


def evaluate_folder(
    net: nn.Module,
    folder: str | os.PathLike,
    device: str | torch.device = "cpu",
    image_size: int | None = 1024,
    scales: Sequence[float] = DEFAULT_SCALES,
    clahe: bool = True,
    clahe_grid: int = 8,
    role: str | None = None,
    query_domain: str = "night",
    db_domain: str = "day",
    whitening: Mapping | None | bool = None,
    kappas: Sequence[int] = DEFAULT_KAPPAS,
    batch_size: int = 8,
    progress: bool = True,
) -> dict:
    """Night→day and day→day retrieval on a folder with ``labels.csv`` (file, domain, place_id[, role]).

    Every image is described once; then ``query_domain -> db_domain`` (positives: db images of the
    same place) and ``db_domain -> db_domain`` (each image queries all others) are evaluated with
    the old ok/junk protocol. Queries whose place has no db image are skipped.

    Returns:
        ``{'folder', 'role', 'num_images', 'settings', 'night->day': {'map', 'mp@1', 'mp@5', 'mp@10',
        'num_queries', 'num_evaluated', 'num_db'}, 'day->day': {...}}`` (keys follow the domain names).

    Example:
        >>> from dsa_plugin.models.gem import gem_small
        >>> r = evaluate_folder(gem_small(), "my-photos/", role="eval", image_size=256)  # doctest: +SKIP
        >>> r["night->day"]["map"]  # doctest: +SKIP
    """
    ds = load_folder_dataset(folder, role=role)
    for d in (query_domain, db_domain):
        ds.indices(d)  # clear error for an unknown domain before any work
    others = sorted(set(ds.domains) - {query_domain, db_domain})
    if others:  # e.g. a typo 'nite': those rows would silently drop out of the evaluation
        count = sum(d in others for d in ds.domains)
        raise TestSetError(f"{Path(folder) / 'labels.csv'}: {count} image(s) have domain(s) {others}, "
                           f"neither the query domain '{query_domain}' nor the db domain '{db_domain}'; "
                           "fix the rows (a typo?) or choose the domains (--query-domain, --db-domain)")
    t0 = time.perf_counter()
    X = extract_descriptors(
        net, ds.files, device=device, image_size=image_size, scales=scales, clahe=clahe, clahe_grid=clahe_grid,
        batch_size=batch_size, progress=progress, desc=f"{Path(folder).name}",
    )
    w = _whitening_for(net, whitening)
    if w is not None:
        X = apply_whitening(X, w)
    seconds = time.perf_counter() - t0
    result: dict = {
        "folder": str(folder),
        "role": role,
        "num_images": len(ds.files),
        "settings": {
            "image_size": image_size, "scales": [float(s) for s in scales], "clahe": bool(clahe),
            "clahe_grid": int(clahe_grid),
            "whitened": w is not None, "device": str(device),
        },
        "seconds_descriptors": round(seconds, 3),
    }
    for qd, dd in _domain_pairs(query_domain, db_domain):
        q_idx, db_idx, gnd = ds.split(qd, dd)
        ranks = rank_database(X[db_idx], X[q_idx])
        r = evaluate_ranks(ranks, gnd, kappas, protocol="old")
        r.pop("protocol")
        r["num_db"] = int(len(db_idx))
        result[f"{qd}->{dd}"] = r
    return result


def load_whitening_db(
    pkl_path: str | os.PathLike, ims_root: str | os.PathLike | None = None
) -> tuple[list[str], list[int], list[int]]:
    """Read a flat whitening db ``{cids, qidxs, pidxs}`` (``retrieval-SfM-120k-whiten.pkl``) into image paths
    and pairs."""
    from dsa_plugin.data.sfm import SfMFormatError, check_pair_indices, cid_paths, int_list, read_db_pickle

    pkl_path = Path(pkl_path)
    try:
        db = read_db_pickle(pkl_path, what="whitening db")
        if isinstance(db, dict) and "cids" not in db and "val" in db:
            db = db["val"]  # a retrieval-SfM train/val db: its val split has pairs too
        if not isinstance(db, dict):
            raise SfMFormatError(f"{pkl_path}: expected a dict with cids, qidxs, pidxs; got {type(db).__name__}")
        missing = [k for k in ("cids", "qidxs", "pidxs") if k not in db]
        if missing:
            raise SfMFormatError(
                f"{pkl_path}: missing key(s) {missing} (found {sorted(map(str, db))}); expected cids, qidxs, pidxs"
            )
        root = Path(ims_root) if ims_root is not None else pkl_path.parent / "ims"
        images = cid_paths(root, db["cids"], str(pkl_path))
        qidxs, pidxs = int_list(db["qidxs"], "qidxs", str(pkl_path)), int_list(db["pidxs"], "pidxs", str(pkl_path))
        check_pair_indices(qidxs, pidxs, len(images), str(pkl_path))
    except SfMFormatError as err:
        raise TestSetError(str(err)) from None
    return images, qidxs, pidxs


def learn_whitening_from_db(
    net: nn.Module, pkl_path: str | os.PathLike, ims_root: str | os.PathLike | None = None, **extract_kwargs
) -> dict[str, np.ndarray]:
    """Describe every image of a whitening db (no whitening) and learn lw from its (query, positive) pairs."""
    images, qidxs, pidxs = load_whitening_db(pkl_path, ims_root)
    # all images, as the reference: the eigen-rotation is learned over every descriptor of the db
    X = extract_descriptors(net, images, desc="whitening db", **extract_kwargs)
    return learn_whitening(X, qidxs, pidxs)
