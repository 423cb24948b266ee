"""Drop-in transforms: CLAHE as the reference applies it, and mean/std normalisation adapters.

CLAHE (REFERENCE_FACTS §3.4): float RGB in [0, 1] -> OpenCV Lab -> ``L / 100 * 255`` truncated to
uint8 -> OpenCV CLAHE (clip limit 1.0, 8x8 tiles) -> ``/ 255`` -> back to RGB with a and b unchanged.

:func:`clahe` re-implements that whole pipeline in batched torch ops so that it runs on any device
(generator outputs on a GPU never leave it) and matches OpenCV's numbers:

- RGB -> Lab follows OpenCV's float path bit for bit: OpenCV quantises RGB to 1/16384 and
  interpolates L, a, b trilinearly in a 33^3 integer table (built with its soft-float maths,
  including its truncating cube root); the table here is built the same way, and equals OpenCV's
  at every grid point (tested). That matters because L is *truncated* to uint8: any other Lab
  formula flips L by one level on many pixels.
- CLAHE follows ``cv::CLAHE``: BORDER_REFLECT_101 padding to a multiple of the grid (both sides
  padded as soon as one is not a multiple, like OpenCV), integer clip limit
  ``max(int(clip * tile_area / 256), 1)``, excess redistribution with OpenCV's residual step,
  float32 LUT ``round(cdf * 255 / area)`` and OpenCV's float32 bilinear LUT interpolation.
- Lab -> RGB follows OpenCV's float formulas, with its cubic-spline inverse sRGB gamma.

:class:`CLAHETransform` wraps it for PIL images / numpy arrays inside torchvision ``Compose``
(DataLoader workers, CPU); it returns the type it was given.
"""

from __future__ import annotations

import functools
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


def _srgb_inv_gamma(x: np.ndarray) -> np.ndarray:
    """linear -> sRGB, in double, rounded to float32 (OpenCV ``applyInvGamma``)."""
    xd = x.astype(np.float64)
    enc = np.where(xd <= 7827 / 2500000, xd * (323 / 25),
                   np.power(np.maximum(xd, 0), 1 / (12 / 5)) * (1 + 11 / 200) - 11 / 200)
    return enc.astype(_F32)


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
def _rgb2lab_table() -> np.ndarray:
    """OpenCV's RGB->Lab interpolation table, ``[33^3, 8 corners, 3]`` int32, cell index b*33²+g*33+r.

    Entries are round(16384 * (L/100, (a+128)/256, (b+128)/256)) at RGB = (i/32, j/32, k/32),
    computed with OpenCV's float32 operation order; each cell lists its 8 corners (index
    4*db + 2*dg + dr, clamped at the upper edge like OpenCV's ``fill_one``).
    """
    g = _srgb_gamma(np.arange(_LUT_DIM, dtype=_F32) / _F32(_LUT_DIM - 1))
    # OpenCV indexes the table blue-first and sums blue, green, red in that order
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
    grid = np.stack([
        np.rint(base * L / _F32(100)),
        np.rint(base * (a + _F32(128)) / _F32(256)),
        np.rint(base * (bb + _F32(128)) / _F32(256)),
    ], axis=-1).astype(np.int32)  # [33, 33, 33, 3] indexed [b, g, r]
    n = _LUT_DIM
    i = np.arange(n)
    corners = []
    for db in (0, 1):
        for dg in (0, 1):
            for dr in (0, 1):
                ib, ig, ir = (np.minimum(i + d, n - 1) for d in (db, dg, dr))
                corners.append(grid[np.ix_(ib, ig, ir)].reshape(n**3, 3))
    return np.stack(corners, axis=1)  # [n^3, 8, 3]


@functools.lru_cache(maxsize=None)
def _trilinear_weights() -> np.ndarray:
    """Integer trilinear weights ``[16^3, 8]`` for 4-bit fractions, index fb*256 + fg*16 + fr."""
    f = np.arange(16)
    w = np.stack([16 - f, f], axis=1)  # [16, 2]
    full = w[:, None, None, :, None, None] * w[None, :, None, None, :, None] * w[None, None, :, None, None, :]
    return full.reshape(4096, 8).astype(np.int32)


