"""The retrieval-SfM-120k training-db layout used by cirtorch and HOW (docs/toolkits.md §sfm-format).

``<root>/train/<name>/<name>.pkl`` holds ``{'train': S, 'val': S}``; each split S has ``cids``
(image ids), ``cluster`` (landmark id per image) and equal-length ``qidxs``/``pidxs`` (query,
positive pairs, split-local indices). Images live at ``<root>/train/<name>/ims/<hashed cid path>``.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dsa_plugin.files import atomic_write

SPLIT_KEYS = ("cids", "cluster", "qidxs", "pidxs")


class SfMFormatError(ValueError):
    """The training db does not have the retrieval-SfM layout."""


def cid_to_path(ims_root: str | os.PathLike, cid: str) -> str:
    """Image path of a SfM cid: ``ims/<cid[-2:]>/<cid[-4:-2]>/<cid[-6:-4]>/<cid>`` (no extension)."""
    return os.path.join(ims_root, cid[-2:], cid[-4:-2], cid[-6:-4], cid)


@dataclass(frozen=True)
class SfMDB:
    """One split of a retrieval-SfM db, with absolute image paths."""

    images: list[str]
    clusters: list[int]
    qidxs: list[int]
    pidxs: list[int]

    @property
    def names(self) -> list[str]:
        """The cid of every image (file basename without extension), the key of the night rule."""
        return [os.path.splitext(os.path.basename(p))[0] for p in self.images]


def db_paths(root: str | os.PathLike, name: str = "retrieval-SfM-120k") -> tuple[Path, Path]:
    """(pkl path, ims root) of the db ``name`` under the data root ``root``."""
    base = Path(root) / "train" / name
    return base / f"{name}.pkl", base / "ims"


def load_sfm_db(pkl_path: str | os.PathLike, split: str, ims_root: str | os.PathLike | None = None) -> SfMDB:
    """Read one split; errors name the file and the missing key instead of a bare KeyError."""
    pkl_path = Path(pkl_path)
    if not pkl_path.is_file():
        raise SfMFormatError(f"training db not found: {pkl_path}")
    with open(pkl_path, "rb") as f:
        # The db is a plain dict of lists; cirtorch and HOW read it with pickle too.
        db = pickle.load(f)
    if not isinstance(db, dict) or split not in db:
        keys = sorted(db) if isinstance(db, dict) else type(db).__name__
        raise SfMFormatError(f"{pkl_path}: missing split '{split}' (found {keys}; expected 'train' and 'val')")
    part = db[split]
    missing = [k for k in SPLIT_KEYS if k not in part]
    if missing:
        raise SfMFormatError(f"{pkl_path}: split '{split}' lacks key(s) {missing}; a split needs {list(SPLIT_KEYS)}")
    if len(part["qidxs"]) != len(part["pidxs"]):
        raise SfMFormatError(f"{pkl_path}: split '{split}' has {len(part['qidxs'])} qidxs but {len(part['pidxs'])} pidxs")
    if len(part["cids"]) != len(part["cluster"]):
        raise SfMFormatError(f"{pkl_path}: split '{split}' has {len(part['cids'])} cids but {len(part['cluster'])} cluster ids")
    ims_root = Path(ims_root) if ims_root is not None else pkl_path.parent / "ims"
    return SfMDB(
        images=[cid_to_path(ims_root, c) for c in part["cids"]],
        clusters=[int(c) for c in part["cluster"]],
        qidxs=[int(i) for i in part["qidxs"]],
        pidxs=[int(i) for i in part["pidxs"]],
    )


def write_sfm_db(pkl_path: str | os.PathLike, splits: dict[str, dict[str, list]]) -> Path:
    """Write ``{'train': S, 'val': S}`` atomically (temp file + rename)."""
    pkl_path = Path(pkl_path)
    pkl_path.parent.mkdir(parents=True, exist_ok=True)
    for split, part in splits.items():
        missing = [k for k in SPLIT_KEYS if k not in part]
        if missing:
            raise SfMFormatError(f"split '{split}' lacks key(s) {missing}")
    return atomic_write(pkl_path, lambda f: pickle.dump(splits, f))


def make_tiny_sfm_db(
    root: str | os.PathLike,
    name: str = "retrieval-SfM-120k",
    clusters: int = 8,
    images_per_cluster: int = 4,
    size: tuple[int, int] = (48, 64),
    seed: int = 0,
) -> Path:
    """A small db for tests: each cluster is a random blocky pattern, images are jittered views of it.

    Returns the pkl path. cids are 32-hex strings like the real db; splits ``train`` and ``val``
    use disjoint clusters (the val split gets a quarter of them, at least 2 when possible).
    """
    from PIL import Image

    rng = np.random.default_rng(seed)
    pkl_path, ims_root = db_paths(root, name)
    h, w = size
    n_val = max(2, clusters // 4) if clusters >= 4 else 0
    splits: dict[str, dict[str, list]] = {}
    cluster_ids = {"train": range(0, clusters - n_val), "val": range(clusters - n_val, clusters)}
    for split, ids in cluster_ids.items():
        part = {"cids": [], "cluster": [], "qidxs": [], "pidxs": []}
        for cluster in ids:
            base = rng.random((h // 8 + 2, w // 8 + 2, 3))
            first = len(part["cids"])
            for _ in range(images_per_cluster):
                dy, dx = rng.integers(0, 8, size=2)
                big = np.kron(base, np.ones((8, 8, 1)))[dy : dy + h, dx : dx + w]
                pixels = np.clip(big * 255 + rng.normal(0, 8, big.shape), 0, 255).astype(np.uint8)
                cid = "".join(rng.choice(list("0123456789abcdef"), size=32))
                path = Path(cid_to_path(ims_root, cid))
                path.parent.mkdir(parents=True, exist_ok=True)
                # No extension, as in retrieval-SfM; PIL needs the format spelled out.
                Image.fromarray(pixels).save(path, format="JPEG", quality=95)
                part["cids"].append(cid)
                part["cluster"].append(cluster)
            for i in range(first, first + images_per_cluster - 1):
                part["qidxs"].append(i)
                part["pidxs"].append(i + 1)
        splits[split] = part
    return write_sfm_db(pkl_path, splits)
