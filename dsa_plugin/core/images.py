"""Image loading like cirtorch's loader (PIL, RGB, LANCZOS thumbnail), with clear errors.

cirtorch opens every image with ``Image.open(f).convert("RGB")`` and shrinks it with
``img.thumbnail((imsize, imsize), Image.LANCZOS)``. :func:`load_rgb` does the same, but converts
the modes that plain ``convert("RGB")`` gets wrong (16-bit images would be clipped to white) and
rejects the ones it cannot convert, naming the file and the mode.

Mode handling (:func:`to_rgb`):

- ``RGB``: unchanged. ``L``, ``1``, ``P`` (palette), ``CMYK``, ``YCbCr``: PIL's conversion
  (CMYK naively, without an ICC profile).
- Alpha (``RGBA``, ``LA``, ``PA``, ``RGBa``, ``La``, palette with transparency): by default the alpha
  channel is dropped and the stored colour kept, exactly like cirtorch's ``convert("RGB")``;
  ``alpha="white"`` composites onto white instead.
- 16-bit (``I;16``, ``I;16L``, ``I;16B``) and 32-bit integer ``I`` holding values in 0..65535:
  scaled by 255/65535 and rounded (not clipped). ``I`` with values outside 0..65535 and float
  ``F`` images have no defined white level and are rejected.
- Zero-size images are rejected.
"""

from __future__ import annotations

import os
from typing import Callable, Literal, Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = ["ImageLoadError", "load_rgb", "load_image", "load_image01", "ImageList", "to_rgb", "pil_to_tensor01",
           "tensor01_to_pil"]

_ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}
_PLAIN_MODES = {"L", "1", "CMYK", "YCbCr", "RGBX"}
_SIXTEEN_BIT = {"I;16", "I;16L", "I;16B", "I;16N"}


class ImageLoadError(OSError):
    """An image file is missing, unreadable, empty, or in a mode that cannot be converted to RGB."""


def to_rgb(img, alpha: Literal["drop", "white"] = "drop"):
    """Any PIL image -> PIL ``RGB`` (see the module doc for each mode); ``ValueError`` naming the mode otherwise.

    Example:
        >>> from PIL import Image
        >>> to_rgb(Image.new("I;16", (4, 3), 65535)).getpixel((0, 0))
        (255, 255, 255)
    """
    from PIL import Image

    if not isinstance(img, Image.Image):
        raise TypeError(f"expected a PIL image, got {type(img).__name__}")
    if alpha not in ("drop", "white"):
        raise ValueError(f"alpha must be 'drop' or 'white', got {alpha!r}")
    mode = img.mode
    if img.width == 0 or img.height == 0:
        raise ValueError(f"empty image ({img.width}x{img.height}, mode {mode!r})")
    if mode == "RGB":
        return img
    if mode == "P":
        has_alpha = "transparency" in img.info or img.palette is not None and img.palette.mode == "RGBA"
        return to_rgb(img.convert("RGBA" if has_alpha else "RGB"), alpha)
    if mode in _ALPHA_MODES:
        return _alpha_to_rgb(img, alpha)
    if mode in _SIXTEEN_BIT or mode == "I":
        return _sixteen_bit_to_rgb(img)
    if mode in _PLAIN_MODES:
        return img.convert("RGB")
    raise ValueError(f"image mode {mode!r} cannot be converted to RGB; supported: RGB, RGBX, L, 1, P, RGBA, LA, PA, "
                     "CMYK, YCbCr, I;16, I (0..65535)")


def _alpha_to_rgb(img, alpha: str):
    """Drop the alpha channel (cirtorch's ``convert("RGB")``) or composite onto white."""
    from PIL import Image

    if alpha == "drop":
        return img.convert("RGB")
    rgba = img.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


def _sixteen_bit_to_rgb(img):
    """16-bit grey (or 32-bit ``I`` in 0..65535) scaled by 255/65535 and rounded, as grey RGB."""
    from PIL import Image

    arr = np.asarray(img).astype(np.int64)
    if arr.size and (arr.min() < 0 or arr.max() > 65535):
        raise ValueError(f"image mode {img.mode!r} with values in [{arr.min()}, {arr.max()}] has no defined "
                         "white level; allowed: 0..65535 (16-bit)")
    u8 = np.rint(arr.astype(np.float64) * (255.0 / 65535.0)).astype(np.uint8)
    return Image.fromarray(np.repeat(u8[:, :, None], 3, axis=2), "RGB")


def load_rgb(path: str | os.PathLike, max_size: int | None = None, alpha: Literal["drop", "white"] = "drop"):
    """Open ``path`` as a PIL RGB image, shrunk so that its longer side is ``<= max_size`` (LANCZOS).

    Like cirtorch's ``pil_loader`` + ``imresize`` (``thumbnail`` never enlarges). Raises
    :class:`ImageLoadError` naming the path for a missing, unreadable, truncated, empty or
    unconvertible file.

    Example:
        >>> import os, tempfile
        >>> from PIL import Image
        >>> path = os.path.join(tempfile.mkdtemp(), "photo.png")
        >>> Image.new("RGBA", (2048, 1536)).save(path)
        >>> img = load_rgb(path, max_size=1024)
        >>> img.mode, img.size
        ('RGB', (1024, 768))
    """
    from PIL import Image, UnidentifiedImageError

    if max_size is not None and (isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < 1):
        raise ValueError(f"max_size must be a positive int or None, got {max_size!r}")
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ImageLoadError(f"image not found: {path}")
    try:
        with Image.open(path) as img:
            img.load()
            rgb = to_rgb(img, alpha)
            if rgb is img:
                rgb = img.copy()
    except Image.DecompressionBombError as e:
        # Pillow's guard against a small file that decodes to gigabytes: refuse it, naming the file.
        raise ImageLoadError(f"{path}: refusing a decompression-bomb image ({e})") from None
    except ValueError as e:
        raise ImageLoadError(f"{path}: {e}") from e
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise ImageLoadError(f"cannot read image {path}: {e}") from e
    if max_size is not None:
        rgb.thumbnail((max_size, max_size), Image.LANCZOS)
    return rgb


