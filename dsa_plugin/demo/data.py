"""Demo datasets in the layouts the rest of the plugin reads.

Both the built-in procedural scenes and a user folder (``labels.csv`` with ``file, domain,
place_id[, role]`` like ``amos-daynight``) become the same three things:

- ``train/<db>/<db>.pkl`` + ``ims/``: a retrieval-SfM training db of *day* images (place = cluster,
  pairs within a place) — the setting of the paper, whose training data has no night pairs;
- ``gan/day.txt`` and ``gan/night.txt``: unpaired day and night images of the training places;
- ``val/``: a folder of validation places (day and night, ``labels.csv``), held out from the GAN,
  the training db and the evaluation: every setting the demo picks (CLAHE grid, GAN choices) is
  scored there, never on ``eval/``;
- ``eval/``: a folder test set with ``labels.csv`` of held-out places, queried night→day and day→day;
- ``oracle.json``: for each training-db image, a real night photo of the same view or place (the
  scenes' renderer at the same camera, a webcam's night photo), the demo's upper-bound arm.
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

from dsa_plugin.core.files import atomic_write, write_json
from dsa_plugin.data.sfm import cid_to_path, write_sfm_db
from dsa_plugin.demo.scenes import make_place, random_view, render

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
    val_dir: Path  # validation places (labels.csv, day and night), for the demo's choices
    oracle: Path  # JSON {training-db image path: real night photo of the same view / place}

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


def _write_oracle(root: Path, pairs: dict[str, str]) -> Path:
    path = root / "oracle.json"
    write_json(path, {str(Path(k).absolute()): v for k, v in sorted(pairs.items())}, indent=None, newline=False)
    return path


def _write_labels(eval_dir: Path, rows: list[dict[str, str]]) -> None:
    eval_dir.mkdir(parents=True, exist_ok=True)
    with open(eval_dir / "labels.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["file", "domain", "place_id", "role"])
        writer.writeheader()
        writer.writerows(rows)


def _render_scenes(spec: SceneSpec, place_ids: list[int]) -> dict[tuple[int, int, bool], np.ndarray]:
    """Every (place, view, night) image, drawn in one fixed order from ``spec.seed``."""
    rng = np.random.default_rng(spec.seed)
    rendered: dict[tuple[int, int, bool], np.ndarray] = {}
    for pid in place_ids:
        place = make_place(pid)
        for v in range(spec.views):
            for night in (False, True):
                rendered[pid, v, night] = render(place, random_view(rng), night=night, rng=rng, size=spec.size)
    return rendered


def _scene_db(pkl: Path, rendered, splits_pids: dict[str, list[int]], views: int) -> dict[str, tuple[int, int]]:
    """The retrieval-SfM db of the day images; returns ``{cid: (place, view)}``."""
    ims_root = pkl.parent / "ims"
    cids: dict[str, tuple[int, int]] = {}

    def copy(cid: str, path: Path) -> None:
        pid, v = cids[cid]
        _save_png(path, rendered[pid, v, False])

    splits = {}
    for split, pids in splits_pids.items():
        items = []
        for cluster, pid in enumerate(pids):
            for v in range(views):
                cid = _cid("demo", pid, v)
                cids[cid] = (pid, v)
                items.append((cid, cluster))
        splits[split] = _db_split(items, ims_root, copy)
    write_sfm_db(pkl, splits)
    return cids


def _scene_folder(folder: Path, rendered, pids: list[int], views: int, role: str) -> Path:
    """A labels.csv folder of the day and night views of ``pids``."""
    rows = []
    for pid in pids:
        for v in range(views):
            for domain in ("day", "night"):
                rel = f"{domain}/{pid}_{v}.png"
                _save_png(folder / rel, rendered[pid, v, domain == "night"])
                rows.append({"file": rel, "domain": domain, "place_id": f"street_{pid}", "role": role})
    _write_labels(folder, rows)
    return folder


def write_scene_data(root: str | os.PathLike, spec: SceneSpec = SceneSpec()) -> DemoData:
    """Render the procedural default data under ``root`` (deterministic in ``spec.seed``)."""
    root = Path(root)
    pkl = root / "train" / DB_NAME / f"{DB_NAME}.pkl"
    n_train, n_val = spec.train_places, spec.val_places
    place_ids = list(range(spec.seed * 10_000, spec.seed * 10_000 + n_train + n_val + spec.eval_places))
    train, val, held_out = place_ids[:n_train], place_ids[n_train : n_train + n_val], place_ids[n_train + n_val :]
    rendered = _render_scenes(spec, place_ids)
    cids = _scene_db(pkl, rendered, {"train": train, "val": val}, spec.views)
    day, night = [], []
    for pid in train:
        for v in range(spec.views):
            for is_night, bucket in ((False, day), (True, night)):
                path = root / "gan" / ("night" if is_night else "day") / f"{pid}_{v}.png"
                _save_png(path, rendered[pid, v, is_night])
                bucket.append(path)
    gan_day, gan_night = _write_lists(root, day, night)
    val_dir = _scene_folder(root / "val", rendered, val, spec.views, "val")
    eval_dir = _scene_folder(root / "eval", rendered, held_out, spec.views, "eval")
    # The renderer's night at the same camera as each training-db image: what a perfect generator gives.
    oracle = {cid_to_path(pkl.parent / "ims", cid): str((root / "gan" / "night" / f"{pid}_{v}.png").absolute())
              for cid, (pid, v) in cids.items() if pid in set(train)}
    return DemoData(root, pkl, gan_day, gan_night, eval_dir, val_dir, _write_oracle(root, oracle))


def has_images(folder: Path) -> bool:
    """Whether ``folder/labels.csv`` lists at least one image (a demo without validation places
    writes an empty one)."""
    labels = folder / "labels.csv"
    return labels.is_file() and len(labels.read_text().splitlines()) > 1


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
    A fifth of the other places with day and night photos (see :func:`_validation_places`) are
    held out as validation places: the db's val split and ``val/``; the GAN never sees them.
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
    val_places = _validation_places(rows, eval_places, seed)
    train_rows = [r for r in rows if r["place_id"] not in eval_places | val_places]
    if not any(r["place_id"] in eval_places for r in rows) or not train_rows:
        raise DemoDataError(f"{folder}/labels.csv: needs places for both training and evaluation")

    day_train = [r for r in train_rows if r["domain"] == "day"]
    train_places = sorted({r["place_id"] for r in day_train})
    if len(train_places) < 2:
        raise DemoDataError(f"{folder}/labels.csv: needs day images of at least 2 training places")
    cluster_of = {p: i for i, p in enumerate(sorted({r["place_id"] for r in rows if r["domain"] == "day"}))}
    pkl = root / "train" / DB_NAME / f"{DB_NAME}.pkl"
    ims_root = pkl.parent / "ims"
    db_rows = {"train": day_train,
               "val": [r for r in rows if r["place_id"] in val_places and r["domain"] == "day"]}
    source = {_cid("folder", r["file"]): folder / r["file"] for part in db_rows.values() for r in part}

    def copy(cid: str, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source[cid], path)

    splits = {split: _db_split([(_cid("folder", r["file"]), cluster_of[r["place_id"]]) for r in part], ims_root, copy)
              for split, part in db_rows.items()}
    write_sfm_db(pkl, splits)
    gan_day, gan_night = _write_lists(
        root,
        [folder / r["file"] for r in train_rows if r["domain"] == "day"],
        [folder / r["file"] for r in train_rows if r["domain"] == "night"],
    )
    oracle = _oracle_pairs(folder, train_rows, lambda r: cid_to_path(ims_root, _cid("folder", r["file"])))
    val_dir = _copy_folder(folder, [r for r in rows if r["place_id"] in val_places], root / "val", "val")
    eval_dir = _copy_folder(folder, [r for r in rows if r["place_id"] in eval_places], root / "eval", "eval")
    return DemoData(root, pkl, gan_day, gan_night, eval_dir, val_dir, _write_oracle(root, oracle))


def _validation_places(rows: list[dict[str, str]], eval_places: set[str], seed: int) -> set[str]:
    """Training places held out for the demo's choices: a fifth (at least 1, 2 from 6 on) of those
    with both day and night photos, drawn with ``seed``; never evaluation places."""
    both = sorted(p for p in {r["place_id"] for r in rows} - eval_places
                  if {"day", "night"} <= {r["domain"] for r in rows if r["place_id"] == p})
    if len(both) < 3:
        return set()
    n = max(2 if len(both) >= 6 else 1, len(both) // 5)
    order = np.random.default_rng(seed + 1).permutation(len(both))
    return {both[i] for i in order[:n]}


def _oracle_pairs(folder: Path, rows: list[dict[str, str]], db_path) -> dict[str, str]:
    """Each training day photo → a night photo of the same place (webcams: the same view), picked
    by a hash of the day photo's name so that every run pairs alike."""
    nights: dict[str, list[str]] = {}
    for r in rows:
        if r["domain"] == "night":
            nights.setdefault(r["place_id"], []).append(r["file"])
    pairs = {}
    for r in rows:
        options = sorted(nights.get(r["place_id"], []))
        if r["domain"] == "day" and options:
            pick = int(hashlib.md5(r["file"].encode()).hexdigest(), 16) % len(options)
            pairs[db_path(r)] = str(folder / options[pick])
    return pairs


def _copy_folder(folder: Path, rows: list[dict[str, str]], target_dir: Path, role: str) -> Path:
    """A labels.csv folder of ``rows`` (hard-linked where possible): a labels.csv may only list files
    inside its own folder, and the user's folder is never written to."""
    labels = []
    for r in rows:
        target = target_dir / "images" / r["file"]
        if not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(folder / r["file"], target)
            except OSError:
                shutil.copyfile(folder / r["file"], target)
        labels.append({"file": f"images/{r['file']}", "domain": r["domain"], "place_id": r["place_id"], "role": role})
    _write_labels(target_dir, labels)
    return target_dir
