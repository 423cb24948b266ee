"""ResNet generator (CycleGAN / pix2pix family) with the reference's state-dict layout.

Key names are ``model.<idx>...`` exactly as the published ``hedngan_generator_X.pth`` and
``cyclegan_generator_X.pth`` (docs/reference.md §generator, §state-dicts), so those files load strictly.
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["NORMS", "make_norm", "uses_bias", "ResnetBlock", "ResnetGenerator", "build_generator",
           "generator_output_size"]

NORMS = ("batch", "instance")


def make_norm(norm: str, channels: int) -> nn.Module:
    """Norm layer of the reference factory: affine BatchNorm with running stats, or parameter-free InstanceNorm."""
    if norm == "batch":
        return nn.BatchNorm2d(channels, affine=True, track_running_stats=True)
    if norm == "instance":
        return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)
    raise ValueError(f"unknown norm {norm!r}; allowed: {', '.join(NORMS)}")


def uses_bias(norm: str) -> bool:
    # BatchNorm's affine shift makes a conv bias redundant, so the reference drops it;
    # InstanceNorm here is affine-free, so the convs keep theirs.
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; allowed: {', '.join(NORMS)}")
    return norm == "instance"


def generator_output_size(height: int, width: int) -> tuple[int, int]:
    """Output H, W of the generator for an input of ``height x width``: ``4*ceil(H/4), 4*ceil(W/4)``.

    Example:
        >>> generator_output_size(362, 271)
        (364, 272)
    """
    return 4 * -(-height // 4), 4 * -(-width // 4)


class ResnetBlock(nn.Module):
    """``x + conv_block(x)`` with reflect-padded 3x3 convs; no activation after the sum.

    Example:
        >>> import torch
        >>> block = ResnetBlock(8, norm="instance")
        >>> block(torch.zeros(1, 8, 6, 6)).shape
        torch.Size([1, 8, 6, 6])
    """

    def __init__(self, dim: int, norm: str = "batch") -> None:
        super().__init__()
        bias = uses_bias(norm)
        self.conv_block = nn.Sequential(
            nn.ReflectionPad2d(1),
            nn.Conv2d(dim, dim, kernel_size=3, padding=0, bias=bias),
            make_norm(norm, dim),
            nn.ReLU(True),
            nn.ReflectionPad2d(1),
            nn.Conv2d(dim, dim, kernel_size=3, padding=0, bias=bias),
            make_norm(norm, dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


class ResnetGenerator(nn.Module):
    """Image-to-image ResNet generator: 7x7 stem, 2 stride-2 downsamplings, ``n_blocks`` residual
    blocks, 2 transposed-conv upsamplings, 7x7 head and Tanh.

    Input ``[B, input_nc, H, W]`` in [-1, 1]; output ``[B, output_nc, 4*ceil(H/4), 4*ceil(W/4)]`` in [-1, 1].

    Example:
        >>> g = ResnetGenerator(n_blocks=2, norm="instance").eval()
        >>> g(torch.zeros(1, 3, 30, 42)).shape
        torch.Size([1, 3, 32, 44])
    """

    def __init__(self, input_nc: int = 3, output_nc: int = 3, ngf: int = 64, n_blocks: int = 9,
                 norm: str = "batch") -> None:
        super().__init__()
        if n_blocks < 0:
            raise ValueError(f"n_blocks must be >= 0, got {n_blocks}")
        bias = uses_bias(norm)
        self.norm = norm
        self.meta = {"in_channels": input_nc, "out_channels": output_nc}
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(input_nc, ngf, kernel_size=7, padding=0, bias=bias),
            make_norm(norm, ngf),
            nn.ReLU(True),
        ]
        for mult in (1, 2):
            layers += [nn.Conv2d(ngf * mult, ngf * mult * 2, kernel_size=3, stride=2, padding=1, bias=bias),
                       make_norm(norm, ngf * mult * 2),
                       nn.ReLU(True)]
        layers += [ResnetBlock(ngf * 4, norm) for _ in range(n_blocks)]
        for mult in (4, 2):
            layers += [nn.ConvTranspose2d(ngf * mult, ngf * mult // 2, kernel_size=3, stride=2, padding=1,
                                          output_padding=1, bias=bias),
                       make_norm(norm, ngf * mult // 2),
                       nn.ReLU(True)]
        # The head conv always has a bias, whatever the norm (docs/reference.md §state-dicts).
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, output_nc, kernel_size=7, padding=0), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


# Reference constructor kwargs that only select options we hard-wire (antialiasing off, reflect
# padding, no dropout); accepted so that a published ``network_params['model']`` dict builds.
_FIXED_OPTIONS = {"no_antialias": True, "no_antialias_up": True, "use_dropout": False,
                  "padding_type": "reflect", "track_running_stats": True}
GENERATOR_ARCHITECTURES = ("official_resnet_generator",)


def build_generator(model_params: dict) -> ResnetGenerator:
    """Build a generator from the reference ``network_params['model']`` dict.

    Example:
        >>> g = build_generator({"architecture": "official_resnet_generator", "input_nc": 3,
        ...                      "output_nc": 3, "n_blocks": 9, "norm_layer": "instance"})
    """
    params = dict(model_params)
    arch = params.pop("architecture", "official_resnet_generator")
    if arch not in GENERATOR_ARCHITECTURES:
        raise ValueError(f"unsupported generator architecture {arch!r}; allowed: {', '.join(GENERATOR_ARCHITECTURES)}")
    kwargs = {}
    for key in ("input_nc", "output_nc", "ngf", "n_blocks"):
        if key in params:
            kwargs[key] = int(params.pop(key))
    norm = params.pop("norm_layer", params.pop("norm", "batch"))
    kwargs["norm"] = norm
    for key, allowed in _FIXED_OPTIONS.items():
        if key in params and params.pop(key) != allowed:
            raise ValueError(f"generator option {key}={model_params[key]!r} is not supported; only {allowed!r}")
    params.pop("pretrained", None)
    if params:
        raise ValueError(f"unknown generator option(s) {sorted(params)}; allowed: architecture, input_nc, "
                         f"output_nc, ngf, n_blocks, norm_layer, {', '.join(_FIXED_OPTIONS)}")
    return ResnetGenerator(**kwargs)