def load_image(path: str | os.PathLike, image_size: int | None = None, bbox: Sequence[float] | None = None,
               loader: Callable | None = None):
    """Open ``path`` as every pipeline does: PIL RGB, crop ``bbox`` first, then shrink (LANCZOS).

    Without a bbox the image is thumbnailed to ``image_size`` on its longest side (shrink only,
    :func:`load_rgb`). With a bbox (a query box ``(x1, y1, x2, y2)``) the crop is thumbnailed to
    ``image_size * max(crop) / max(full)``: the factor the whole image would get. ``loader``
    (a toolkit's ``path -> PIL`` loader) replaces :func:`load_rgb`'s decoding.

    Example:
        >>> import os, tempfile
        >>> from PIL import Image
        >>> path = os.path.join(tempfile.mkdtemp(), "photo.png")
        >>> Image.new("RGB", (200, 100)).save(path)
        >>> load_image(path, 50).size, load_image(path, 50, bbox=(10, 0, 110, 40)).size
        ((50, 25), (25, 10))
    """
    from PIL import Image

    if bbox is None and loader is None:
        return load_rgb(path, image_size)
    img = load_rgb(path) if loader is None else loader(os.fspath(path))
    full = max(img.size)
    if bbox is not None:
        img = img.crop(tuple(bbox))
    if image_size is not None:
        target = image_size * max(img.size) / full if bbox is not None else image_size
        img.thumbnail((target, target), Image.Resampling.LANCZOS)
    return img


def load_image01(path: str | os.PathLike, image_size: int | None = None, bbox: Sequence[float] | None = None,
                 loader: Callable | None = None, *, min_side: int = 1) -> Tensor:
    """:func:`load_image` as a ``3 x H x W`` float32 tensor in [0, 1] (:func:`pil_to_tensor01`).

    ``min_side``: refuse (:class:`ImageLoadError`) an image with a side shorter than this after
    shrinking (the generator needs a few pixels for its padding).

    Example:
        >>> import os, tempfile
        >>> from PIL import Image
        >>> path = os.path.join(tempfile.mkdtemp(), "photo.png")
        >>> Image.new("RGB", (200, 4), (255, 0, 0)).save(path)
        >>> x = load_image01(path, 100)
        >>> tuple(x.shape), x[0].max().item()
        ((3, 2, 100), 1.0)
        >>> load_image01(path, 100, min_side=8)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        dsa_plugin.core.images.ImageLoadError: ...photo.png: 100x2 px after shrinking to 100; need at least 8 px ...
    """
    x = pil_to_tensor01(load_image(path, image_size, bbox, loader))
    if min(x.shape[-2:]) < min_side:
        shrunk = f" after shrinking to {image_size}" if image_size else ""
        raise ImageLoadError(f"{os.fspath(path)}: {x.shape[-1]}x{x.shape[-2]} px{shrunk}; "
                             f"need at least {min_side} px on each side")
    return x


class ImageList(torch.utils.data.Dataset):
    """``(i, load_image01(paths[i], image_size, bbxs[i], loader))`` items, for a ``DataLoader``
    (picklable when ``loader`` is: runs in worker processes).

    Example:
        >>> import os, tempfile
        >>> from PIL import Image
        >>> path = os.path.join(tempfile.mkdtemp(), "a.png")
        >>> Image.new("RGB", (40, 20)).save(path)
        >>> i, x = ImageList([path], image_size=10)[0]
        >>> i, tuple(x.shape)
        (0, (3, 5, 10))
    """

    def __init__(self, paths: Sequence[str | os.PathLike], image_size: int | None = None,
                 bbxs: Sequence | None = None, loader: Callable | None = None) -> None:
        self.paths, self.image_size, self.bbxs, self.loader = list(paths), image_size, bbxs, loader

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, Tensor]:
        bbox = self.bbxs[i] if self.bbxs is not None else None
        return i, load_image01(self.paths[i], self.image_size, bbox, self.loader)


def pil_to_tensor01(img) -> Tensor:
    """PIL image -> ``3 x H x W`` float32 tensor in [0, 1] (``uint8 / 255`` like the reference's ``pil2np``).

    Non-RGB modes go through :func:`to_rgb` first.

    Example:
        >>> from PIL import Image
        >>> x = pil_to_tensor01(Image.new("RGB", (4, 2), (255, 0, 51)))
        >>> tuple(x.shape), x[:, 0, 0].tolist()
        ((3, 2, 4), [1.0, 0.0, 0.20000000298023224])
    """
    arr = np.asarray(to_rgb(img), dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)


def tensor01_to_pil(x: Tensor):
    """``3 x H x W`` tensor in [0, 1] (any device) -> PIL RGB; clamped, then rounded to 8 bits.

    The inverse of :func:`pil_to_tensor01` for 8-bit images: ``tensor01_to_pil(pil_to_tensor01(img))``
    gives ``img`` back pixel for pixel.

    Example:
        >>> import torch
        >>> tensor01_to_pil(torch.full((3, 2, 4), 0.5)).getpixel((0, 0))
        (128, 128, 128)
    """
    from PIL import Image

    if not isinstance(x, Tensor) or x.dim() != 3 or x.shape[0] != 3:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"expected a [3, H, W] tensor, got {shape}")
    u8 = torch.round(x.detach().cpu().float().clamp(0, 1) * 255.0).to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(u8, "RGB")
