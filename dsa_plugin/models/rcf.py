"""RCF edge detector (Richer Convolutional Features) with the reference's state-dict layout.

docs/models.md §rcf. Architecture as the reference's ``rcf`` network (gandtr,
``mdir/components/model/network/rcf.py``, itself a modified yun-liu/RCF-PyTorch): a VGG16 trunk
whose last block uses dilation 2 after a stride-1 pool, a 1x1 conv to 21 channels after **every**
3x3 conv, per-stage sums scored by a 1x1 conv to one channel, fixed bilinear transposed-conv
upsampling with the reference's crops, and a 1x1 fusion of the five side maps. Only the fused map is
returned (sigmoid, or the logits with ``no_sigmoid=True``). Written from the description, not copied.

Preprocessing is separate (:func:`rcf_preprocess`), as the reference applies it in network wrappers:
unlike HED's, RCF's wrapper scales to 0-255 before subtracting the Caffe means.

Example:
    >>> net = RCF(width=0.125).eval()
    >>> net(rcf_preprocess(torch.zeros(1, 3, 32, 40))).shape
    torch.Size([1, 1, 32, 40])
"""
from __future__ import annotations

import os
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["RCF", "RCFPreprocess", "rcf_preprocess", "RCF_BGR_MEAN", "RCF_STAGES", "bilinear_kernel", "load_rcf"]

#: Caffe BGR means on the 0-255 scale (B, G, R), subtracted after the x255 of the RCF wrapper.
RCF_BGR_MEAN = (104.00698793, 116.66876762, 122.67891434)
#: (stage, number of 3x3 convs, output channels at width 1)
RCF_STAGES = ((1, 2, 64), (2, 2, 128), (3, 3, 256), (4, 3, 512), (5, 3, 512))
#: per side map (stages 2..5): bilinear kernel size, upsampling stride, crop offset
_UPSAMPLE = {2: (4, 2, 1), 3: (8, 4, 2), 4: (16, 8, 4), 5: (16, 8, 0)}
_DOWN_CHANNELS = 21


