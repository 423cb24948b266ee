"""CUT's patch-sampling MLP ("featdown") and generator feature taps, with the reference's key names.

docs/models.md §patch-mlp. The reference's ``official_p2p_mlp`` network (gandtr's PatchSampleF, after
taesungp/contrastive-unpaired-translation): for each tapped generator layer ``l`` an MLP
``mlp_<l-index>`` = Linear(C_l, nc) -> ReLU -> Linear(nc, nc); patches are picked at random positions
(the same positions for every image of the batch), projected and L2-normalised (``x / (|x| + 1e-7)``).
The query features reuse the key features' positions. Written from the description, not copied.

Example:
    >>> from dsa_plugin.models import ResnetGenerator
    >>> g = ResnetGenerator(ngf=8, n_blocks=9, norm="instance")
    >>> layers = (4, 8, 12, 16)
    >>> f = PatchSampleMLP(feature_channels(g, layers), nc=16)
    >>> pooled, ids = f(generator_features(g, torch.zeros(2, 3, 32, 32), layers), num_patches=10)
    >>> [tuple(p.shape) for p in pooled]
    [(20, 16), (20, 16), (20, 16), (20, 16)]
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["PatchSampleMLP", "generator_features", "feature_channels", "parse_layers", "l2_normalize"]


def parse_layers(layers: "str | Sequence[int]") -> tuple[int, ...]:
    """``"4,8,12,16"`` (the reference's format) or a sequence of ints -> a tuple of ints."""
    if isinstance(layers, str):
        return tuple(int(part) for part in layers.split(",") if part.strip())
    return tuple(int(v) for v in layers)


def generator_features(generator: nn.Module, x: torch.Tensor, layers: Sequence[int]) -> list[torch.Tensor]:
    """Outputs of ``generator.model[l]`` for each ``l`` in ``layers`` (increasing), running the
    generator only as far as the last one (the reference's ``encode_only=True`` forward).

    Args:
        generator: a :class:`~dsa_plugin.models.ResnetGenerator` (any module with a ``model`` Sequential).
        x: ``[B, 3, H, W]`` input in [-1, 1].
        layers: indices into ``generator.model``.

    Returns:
        one ``[B, C_l, H_l, W_l]`` tensor per layer, in the order of ``layers``.
    """
    wanted = set(layers)
    last = max(wanted)
    feats: dict[int, torch.Tensor] = {}
    feat = x
    for index, layer in enumerate(generator.model):
        feat = layer(feat)
        if index in wanted:
            feats[index] = feat
        if index == last:
            break
    return [feats[index] for index in layers]


@torch.no_grad()
def feature_channels(generator: nn.Module, layers: Sequence[int]) -> list[int]:
    """Channels of the tapped layers (from a forward of a small zero image; consumes no RNG)."""
    param = next(generator.parameters())
    probe = torch.zeros(1, 3, 16, 16, dtype=param.dtype, device=param.device)
    was_training = generator.training
    generator.eval()
    try:
        return [f.shape[1] for f in generator_features(generator, probe, layers)]
    finally:
        generator.train(was_training)


def l2_normalize(x: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """``x / (||x||_2 + eps)`` along dim 1 (the reference's Normalize(2), eps outside the root)."""
    return x / (x.pow(2).sum(1, keepdim=True).pow(0.5) + eps)


class PatchSampleMLP(nn.Module):
    """The reference's ``featdown``: per tapped layer an MLP ``mlp_<i>`` (Linear, ReLU, Linear).

    State-dict keys ``mlp_<i>.0.weight [nc, C_i]``, ``mlp_<i>.0.bias``, ``mlp_<i>.2.weight [nc, nc]``,
    ``mlp_<i>.2.bias`` for ``i = 0 .. len(in_channels) - 1``.
    """

    def __init__(self, in_channels: Sequence[int], nc: int = 256) -> None:
        super().__init__()
        self.nc = nc
        self.n_layers = len(in_channels)
        for index, channels in enumerate(in_channels):
            setattr(self, f"mlp_{index}", nn.Sequential(nn.Linear(channels, nc), nn.ReLU(), nn.Linear(nc, nc)))
        self.meta = {"in_channels": list(in_channels), "out_channels": nc}

    def forward(self, feats: Sequence[torch.Tensor], num_patches: int = 256,
                patch_ids: Sequence[torch.Tensor] | None = None, generator: torch.Generator | None = None
                ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Sample, project and normalise patches of each feature map.

        Args:
            feats: one ``[B, C_i, H_i, W_i]`` map per MLP.
            num_patches: positions per map, ``min(num_patches, H_i * W_i)``.
            patch_ids: positions to reuse (the key pass's ids, for the query pass); None draws new ones
                with ``torch.randperm(H_i * W_i, generator=generator)`` on the CPU.

        Returns:
            ``([B * P_i, nc] per map, [P_i] position ids per map)``; rows are image-major.
        """
        if num_patches < 1:
            raise ValueError(f"num_patches must be >= 1, got {num_patches}")
        if len(feats) != self.n_layers:
            raise ValueError(f"expected {self.n_layers} feature maps, got {len(feats)}")
        pooled, ids = [], []
        for index, feat in enumerate(feats):
            flat = feat.permute(0, 2, 3, 1).flatten(1, 2)  # [B, H*W, C]
            if patch_ids is not None:
                chosen = patch_ids[index]
            else:
                chosen = torch.randperm(flat.shape[1], generator=generator)[:min(num_patches, flat.shape[1])]
            sample = flat[:, chosen.to(feat.device), :].flatten(0, 1)
            pooled.append(l2_normalize(getattr(self, f"mlp_{index}")(sample)))
            ids.append(chosen)
        return pooled, ids
