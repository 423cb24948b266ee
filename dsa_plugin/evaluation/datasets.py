"""Retrieval test sets: cirtorch's ``test/<name>/`` layout and folder datasets with ``labels.csv``.

cirtorch layout (docs/reference.md §test-sets): ``<data_root>/test/<name>/gnd_<name>.pkl`` holding
``{'imlist', 'qimlist', 'gnd'}`` and images at ``<data_root>/test/<name>/jpg/<image>.jpg``. Each
``gnd`` entry has ``ok``/``junk`` (old protocol: oxford5k, paris6k, 247tokyo1k) or
``easy``/``hard``/``junk`` (revisited: roxford5k, rparis6k), plus an optional query ``bbx``.

Folder layout (like ``shared/data/amos-daynight``): images anywhere under the folder and a
``labels.csv`` with columns ``file`` (relative path), ``domain`` (e.g. day/night), ``place_id`` and
optionally ``role``. Queries are the images of one domain, the database those of another; the
positives of a query are the db images of its place. With the same domain on both sides
(day→day) every image queries all others: the query itself is declared junk, which is exactly
removing it from the db.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from dsa_plugin.core.safe_pickle import PickleFileError, load_pickle
from dsa_plugin.evaluation.metrics import detect_protocol

#: the named test sets the standard tooling knows (cirtorch + gandtr)
KNOWN_TEST_SETS = ("oxford5k", "paris6k", "roxford5k", "rparis6k", "247tokyo1k")
FOLDER_COLUMNS = ("file", "domain", "place_id")


class TestSetError(ValueError):
    """A test set is missing or does not have the expected layout (names the file / key)."""

    __test__ = False  # not a pytest class


BBox = tuple[float, float, float, float]


@dataclass
class RetrievalSet:
    """Query images, database images and ground truth of one evaluation.

    ``bbxs[i]`` is the ``(x1, y1, x2, y2)`` crop of query ``i`` or None. ``gnd[i]`` indexes
    ``images``. ``protocol`` is ``'old'`` or ``'revisited'``.
    """

    name: str
    images: list[str]
    qimages: list[str]
    gnd: list[dict]
    bbxs: list[BBox | None] = field(default_factory=list)
    protocol: str = "old"

    def __post_init__(self):
        if not self.bbxs:
            self.bbxs = [None] * len(self.qimages)

    @property
    def all_vs_all(self) -> bool:
        """Queries are exactly the db images, uncropped: db descriptors can be reused for the queries."""
        return self.images == self.qimages and all(b is None for b in self.bbxs)


def _check_images_exist(paths: Sequence[str], source: Path) -> None:
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise TestSetError(f"{source}: listed image not found: {missing[0]}{more}")


def _check_inside(dir_images: Path, names: Sequence, key: str, gnd_path: Path) -> None:
    """Image names are plain names under ``jpg/``: an absolute or ``..`` name would read any file."""
    from dsa_plugin.data.labels import path_inside

    for i, n in enumerate(names):
        if not isinstance(n, str) or path_inside(dir_images, n) is None:
            raise TestSetError(f"{gnd_path}: {key}[{i}] = {n!r} is not an image name inside {dir_images}")


def _image_path(dir_images: Path, name: str) -> str:
    # imlist entries carry no extension in the published gnd files
    return str(dir_images / (name if name.lower().endswith((".jpg", ".jpeg", ".png")) else name + ".jpg"))


def _bbox(entry: dict, i: int, gnd_path: Path) -> BBox | None:
    bbx = entry.get("bbx")
    if bbx is None or (hasattr(bbx, "__len__") and len(bbx) == 0):
        return None
    arr = np.asarray(bbx, dtype=np.float64).reshape(-1)
    if arr.size != 4 or not (arr[2] > arr[0] and arr[3] > arr[1]):
        raise TestSetError(
            f"{gnd_path}: gnd[{i}]['bbx'] must be (x1, y1, x2, y2) with x2 > x1, y2 > y1; got {list(arr)}"
        )
    return tuple(float(v) for v in arr)


def _read_gnd(gnd_path: Path) -> tuple[list, list, list[dict], str]:
    """``(imlist, qimlist, gnd, protocol)`` of a gnd pickle, checked, or :class:`TestSetError`."""
    try:
        cfg = load_pickle(gnd_path)
    except PickleFileError as err:
        raise TestSetError(str(err)) from None
    if not isinstance(cfg, dict):
        raise TestSetError(f"{gnd_path}: expected a dict with keys imlist, qimlist, gnd; got {type(cfg).__name__}")
    missing = [k for k in ("imlist", "qimlist", "gnd") if k not in cfg]
    if missing:
        raise TestSetError(
            f"{gnd_path}: missing key(s) {missing} (found {sorted(map(str, cfg))}); expected imlist, qimlist, gnd"
        )
    imlist, qimlist, gnd = list(cfg["imlist"]), list(cfg["qimlist"]), list(cfg["gnd"])
    if len(gnd) != len(qimlist):
        raise TestSetError(f"{gnd_path}: 'gnd' has {len(gnd)} entries but 'qimlist' has {len(qimlist)} queries")
    for i, g in enumerate(gnd):
        if not isinstance(g, dict):
            raise TestSetError(f"{gnd_path}: gnd[{i}] must be a dict, got {type(g).__name__}")
    try:
        protocol = detect_protocol(gnd)
    except ValueError as e:
        raise TestSetError(f"{gnd_path}: {e}") from None
    need = ("ok",) if protocol == "old" else ("easy", "hard", "junk")
    for i, g in enumerate(gnd):
        _check_gnd_entry(gnd_path, i, g, need, protocol, len(imlist))
    return imlist, qimlist, gnd, protocol


def _check_gnd_entry(gnd_path: Path, i: int, g: dict, need: tuple[str, ...], protocol: str, n_images: int) -> None:
    lacking = [k for k in need if k not in g]
    if lacking:
        raise TestSetError(
            f"{gnd_path}: gnd[{i}] lacks key(s) {lacking} needed by the {protocol} protocol (keys: {sorted(g)})"
        )
    for k in ("ok", "junk", "easy", "hard"):
        if k in g and len(g[k]) and (np.max(g[k]) >= n_images or np.min(g[k]) < 0):
            raise TestSetError(f"{gnd_path}: gnd[{i}]['{k}'] indexes outside imlist (0..{n_images - 1})")


def load_test_set(name: str, data_root: str | os.PathLike, check_images: bool = True) -> RetrievalSet:
    """Read cirtorch's ``<data_root>/test/<name>/`` (gnd pickle + ``jpg/``) into a :class:`RetrievalSet`.

    Example:
        >>> rs = load_test_set("roxford5k", "/data/cirtorch")  # doctest: +SKIP
        >>> rs.protocol, len(rs.qimages), len(rs.images)  # doctest: +SKIP
        ('revisited', 70, 4993)
    """
    name = name.lower()
    base = Path(data_root) / "test" / name
    gnd_path = base / f"gnd_{name}.pkl"
    if not gnd_path.is_file():
        known = f" (known sets: {', '.join(KNOWN_TEST_SETS)})" if name not in KNOWN_TEST_SETS else ""
        raise TestSetError(
            f"ground-truth file not found: {gnd_path}{known}; expected <data_root>/test/<name>/gnd_<name>.pkl"
        )
    imlist, qimlist, gnd, protocol = _read_gnd(gnd_path)
    dir_images = base / "jpg"
    images = [_image_path(dir_images, str(n)) for n in imlist]
    qimages = [_image_path(dir_images, str(n)) for n in qimlist]
    _check_inside(dir_images, imlist, "imlist", gnd_path)
    _check_inside(dir_images, qimlist, "qimlist", gnd_path)
    if check_images:
        _check_images_exist(images, gnd_path)
        _check_images_exist(qimages, gnd_path)
    return RetrievalSet(
        name=name,
        images=images,
        qimages=qimages,
        gnd=gnd,
        bbxs=[_bbox(g, i, gnd_path) for i, g in enumerate(gnd)],
        protocol=protocol,
    )


@dataclass(frozen=True)
class FolderDataset:
    """Images of a folder with a domain and a place per image (from ``labels.csv``)."""

    root: Path
    files: list[str]  # absolute paths
    domains: list[str]
    places: list[str]

    @property
    def domain_names(self) -> list[str]:
        return sorted(set(self.domains))

    def indices(self, domain: str) -> np.ndarray:
        if domain not in self.domains:
            raise TestSetError(f"{self.root}: no image has domain '{domain}' (domains: {self.domain_names})")
        return np.array([i for i, d in enumerate(self.domains) if d == domain], dtype=np.int64)

    def split(self, query_domain: str, db_domain: str) -> tuple[np.ndarray, np.ndarray, list[dict]]:
        """``(query_idx, db_idx, gnd)``: indices into ``files`` and old-protocol gnd indexing ``db_idx``.

        Positives are the db images of the query's place; when both domains are equal the
        query's own db entry is junk (excluded from its ranking).
        """
        q_idx, db_idx = self.indices(query_domain), self.indices(db_domain)
        db_places = np.array([self.places[i] for i in db_idx])
        if len(set(db_places.tolist())) < 2:
            # Every db image is a positive of every query: mAP is 100 whatever the network does.
            warnings.warn(f"{self.root}: all {len(db_idx)} '{db_domain}' images are of one place "
                          f"({db_places[0] if len(db_places) else '-'}): every ranking is perfect and the mAP "
                          "means nothing; use a folder with at least two places", UserWarning, stacklevel=2)
        pos_in_db = {int(f): j for j, f in enumerate(db_idx)}
        gnd = []
        for qi in q_idx:
            ok = np.flatnonzero(db_places == self.places[qi])
            self_pos = pos_in_db.get(int(qi))
            junk = np.array([self_pos] if self_pos is not None else [], dtype=np.int64)
            gnd.append({"ok": ok[ok != self_pos] if self_pos is not None else ok, "junk": junk})
        return q_idx, db_idx, gnd

    def retrieval_set(self, query_domain: str, db_domain: str) -> RetrievalSet:
        q_idx, db_idx, gnd = self.split(query_domain, db_domain)
        return RetrievalSet(
            name=f"{self.root.name}:{query_domain}->{db_domain}",
            images=[self.files[i] for i in db_idx],
            qimages=[self.files[i] for i in q_idx],
            gnd=gnd,
            protocol="old",
        )


def load_folder_dataset(
    folder: str | os.PathLike,
    role: str | None = None,
    labels: str = "labels.csv",
    check_images: bool = True,
) -> FolderDataset:
    """Read ``<folder>/labels.csv`` (columns file, domain, place_id[, role]); keep rows of ``role`` if given.

    Example:
        >>> ds = load_folder_dataset("../shared/data/amos-daynight", role="eval")  # doctest: +SKIP
        >>> q, db, gnd = ds.split("night", "day")  # doctest: +SKIP
    """
    root = Path(folder)
    csv_path = root / labels
    if not csv_path.is_file():
        raise TestSetError(f"labels file not found: {csv_path}; a folder dataset needs {labels} "
                           f"with columns {', '.join(FOLDER_COLUMNS)}[, role]")
    from dsa_plugin.data.labels import LabelsError, read_labels

    try:
        columns, numbered = read_labels(csv_path, FOLDER_COLUMNS)
    except LabelsError as err:
        raise TestSetError(str(err)) from None
    rows = [r for _, r in numbered]
    if role is not None:
        if "role" not in columns:
            raise TestSetError(f"{csv_path}: cannot filter by role '{role}': no 'role' column (found {columns})")
        roles = sorted({r["role"] for r in rows})
        rows = [r for r in rows if r["role"] == role]
        if not rows:
            raise TestSetError(f"{csv_path}: no row has role '{role}' (roles: {roles})")
    if not rows:
        raise TestSetError(f"{csv_path}: no images listed")
    files = [str(root / r["file"]) for r in rows]
    if check_images:
        _check_images_exist(files, csv_path)
    return FolderDataset(
        root=root,
        files=files,
        domains=[r["domain"].strip() for r in rows],
        places=[r["place_id"].strip() for r in rows],
    )
