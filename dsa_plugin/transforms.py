"""Drop-in transforms: CLAHE as the reference applies it, and mean/std normalisation adapters.

CLAHE (docs/reference.md §clahe): float RGB in [0, 1] -> OpenCV Lab -> ``L / 100 * 255`` truncated to
uint8 -> OpenCV CLAHE (clip limit 1.0, 8x8 tiles) -> ``/ 255`` -> back to RGB with a and b unchanged.

:func:`clahe` re-implements that whole pipeline in batched torch ops so that it runs on any device
(generator outputs on a GPU never leave it) and matches OpenCV's numbers:

- RGB -> Lab follows OpenCV's float path: OpenCV quantises RGB to 1/16384 and interpolates L, a, b
  trilinearly (4-bit fractions, integer weights) in a 33^3 table built with its soft-float maths,
  including its truncating cube root. The table here is built the same way and equals OpenCV's at
  every grid point (tested). That matters because L is then *truncated* to uint8: any other Lab
  formula flips L by one level on many pixels. The uint8 L is bit-exact; a and b, which only feed
  the smooth way back, are within 1/64 of OpenCV's.
- CLAHE follows ``cv::CLAHE`` bit for bit: BORDER_REFLECT_101 padding to a multiple of the grid
  (both sides padded as soon as one is not a multiple, like OpenCV), integer clip limit
  ``max(int(clip * tile_area / 256), 1)``, excess redistribution with OpenCV's residual step,
  float32 LUT ``round(cdf * 255 / area)`` and OpenCV's float32 bilinear LUT interpolation.
- Lab -> RGB follows OpenCV's float formulas with the exact sRGB curve (OpenCV: a spline of it).

The RGB result is within 0.2/255 of OpenCV's (mean 0.002/255 on the AMOS photos).

:class:`CLAHETransform` wraps it for PIL images / numpy arrays inside torchvision ``Compose``
(DataLoader workers, CPU); it returns the type it was given.
"""

from __future__ import annotations

import functools
import math
import struct
from typing import NamedTuple, Sequence

import numpy as np
import torch
from torch import Tensor, nn

__all__ = [
    "clahe",
    "CLAHE",
    "CLAHETransform",
    "MeanStd",
    "IMAGENET_MEAN_STD",
    "HALF_MEAN_STD",
    "normalize",
    "denormalize",
    "renormalize",
    "Renormalize",
]

EXPECTED = "B×3×H×W float in [0,1]"
_RANGE_TOL = 1e-3  # generator outputs may overshoot [0, 1] by rounding; OpenCV clips them too

# ---------------------------------------------------------------------------------------------
# OpenCV constants (modules/imgproc/src/color_lab.cpp), given there as raw IEEE doubles


def _d(hex_bits: str) -> float:
    return struct.unpack(">d", bytes.fromhex(hex_bits))[0]


_SRGB2XYZ = np.array([_d(h) for h in (
    "3fda65a14488c60d", "3fd6e297396d0918", "3fc71819d2391d58",
    "3fcb38cda6e75ff6", "3fe6e297396d0918", "3fb279aae6c8f755",
    "3f93cc4ac6cdaf4b", "3fbe836eb4e98138", "3fee68427418d691")]).reshape(3, 3)
_XYZ2SRGB = np.array([_d(h) for h in (
    "4009ec804102ff8f", "bff8982a9930be0e", "bfdfe7ff583a53b9",
    "bfef042528ae74f3", "3ffe040f23897204", "3fa546d3f9e7b80b",
    "3fac7de5082cf52c", "bfca1e14bdfd2631", "3ff0eabef06b3786")]).reshape(3, 3)
_D65 = np.array([_d("3fee6a22b3892ee8"), 1.0, _d("3ff16b8950763a19")])
_CBRT_POLY = [_d(h) for h in (
    "4046a09e6653ba70", "406808f46c6116e0", "405dca97439cae14", "402add70d2827500",
    "3fc4f15f83f55d2d", "402d9e20660edb21", "4062ff15c0285815", "406510d06a8112ce",
    "4040fecbc9e2c375")]

_LAB_BASE = 1 << 14  # RGB is quantised to 1/16384 before the table lookup
_LUT_DIM = 33  # table grid points per channel
_F32 = np.float32


