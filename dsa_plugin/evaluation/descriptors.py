"""Test-time global descriptors: image loading, CLAHE, multi-scale GeM-p aggregation, batching.

The pipeline of docs/reference.md §test-pipeline: PIL RGB -> (query bbox crop) -> thumbnail to the longest
side -> [0,1] tensor -> CLAHE (at full resolution, before downscaling) -> mean/std normalisation
-> the network on each scale ``s`` (``F.interpolate(scale_factor=s, bilinear)``) ->
``v = (mean_s desc_s^p)^(1/p)`` -> L2. ``p`` is the network's learned GeM ``pool.p`` when the
network is cirtorch-like GeM (non-regional, unwhitened), else 1.

Images of equal size are stacked into batches (:func:`dsa_plugin.core.batching.batches_by_size`; the
result is the same as one at a time); works with cirtorch networks (``D x B`` output),
:class:`dsa_plugin.models.gem.GeMNet`, HOW networks (``forward_global(x, scales=...)``, which
aggregates scales itself), and any ``nn.Module`` that returns L2-normalised vectors (``B x D`` or
``D x B``, read by :func:`dsa_plugin.core.descriptors.as_rows`).
Descriptors come back as rows ``[N, D]``. Images load with :func:`dsa_plugin.core.images.load_image`,
which crops a query ``bbox`` first, then shrinks.
"""

from __future__ import annotations

import math
import warnings
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from dsa_plugin import transforms
from dsa_plugin.core.batching import batches_by_size
from dsa_plugin.core.descriptors import net_rows
from dsa_plugin.core.images import ImageList, ImageLoadError
from dsa_plugin.transforms import IMAGENET_MEAN_STD

#: the standard multi-scale setting [1, 1/sqrt(2), 1/2]
DEFAULT_SCALES: tuple[float, ...] = (1.0, 1.0 / math.sqrt(2.0), 0.5)


#: An image could not be opened or decoded (names the file); the name this module has always exported.
ImageReadError = ImageLoadError


