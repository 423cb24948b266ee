"""HED edge detector (bilinear side-output upsampling) with the reference's state-dict layout.

docs/reference.md §hed, §state-dicts. Preprocessing is a separate, explicit step (:func:`hed_preprocess`),
because the reference applies it in network wrappers, not inside the detector.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["HED", "HEDPreprocess", "hed_preprocess", "HED_BGR_MEAN", "HED_LR_MULT", "HED_WD_MULT"]

# Caffe BGR means (104.00698793, 116.66876762, 122.67891434) / 255, in B, G, R order.
HED_BGR_MEAN = (0.40787054, 0.45752458, 0.48109378)

# Per-group multipliers of the reference's student optimizer, in the reference's group order.
HED_LR_MULT = {"conv.weight": 1.0, "conv.bias": 2.0, "conv5.weight": 100.0, "conv5.bias": 200.0,
               "score.weight": 0.01, "score.bias": 0.02, "fusion.weight": 0.001, "fusion.bias": 0.002}
HED_WD_MULT = {"conv.weight": 1.0, "conv.bias": 0.0, "conv5.weight": 1.0, "conv5.bias": 0.0,
               "score.weight": 1.0, "score.bias": 0.0, "fusion.weight": 1.0, "fusion.bias": 0.0}


def hed_preprocess(x: torch.Tensor) -> torch.Tensor:
    """Map generator-space RGB in [-1, 1] to the HED input: BGR in [0, 1] minus the Caffe means / 255.

    Differentiable (the edge loss back-propagates through it into the generator).

    Args:
        x: ``[B, 3, H, W]`` RGB, normalised with mean 0.5 / std 0.5.

    Returns:
        ``[B, 3, H, W]`` BGR, roughly in [-0.48, 0.59].

    Example:
        >>> hed_preprocess(torch.zeros(1, 3, 4, 4))[0, :, 0, 0]
        tensor([0.0921, 0.0425, 0.0189])
    """
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"hed_preprocess expects [B, 3, H, W] RGB, got shape {tuple(x.shape)}")
    bgr = x.flip(1) * 0.5 + 0.5
    mean = torch.tensor(HED_BGR_MEAN, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return bgr - mean


class HEDPreprocess(nn.Module):
    """Module form of :func:`hed_preprocess`.

    Example:
        >>> import torch
        >>> HEDPreprocess()(torch.zeros(1, 3, 4, 4)).shape
        torch.Size([1, 3, 4, 4])
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return hed_preprocess(x)


def _vgg_block(in_channels: int, widths: list[int], pool: bool) -> nn.Sequential:
    layers: list[nn.Module] = [nn.MaxPool2d(kernel_size=2, stride=2)] if pool else []
    for width in widths:
        layers += [nn.Conv2d(in_channels, width, kernel_size=3, padding=1), nn.ReLU(True)]
        in_channels = width
    return nn.Sequential(*layers)


class HED(nn.Module):
    """Holistically-nested edge detector: five VGG16 blocks, a 1x1 score per block, side maps
    bilinearly resized (align_corners=False) to the input size, 1x1 fusion.

    Input ``[B, 3, H, W]`` already preprocessed (:func:`hed_preprocess`); output ``[B, 1, H, W]``:
    edge probabilities, or the fused logits with ``no_sigmoid=True``.

    Example:
        >>> hed = HED().eval()
        >>> hed(hed_preprocess(torch.zeros(1, 3, 36, 44))).shape
        torch.Size([1, 1, 36, 44])
    """

    def __init__(self, width: float = 1.0) -> None:
        super().__init__()
        # width != 1 gives a slimmer detector with the same module names (and parameter groups),
        # for fast random-init runs; only width 1 matches the pretrained HED file.
        c1, c2, c3, c4, c5 = (max(4, round(c * width)) for c in (64, 128, 256, 512, 512))
        self.vgg1 = _vgg_block(3, [c1, c1], pool=False)
        self.vgg2 = _vgg_block(c1, [c2, c2], pool=True)
        self.vgg3 = _vgg_block(c2, [c3, c3, c3], pool=True)
        self.vgg4 = _vgg_block(c3, [c4, c4, c4], pool=True)
        self.vgg5 = _vgg_block(c4, [c5, c5, c5], pool=True)
        self.score1 = nn.Conv2d(c1, 1, kernel_size=1)
        self.score2 = nn.Conv2d(c2, 1, kernel_size=1)
        self.score3 = nn.Conv2d(c3, 1, kernel_size=1)
        self.score4 = nn.Conv2d(c4, 1, kernel_size=1)
        self.score5 = nn.Conv2d(c5, 1, kernel_size=1)
        self.fusion = nn.Sequential(nn.Conv2d(5, 1, kernel_size=1))
        self.meta = {"in_channels": 3, "out_channels": 1}

    def side_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The five side logit maps, each ``[B, 1, H, W]`` (resized to the input size)."""
        size = (x.shape[2], x.shape[3])
        sides = []
        feat = x
        for block, score in zip((self.vgg1, self.vgg2, self.vgg3, self.vgg4, self.vgg5),
                                (self.score1, self.score2, self.score3, self.score4, self.score5)):
            feat = block(feat)
            sides.append(F.interpolate(score(feat), size=size, mode="bilinear", align_corners=False))
        return sides

    def forward(self, x: torch.Tensor, no_sigmoid: bool = False) -> torch.Tensor:
        fused = self.fusion(torch.cat(self.side_outputs(x), dim=1))
        return fused if no_sigmoid else torch.sigmoid(fused)

    @staticmethod
    def parameter_group(name: str) -> str:
        """Reference group of a parameter name: ``conv``/``conv5``/``score``/``fusion`` + ``.weight``/``.bias``."""
        parts = name.split(".")
        head, kind = parts[0], parts[-1]
        if head in ("vgg1", "vgg2", "vgg3", "vgg4"):
            return f"conv.{kind}"
        if head == "vgg5":
            return f"conv5.{kind}"
        if head in ("score1", "score2", "score3", "score4", "score5"):
            return f"score.{kind}"
        if head == "fusion":
            return f"fusion.{kind}"
        raise KeyError(f"HED parameter {name!r} belongs to no group (expected vgg1-5, score1-5 or fusion)")

    def parameter_groups(self, base_lr: float, base_wd: float = 0.0) -> list[dict]:
        """Optimizer parameter groups with the reference's lr / weight-decay multipliers.

        Groups come in the order conv.weight, conv.bias, conv5.weight, conv5.bias, score.weight,
        score.bias, fusion.weight, fusion.bias; each dict has ``params``, ``lr``, ``weight_decay``, ``name``.
        Frozen parameters (``requires_grad=False``) are left out.
        """
        groups: dict[str, list[nn.Parameter]] = {}
        for name, param in self.named_parameters():
            if param.requires_grad:
                groups.setdefault(self.parameter_group(name), []).append(param)
        return [{"params": params, "lr": HED_LR_MULT[key] * base_lr,
                 "weight_decay": HED_WD_MULT[key] * base_wd, "name": key}
                for key, params in groups.items()]