def _srgb_gamma(x: np.ndarray) -> np.ndarray:
    """sRGB -> linear, in double, rounded to float32 (OpenCV ``applyGamma``)."""
    xd = x.astype(np.float64)
    lin = np.where(xd <= 809 / 20000, xd / (323 / 25), np.power((xd + 11 / 200) / (1 + 11 / 200), 12 / 5))
    return lin.astype(_F32)


def _cv_cbrt(x: np.ndarray) -> np.ndarray:
    """OpenCV's soft-float cube root: a rational polynomial in double, mantissa *truncated* to float32."""
    x = np.ascontiguousarray(x, dtype=_F32)
    bits = x.view(np.uint32).astype(np.int64)
    ex = ((bits >> 23) & 255) - 127
    shx = np.fmod(ex, 3)
    shx = np.where(shx >= 0, shx - 3, shx)
    ex_root = (ex - shx) // 3 - 1
    fr = (1.0 + (bits & ((1 << 23) - 1)).astype(np.float64) / 2.0**23) * np.exp2(shx.astype(np.float64))
    a = _CBRT_POLY
    num = (((a[0] * fr + a[1]) * fr + a[2]) * fr + a[3]) * fr + a[4]
    den = (((a[5] * fr + a[6]) * fr + a[7]) * fr + a[8]) * fr + 1.0
    y = (num / den) * np.exp2((ex_root + 1).astype(np.float64))
    y = (y.view(np.uint64) & ~np.uint64((1 << 29) - 1)).view(np.float64)
    return np.where(x == 0, _F32(0), y.astype(_F32))


@functools.lru_cache(maxsize=None)
def _lab_grid() -> np.ndarray:
    """OpenCV's RGB->Lab table at its 33^3 grid points: ``[33 (b), 33 (g), 33 (r), 3]`` int64.

    Entries are round(16384 * (L/100, (a+128)/256, (b+128)/256)) at RGB = (r, g, b) / 32, computed
    with OpenCV's float32 operation order (it indexes and sums blue first); equal to OpenCV's
    ``RGB2LabLUT_s16`` at every point (tested against ``cv2.cvtColor``).
    """
    g = _srgb_gamma(np.arange(_LUT_DIM, dtype=_F32) / _F32(_LUT_DIM - 1))
    b, gg, r = np.meshgrid(g, g, g, indexing="ij")
    s = (_SRGB2XYZ * (1.0 / _D65)[:, None]).astype(_F32)  # rows X, Y, Z; columns R, G, B
    xyz = [(b * s[i, 2] + gg * s[i, 1]) + r * s[i, 0] for i in range(3)]
    lthresh = _F32(216) / _F32(24389)
    lscale = _F32(841) / _F32(108)
    lbias = _F32(16) / _F32(116)

    def f(t: np.ndarray) -> np.ndarray:
        linear = (t.astype(np.float64) * float(lscale) + float(lbias)).astype(_F32)  # fused mul-add
        return np.where(t > lthresh, _cv_cbrt(t), linear)

    fx, fy, fz = (f(t) for t in xyz)
    y = xyz[1]
    L = np.where(y > lthresh, _F32(116) * fy - _F32(16), (_F32(24389) / _F32(27)) * y)
    a = _F32(500) * (fx - fy)
    bb = _F32(200) * (fy - fz)
    base = _F32(_LAB_BASE)
    return np.stack([
        np.rint(base * L / _F32(100)),
        np.rint(base * (a + _F32(128)) / _F32(256)),
        np.rint(base * (bb + _F32(128)) / _F32(256)),
    ], axis=-1).astype(np.int64)


_Q = 513  # positions per channel that OpenCV distinguishes: 32 cells x 16 sub-steps (+ the end point)