def rcf_preprocess(x: torch.Tensor) -> torch.Tensor:
    """Generator-space RGB in [-1, 1] to the RCF input: BGR on the 0-255 scale minus the Caffe means.

    The reference's three wrappers in order: undo the (0.5, 0.5) normalisation, RGB -> BGR, x255 and
    subtract (104.007, 116.669, 122.679). Differentiable.

    Args:
        x: ``[B, 3, H, W]`` RGB, normalised with mean 0.5 / std 0.5.

    Returns:
        ``[B, 3, H, W]`` BGR, roughly in [-123, 151].

    Example:
        >>> rcf_preprocess(torch.zeros(1, 3, 2, 2))[0, :, 0, 0]
        tensor([23.4930, 10.8312,  4.8211])
    """
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"rcf_preprocess expects [B, 3, H, W] RGB, got shape {tuple(x.shape)}")
    bgr = (x * 0.5 + 0.5).flip(1) * 255.0
    mean = torch.tensor(RCF_BGR_MEAN, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return bgr - mean


class RCFPreprocess(nn.Module):
    """Module form of :func:`rcf_preprocess`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rcf_preprocess(x)


def bilinear_kernel(size: int) -> torch.Tensor:
    """``[1, 1, size, size]`` bilinear upsampling kernel (the FCN / HED "deconv" initialisation)."""
    factor = (size + 1) // 2
    center = factor - 1 if size % 2 == 1 else factor - 0.5
    ramp = 1 - (torch.arange(size, dtype=torch.float64) - center).abs() / factor
    return (ramp[:, None] * ramp[None, :]).float().view(1, 1, size, size)


class RCF(nn.Module):
    """RCF: ``conv{s}_{i}`` (3x3), ``conv{s}_{i}_down`` (1x1 to 21), ``score_dsn{s}`` (21 -> 1), ``score_fuse``.

    Input ``[B, 3, H, W]`` already preprocessed (:func:`rcf_preprocess`); output ``[B, 1, H, W]``.
    ``width`` < 1 slims the trunk (same names) for fast random-init runs; only width 1 loads the
    published ``rcf_bsds500_pascal_model.pth``. The bilinear kernels are non-persistent buffers, so the
    state dict has exactly the reference's 64 entries.
    """

    def __init__(self, width: float = 1.0) -> None:
        super().__init__()
        in_ch, trunk = 3, []
        for stage, n_convs, channels in RCF_STAGES:  # registered in the reference's order: trunk, downs, scores
            ch = max(4, round(channels * width))
            dilation = 2 if stage == 5 else 1
            for i in range(1, n_convs + 1):
                setattr(self, f"conv{stage}_{i}", nn.Conv2d(in_ch, ch, 3, padding=dilation, dilation=dilation))
                trunk.append((f"conv{stage}_{i}_down", ch))
                in_ch = ch
        for name, ch in trunk:
            setattr(self, name, nn.Conv2d(ch, _DOWN_CHANNELS, 1))
        for stage in range(1, 6):
            setattr(self, f"score_dsn{stage}", nn.Conv2d(_DOWN_CHANNELS, 1, 1))
        self.score_fuse = nn.Conv2d(5, 1, 1)
        for stage, (size, _, _) in _UPSAMPLE.items():
            self.register_buffer(f"up{stage}", bilinear_kernel(size), persistent=False)
        self.meta = {"in_channels": 3, "out_channels": 1}

    @staticmethod
    def _pool(x: torch.Tensor, stage: int) -> torch.Tensor:
        # after stages 1-3: 2x2 stride 2; after stage 4: 2x2 stride 1 (ceil mode throughout)
        return F.max_pool2d(x, 2, stride=1 if stage == 4 else 2, ceil_mode=True)

    def side_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The five side logit maps, each ``[B, 1, H, W]``."""
        height, width = x.shape[2], x.shape[3]
        feat, sides = x, []
        for stage, n_convs, _ in RCF_STAGES:
            if stage > 1:
                feat = self._pool(feat, stage - 1)
            summed = None
            for i in range(1, n_convs + 1):
                feat = F.relu(getattr(self, f"conv{stage}_{i}")(feat))
                down = getattr(self, f"conv{stage}_{i}_down")(feat)
                summed = down if summed is None else summed + down
            side = getattr(self, f"score_dsn{stage}")(summed)
            if stage > 1:
                _, stride, crop = _UPSAMPLE[stage]
                side = F.conv_transpose2d(side, getattr(self, f"up{stage}").to(side.dtype), stride=stride)
                side = side[:, :, crop:crop + height, crop:crop + width]
            sides.append(side)
        return sides

    def forward(self, x: torch.Tensor, no_sigmoid: bool = False) -> torch.Tensor:
        fused = self.score_fuse(torch.cat(self.side_outputs(x), dim=1))
        return fused if no_sigmoid else torch.sigmoid(fused)

    def parameter_groups(self, base_lr: float, base_wd: float = 0.0) -> list[dict]:
        """One group with every trainable parameter at the base lr / weight decay: the reference's
        RCF defines no per-layer multipliers, so its optimizer gets ``model.parameters()``."""
        params = [p for p in self.parameters() if p.requires_grad]
        return [{"params": params, "lr": base_lr, "weight_decay": base_wd, "name": "all"}]


def load_rcf(path_or_url: str | os.PathLike, device: Any = "cpu", frozen: bool = True,
             subnet: str | None = None) -> RCF:
    """An :class:`RCF` from a checkpoint (a plain state dict such as the published
    ``rcf_bsds500_pascal_model.pth``, short name ``rcf``, or the reference 4-key layout), strictly
    loaded, in eval mode. Feed it :func:`rcf_preprocess` output."""
    from dsa_plugin.models.checkpoint_files import load_checkpoint, source_name
    from dsa_plugin.models.checkpoints import extract_state_dict, load_into

    source = source_name(path_or_url)
    sd = extract_state_dict(load_checkpoint(path_or_url), subnet=subnet, source=source)
    net = load_into(RCF(), sd, source=source).to(device).eval()
    if frozen:
        net.requires_grad_(False)
    return net
