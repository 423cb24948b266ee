"""Demo datasets in the layouts the rest of the plugin reads.

Both the built-in procedural scenes and a user folder (``labels.csv`` with ``file, domain,
place_id[, role]`` like ``amos-daynight``) become the same three things:

- ``train/<db>/<db>.pkl`` + ``ims/``: a retrieval-SfM training db of *day* images (place = cluster,
  pairs within a place) — the setting of the paper, whose training data has no night pairs;
- ``gan/day.txt`` and ``gan/night.txt``: unpaired day and night images of the training places;
- ``eval/``: a folder test set with ``labels.csv`` of held-out places, queried night→day and day→day.
"""

from __future__ import annotations

import csv
import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from dsa_plugin.data.sfm import cid_to_path, write_sfm_db
from dsa_plugin.demo.scenes import make_place, random_view, render
from dsa_plugin.core.files import atomic_write

DB_NAME = "demo-sfm"


class DemoDataError(ValueError):
    """A user folder given with ``--data`` cannot be used by the demo."""


@dataclass(frozen=True)
class DemoData:
    root: Path
    db_pkl: Path
    gan_day: Path  # list file, one absolute path per line
    gan_night: Path
    eval_dir: Path  # folder test set with labels.csv

    @property
    def data_root(self) -> Path:
        """The cirtorch-style data root holding ``train/<db>/``."""
        return self.root


@dataclass(frozen=True)
class SceneSpec:
    """Size of the procedural default data."""

    # 100 places x 5 views: enough for the network to learn night invariance from the GAN's nights,
    # few enough for every image to pass the frozen VGG16 trunk once within the CPU budget.
    train_places: int = 100
    val_places: int = 6
    eval_places: int = 16
    views: int = 5
    size: tuple[int, int] = (96, 128)
    seed: int = 0


def _cid(*parts: object) -> str:
    # 32 hex chars like a retrieval-SfM cid; the md5 night rule then applies unchanged.
    return hashlib.md5("/".join(map(str, parts)).encode()).hexdigest()


def _save_png(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: Image.fromarray(pixels).save(f, format="PNG"))


def _db_split(images: list[tuple[str, int]], ims_root: Path, copy) -> dict[str, list]:
    """Build one split from (cid, cluster) items written by ``copy(cid, path)``; pairs = consecutive views."""
    part: dict[str, list] = {"cids": [], "cluster": [], "qidxs": [], "pidxs": []}
    by_cluster: dict[int, list[int]] = {}
    for cid, cluster in images:
        copy(cid, Path(cid_to_path(ims_root, cid)))
        by_cluster.setdefault(cluster, []).append(len(part["cids"]))
        part["cids"].append(cid)
        part["cluster"].append(cluster)
    for members in by_cluster.values():
        for a, b in zip(members, members[1:] + members[:1]):
            if a != b:
                part["qidxs"].append(a)
                part["pidxs"].append(b)
    return part


def _write_lists(root: Path, day: list[Path], night: list[Path]) -> tuple[Path, Path]:
    # Absolute paths: the GAN reader resolves relative entries against the list's own folder.
    day, night = [p.absolute() for p in day], [p.absolute() for p in night]
    gan = root / "gan"
    gan.mkdir(parents=True, exist_ok=True)
    for name, paths in (("day.txt", day), ("night.txt", night)):
        (gan / name).write_text("".join(f"{p}\n" for p in paths))
    return gan / "day.txt", gan / "night.txt"


