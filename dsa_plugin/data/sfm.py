"""The retrieval-SfM-120k training-db layout used by cirtorch and HOW (docs/toolkits.md §sfm-format).

``<root>/train/<name>/<name>.pkl`` holds ``{'train': S, 'val': S}``; each split S has ``cids``
(image ids), ``cluster`` (landmark id per image) and equal-length ``qidxs``/``pidxs`` (query,
positive pairs, split-local indices). Images live at ``<root>/train/<name>/ims/<hashed cid path>``.
"""

from __future__ import annotations

import numbers
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dsa_plugin.core.files import atomic_write
from dsa_plugin.core.safe_pickle import PickleFileError, load_pickle

SPLIT_KEYS = ("cids", "cluster", "qidxs", "pidxs")


class SfMFormatError(ValueError):
    """The training db does not have the retrieval-SfM layout."""


def cid_to_path(ims_root: str | os.PathLike, cid: str) -> str:
    """Image path of a SfM cid: ``ims/<cid[-2:]>/<cid[-4:-2]>/<cid[-6:-4]>/<cid>`` (no extension).

    Raises :class:`SfMFormatError` for a cid that is not a plain file name or whose path would
    leave ``ims_root`` (``/etc/passwd``, ``..``, ``......``): a db must not point outside its images.

    Example:
        >>> cid_to_path("ims", "015bb8aa57c3fbebc41daca6a093f639")
        'ims/39/f6/93/015bb8aa57c3fbebc41daca6a093f639'
    """
    if not isinstance(cid, str) or not cid:
        raise SfMFormatError(f"cid must be a non-empty string, got {cid!r}")
    if "/" in cid or "\\" in cid or "\x00" in cid or os.path.isabs(cid):
        raise SfMFormatError(f"cid {cid!r} is not a plain file name (it contains a path separator)")
    path = os.path.join(ims_root, cid[-2:], cid[-4:-2], cid[-6:-4], cid)
    root = os.path.normpath(os.path.abspath(ims_root))
    if not os.path.normpath(os.path.abspath(path)).startswith(root + os.sep):
        raise SfMFormatError(f"cid {cid!r} resolves outside the image folder {ims_root}")
    return path


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
    """(pkl path, ims root) of the db ``name`` under the data root ``root``.

    Example:
        >>> pkl, ims = db_paths("/data/cirtorch")
        >>> str(pkl)
        '/data/cirtorch/train/retrieval-SfM-120k/retrieval-SfM-120k.pkl'
        >>> str(ims)
        '/data/cirtorch/train/retrieval-SfM-120k/ims'
    """
    base = Path(root) / "train" / name
    return base / f"{name}.pkl", base / "ims"


def read_db_pickle(pkl_path: str | os.PathLike, what: str = "training db") -> Any:
    """The unpickled db at ``pkl_path`` (restricted: builtins and numpy arrays only).

    cirtorch and HOW read these files with plain ``pickle.load``; we never do, so a crafted
    ``.pkl`` cannot run code. Every failure is a one-line :class:`SfMFormatError` naming the file.
    """
    pkl_path = Path(pkl_path)
    if not pkl_path.is_file():
        raise SfMFormatError(f"{what} not found: {pkl_path}")
    try:
        return load_pickle(pkl_path)
    except PickleFileError as err:
        raise SfMFormatError(str(err)) from None


def int_list(values: Any, key: str, where: str) -> list[int]:
    """``values`` as a list of Python ints; bools, floats and strings are refused, naming the index.

    Example:
        >>> int_list((1, 2), "qidxs", "db.pkl [train]")
        [1, 2]
        >>> int_list([1, 2.0], "qidxs", "db.pkl [train]")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        dsa_plugin.data.sfm.SfMFormatError: ...
    """
    if isinstance(values, (str, bytes)) or not hasattr(values, "__len__"):
        raise SfMFormatError(f"{where}: '{key}' must be a list of integers, got {type(values).__name__}")
    out = []
    for i, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            raise SfMFormatError(f"{where}: {key}[{i}] must be an integer, got {v!r}")
        out.append(int(v))
    return out


def check_pair_indices(qidxs: list[int], pidxs: list[int], n_images: int, where: str) -> None:
    """Refuse pairs that do not index an image (negative indices would silently wrap around)."""
    if len(qidxs) != len(pidxs):
        raise SfMFormatError(f"{where}: {len(qidxs)} qidxs but {len(pidxs)} pidxs (they are pairs)")
    for key, idxs in (("qidxs", qidxs), ("pidxs", pidxs)):
        for i, v in enumerate(idxs):
            if not 0 <= v < n_images:
                raise SfMFormatError(f"{where}: {key}[{i}] = {v} is outside 0..{n_images - 1} (the split's images)")


def cid_paths(ims_root: str | os.PathLike, cids: Any, where: str) -> list[str]:
    """Image paths of ``cids``; a bad or escaping cid is refused with its index."""
    if isinstance(cids, (str, bytes)) or not hasattr(cids, "__len__"):
        raise SfMFormatError(f"{where}: 'cids' must be a list of strings, got {type(cids).__name__}")
    paths = []
    for i, cid in enumerate(cids):
        try:
            paths.append(cid_to_path(ims_root, cid))
        except SfMFormatError as err:
            raise SfMFormatError(f"{where}: cids[{i}]: {err}") from None
    return paths


def load_sfm_db(pkl_path: str | os.PathLike, split: str, ims_root: str | os.PathLike | None = None) -> SfMDB:
    """Read one split; errors name the file, the key and the offending index instead of a bare KeyError.

    Example:
        >>> import tempfile
        >>> pkl = make_tiny_sfm_db(tempfile.mkdtemp(), clusters=4, images_per_cluster=2, size=(16, 16))
        >>> db = load_sfm_db(pkl, "train")
        >>> len(db.images), db.qidxs, db.pidxs
        (4, [0, 2], [1, 3])
    """
    pkl_path = Path(pkl_path)
    db = read_db_pickle(pkl_path)
    if not isinstance(db, dict) or split not in db:
        keys = sorted(map(str, db)) if isinstance(db, dict) else type(db).__name__
        raise SfMFormatError(f"{pkl_path}: missing split '{split}' (found {keys}; expected 'train' and 'val')")
    part = db[split]
    where = f"{pkl_path}: split '{split}'"
    if not isinstance(part, dict):
        raise SfMFormatError(f"{where} must be a dict with keys {list(SPLIT_KEYS)}, got {type(part).__name__}")
    missing = [k for k in SPLIT_KEYS if k not in part]
    if missing:
        raise SfMFormatError(f"{where} lacks key(s) {missing}; a split needs {list(SPLIT_KEYS)}")
    ims_root = Path(ims_root) if ims_root is not None else pkl_path.parent / "ims"
    images = cid_paths(ims_root, part["cids"], where)
    clusters = int_list(part["cluster"], "cluster", where)
    if len(images) != len(clusters):
        raise SfMFormatError(f"{where} has {len(images)} cids but {len(clusters)} cluster ids")
    qidxs, pidxs = int_list(part["qidxs"], "qidxs", where), int_list(part["pidxs"], "pidxs", where)
    check_pair_indices(qidxs, pidxs, len(images), where)
    return SfMDB(images=images, clusters=clusters, qidxs=qidxs, pidxs=pidxs)


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

    Example:
        >>> import tempfile
        >>> pkl = make_tiny_sfm_db(tempfile.mkdtemp(), clusters=4, images_per_cluster=2, size=(16, 16))
        >>> pkl.name, len(load_sfm_db(pkl, "val").images)
        ('retrieval-SfM-120k.pkl', 4)
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