@functools.lru_cache(maxsize=None)
def _packed_lab_table() -> np.ndarray:
    """The grid interpolated in (g, r) at all 513 x 513 positions, for each blue grid slice.

    OpenCV's value for a pixel is ``(sum_corners grid * wb * wg * wr + 2048) >> 12`` with integer
    weights 16 - f and f of the 4-bit fractions. Summing over g and r ahead of time leaves one
    lerp over b at run time, with the same integer result. Entry ``(qg * 513 + qr) * 34 + tb``
    (the two b slices of a lerp sit side by side) is a pair of int32: L exactly, then a and b
    rounded to 1/4 code (16 bits each, enough for the sRGB gamut; a and b only feed the smooth
    Lab -> RGB step). Slice 33 repeats slice 32 (OpenCV clamps the upper corner).
    ``[513^2 * 34, 2]`` int32, 72 MB, ~0.6 s to build.
    """
    grid = _lab_grid().astype(np.int32)
    f = np.arange(16, dtype=np.int32)

    def upsample(v: np.ndarray, axis: int) -> np.ndarray:
        """16 sub-steps per grid cell along ``axis`` (33 -> 513), weights 16 - f and f."""
        v = np.moveaxis(v, axis, 0)
        lo, step = v[:-1], v[1:] - v[:-1]
        fine = lo[:, None] * 16 + step[:, None] * f.reshape(1, 16, *([1] * (v.ndim - 1)))
        fine = np.concatenate([fine.reshape(-1, *v.shape[1:]), v[-1:] * 16])
        return np.moveaxis(fine, 0, axis)

    along_r = upsample(grid, 2)  # [33 b, 33 g, 513 r, 3], 16 x the value
    out = np.empty((_Q, _Q, _LUT_DIM + 1, 2), dtype=np.uint32)
    for tb in range(_LUT_DIM):
        s = upsample(along_r[tb], 0)  # [513 g, 513 r, 3], 256 x the value
        out[:, :, tb, 0] = s[..., 0]
        out[:, :, tb, 1] = ((s[..., 1] + 32) >> 6) | (((s[..., 2] + 32) >> 6) << 16)
    out[:, :, _LUT_DIM] = out[:, :, _LUT_DIM - 1]
    return out.view(np.int32).reshape(-1, 2)


@functools.lru_cache(maxsize=None)
def _lab2rgb_coeffs() -> tuple[tuple[float, float, float], ...]:
    m = (_XYZ2SRGB * _D65[None, :]).astype(_F32)  # rows R, G, B; columns x, y, z (white-scaled)
    return tuple(tuple(float(v) for v in row) for row in m)


_DEVICE_TABLES: dict[tuple, Tensor] = {}


def _lab_table(device: torch.device) -> Tensor:
    """:func:`_packed_lab_table` on ``device`` (built once per process, copied once per device)."""
    key = (device.type, device.index)
    if key not in _DEVICE_TABLES:
        _DEVICE_TABLES[key] = torch.from_numpy(_packed_lab_table()).view(torch.int64).view(-1).to(device)
    return _DEVICE_TABLES[key]


def _small_tables(device: torch.device) -> Tensor:
    key = ("l", device.type, device.index)
    if key not in _DEVICE_TABLES:
        _DEVICE_TABLES[key] = torch.from_numpy(_l_tables()).to(device)
    return _DEVICE_TABLES[key]


# ---------------------------------------------------------------------------------------------
# the three stages on tensors


