"""Builders of tiny evaluation fixtures shared by the tests/test_eval_*.py files (no tests here)."""

from __future__ import annotations

import csv
import pickle
from pathlib import Path

import numpy as np
from PIL import Image


def place_image(place: int, night: bool, variant: int, size=(48, 32)) -> Image.Image:
    """A procedural 'photo' of a place: a per-place pattern, darker with lights at night."""
    rng = np.random.default_rng(1000 * place + 7 * variant + (500 if night else 0))
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([np.sin(xx / (3 + place) + c) * np.cos(yy / (4 + place) - c) for c in range(3)], -1)
    img = 0.5 + 0.4 * base + 0.05 * rng.normal(size=(h, w, 3))
    if night:
        img = img * 0.25 + (rng.random((h, w, 1)) > 0.97) * 0.7
    return Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8))


def make_folder(
    root: Path, places=3, day=3, night=2, roles=("eval", "train", "eval"), sizes=((48, 32), (40, 40))
) -> Path:
    """Folder dataset: day/ and night/ images + labels.csv (file, domain, place_id, role)."""
    rows = []
    for p in range(places):
        for domain, count in (("day", day), ("night", night)):
            (root / domain).mkdir(parents=True, exist_ok=True)
            for v in range(count):
                name = f"{domain}/p{p}_{v}.jpg"
                place_image(p, domain == "night", v, sizes[p % len(sizes)]).save(root / name, quality=95)
                rows.append({"file": name, "domain": domain, "place_id": f"place{p}", "role": roles[p % len(roles)]})
    with open(root / "labels.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["file", "domain", "place_id", "role"])
        writer.writeheader()
        writer.writerows(rows)
    return root


def make_test_set(
    data_root: Path, name: str, revisited: bool = True, n_db: int = 8, n_q: int = 2, all_vs_all: bool = False
) -> Path:
    """cirtorch layout test/<name>/{gnd_<name>.pkl, jpg/}; images are procedural places (2 per place)."""
    base = data_root / "test" / name
    (base / "jpg").mkdir(parents=True, exist_ok=True)
    imlist = [f"db{i:03d}" for i in range(n_db)]
    for i, n in enumerate(imlist):
        place_image(i // 2, i % 4 == 1, i, (40 + 8 * (i % 2), 32)).save(base / "jpg" / f"{n}.jpg", quality=95)
    if all_vs_all:
        qimlist = list(imlist)
        gnd = []
        for i in range(n_db):
            same = [j for j in range(n_db) if j // 2 == i // 2 and j != i]
            gnd.append({"ok": np.array(same), "junk": np.array([i])})
    else:
        qimlist = [f"q{i:03d}" for i in range(n_q)]
        gnd = []
        for qi, n in enumerate(qimlist):
            place = qi % (n_db // 2)
            place_image(place, True, 100 + qi, (48, 40)).save(base / "jpg" / f"{n}.jpg", quality=95)
            members = [2 * place, 2 * place + 1]
            bbx = [2.0, 3.0, 40.0, 30.0]
            if revisited:
                gnd.append({"bbx": bbx, "easy": np.array(members[:1]), "hard": np.array(members[1:]),
                            "junk": np.array([(2 * place + 2) % n_db])})
            else:
                gnd.append({"bbx": bbx, "ok": np.array(members), "junk": np.array([])})
    with open(base / f"gnd_{name}.pkl", "wb") as f:
        pickle.dump({"imlist": imlist, "qimlist": qimlist, "gnd": gnd}, f)
    return base
