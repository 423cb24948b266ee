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

Modules (their public names are re-exported here):
:mod:`~dsa_plugin.transforms.lab` (the OpenCV-exact Lab codec), :mod:`~dsa_plugin.transforms.clahe_ops`
(the CLAHE core, the module and the PIL/numpy adapter), :mod:`~dsa_plugin.transforms.meanstd`
(mean/std), :mod:`~dsa_plugin.transforms.compose` (finding ``Normalize`` in a ``Compose``, putting
CLAHE in front of one).
"""

from __future__ import annotations

from dsa_plugin.transforms.clahe_ops import CLAHE, CLAHETransform, clahe, tile_grid
from dsa_plugin.transforms.compose import compose_steps, find_normalize, with_clahe
from dsa_plugin.transforms.meanstd import (
    HALF_MEAN_STD,
    IMAGENET_MEAN_STD,
    MeanStd,
    Renormalize,
    check_mean_std,
    denormalize,
    normalize,
    renormalize,
)

__all__ = [
    "clahe",
    "CLAHE",
    "CLAHETransform",
    "tile_grid",
    "MeanStd",
    "IMAGENET_MEAN_STD",
    "HALF_MEAN_STD",
    "check_mean_std",
    "normalize",
    "denormalize",
    "renormalize",
    "Renormalize",
    "compose_steps",
    "find_normalize",
    "with_clahe",
]
