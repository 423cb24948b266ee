"""Mean/std normalisation: :class:`MeanStd`, the ImageNet and 0.5/0.5 conventions, and adapters."""

from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import torch
from torch import Tensor, nn


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
    """``ms`` as a :class:`MeanStd`, or a ``ValueError`` naming ``where`` and the bad value (zero/NaN std).

    Example:
        >>> check_mean_std(([0.5] * 3, [0.5] * 3), "mean/std")
        MeanStd(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    """
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
    """``(x - mean) / std`` per channel of a ``[..., 3, H, W]`` tensor in [0, 1].

    Example:
        >>> import torch
        >>> normalize(torch.ones(1, 3, 1, 1), HALF_MEAN_STD).flatten().tolist()
        [1.0, 1.0, 1.0]
    """
    mean, std = _stats(x, mean_std)
    return (x - mean) / std


def denormalize(x: Tensor, mean_std: MeanStd | Sequence[Sequence[float]] = IMAGENET_MEAN_STD) -> Tensor:
    """Inverse of :func:`normalize`: ``x * std + mean``, back to [0, 1].

    Example:
        >>> import torch
        >>> denormalize(torch.zeros(1, 3, 1, 1), HALF_MEAN_STD).flatten().tolist()
        [0.5, 0.5, 0.5]
    """
    mean, std = _stats(x, mean_std)
    return x * std + mean


def renormalize(
    x: Tensor, src: MeanStd | Sequence[Sequence[float]], dst: MeanStd | Sequence[Sequence[float]]
) -> Tensor:
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