def _write_labels(eval_dir: Path, rows: list[dict[str, str]]) -> None:
    eval_dir.mkdir(parents=True, exist_ok=True)
    with open(eval_dir / "labels.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["file", "domain", "place_id", "role"])
        writer.writeheader()
        writer.writerows(rows)


def write_scene_data(root: str | os.PathLike, spec: SceneSpec = SceneSpec()) -> DemoData:
    """Render the procedural default data under ``root`` (deterministic in ``spec.seed``)."""
    root = Path(root)
    pkl = root / "train" / DB_NAME / f"{DB_NAME}.pkl"
    ims_root = pkl.parent / "ims"
    n_train, n_val, n_eval = spec.train_places, spec.val_places, spec.eval_places
    place_ids = list(range(spec.seed * 10_000, spec.seed * 10_000 + n_train + n_val + n_eval))
    rng = np.random.default_rng(spec.seed)
    rendered: dict[tuple[int, int, bool], np.ndarray] = {}
    for pid in place_ids:
        place = make_place(pid)
        for v in range(spec.views):
            for night in (False, True):
                rendered[pid, v, night] = render(place, random_view(rng), night=night, rng=rng, size=spec.size)

    def copy(cid: str, path: Path) -> None:
        pid, v = cids[cid]
        _save_png(path, rendered[pid, v, False])

    cids: dict[str, tuple[int, int]] = {}
    splits = {}
    for split, pids in (("train", place_ids[:n_train]), ("val", place_ids[n_train : n_train + n_val])):
        items = []
        for cluster, pid in enumerate(pids):
            for v in range(spec.views):
                cid = _cid("demo", pid, v)
                cids[cid] = (pid, v)
                items.append((cid, cluster))
        splits[split] = _db_split(items, ims_root, copy)
    write_sfm_db(pkl, splits)

    day, night = [], []
    for pid in place_ids[:n_train]:
        for v in range(spec.views):
            for is_night, bucket in ((False, day), (True, night)):
                path = root / "gan" / ("night" if is_night else "day") / f"{pid}_{v}.png"
                _save_png(path, rendered[pid, v, is_night])
                bucket.append(path)
    gan_day, gan_night = _write_lists(root, day, night)

    eval_dir, rows = root / "eval", []
    for pid in place_ids[n_train + n_val :]:
        for v in range(spec.views):
            for domain in ("day", "night"):
                rel = f"{domain}/{pid}_{v}.png"
                _save_png(eval_dir / rel, rendered[pid, v, domain == "night"])
                rows.append({"file": rel, "domain": domain, "place_id": f"street_{pid}", "role": "eval"})
    _write_labels(eval_dir, rows)
    return DemoData(root, pkl, gan_day, gan_night, eval_dir)


def read_labels(folder: Path) -> list[dict[str, str]]:
    """Rows of ``folder/labels.csv``, checked for what the demo needs."""
    labels = folder / "labels.csv"
    if not labels.is_file():
        raise DemoDataError(f"--data {folder}: no labels.csv (columns file, domain, place_id[, role]) in that folder")
    from dsa_plugin.data.labels import LabelsError
    from dsa_plugin.data.labels import read_labels as read_labels_csv

    try:  # the one strict reader: BOM, CRLF, files inside the folder, no duplicates
        _, numbered = read_labels_csv(labels, ("file", "domain", "place_id"))
    except LabelsError as err:
        raise DemoDataError(str(err)) from None
    rows = [row for _, row in numbered]
    if not rows:
        raise DemoDataError(f"{labels}: no rows; need file, domain, place_id[, role]")
    domains = {r["domain"] for r in rows}
    if not {"day", "night"} <= domains:
        raise DemoDataError(f"{labels}: needs both 'day' and 'night' images, found domain(s) {sorted(domains)}")
    places = {r["place_id"] for r in rows}
    if len(places) < 2:
        raise DemoDataError(f"{labels}: needs at least 2 places, found {len(places)}")
    for r in rows:
        if not (folder / r["file"]).is_file():
            raise DemoDataError(f"{labels}: listed image {r['file']} does not exist in {folder}")
    return rows


def write_folder_data(root: str | os.PathLike, folder: str | os.PathLike, seed: int = 0) -> DemoData:
    """Lay out a user folder for the demo: ``role`` gan_train → GAN and training db, eval → evaluation.

    Without a ``role`` column, a third of the places (at least one) are held out for evaluation.
    Images are referenced or copied; the folder itself is never modified.
    """
    root, folder = Path(root), Path(folder).resolve()
    rows = read_labels(folder)
    places = sorted({r["place_id"] for r in rows})
    if "role" in rows[0]:
        eval_places = {r["place_id"] for r in rows if r["role"] == "eval"}
    else:
        order = np.random.default_rng(seed).permutation(len(places))
        eval_places = {places[i] for i in order[: max(1, len(places) // 3)]}
    train_rows = [r for r in rows if r["place_id"] not in eval_places]
    eval_rows = [r for r in rows if r["place_id"] in eval_places]
    if not eval_rows or not train_rows:
        raise DemoDataError(f"{folder}/labels.csv: needs places for both training and evaluation")

    day_train = [r for r in train_rows if r["domain"] == "day"]
    train_places = sorted({r["place_id"] for r in day_train})
    if len(train_places) < 2:
        raise DemoDataError(f"{folder}/labels.csv: needs day images of at least 2 training places")
    cluster_of = {p: i for i, p in enumerate(train_places)}
    # Hold out a few training places for the db's val split (loss monitoring, as cirtorch does).
    n_val = len(train_places) // 5 if len(train_places) >= 10 else 0
    val_places = set(train_places[-n_val:]) if n_val else set()
    pkl = root / "train" / DB_NAME / f"{DB_NAME}.pkl"
    ims_root = pkl.parent / "ims"
    source = {_cid("folder", r["file"]): folder / r["file"] for r in day_train}

    def copy(cid: str, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source[cid], path)

    splits = {
        split: _db_split(
            [(_cid("folder", r["file"]), cluster_of[r["place_id"]]) for r in day_train if (r["place_id"] in val_places) == (split == "val")],
            ims_root,
            copy,
        )
        for split in ("train", "val")
    }
    write_sfm_db(pkl, splits)
    gan_day, gan_night = _write_lists(
        root,
        [folder / r["file"] for r in train_rows if r["domain"] == "day"],
        [folder / r["file"] for r in train_rows if r["domain"] == "night"],
    )
    # The held-out images are copied (hard-linked where possible): a labels.csv may only list files
    # inside its own folder, and the user's folder is never written to.
    eval_dir = root / "eval"
    labels = []
    for r in eval_rows:
        target = eval_dir / "images" / r["file"]
        if not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(folder / r["file"], target)
            except OSError:
                shutil.copyfile(folder / r["file"], target)
        labels.append({"file": f"images/{r['file']}", "domain": r["domain"], "place_id": r["place_id"], "role": "eval"})
    _write_labels(eval_dir, labels)
    return DemoData(root, pkl, gan_day, gan_night, eval_dir)
