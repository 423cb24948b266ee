"""OpenCV-exact CLAHE on batched torch tensors (:func:`clahe`), as a module (:class:`CLAHE`) and as
a PIL / numpy transform for torchvision ``Compose`` (:class:`CLAHETransform`).

``cv::CLAHE`` bit for bit: BORDER_REFLECT_101 padding to a multiple of the grid, integer clip
limit, OpenCV's excess redistribution, float32 LUTs and bilinear LUT interpolation; the colour
conversion around it is :mod:`dsa_plugin.transforms.lab`.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from dsa_plugin.transforms.lab import _F32, _lab_decode, _lab_encode, _lab_table, _packed_lab_table, _small_tables

EXPECTED = "B×3×H×W float in [0,1]"
_RANGE_TOL = 1e-3  # generator outputs may overshoot [0, 1] by rounding; OpenCV clips them too


def _reflect101(n: int, pad: int) -> np.ndarray:
    """Source indices of ``n`` samples followed by ``pad`` BORDER_REFLECT_101 samples (OpenCV borderInterpolate)."""
    out = []
    for p in range(n + pad):
        if n == 1:
            out.append(0)
            continue
        while not 0 <= p < n:
            p = -p if p < 0 else 2 * (n - 1) - p
        out.append(p)
    return np.asarray(out, dtype=np.int64)


class _Geometry(NamedTuple):
    """Everything CLAHE needs to know about an ``h x w`` image and a ``gy x gx`` grid, on one device."""

    tiles: int
    tile_area: int
    rows: Tensor | None  # source rows of the padded image (None: no padding)
    cols: Tensor | None
    tile_offset: Tensor  # [H_ext, W_ext] int64: tile index * 256
    ty1: Tensor  # [h] int32: first tile row * gx * 256
    ty2: Tensor
    ya1: Tensor  # [h] float32 weights, OpenCV's float32 values
    ya: Tensor
    tx1: Tensor  # [w] int32: first tile column * 256
    tx2: Tensor
    xa1: Tensor
    xa: Tensor


_GEOMETRIES: dict[tuple, _Geometry] = {}


def _geometry(h: int, w: int, gy: int, gx: int, device: torch.device) -> _Geometry:
    key = (h, w, gy, gx, device.type, device.index)
    if key in _GEOMETRIES:
        return _GEOMETRIES[key]
    if h % gy == 0 and w % gx == 0:
        rows = cols = None
        he, we = h, w
    else:  # OpenCV pads both sides, by a whole extra tile where that side already divides
        rows, cols = _reflect101(h, gy - h % gy), _reflect101(w, gx - w % gx)
        he, we = len(rows), len(cols)
    th, tw = he // gy, we // gx
    tile_offset = ((np.arange(he) // th)[:, None] * gx + (np.arange(we) // tw)[None, :]) * 256

    def positions(n: int, tile: int, grid: int):
        # OpenCV: txf = x * (1.0f / tile) - 0.5f in float32, floor, weights txf - tx1 and 1 - that
        t = np.arange(n).astype(_F32) * (_F32(1.0) / _F32(tile)) - _F32(0.5)
        t1 = np.floor(t).astype(np.int64)
        a = (t - t1.astype(_F32)).astype(_F32)
        return np.maximum(t1, 0), np.minimum(t1 + 1, grid - 1), (_F32(1.0) - a).astype(_F32), a

    y1, y2, ya1, ya = positions(h, th, gy)
    x1, x2, xa1, xa = positions(w, tw, gx)

    def dev(a: np.ndarray | None) -> Tensor | None:
        return None if a is None else torch.from_numpy(np.ascontiguousarray(a)).to(device)

    i32 = np.int32
    geo = _Geometry(gy * gx, th * tw, dev(rows), dev(cols), dev(tile_offset), dev((y1 * gx * 256).astype(i32)),
                    dev((y2 * gx * 256).astype(i32)), dev(ya1), dev(ya), dev((x1 * 256).astype(i32)),
                    dev((x2 * 256).astype(i32)), dev(xa1), dev(xa))
    if len(_GEOMETRIES) > 64:
        _GEOMETRIES.clear()
    _GEOMETRIES[key] = geo
    return geo


def _clahe_luts(lum: Tensor, clip_limit: float, geo: _Geometry, budget: int) -> Tensor:
    """Per image and tile, OpenCV's clipped-histogram LUT: ``[B * tiles * 256]`` float32 (whole numbers)."""
    bsz = lum.shape[0]
    per = max(1, budget // lum[0].numel())
    hists = []
    for s in range(0, bsz, per):
        ext = lum[s:s + per]
        if geo.rows is not None:
            ext = ext.index_select(1, geo.rows).index_select(2, geo.cols)
        n = ext.shape[0]
        img_offset = torch.arange(n, device=lum.device).view(n, 1, 1) * (geo.tiles * 256)
        idx = ext.to(torch.int64) + geo.tile_offset + img_offset
        hists.append(torch.bincount(idx.view(-1), minlength=n * geo.tiles * 256).view(n * geo.tiles, 256))
    hist = torch.cat(hists) if len(hists) > 1 else hists[0]
    if clip_limit > 0:
        limit = max(int(clip_limit * geo.tile_area / 256), 1)
        excess = (hist - limit).clamp_(min=0).sum(1, keepdim=True)
        hist = hist.clamp(max=limit) + excess // 256
        residual = excess % 256  # OpenCV adds these one by one, every 256 // residual bins from bin 0
        step = 256 // residual.clamp(min=1)
        bins = torch.arange(256, device=lum.device).view(1, 256)
        hist = hist + ((residual > 0) & (bins % step == 0) & (bins // step < residual)).to(hist.dtype)
    scale = float(_F32(255) / _F32(geo.tile_area))  # OpenCV: float lutScale, sum * lutScale in float
    return torch.round(hist.cumsum(1).to(torch.float32) * scale).clamp_(0, 255).view(-1)


def _clahe_interpolate(v: Tensor, luts: Tensor, geo: _Geometry, b0: int, r0: int) -> Tensor:
    """OpenCV's bilinear LUT interpolation of ``[n, rows, w]`` int32 values of images b0.., rows r0..

    Returns the CLAHE output as whole numbers in float32.
    """
    n, nr, _ = v.shape
    img = (torch.arange(b0, b0 + n, device=v.device, dtype=torch.int32) * (geo.tiles * 256)).view(n, 1, 1)
    rv1 = v + (img + geo.ty1[r0:r0 + nr].view(1, nr, 1))
    rv2 = v + (img + geo.ty2[r0:r0 + nr].view(1, nr, 1))

    def lut(idx: Tensor) -> Tensor:
        return luts.index_select(0, idx.view(-1)).view(v.shape)

    xa1, xa = geo.xa1.view(1, 1, -1), geo.xa.view(1, 1, -1)
    ya1, ya = geo.ya1[r0:r0 + nr].view(1, nr, 1), geo.ya[r0:r0 + nr].view(1, nr, 1)
    top = lut(rv1 + geo.tx1) * xa1 + lut(rv1 + geo.tx2) * xa
    bottom = lut(rv2 + geo.tx1) * xa1 + lut(rv2 + geo.tx2) * xa
    return (top * ya1 + bottom * ya).round_().clamp_(0, 255)


def _clahe_u8(lum: Tensor, clip_limit: float, gy: int, gx: int) -> Tensor:
    """OpenCV CLAHE of ``[B, H, W]`` integer values in 0..255 (whole images); returns int64."""
    geo = _geometry(lum.shape[1], lum.shape[2], gy, gx, lum.device)
    luts = _clahe_luts(lum.to(torch.uint8), clip_limit, geo, 1 << 22)
    return _clahe_interpolate(lum.to(torch.int32), luts, geo, 0, 0).to(torch.int64)



def _chunks(bsz: int, h: int, w: int, budget: int):
    """(first image, last image + 1, first row, last row + 1) blocks of about ``budget`` pixels."""
    if h * w >= budget:
        rows = max(1, budget // w)
        for b in range(bsz):
            for r0 in range(0, h, rows):
                yield b, b + 1, r0, min(h, r0 + rows)
    else:
        per = budget // (h * w)
        for b0 in range(0, bsz, per):
            yield b0, min(bsz, b0 + per), 0, h


# ---------------------------------------------------------------------------------------------
# public API


def _check_batch(x: Tensor, check_range: bool) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"clahe expects a torch.Tensor of shape {EXPECTED}, got {type(x).__name__}")
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"clahe expects shape {EXPECTED}, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"clahe expects {EXPECTED}, got dtype {x.dtype} (convert uint8 with x.float() / 255)")
    if x.shape[0] == 0 or x.shape[2] == 0 or x.shape[3] == 0:
        raise ValueError(f"clahe got an empty batch or image of shape {tuple(x.shape)}; expected {EXPECTED}")
    if check_range:
        lo, hi = torch.aminmax(x.detach())
        lo, hi = float(lo), float(hi)
        if not (lo >= -_RANGE_TOL and hi <= 1 + _RANGE_TOL):  # also catches NaN
            raise ValueError(f"clahe expects {EXPECTED}, got values in [{lo:.4g}, {hi:.4g}] "
                             "(undo a mean/std normalisation first, e.g. with denormalize)")


def _chunk_pixels(device: torch.device) -> int:
    # CPU: blocks whose temporaries stay in cache; GPU: few, large kernels
    return 1 << 17 if device.type == "cpu" else 1 << 24


def tile_grid(grid_size: tuple[int, int] | int) -> tuple[int, int]:
    """CLAHE tiles as ``(rows, cols)``: one int means a square grid.

    Example:
        >>> tile_grid(8)
        (8, 8)
    """
    return (grid_size, grid_size) if isinstance(grid_size, int) else (int(grid_size[0]), int(grid_size[1]))


def clahe(x: Tensor, clip_limit: float = 1.0, grid_size: tuple[int, int] | int = (8, 8), *,
          check_range: bool = True) -> Tensor:
    """CLAHE on the L channel of Lab, exactly as the reference applies it with OpenCV (any device).

    Args:
        x: ``[B, 3, H, W]`` float RGB in [0, 1] on any device (float16/64 are computed in float32).
        clip_limit: OpenCV's ``clipLimit`` (1.0 in the paper); ``<= 0`` disables clipping.
        grid_size: tiles ``(rows, cols)`` like OpenCV's ``tileGridSize``, or one int (8).
        check_range: reject values outside [0, 1] (costs one device sync); values within 1e-3 of the
            range are clipped like OpenCV does.

    Returns:
        ``[B, 3, H, W]`` RGB in [0, 1], same device and dtype as ``x``; no gradient flows.

    Example:
        >>> x = torch.rand(2, 3, 64, 48)
        >>> y = clahe(x)  # == per image: cv2 Lab, uint8 L, cv2.createCLAHE(1.0, (8, 8)), back
        >>> y.shape
        torch.Size([2, 3, 64, 48])
    """
    _check_batch(x, check_range)
    gy, gx = tile_grid(grid_size)
    if gy < 1 or gx < 1:
        raise ValueError(f"grid_size must be positive, got {grid_size!r}")
    dtype = x.dtype
    with torch.no_grad():
        x = x.detach().to(torch.float32)
        dev = x.device
        bsz, _, h, w = x.shape
        budget = _chunk_pixels(dev)
        table = _lab_table(dev)
        l_tab = _small_tables(dev)
        # pass 1: Lab, in blocks that stay in cache
        lum = torch.empty((bsz, h, w), dtype=torch.uint8, device=dev)
        a = torch.empty((bsz, h, w), dtype=torch.int16, device=dev)
        b = torch.empty_like(a)
        for b0, b1, r0, r1 in _chunks(bsz, h, w, budget):
            lum[b0:b1, r0:r1], a[b0:b1, r0:r1], b[b0:b1, r0:r1] = _lab_encode(x[b0:b1, :, r0:r1], table)
        # pass 2: tile histograms -> LUTs (whole images)
        geo = _geometry(h, w, gy, gx, dev)
        luts = _clahe_luts(lum, float(clip_limit), geo, budget * 8)
        # pass 3: LUT interpolation and back to RGB, in blocks
        out = torch.empty((bsz, 3, h, w), dtype=torch.float32, device=dev)
        for b0, b1, r0, r1 in _chunks(bsz, h, w, budget):
            new_lum = _clahe_interpolate(lum[b0:b1, r0:r1].to(torch.int32), luts, geo, b0, r0)
            o = out[b0:b1, :, r0:r1]
            _lab_decode(new_lum, a[b0:b1, r0:r1], b[b0:b1, r0:r1], [o[:, i] for i in range(3)], l_tab)
    return out.to(dtype)


class CLAHE(nn.Module):
    """:func:`clahe` as a module (for ``nn.Sequential`` on GPU batches)."""

    def __init__(self, clip_limit: float = 1.0, grid_size: tuple[int, int] | int = (8, 8), check_range: bool = True):
        super().__init__()
        self.clip_limit = float(clip_limit)
        self.grid_size = tile_grid(grid_size)
        self.check_range = check_range

    def forward(self, x: Tensor) -> Tensor:
        return clahe(x, self.clip_limit, self.grid_size, check_range=self.check_range)

    def extra_repr(self) -> str:
        return f"clip_limit={self.clip_limit}, grid_size={self.grid_size}"


class CLAHETransform:
    """CLAHE for torchvision ``Compose`` on PIL images or ``H x W x 3`` numpy arrays (CPU, picklable).

    Returns the type it was given: PIL RGB -> PIL RGB (rounded to uint8), uint8 array -> uint8 array,
    float array in [0, 1] -> float32 array (the reference's exact numbers). ``as_tensor=True``
    returns a ``3 x H x W`` float tensor in [0, 1] instead (use it in place of ``ToTensor`` to keep
    the full float result, as the reference does). Other PIL modes are converted with
    :func:`dsa_plugin.core.images.to_rgb`, which names the mode it cannot convert.
    """

    def __init__(self, clip_limit: float = 1.0, grid_size: tuple[int, int] | int = (8, 8), as_tensor: bool = False):
        self.clip_limit = float(clip_limit)
        self.grid_size = tile_grid(grid_size)
        self.as_tensor = as_tensor
        _packed_lab_table()  # built here, before DataLoader workers fork, so that they share it

    def __call__(self, img):
        from PIL import Image

        if isinstance(img, Image.Image):
            from dsa_plugin.core.images import pil_to_tensor01, to_rgb

            x = pil_to_tensor01(to_rgb(img))[None]
            kind = "pil"
        elif isinstance(img, np.ndarray):
            if img.ndim != 3 or img.shape[2] != 3:
                raise ValueError(f"CLAHETransform expects an H×W×3 RGB array, got shape {img.shape}")
            if img.size == 0:
                raise ValueError(f"CLAHETransform got an empty image of shape {img.shape}")
            if img.dtype == np.uint8:
                x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float() / 255.0
                kind = "u8"
            elif np.issubdtype(img.dtype, np.floating):
                x = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32)).permute(2, 0, 1)[None]
                kind = "float"
            else:
                raise TypeError(f"CLAHETransform expects a uint8 or float array, got dtype {img.dtype}")
        elif isinstance(img, Tensor):
            raise TypeError("CLAHETransform takes PIL images or numpy arrays; use dsa_plugin.transforms.clahe "
                            f"(or the CLAHE module) for tensors of shape {EXPECTED}")
        else:
            raise TypeError(f"CLAHETransform expects a PIL image or an H×W×3 numpy array, got {type(img).__name__}")
        y = clahe(x, self.clip_limit, self.grid_size)[0]
        if self.as_tensor:
            return y
        if kind == "float":
            return y.permute(1, 2, 0).numpy()
        u8 = torch.round(y * 255.0).clamp_(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
        return Image.fromarray(u8, "RGB") if kind == "pil" else u8

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(clip_limit={self.clip_limit}, grid_size={self.grid_size}, "
                f"as_tensor={self.as_tensor})")

