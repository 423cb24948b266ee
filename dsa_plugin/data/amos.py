"""A retrieval-SfM-format training db built from the AMOS day/night photos (for benchmarks and tests).

Each webcam (``place_id`` in ``labels.csv``) is one cluster; pairs join images of the same place.
Images are symlinked (copied where links are not allowed) into the ``ims/`` layout of the db, so
the real photos are never duplicated into a repository: write the db to a temporary folder.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import numpy as np

from dsa_plugin.data.sfm import cid_to_path, db_paths, write_sfm_db


def _link_image(src: Path, dst: Path) -> None:
    """``dst`` -> ``src`` as a symlink (a copy where links are not allowed); an existing ``dst`` is kept."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if not dst.exists():
        try:
            os.symlink(src, dst)
        except OSError:
            shutil.copyfile(src, dst)


def _add_pairs(part: dict[str, list], idxs: list[int], pairs_per_image: int, rng: np.random.Generator) -> None:
    """Each image of one place is the query of ``pairs_per_image`` pairs with other images of the place."""
    if len(idxs) < 2:
        return
    for q in idxs:
        others = [i for i in idxs if i != q]
        for p in rng.choice(others, size=min(pairs_per_image, len(others)), replace=False):
            part["qidxs"].append(q)
            part["pidxs"].append(int(p))


def make_amos_sfm_db(
    amos_dir: str | os.PathLike,
    root: str | os.PathLike,
    name: str = "amos-daynight",
    pairs_per_image: int = 1,
    val_places: int = 3,
    seed: int = 0,
) -> Path:
    """Write ``<root>/train/<name>/<name>.pkl`` + ``ims/`` from ``amos_dir`` (with ``labels.csv``).

    cids are md5 hex digests of the relative file names. Every image is the query of
    ``pairs_per_image`` pairs with random other images of its place (day or night). The last
    ``val_places`` places (sorted by id) form the ``val`` split. Returns the pkl path.
    """
    amos_dir = Path(amos_dir)
    labels = amos_dir / "labels.csv"
    if not labels.is_file():
        raise FileNotFoundError(f"{labels} not found: amos_dir must be the amos-daynight folder")
    from dsa_plugin.data.labels import read_labels

    # Strict reading: BOM/CRLF fine; rows outside the folder, short rows and duplicates refused.
    rows = [row for _, row in read_labels(labels, ("file", "place_id"))[1]]
    places = sorted({r["place_id"] for r in rows})
    if len(places) <= val_places:
        raise ValueError(f"{labels} has {len(places)} places; need more than val_places={val_places}")
    split_of = {p: ("val" if i >= len(places) - val_places else "train") for i, p in enumerate(places)}
    pkl_path, ims_root = db_paths(root, name)
    rng = np.random.default_rng(seed)
    splits = {s: {"cids": [], "cluster": [], "qidxs": [], "pidxs": []} for s in ("train", "val")}
    members: dict[str, dict[str, list[int]]] = {"train": {}, "val": {}}
    for row in sorted(rows, key=lambda r: r["file"]):
        split = split_of[row["place_id"]]
        part = splits[split]
        cid = hashlib.md5(row["file"].encode("utf-8")).hexdigest()
        _link_image((amos_dir / row["file"]).resolve(), Path(cid_to_path(ims_root, cid)))
        members[split].setdefault(row["place_id"], []).append(len(part["cids"]))
        part["cids"].append(cid)
        part["cluster"].append(places.index(row["place_id"]))
    for split, part in splits.items():
        for idxs in members[split].values():
            _add_pairs(part, idxs, pairs_per_image, rng)
    return write_sfm_db(pkl_path, splits)
