"""Unpaired day/night pairs with one shared random scale-crop window (docs/reference.md §gan-data).

Each epoch draws ``epoch_size`` day indices and ``epoch_size`` night indices independently,
uniformly, with replacement; item ``i`` is (day[a_i], night[b_i]). Both images of a pair are cut
with the *same* window: its side is ``ceil(crop / s)`` px of the (optionally downscaled) image with
``s ~ U[max(crop / min_side, low), high)`` — an absolute scale, not relative to the image size —
and the crop is resized to ``crop x crop`` (bilinear, no antialiasing, like ``cv2.resize``).

Unlike the reference (unseeded Python ``random``), every random draw is derived from
``(seed, epoch, index)``, so a resumed or distributed run sees exactly the pairs and windows of an
uninterrupted single-process run.

Example:
    >>> import os, tempfile
    >>> from PIL import Image
    >>> folder = tempfile.mkdtemp()
    >>> Image.new("RGB", (96, 80), "white").save(os.path.join(folder, "a.jpg"))
    >>> Image.new("RGB", (80, 72), "black").save(os.path.join(folder, "b.jpg"))
    >>> ds = UnpairedDayNight([os.path.join(folder, "a.jpg")], [os.path.join(folder, "b.jpg")],
    ...                       crop_size=64, epoch_size=4)
    >>> ds.set_epoch(0); day, night = ds[0]
    >>> day.shape, night.shape
    (torch.Size([3, 64, 64]), torch.Size([3, 64, 64]))
    >>> float(day.min()), float(night.max())  # white and black in [-1, 1]
    (1.0, -1.0)
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from dsa_plugin.core.images import to_rgb

log = logging.getLogger("dsa_plugin.gan")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


class GanDataError(ValueError):
    """The day/night input is missing, empty, or holds an image the trainer cannot use."""


class BadImageError(GanDataError):
    """One image cannot be used (unreadable, or smaller than the crop); the message names its path."""

    def __init__(self, path: str, reason: str | None = None) -> None:
        # one-argument form: DataLoader workers re-raise exceptions from their message alone
        super().__init__(path if reason is None else f"{path}: {reason}")
        self.path = path


# ----------------------------------------------------------------------------------------------
# image lists

def resolve_images(source: "str | Path | Sequence[str]", root: "str | Path | None" = None,
                   name: str = "images") -> list[str]:
    """Image paths from a folder (recursive, sorted), a list file (one path per line) or a list.

    Relative paths in a list file are taken relative to ``root``, or to the list file's folder when
    ``root`` is None. Blank lines and lines starting with ``#`` are ignored.

    Raises:
        GanDataError: the source does not exist or yields no image (the message names it).
    """
    if source is None:
        raise GanDataError(f"no {name} images given: set data.{name} to a folder or a list file")
    if isinstance(source, (list, tuple)):
        paths = [str(p) for p in source]
        where = f"the {name} list"
    else:
        src = Path(source).expanduser()
        where = str(src)
        if src.is_dir():
            paths = sorted(str(p) for p in src.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
            if not paths:
                raise GanDataError(f"{name} folder {src} contains no images ({', '.join(IMAGE_EXTENSIONS)})")
            return paths
        if not src.is_file():
            raise GanDataError(f"{name} source {src} does not exist (expected a folder or a list file)")
        base = Path(root).expanduser() if root is not None else src.parent
        paths = []
        for line in src.read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                p = Path(line).expanduser()
                paths.append(str(p if p.is_absolute() else base / p))
    if not paths:
        raise GanDataError(f"{name} list {where} is empty: it must name at least one image")
    return paths


def load_image(path: str, resize_short: int | None = None) -> torch.Tensor:
    """``[3, H, W]`` uint8 RGB; shrunk (LANCZOS, aspect kept) so the shorter side is at most ``resize_short``.

    Raises:
        BadImageError: the file is missing or not a readable image.
    """
    try:
        with Image.open(path) as img:
            if resize_short is not None and min(img.size) > resize_short:
                f = resize_short / min(img.size)
                size = (max(resize_short, round(img.size[0] * f)), max(resize_short, round(img.size[1] * f)))
                img.draft("RGB", size)  # JPEG: decode at a reduced scale first (fast, result >= size)
                img = to_rgb(img).resize(size, Image.LANCZOS)
            else:
                img = to_rgb(img)
            arr = np.asarray(img, dtype=np.uint8).copy()
    except FileNotFoundError:
        raise BadImageError(path, "file not found") from None
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise BadImageError(path, f"cannot read image ({type(err).__name__}: {err})") from None
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


# ----------------------------------------------------------------------------------------------
# the shared scale-crop window

def random_scale_crop(images: Sequence[torch.Tensor], size: int, scale: tuple[float, float],
                      rng: random.Random, paths: Sequence[str] | None = None) -> list[torch.Tensor]:
    """Cut the same random window from every image and resize it to ``size x size``.

    Args:
        images: ``[C, H_i, W_i]`` float tensors (sizes may differ; the window lies inside the
            element-wise minimum size).
        size: output side.
        scale: (low, high) bounds of the absolute scale factor.
        rng: source of the scale and the offset.
        paths: image paths, only for error messages.

    Returns:
        ``[C, size, size]`` tensors (inputs returned unchanged when all are already size x size).

    Raises:
        BadImageError: an image is smaller than ``size`` in some dimension.
    """
    if all(tuple(im.shape[-2:]) == (size, size) for im in images):
        return list(images)
    for k, im in enumerate(images):
        h, w = im.shape[-2:]
        if h < size or w < size:
            name = paths[k] if paths else f"image {k}"
            raise BadImageError(name, f"{w}x{h} px is smaller than the crop {size}x{size} "
                                      f"(lower data.crop_size, raise data.resize_short, or set data.skip_bad_images)")
    min_h = min(im.shape[-2] for im in images)
    min_w = min(im.shape[-1] for im in images)
    lowest = max(size / min_h, size / min_w, scale[0])
    s = rng.random() * (scale[1] - lowest) + lowest if scale[1] > lowest else lowest
    side = min(math.ceil(size / s), min_h, min_w)
    top = rng.randint(0, min_h - side)
    left = rng.randint(0, min_w - side)
    out = []
    for im in images:
        crop = im[..., top:top + side, left:left + side]
        if side != size:
            crop = F.interpolate(crop[None], size=(size, size), mode="bilinear", align_corners=False,
                                 antialias=False)[0]
        out.append(crop)
    return out


# ----------------------------------------------------------------------------------------------
# dataset and sampler

class UnpairedDayNight(torch.utils.data.Dataset):
    """Random unpaired (day, night) crops in [-1, 1] (mean 0.5 / std 0.5), ``[3, crop, crop]`` each.

    Call :meth:`set_epoch` before each epoch; pairs are a pure function of (seed, epoch, index).
    """

    def __init__(self, day: Sequence[str], night: Sequence[str], crop_size: int = 256,
                 scale: tuple[float, float] = (0.8, 1.0), epoch_size: int = 10000, seed: int = 0,
                 resize_short: int | None = None, skip_bad_images: bool = False,
                 cache_images: bool = False) -> None:
        if not day:
            raise GanDataError("the day image list is empty")
        if not night:
            raise GanDataError("the night image list is empty")
        self.day, self.night = list(day), list(night)
        self.crop_size, self.scale = int(crop_size), (float(scale[0]), float(scale[1]))
        self.epoch_size, self.seed = int(epoch_size), int(seed)
        self.resize_short, self.skip_bad_images = resize_short, bool(skip_bad_images)
        self.cache: dict[str, torch.Tensor] | None = {} if cache_images else None
        self.bad: set[str] = set()
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        rng = random.Random(f"dsa-gan-pairs:{self.seed}:{self.epoch}")
        self.day_index = [rng.randrange(len(self.day)) for _ in range(self.epoch_size)]
        self.night_index = [rng.randrange(len(self.night)) for _ in range(self.epoch_size)]

    def __len__(self) -> int:
        return self.epoch_size

    def load(self, path: str) -> torch.Tensor:
        """One image as ``[3, H, W]`` uint8, shrunk as ``resize_short`` asks (kept when ``cache_images``)."""
        if self.cache is not None and path in self.cache:
            return self.cache[path]
        img = load_image(path, self.resize_short)
        if self.cache is not None:
            self.cache[path] = img
        return img

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = random.Random(f"dsa-gan-item:{self.seed}:{self.epoch}:{index}")
        a, b = self.day_index[index], self.night_index[index]
        for attempt in range(100):
            paths = [self.day[a], self.night[b]]
            try:
                if paths[0] in self.bad or paths[1] in self.bad:
                    raise BadImageError(paths[0] if paths[0] in self.bad else paths[1], "skipped before")
                imgs = [self.load(p).float().div_(255.0) for p in paths]
                day, night = random_scale_crop(imgs, self.crop_size, self.scale, rng, paths)
                return day.sub_(0.5).div_(0.5), night.sub_(0.5).div_(0.5)
            except BadImageError as err:
                if not self.skip_bad_images:
                    raise
                if err.path not in self.bad:
                    self.bad.add(err.path)
                    log.warning("skipping bad image %s", err)
                # Redraw only the side that failed, deterministically.
                if err.path == paths[0]:
                    a = rng.randrange(len(self.day))
                else:
                    b = rng.randrange(len(self.night))
        raise GanDataError(f"no usable day/night pair found after 100 attempts (bad images: {sorted(self.bad)[:5]})")


class EpochBatchSampler(torch.utils.data.Sampler):
    """Batches of item indices for one process: iteration ``t`` on rank ``r`` of ``w`` takes items
    ``(t*w + r)*B ... (t*w + r)*B + B-1``, so the union over ranks is the single-process order.

    ``start`` skips the first iterations (resume in the middle of an epoch).

    Example:
        >>> list(EpochBatchSampler(epoch_size=8, batch_size=2, rank=0, world_size=2))
        [[0, 1], [4, 5]]
    """

    def __init__(self, epoch_size: int, batch_size: int, rank: int = 0, world_size: int = 1, start: int = 0):
        self.batch_size, self.rank, self.world_size, self.start = batch_size, rank, world_size, start
        self.iterations = epoch_size // (batch_size * world_size)

    def __len__(self) -> int:
        return max(0, self.iterations - self.start)

    def __iter__(self) -> Iterator[list[int]]:
        for t in range(self.start, self.iterations):
            first = (t * self.world_size + self.rank) * self.batch_size
            yield list(range(first, first + self.batch_size))


def build_dataset(data_cfg, seed: int) -> UnpairedDayNight:
    """:class:`UnpairedDayNight` from a :class:`~dsa_plugin.gan.config.DataConfig`."""
    day = resolve_images(data_cfg.day, data_cfg.root, "day")
    night = resolve_images(data_cfg.night, data_cfg.root, "night")
    return UnpairedDayNight(day, night, crop_size=data_cfg.crop_size, scale=data_cfg.scale,
                            epoch_size=data_cfg.epoch_size, seed=seed, resize_short=data_cfg.resize_short,
                            skip_bad_images=data_cfg.skip_bad_images, cache_images=data_cfg.cache_images)
