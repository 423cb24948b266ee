"""OpenCV-exact float RGB <-> Lab for CLAHE (docs/reference.md §clahe), on any torch device.

RGB -> Lab follows OpenCV's float path: RGB quantised to 1/16384 (:data:`_LAB_BASE`), L, a, b
interpolated trilinearly (4-bit fractions, integer weights) in a 33^3 table built with OpenCV's
soft-float maths, including its truncating cube root; the uint8 L is bit-exact. Lab -> RGB follows
OpenCV's float formulas with the exact sRGB curve. The package doc of :mod:`dsa_plugin.transforms`
has the whole CLAHE pipeline.
"""

from __future__ import annotations

import functools
import struct

import numpy as np
import torch
from torch import Tensor

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