def _lab_encode(x: Tensor, table: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``[n, 3, h, w]`` float32 RGB -> the reference's uint8 L, and a, b codes (int16), each ``[n, h, w]``.

    a, b codes are OpenCV's to within one: ``a = code / 64 - 128``.
    """
    # OpenCV: q = round(x * 16384); grid cell q >> 9, 4-bit fraction (q >> 5) & 15. All exact in float32.
    q9 = x.clamp(0.0, 1.0).mul_(_LAB_BASE).round_().mul_(1.0 / 32.0).floor_()
    qr, qg, qb = q9.unbind(1)
    tb = qb.mul(1.0 / 16.0).floor_()
    fb = qb.sub(tb, alpha=16.0).to(torch.int32)
    idx = qg.mul(float(_Q * (_LUT_DIM + 1))).add_(qr, alpha=float(_LUT_DIM + 1)).add_(tb).to(torch.int32).view(-1)
    # one int64 gather per lerp end, split into its two int32 halves (int64 bit ops are slow on CPU)
    lo0, hi0 = table.index_select(0, idx).view(torch.int32).view(*fb.shape, 2).unbind(-1)
    lo1, hi1 = table.index_select(0, idx + 1).view(torch.int32).view(*fb.shape, 2).unbind(-1)
    w0 = 16 - fb
    code = (lo0 * w0 + lo1 * fb + 2048) >> 12
    # the reference: L = code * 100/16384 (OpenCV), then (L / 100 * 255).astype(uint8) in float32
    l_u8 = (code.to(torch.float32) * (100.0 / _LAB_BASE)).div_(100.0).mul_(255.0).to(torch.uint8)
    a = (((hi0 & 0xFFFF) * w0 + (hi1 & 0xFFFF) * fb + 32) >> 6).to(torch.int16)
    b = ((((hi0 >> 16) & 0xFFFF) * w0 + ((hi1 >> 16) & 0xFFFF) * fb + 32) >> 6).to(torch.int16)
    return l_u8, a, b


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


@functools.lru_cache(maxsize=None)
def _l_tables() -> np.ndarray:
    """For each CLAHE output 0..255: OpenCV's y and f(y) of L = v / 255 * 100 (float32), ``[2, 256]``."""
    L = (np.arange(256, dtype=_F32) / _F32(255)) * _F32(100)  # the reference's L after CLAHE
    low = L <= _F32(8)
    y_lo = L * _F32(1.0 / 903.3)
    fy_hi = (L + _F32(16)) * _F32(1.0 / 116.0)
    y = np.where(low, y_lo, fy_hi * fy_hi * fy_hi)
    fy = np.where(low, y_lo * _F32(7.787) + _F32(16.0 / 116.0), fy_hi)
    return np.stack([y, fy]).astype(_F32)


def _lab_decode(lum: Tensor, a: Tensor, b: Tensor, out: list[Tensor], l_tab: Tensor) -> None:
    """OpenCV's float Lab -> RGB (``Lab2RGBfloat``) into the 3 channel views ``out``.

    ``lum``: CLAHE output 0..255 (float, whole numbers), ``a``, ``b``: int16 codes (``a = code / 64 - 128``),
    all ``[n, h, w]``. Branches are written as min/max where OpenCV's two pieces are tangent or
    ordered, which is several times faster than ``torch.where`` on CPU; OpenCV encodes sRGB with a
    cubic spline of the exact curve, the exact curve is used here. Together < 0.03/255 apart.
    """
    c = _lab2rgb_coeffs()
    idx = lum.to(torch.int32).view(-1)
    y = l_tab[0].index_select(0, idx).view(lum.shape)
    fy = l_tab[1].index_select(0, idx).view(lum.shape)
    t = float(_F32(6) / _F32(29))
    t3 = t * t * t

    def finv(f: Tensor) -> Tensor:
        # f <= t: (f - 16/116) / 7.787, else f^3; the line is the cubic's tangent at t
        hi = f.clamp(min=t)
        return f.clamp_(max=t).sub_(16.0 / 116.0).mul_(1.0 / 7.787).add_(hi.mul(hi).mul_(hi).sub_(t3))

    # a / 500 + fy with a = code / 64 - 128 (the reference's float round trip of a is exact to 1 ulp)
    x = finv(a.to(torch.float32).mul_(1.0 / 32000.0).add_(fy).sub_(128.0 / 500.0))
    z = finv(b.to(torch.float32).mul_(-1.0 / 12800.0).add_(fy).add_(128.0 / 200.0))
    lin_max = 12.92 * 0.0031308
    for i in range(3):
        v = (x * c[i][0]).add_(y, alpha=c[i][1]).add_(z, alpha=c[i][2]).clamp_(0.0, 1.0)
        # v <= 0.0031308: 12.92 v, else 1.055 v^(1/2.4) - 0.055 (the smaller of the two above the threshold)
        enc = torch.log2(v).mul_(1.0 / 2.4).exp2_().mul_(1.055).sub_(0.055).clamp_(min=lin_max)
        torch.minimum(v.mul_(12.92), enc, out=out[i])


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
    """CLAHE tiles as ``(rows, cols)``: one int means a square grid."""
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
    :func:`dsa_plugin.images.to_rgb`, which names the mode it cannot convert.
    """

    def __init__(self, clip_limit: float = 1.0, grid_size: tuple[int, int] | int = (8, 8), as_tensor: bool = False):
        self.clip_limit = float(clip_limit)
        self.grid_size = tile_grid(grid_size)
        self.as_tensor = as_tensor
        _packed_lab_table()  # built here, before DataLoader workers fork, so that they share it

    def __call__(self, img):
        from PIL import Image

        if isinstance(img, Image.Image):
            from dsa_plugin.images import pil_to_tensor01, to_rgb

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
        return f"{type(self).__name__}(clip_limit={self.clip_limit}, grid_size={self.grid_size}, as_tensor={self.as_tensor})"


# ---------------------------------------------------------------------------------------------
# mean/std normalisation adapters


class MeanStd(NamedTuple):
    """Per-channel RGB mean and std of a normalisation ``(x - mean) / std``."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]


IMAGENET_MEAN_STD = MeanStd((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
HALF_MEAN_STD = MeanStd((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))  # [0, 1] <-> [-1, 1], the GAN convention


def _as_mean_std(ms: MeanStd | Sequence[Sequence[float]]) -> MeanStd:
    try:
        mean, std = ms
        mean, std = tuple(float(v) for v in mean), tuple(float(v) for v in std)
    except (TypeError, ValueError):
        raise ValueError(f"mean_std must be (mean, std) with 3 values each, got {ms!r}") from None
    if len(mean) != 3 or len(std) != 3:
        raise ValueError(f"mean_std must be (mean, std) with 3 values each, got {len(mean)} and {len(std)}: {ms!r}")
    for part, values in (("mean", mean), ("std", std)):
        for i, v in enumerate(values):
            if not math.isfinite(v) or (part == "std" and v == 0):
                allowed = "a finite non-zero number" if part == "std" else "a finite number"
                raise ValueError(f"normalisation {part}[{i}] = {v!r} (mean {list(mean)}, std {list(std)}); each "
                                 f"{part} must be {allowed}: a zero std divides by zero")
    return MeanStd(mean, std)


def check_mean_std(ms: MeanStd | Sequence[Sequence[float]], where: str = "") -> MeanStd:
    """``ms`` as a :class:`MeanStd`, or a ``ValueError`` naming ``where`` and the bad value (zero/NaN std)."""
    try:
        return _as_mean_std(ms)
    except ValueError as err:
        raise ValueError(f"{where}: {err}" if where else str(err)) from None


def _stats(x: Tensor, ms: MeanStd | Sequence[Sequence[float]]) -> tuple[Tensor, Tensor]:
    if not isinstance(x, Tensor) or x.dim() < 3 or x.shape[-3] != 3:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"expected a [..., 3, H, W] tensor, got {shape}")
    ms = _as_mean_std(ms)
    mean = torch.tensor(ms.mean, dtype=x.dtype, device=x.device).view(3, 1, 1)
    std = torch.tensor(ms.std, dtype=x.dtype, device=x.device).view(3, 1, 1)
    return mean, std


def normalize(x: Tensor, mean_std: MeanStd | Sequence[Sequence[float]] = IMAGENET_MEAN_STD) -> Tensor:
    """``(x - mean) / std`` per channel of a ``[..., 3, H, W]`` tensor in [0, 1]."""
    mean, std = _stats(x, mean_std)
    return (x - mean) / std


def denormalize(x: Tensor, mean_std: MeanStd | Sequence[Sequence[float]] = IMAGENET_MEAN_STD) -> Tensor:
    """Inverse of :func:`normalize`: ``x * std + mean``, back to [0, 1]."""
    mean, std = _stats(x, mean_std)
    return x * std + mean


def renormalize(x: Tensor, src: MeanStd | Sequence[Sequence[float]], dst: MeanStd | Sequence[Sequence[float]]) -> Tensor:
    """Switch normalisation conventions, e.g. generator output (0.5/0.5) -> ImageNet, in one affine map.

    Example:
        >>> g = torch.zeros(1, 3, 4, 4)  # 0.0 in the (0.5, 0.5) convention is grey 0.5
        >>> renormalize(g, HALF_MEAN_STD, IMAGENET_MEAN_STD)[0, :, 0, 0]
        tensor([0.0655, 0.1964, 0.4178])
    """
    return normalize(denormalize(x, src), dst)


class Renormalize(nn.Module):
    """:func:`renormalize` as a module (default: 0.5/0.5 -> ImageNet, the reference's ``meanstd_post``)."""

    def __init__(self, src: MeanStd | Sequence[Sequence[float]] = HALF_MEAN_STD,
                 dst: MeanStd | Sequence[Sequence[float]] = IMAGENET_MEAN_STD):
        super().__init__()
        self.src, self.dst = _as_mean_std(src), _as_mean_std(dst)

    def forward(self, x: Tensor) -> Tensor:
        return renormalize(x, self.src, self.dst)

    def extra_repr(self) -> str:
        return f"src={self.src}, dst={self.dst}"