@functools.lru_cache(maxsize=None)
def _lab_decode_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per integer Lab code: truncated uint8 L, and the a/b values the reference hands back to OpenCV.

    The reference normalises Lab to [0, 1] as ``(L + 0, a + 128, b + 128) / (100, 255, 255)`` in
    float32 and undoes it after CLAHE; these tables hold the exact float32 results of that round trip.
    """
    code = np.arange(_LAB_BASE + 1)
    L = code.astype(_F32) * _F32(100.0 / _LAB_BASE)  # OpenCV's float L, exact
    l_u8 = ((L / _F32(100)) * _F32(255)).astype(np.uint8)  # astype truncates
    ab = code.astype(_F32) * _F32(256.0 / _LAB_BASE) - _F32(128)  # OpenCV's float a or b, exact
    ab_back = ((ab + _F32(128)) / _F32(255)) * _F32(255) - _F32(128)
    l_back = (np.arange(256, dtype=_F32) / _F32(255)) * _F32(100)
    return l_u8.astype(np.int64), ab_back.astype(_F32), l_back.astype(_F32)


def _spline_build(f: np.ndarray) -> np.ndarray:
    """OpenCV ``splineBuild`` in float32 (its soft-float): ``[n, 4]`` cubic coefficients."""
    n = len(f) - 1
    tab = np.zeros((n, 4), dtype=_F32)
    f2, f3, f4 = _F32(2), _F32(3), _F32(4)
    for i in range(1, n):
        t = (f[i + 1] - f[i] * f2 + f[i - 1]) * f3
        l_ = _F32(1) / (f4 - tab[i - 1, 0])
        tab[i, 0] = l_
        tab[i, 1] = (t - tab[i - 1, 1]) * l_
    cn = _F32(0)
    for i in range(n - 1, -1, -1):
        c = tab[i, 1] - tab[i, 0] * cn
        b = f[i + 1] - f[i] - (cn + c * f2) / f3
        d = (cn - c) / f3
        tab[i] = (f[i], b, c, d)
        cn = c
    return tab


@functools.lru_cache(maxsize=None)
def _inv_gamma_spline() -> np.ndarray:
    x = (_F32(1) / _F32(1024)) * np.arange(1025, dtype=_F32)
    with np.errstate(over="ignore", invalid="ignore"):
        return _spline_build(_srgb_inv_gamma(x))


@functools.lru_cache(maxsize=None)
def _lab2rgb_coeffs() -> np.ndarray:
    return (_XYZ2SRGB * _D65[None, :]).astype(_F32)  # rows R, G, B; columns x, y, z (white-scaled)


_DEVICE_TABLES: dict[tuple[str, int | None], dict[str, Tensor]] = {}


def _tables(device: torch.device) -> dict[str, Tensor]:
    """The lookup tables on ``device`` (built once per process, copied once per device)."""
    key = (device.type, device.index)
    if key not in _DEVICE_TABLES:
        l_u8, ab_back, l_back = _lab_decode_tables()
        _DEVICE_TABLES[key] = {
            "lab": torch.from_numpy(_rgb2lab_table().reshape(-1, 24)).to(device),
            "tri": torch.from_numpy(_trilinear_weights()).to(device),
            "l_u8": torch.from_numpy(l_u8).to(device),
            "ab_back": torch.from_numpy(ab_back).to(device),
            "l_back": torch.from_numpy(l_back).to(device),
            "spline": torch.from_numpy(_inv_gamma_spline()).to(device),
        }
    return _DEVICE_TABLES[key]


# ---------------------------------------------------------------------------------------------
# the three stages on tensors


def _rgb_to_lab_codes(x: Tensor, tabs: dict[str, Tensor]) -> Tensor:
    """``[B, 3, H, W]`` float32 RGB -> ``[3, B, H, W]`` int64 Lab codes (OpenCV's interpolated table)."""
    q = torch.round(x.clamp(0.0, 1.0) * _LAB_BASE).to(torch.int32)
    cell = q >> 9  # 16384 / 32 per grid step
    frac = (q >> 5) & 15  # OpenCV keeps 4 fraction bits
    r, g, b = cell.unbind(1)
    fr, fg, fb = frac.unbind(1)
    cell_idx = (b * (_LUT_DIM * _LUT_DIM) + g * _LUT_DIM + r).reshape(-1)
    w_idx = (fb * 256 + fg * 16 + fr).reshape(-1)
    corners = tabs["lab"].index_select(0, cell_idx).view(-1, 8, 3)
    weights = tabs["tri"].index_select(0, w_idx).view(-1, 8, 1)
    acc = (corners * weights).sum(1)  # exact integers, like OpenCV's int32 dot product
    codes = (acc + 2048) >> 12
    bsz, _, h, w = x.shape
    return codes.view(bsz, h, w, 3).permute(3, 0, 1, 2).to(torch.int64)


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


@functools.lru_cache(maxsize=64)
def _clahe_geometry(h: int, w: int, gy: int, gx: int):
    """Padding indices, tile size and OpenCV's float32 interpolation positions for an ``h x w`` image."""
    if h % gy == 0 and w % gx == 0:
        rows, cols = np.arange(h), np.arange(w)
    else:  # OpenCV pads both sides, by a full tile count when that side already divides
        rows, cols = _reflect101(h, gy - h % gy), _reflect101(w, gx - w % gx)
    th, tw = len(rows) // gy, len(cols) // gx

    def positions(n: int, tile: int, grid: int):
        inv = _F32(1.0) / _F32(tile)
        t = np.arange(n).astype(_F32) * inv - _F32(0.5)
        t1 = np.floor(t).astype(np.int64)
        a = (t - t1.astype(_F32)).astype(_F32)
        return np.maximum(t1, 0), np.minimum(t1 + 1, grid - 1), (_F32(1.0) - a).astype(_F32), a

    return rows, cols, th, tw, positions(h, th, gy), positions(w, tw, gx)


def _clahe_u8(lum: Tensor, clip_limit: float, gy: int, gx: int) -> Tensor:
    """OpenCV CLAHE of ``[B, H, W]`` int64 values in 0..255; returns int64 in 0..255."""
    bsz, h, w = lum.shape
    dev = lum.device
    rows, cols, th, tw, (y1, y2, ya1, ya), (x1, x2, xa1, xa) = _clahe_geometry(h, w, gy, gx)
    ext = lum
    if len(rows) != h or len(cols) != w:
        ext = lum.index_select(1, torch.from_numpy(rows).to(dev)).index_select(2, torch.from_numpy(cols).to(dev))
    tiles = gy * gx
    he, we = th * gy, tw * gx
    ext = ext[:, :he, :we]
    tile_id = (torch.arange(he, device=dev) // th)[:, None] * gx + (torch.arange(we, device=dev) // tw)[None, :]
    offset = (torch.arange(bsz, device=dev)[:, None, None] * tiles + tile_id[None]) * 256
    hist = torch.bincount((ext + offset).reshape(-1), minlength=bsz * tiles * 256).view(bsz * tiles, 256)

    area = th * tw
    if clip_limit > 0:
        limit = max(int(clip_limit * area / 256), 1)
        excess = (hist - limit).clamp_(min=0).sum(1, keepdim=True)
        hist = hist.clamp(max=limit) + excess // 256
        residual = excess % 256
        step = torch.where(residual > 0, 256 // residual.clamp(min=1), torch.full_like(residual, 256))
        bins = torch.arange(256, device=dev)[None, :]
        hist = hist + ((bins % step == 0) & (bins // step < residual)).to(hist.dtype)
    scale = torch.tensor(_F32(255) / _F32(area), device=dev)
    lut = torch.round(hist.cumsum(1).to(torch.float32) * scale).clamp_(0, 255)
    lut = lut.view(bsz, gy, gx, 256)

    def t(a):
        return torch.from_numpy(a).to(dev)

    y1, y2, ya1, ya, x1, x2, xa1, xa = map(t, (y1, y2, ya1, ya, x1, x2, xa1, xa))
    flat = lut.reshape(-1)
    bidx = torch.arange(bsz, device=dev)[:, None, None] * (tiles * 256)

    def pick(ty: Tensor, tx: Tensor) -> Tensor:
        idx = bidx + (ty[:, None] * gx + tx[None, :])[None] * 256 + lum
        return flat.take(idx)

    xa1, xa = xa1[None, None, :], xa[None, None, :]
    ya1, ya = ya1[None, :, None], ya[None, :, None]
    res = (pick(y1, x1) * xa1 + pick(y1, x2) * xa) * ya1 + (pick(y2, x1) * xa1 + pick(y2, x2) * xa) * ya
    return torch.round(res).clamp_(0, 255).to(torch.int64)


def _lab_to_rgb(L: Tensor, a: Tensor, b: Tensor, tabs: dict[str, Tensor]) -> Tensor:
    """OpenCV's float Lab -> RGB (``Lab2RGBfloat``) of ``[B, H, W]`` tensors; returns ``[B, 3, H, W]``."""
    c = _lab2rgb_coeffs()
    low = L <= 8.0
    y_lo = L * _F32(1.0 / 903.3)
    fy_lo = y_lo * _F32(7.787) + _F32(16.0 / 116.0)
    fy_hi = (L + 16.0) * _F32(1.0 / 116.0)
    y = torch.where(low, y_lo, fy_hi * fy_hi * fy_hi)
    fy = torch.where(low, fy_lo, fy_hi)
    f_thresh = float(_F32(6) / _F32(29))

    def finv(f: Tensor) -> Tensor:
        return torch.where(f <= f_thresh, (f - _F32(16.0 / 116.0)) * _F32(1.0 / 7.787), f * f * f)

    x = finv(a * _F32(1.0 / 500.0) + fy)
    z = finv(b * _F32(-1.0 / 200.0) + fy)
    spline = tabs["spline"]
    out = []
    for i in range(3):
        v = (float(c[i, 0]) * x + float(c[i, 1]) * y + float(c[i, 2]) * z).clamp_(0.0, 1.0) * 1024.0
        ix = v.to(torch.int32).clamp_(0, 1023)
        t = v - ix
        k = spline[ix.to(torch.int64)]
        out.append(((k[..., 3] * t + k[..., 2]) * t + k[..., 1]) * t + k[..., 0])
    return torch.stack(out, 1)


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
    return 1 << 24 if device.type == "cuda" else 1 << 20


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
    gy, gx = (grid_size, grid_size) if isinstance(grid_size, int) else (int(grid_size[0]), int(grid_size[1]))
    if gy < 1 or gx < 1:
        raise ValueError(f"grid_size must be positive, got {grid_size!r}")
    dtype = x.dtype
    with torch.no_grad():
        x = x.detach().to(torch.float32)
        tabs = _tables(x.device)
        bsz, _, h, w = x.shape
        per = max(1, _chunk_pixels(x.device) // (h * w))
        outs = []
        for s in range(0, bsz, per):
            xb = x[s:s + per]
            L, a, b = _rgb_to_lab_codes(xb, tabs)
            lum = _clahe_u8(tabs["l_u8"][L], float(clip_limit), gy, gx)
            outs.append(_lab_to_rgb(tabs["l_back"][lum], tabs["ab_back"][a], tabs["ab_back"][b], tabs))
        out = outs[0] if len(outs) == 1 else torch.cat(outs)
    return out.to(dtype)


class CLAHE(nn.Module):
    """:func:`clahe` as a module (for ``nn.Sequential`` on GPU batches)."""

    def __init__(self, clip_limit: float = 1.0, grid_size: tuple[int, int] | int = (8, 8), check_range: bool = True):
        super().__init__()
        self.clip_limit = float(clip_limit)
        self.grid_size = grid_size
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
        self.grid_size = grid_size
        self.as_tensor = as_tensor

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
    if len(mean) != 3 or len(std) != 3 or any(s == 0 for s in std):
        raise ValueError(f"mean_std must be (mean, std) with 3 values each and non-zero std, got {ms!r}")
    return MeanStd(mean, std)


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
