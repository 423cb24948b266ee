"""The reference's six day->night translators: names, presets, the CUT / RCF config checks.

docs/gan.md §variants. Every variant trains a ResNet generator ``generator_X`` saved in the reference
4-key layout, so wherever a generator is used (``dsa translate``, the tuple loader's night
translator, the demo) any variant's checkpoint works unchanged.

Imports nothing from :mod:`dsa_plugin.gan.config` (which imports this module).

Example:
    >>> gan_preset("cut", tiny=True), gan_preset("hedngan", tiny=False)
    ('cut-tiny', 'hedngan')
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dsa_plugin.core.config import ConfigError

#: every variant, in the reference's order of the paper's comparison
VARIANTS = ("hedngan", "hedgan", "cyclegan", "cut", "rcfgan", "rcfngan")
#: variants whose edge detector is RCF instead of HED
RCF_VARIANTS = ("rcfgan", "rcfngan")
#: one line per variant (``dsa gan-train --help``, the demo's ``--gan`` help, docs)
DESCRIPTIONS = {
    "hedngan": "HED^N GAN (the paper's): adversarial + HED edge consistency, HED fine-tuned on night",
    "hedgan": "HED GAN: adversarial + edge consistency with a frozen HED",
    "cyclegan": "CycleGAN: two generators, cycle consistency",
    "cut": "CUT (tuned): one generator, PatchNCE + PatchNCE identity",
    "rcfgan": "RCF GAN: HED GAN with the RCF edge detector",
    "rcfngan": "RCF^N GAN: HED^N GAN with the RCF edge detector",
}


def gan_preset(variant: str, tiny: bool = False) -> str:
    """The preset name training ``variant`` (``tiny``: the CPU-sized smoke preset ``<variant>-tiny``).

    Example:
        >>> gan_preset("cut"), gan_preset("hedngan", tiny=True)
        ('cut', 'hedngan-tiny')

    Raises:
        ConfigError: unknown variant (the message lists the six).
    """
    if variant not in VARIANTS:
        raise ConfigError(f"unknown GAN variant {variant!r}; available: {', '.join(VARIANTS)}")
    return f"{variant}-tiny" if tiny else variant


def generator_names(variant: str) -> tuple[str, ...]:
    """The generators a variant trains and saves (CycleGAN has two; ``generator_X`` is day->night).

    Example:
        >>> generator_names("cyclegan"), generator_names("cut")
        (('generator_X', 'generator_Y'), ('generator_X',))
    """
    return ("generator_X", "generator_Y") if variant == "cyclegan" else ("generator_X",)


def detector_kind(variant: str) -> str | None:
    """``"hed"``, ``"rcf"`` or None (no edge detector).

    Example:
        >>> detector_kind("hedngan"), detector_kind("rcfngan"), detector_kind("cut")
        ('hed', 'rcf', None)
    """
    if variant in RCF_VARIANTS:
        return "rcf"
    return "hed" if variant in ("hedgan", "hedngan") else None


def _cut() -> dict[str, Any]:
    # train_cut.yml: instance norm and kaiming_p2p for G, D and the MLP; batch 1 (_gan_data.yml); 50 epochs,
    # 25 of them decaying; Adam 2e-4 (0.5, 0.999) for all three; losses adversarial 1, identity 10, nce 1
    return {"variant": "cut", "model": {"norm": "instance", "init_type": "kaiming"}, "train": {"batch_size": 1}}


def _tiny_of(variant: str, tiny: Callable[[], dict[str, Any]]) -> Callable[[], dict[str, Any]]:
    """``tiny`` for another variant: same data, sizes, lr, batch (2) and iterations."""
    def build() -> dict[str, Any]:
        values = tiny()
        values["variant"] = variant
        if variant == "cyclegan":
            values["model"].update({"norm": "instance", "init_type": "normal"})
        if variant == "cut":  # n_blocks 2: both downsampling taps and both residual blocks
            values["model"].update({"norm": "instance", "init_type": "kaiming"})
            values["loss"] = {"nce_layers": "4,8,10,11"}
        return values
    return build


def zoo_presets(tiny: Callable[[], dict[str, Any]]) -> dict[str, Callable[[], dict[str, Any]]]:
    """Presets ``cut``, ``rcfgan``, ``rcfngan`` (the reference's settings) and ``<variant>-tiny``.

    RCF GAN / RCF^N GAN are HED GAN / HED^N GAN with ``network.detector*.model.architecture: rcf``
    and batch 10 (``train/rcfgan.yml``, ``train/rcfngan.yml``): the defaults here.
    """
    presets: dict[str, Callable[[], dict[str, Any]]] = {
        "cut": _cut,
        "rcfgan": lambda: {"variant": "rcfgan"},
        "rcfngan": lambda: {"variant": "rcfngan"},
    }
    presets.update({f"{v}-tiny": _tiny_of(v, tiny) for v in VARIANTS})
    return presets


def _nce_layers(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",")]
    except ValueError:
        raise ConfigError(f"loss.nce_layers must be comma-separated ints like '4,8,12,16', got {text!r}") from None


def validate_zoo(cfg: Any) -> None:
    """Checks of the CUT / RCF settings of a GanConfig (called by its validation)."""
    m, loss = cfg.model, cfg.loss
    if m.rcf_weights and m.hed_width != 1.0:
        raise ConfigError(f"model.hed_width={m.hed_width} cannot load pretrained model.rcf_weights "
                          f"(the real RCF has width 1.0); set model.hed_width=1.0 or model.rcf_weights=null")
    if m.mlp_nc < 1 or loss.num_patches < 1 or loss.nce_temperature <= 0:
        raise ConfigError(f"model.mlp_nc ({m.mlp_nc}) and loss.num_patches ({loss.num_patches}) must be >= 1 "
                          f"and loss.nce_temperature ({loss.nce_temperature}) > 0")
    layers = _nce_layers(loss.nce_layers)
    n_modules = m.n_blocks + 19  # the generator's Sequential: stem 4, downsampling 6, blocks, upsampling 6, head 3
    if cfg.variant == "cut" and (layers != sorted(set(layers)) or layers[0] < 0 or layers[-1] >= n_modules):
        raise ConfigError(f"loss.nce_layers must be increasing indices in [0, {n_modules - 1}] "
                          f"(model.n_blocks={m.n_blocks}), got {loss.nce_layers!r}")


#: override keys that only concern the HED (ignored by, and left out for, the other variants)
_HED_ONLY = ("model.hed_weights", "model.hed_width")


def variant_overrides(variant: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """``overrides`` written for the HEDN GAN tiny preset (e.g. the demo's), fitted to ``variant``:
    the HED settings are dropped for the variants without a HED (CUT, CycleGAN, the RCF GANs: their
    tiny presets keep a slim random RCF; pass ``model.rcf_weights`` for the published one).

    Example:
        >>> variant_overrides("cut", {"model.hed_weights": "hed", "model.hed_width": 1.0, "optim.lr": 1e-3})
        {'optim.lr': 0.001}
    """
    gan_preset(variant)  # validates the name
    if detector_kind(variant) == "hed":
        return dict(overrides)
    return {k: v for k, v in overrides.items() if k not in _HED_ONLY}
