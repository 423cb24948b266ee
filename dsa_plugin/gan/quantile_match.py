"""Per-channel quantile matching: move one image set's colour distribution onto another's.

Used as the target of the generator's warm-up (``train.warmup_target: night-colours``): before the
GAN starts, the day→night generator is fitted to ``match_quantiles(day, q_day, q_night)``, where
``q_day`` and ``q_night`` are the per-channel pixel quantiles of the GAN's own *unpaired* day and
night training photos. That is a purely photometric night (the day photo's pixels re-graded so
that, pooled over the set, each channel is distributed as in the night photos): dark sky, dark
shadows, the place's structure untouched. The adversarial iterations then start from it instead
of from the identity, and spend the CPU-sized budget on what a global re-grading cannot do.

Why not the identity: on the AMOS webcams a few hundred adversarial iterations from the identity
move the photo's colours but do not reach night (pink skies, ``kid_gap_closed`` ≈ 0 on the
validation webcams), while the re-grading alone closes ~0.7 of the day→night KID there
(docs/demo.md, "The night-colours warm-up").

Example:
    >>> g = torch.Generator().manual_seed(0)
    >>> day = [torch.rand(3, 8, 8, generator=g) for _ in range(4)]
    >>> night = [torch.rand(3, 8, 8, generator=g) * 0.2 for _ in range(4)]
    >>> q_day, q_night = channel_quantiles(day), channel_quantiles(night)
    >>> q_day.shape
    torch.Size([3, 256])
    >>> dark = match_quantiles(day[0], q_day, q_night)
    >>> bool(dark.max() <= 0.2 + 1e-6), dark.shape
    (True, torch.Size([3, 8, 8]))
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn


def channel_quantiles(images: Iterable[Tensor], levels: int = 256, per_image: int = 4096, seed: int = 0) -> Tensor:
    """Per-channel quantiles of the pixels of a set of images.

    Args:
        images: ``[C, H, W]`` images (sizes may differ; any value range, float or integer).
        levels: quantile levels, evenly spaced over [0, 1] (the first is the minimum, the last the
            maximum of the sample).
        per_image: pixels sampled from each image (seeded: image ``i`` uses ``seed + i``), so that
            large images do not dominate the set and memory stays bounded.
        seed: seed of the pixel sample.

    Returns:
        ``[C, levels]`` float32, non-decreasing along the last dimension.
    """
    if levels < 2:
        raise ValueError(f"channel_quantiles: levels must be >= 2, got {levels}")
    rows = []
    for i, img in enumerate(images):
        if img.ndim != 3:
            raise ValueError(f"channel_quantiles: image {i} must be [C, H, W], got {tuple(img.shape)}")
        flat = img.reshape(img.shape[0], -1).float()
        g = torch.Generator().manual_seed(seed + i)
        rows.append(flat[:, torch.randperm(flat.shape[1], generator=g)[:per_image]])
    if not rows:
        raise ValueError("channel_quantiles: no images")
    channels = sorted({r.shape[0] for r in rows})
    if len(channels) > 1:
        raise ValueError(f"channel_quantiles: images have different channel counts {channels}")
    pixels = torch.cat(rows, dim=1)
    return torch.quantile(pixels, torch.linspace(0, 1, levels), dim=1).T.contiguous()


def match_quantiles(x: Tensor, source: Tensor, target: Tensor) -> Tensor:
    """Map every channel of ``x`` through the piecewise-linear curve ``source[c] → target[c]``.

    A value at the ``q``-th quantile of the source set comes out at the ``q``-th quantile of the
    target set; values outside the source's range are clamped to the target's ends.

    Args:
        x: ``[..., C, H, W]`` in the range the quantiles were measured in.
        source, target: ``[C, L]`` quantiles from :func:`channel_quantiles`.

    Returns:
        A tensor shaped and typed like ``x``.
    """
    if source.shape != target.shape or source.ndim != 2:
        raise ValueError(f"match_quantiles: source and target must both be [C, L], got {tuple(source.shape)} "
                         f"and {tuple(target.shape)}")
    if x.ndim < 3 or x.shape[-3] != source.shape[0]:
        raise ValueError(f"match_quantiles: x must be [..., {source.shape[0]}, H, W], got {tuple(x.shape)}")
    src, dst = source.to(x.device, torch.float32), target.to(x.device, torch.float32)
    channels = x.float().movedim(-3, 0)
    out = torch.empty_like(channels)
    for c in range(len(src)):
        v = channels[c].contiguous()
        i = torch.searchsorted(src[c], v).clamp(1, src.shape[1] - 1)
        x0, x1, y0, y1 = src[c][i - 1], src[c][i], dst[c][i - 1], dst[c][i]
        w = ((v - x0) / (x1 - x0).clamp_min(1e-12)).clamp(0, 1)
        out[c] = y0 + w * (y1 - y0)
    return out.movedim(0, -3).to(x.dtype)


class QuantileMatch(nn.Module):
    """Holds the two sets' quantiles (as buffers) and applies :func:`match_quantiles`.

    Example:
        >>> m = QuantileMatch.fit([torch.rand(3, 4, 4)], [torch.rand(3, 4, 4) * 0.1], levels=16)
        >>> m(torch.rand(2, 3, 4, 4)).shape
        torch.Size([2, 3, 4, 4])
        >>> m.inverse().source.shape
        torch.Size([3, 16])
    """

    def __init__(self, source: Tensor, target: Tensor) -> None:
        super().__init__()
        self.register_buffer("source", source)
        self.register_buffer("target", target)

    @classmethod
    def fit(cls, source_images: Iterable[Tensor], target_images: Iterable[Tensor], **kwargs) -> "QuantileMatch":
        """From two image sets (``kwargs``: :func:`channel_quantiles`'s ``levels``, ``per_image``, ``seed``)."""
        return cls(channel_quantiles(source_images, **kwargs), channel_quantiles(target_images, **kwargs))

    def inverse(self) -> "QuantileMatch":
        """The map from the target set's colours back to the source's."""
        return QuantileMatch(self.target.clone(), self.source.clone())

    def forward(self, x: Tensor) -> Tensor:
        return match_quantiles(x, self.source, self.target)