def network_mean_std(net: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Input normalisation of a network: cirtorch/GeMNet ``meta``, HOW ``runtime['mean_std']``, else ImageNet."""
    meta = getattr(net, "meta", None)
    if isinstance(meta, dict) and "mean" in meta and "std" in meta:
        from dsa_plugin.transforms import check_mean_std

        return tuple(check_mean_std((meta["mean"], meta["std"]), "the network's meta mean/std"))
    runtime = getattr(net, "runtime", None)
    if isinstance(runtime, dict) and "mean_std" in runtime:
        mean, std = runtime["mean_std"]
        return tuple(mean), tuple(std)
    return IMAGENET_MEAN_STD


def multiscale_power(net: nn.Module) -> float:
    """Exponent of the multi-scale power mean: the learned GeM ``pool.p`` of a GeM network, else 1.

    As the reference, ``p`` is used only for gem pooling without regional pooling or whitening
    when the network declares these in a cirtorch ``meta``.

    Example:
        >>> from dsa_plugin.models.gem import gem_small
        >>> import torch
        >>> multiscale_power(gem_small()), multiscale_power(torch.nn.Identity())
        (3.0, 1.0)
    """
    meta = getattr(net, "meta", None)
    if isinstance(meta, dict) and (
        meta.get("pooling", "gem") != "gem" or meta.get("regional", False) or meta.get("whitening", False)
    ):
        return 1.0
    p = getattr(getattr(net, "pool", None), "p", None)
    if isinstance(p, torch.Tensor) and p.numel() == 1:
        return float(p.detach().cpu().item())
    if isinstance(p, (int, float)):
        return float(p)
    return 1.0


def is_how_network(net: nn.Module) -> bool:
    return callable(getattr(net, "forward_global", None)) and callable(getattr(net, "features_attentions", None))


#: ``[B, D]`` descriptors of ``x [B, 3, H, W]`` (one orientation rule: :mod:`dsa_plugin.core.descriptors`).
descriptor_rows = net_rows


def multiscale_descriptors(
    net: nn.Module,
    x: torch.Tensor,
    scales: Sequence[float] = DEFAULT_SCALES,
    power: float = 1.0,
) -> torch.Tensor:
    """Aggregate descriptors over scales with the power mean, then L2-normalise.

    Args:
        net: network returning L2-normalised descriptors (``B x D`` or ``D x B``).
        x: ``[B, 3, H, W]`` normalised images (one size).
        scales: downscale factors (``F.interpolate``, bilinear, ``align_corners=False``).
        power: exponent ``p`` of ``(mean_s v_s^p)^(1/p)``.

    Returns:
        ``[B, D]`` descriptors.

    Example:
        >>> from dsa_plugin.models.gem import gem_small
        >>> multiscale_descriptors(gem_small(16).eval(), torch.rand(2, 3, 64, 64)).shape
        torch.Size([2, 16])
    """
    if is_how_network(net):
        v = descriptor_rows(lambda t: net.forward_global(t, scales=list(scales)), x)  # type: ignore[arg-type]
        return F.normalize(v, dim=1)
    if len(scales) == 1 and scales[0] == 1:
        return F.normalize(descriptor_rows(net, x), dim=1)
    acc = None
    for s in scales:
        xs = x if s == 1 else F.interpolate(x, scale_factor=s, mode="bilinear", align_corners=False)
        v = descriptor_rows(net, xs).pow(power)
        acc = v if acc is None else acc + v
    v = (acc / len(scales)).pow(1.0 / power)
    return v / v.norm(dim=1, keepdim=True).clamp_min(1e-12)


@torch.no_grad()
def extract_descriptors(
    net: nn.Module,
    images: Sequence[str],
    *,
    image_size: int | None = 1024,
    bbxs: Sequence[Sequence[float] | None] | None = None,
    scales: Sequence[float] = DEFAULT_SCALES,
    clahe: bool = True,
    clip_limit: float = 1.0,
    clahe_grid: int = 8,
    mean_std: tuple[Sequence[float], Sequence[float]] | None = None,
    power: float | None = None,
    device: str | torch.device = "cpu",
    batch_size: int = 8,
    num_workers: int = 0,
    progress: bool = True,
    desc: str = "descriptors",
) -> torch.Tensor:
    """Global descriptors of image files, ``[N, D]`` float32 on the CPU.

    Args:
        net: the network (moved to ``device`` and put in eval mode by the caller or here).
        images: image paths.
        image_size: longest side after thumbnail (None: original size).
        bbxs: per-image ``(x1, y1, x2, y2)`` crop or None (query boxes).
        scales: multi-scale factors; ``(1,)`` for single scale.
        clahe: apply CLAHE (clip ``clip_limit``, ``clahe_grid`` x ``clahe_grid`` tiles) before normalisation.
        mean_std: input normalisation (default: the network's, see :func:`network_mean_std`).
        power: multi-scale power-mean exponent (default: :func:`multiscale_power`).
        batch_size: images of equal size per forward pass (HOW networks always use 1).
        num_workers: DataLoader workers for image decoding.
    """
    from tqdm.auto import tqdm

    if len(images) == 0:
        raise ValueError("no images to describe")
    device = torch.device(device)
    net = net.to(device).eval()
    mean, std = mean_std or network_mean_std(net)
    mean_t = torch.tensor(mean, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    p = multiscale_power(net) if power is None else float(power)
    if is_how_network(net):
        batch_size = 1  # HOW normalises attention over the whole batch: one image at a time
    loader = torch.utils.data.DataLoader(
        ImageList(images, image_size, bbxs), batch_size=None, shuffle=False, num_workers=num_workers
    )
    out: torch.Tensor | None = None
    warned = False
    with tqdm(total=len(images), desc=desc, disable=not progress, unit="img", leave=False) as bar:
        for idx, batch in batches_by_size(iter(loader), batch_size):
            x = torch.stack(batch).to(device, non_blocking=True)
            if clahe:
                x = transforms.clahe(x, clip_limit=clip_limit, grid_size=clahe_grid)
            x = (x - mean_t) / std_t
            if p != 1.0 and not warned:
                # a non-integer power of negative entries is NaN: such outputs are not GeM descriptors
                if (descriptor_rows(net, x[:1]) < 0).any():
                    warnings.warn(
                        f"{type(net).__name__} outputs negative values; multi-scale aggregation uses p=1 instead of "
                        f"{p:.3f}"
                    )
                    p = 1.0
                warned = True
            v = multiscale_descriptors(net, x, scales, p).float().cpu()
            if out is None:
                out = torch.empty(len(images), v.shape[1])
            out[idx] = v
            bar.update(len(idx))
    assert out is not None
    return out


def describe_images(
    net: nn.Module, images: Sequence[str], whitening: dict | None = None, **kwargs
) -> torch.Tensor:
    """:func:`extract_descriptors` followed by :func:`~dsa_plugin.evaluation.whitening.apply_whitening` when given."""
    X = extract_descriptors(net, images, **kwargs)
    if whitening is not None:
        from dsa_plugin.evaluation.whitening import apply_whitening

        X = apply_whitening(X, whitening)
    return X

