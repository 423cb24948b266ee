"""Unpaired day/night data: folders and lists, shared scale-crop window, sharding, bad input."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from PIL import Image

from dsa_plugin.gan.data import (
    BadImageError,
    EpochBatchSampler,
    GanDataError,
    UnpairedDayNight,
    random_scale_crop,
    resolve_images,
)


def write_images(folder, n, size=(48, 40), color=None, prefix="im"):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(prefix) + n)
    paths = []
    for i in range(n):
        arr = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8) if color is None else \
            np.full((size[1], size[0], 3), color, np.uint8)
        path = folder / f"{prefix}{i}.png"
        Image.fromarray(arr).save(path)
        paths.append(path)
    return paths


def test_folder_and_list_file_with_root(tmp_path):
    paths = write_images(tmp_path / "imgs" / "sub", 3)
    assert resolve_images(tmp_path / "imgs") == sorted(str(p) for p in paths)
    lst = tmp_path / "lists" / "day.txt"
    lst.parent.mkdir()
    lst.write_text("# day images\nsub/im0.png\n\nsub/im2.png\n")
    assert resolve_images(lst, root=tmp_path / "imgs") == [str(tmp_path / "imgs/sub/im0.png"),
                                                            str(tmp_path / "imgs/sub/im2.png")]
    (tmp_path / "lists" / "sub").mkdir()
    assert resolve_images(lst)[0] == str(tmp_path / "lists/sub/im0.png")  # default root: the list's folder


def test_empty_list_and_missing_source(tmp_path):
    empty = tmp_path / "night.txt"
    empty.write_text("\n# nothing\n")
    with pytest.raises(GanDataError, match=r"night list .*night.txt is empty"):
        resolve_images(empty, name="night")
    with pytest.raises(GanDataError, match="does not exist"):
        resolve_images(tmp_path / "nope", name="day")
    (tmp_path / "emptydir").mkdir()
    with pytest.raises(GanDataError, match="contains no images"):
        resolve_images(tmp_path / "emptydir")
    with pytest.raises(GanDataError, match="data.day"):
        resolve_images(None, name="day")


def test_same_window_on_day_and_night():
    # A ramp image: the crop's content tells where the window was.
    h, w = 50, 70
    ramp = torch.arange(h * w, dtype=torch.float32).view(1, h, w).repeat(3, 1, 1)
    bigger = torch.zeros(3, 80, 90)
    bigger[:, :h, :w] = ramp
    a, b = random_scale_crop([ramp, bigger], size=32, scale=(0.8, 1.0), rng=random.Random(3))
    assert a.shape == b.shape == (3, 32, 32)
    assert torch.allclose(a, b)  # the window lies within the common (min) size, same offset in both


def test_window_is_absolute_scale_within_bounds():
    img = torch.rand(3, 200, 300)
    seen = set()
    for seed in range(30):
        rng = random.Random(seed)
        s = rng.random() * (1.0 - 0.8) + 0.8
        side = int(np.ceil(64 / s))
        seen.add(side)
        out = random_scale_crop([img], 64, (0.8, 1.0), random.Random(seed))[0]
        assert out.shape == (3, 64, 64)
    assert min(seen) >= 64 and max(seen) <= 80


def test_image_smaller_than_crop_names_path(tmp_path):
    day = write_images(tmp_path / "day", 1, size=(40, 30))
    night = write_images(tmp_path / "night", 1, size=(80, 80))
    ds = UnpairedDayNight([str(p) for p in day], [str(p) for p in night], crop_size=32)
    with pytest.raises(BadImageError, match=r"im0.png: 40x30 px is smaller than the crop 32x32"):
        ds[0]


def test_unreadable_image_error_and_skip(tmp_path, caplog):
    good = write_images(tmp_path / "day", 2)
    bad = tmp_path / "day" / "broken.jpg"
    bad.write_bytes(b"not a jpeg at all")
    night = write_images(tmp_path / "night", 2, prefix="n")
    day = [str(bad)] + [str(p) for p in good]
    ds = UnpairedDayNight(day, [str(p) for p in night], crop_size=32, epoch_size=20, seed=1)
    hit = next(i for i in range(20) if ds.day_index[i] == 0)
    with pytest.raises(BadImageError, match="broken.jpg: cannot read image"):
        ds[hit]
    ds = UnpairedDayNight(day, [str(p) for p in night], crop_size=32, epoch_size=20, seed=1, skip_bad_images=True)
    x, y = ds[hit]
    assert x.shape == y.shape == (3, 32, 32) and str(bad) in ds.bad
    assert "broken.jpg" in caplog.text


def test_pairs_are_deterministic_and_in_range(tmp_path):
    day = [str(p) for p in write_images(tmp_path / "day", 3, color=255)]
    night = [str(p) for p in write_images(tmp_path / "night", 4, color=0, prefix="n")]
    ds = UnpairedDayNight(day, night, crop_size=32, epoch_size=16, seed=5)
    x, y = ds[3]
    assert torch.all(x == 1.0) and torch.all(y == -1.0)  # [-1, 1] normalisation (mean = std = 0.5)
    first = list(ds.day_index)
    ds.set_epoch(1)
    assert ds.day_index != first  # fresh draw every epoch
    ds.set_epoch(0)
    assert ds.day_index == first  # ... and reproducible (resume)


def test_sampler_shards_cover_single_process_order():
    single = [b for b in EpochBatchSampler(20, 2)]
    r0 = list(EpochBatchSampler(20, 2, rank=0, world_size=2))
    r1 = list(EpochBatchSampler(20, 2, rank=1, world_size=2))
    assert len(r0) == len(r1) == 5
    merged = [b for pair in zip(r0, r1) for b in pair]
    assert merged == single
    assert list(EpochBatchSampler(20, 2, start=8)) == single[8:]
