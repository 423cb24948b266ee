"""Validation of a GAN config: every value checked at the boundary, one :class:`ConfigError` that
names the key, what is allowed and what was given (``GanConfig.__post_init__`` calls :func:`validate`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import typing
from typing import Any

from dsa_plugin.core.config import ConfigError
from dsa_plugin.gan.variants import VARIANTS, validate_zoo
from dsa_plugin.gan.warmup import WARMUP_TARGETS

__all__ = ["get_key", "validate"]


def get_key(cfg: Any, key: str) -> Any:
    """The value of a dotted key (``train.batch_size``) of a config.

    Example:
        >>> from types import SimpleNamespace as NS
        >>> get_key(NS(train=NS(batch_size=2)), "train.batch_size")
        2
    """
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg


def _check_choices(cfg: Any) -> None:
    if cfg.variant not in VARIANTS:
        raise ConfigError(f"variant must be one of {list(VARIANTS)}, got {cfg.variant!r}")
    if cfg.model.norm not in ("batch", "instance"):
        raise ConfigError(f"model.norm must be 'batch' or 'instance', got {cfg.model.norm!r}")
    if cfg.model.init_type not in ("kaiming", "normal"):
        raise ConfigError(f"model.init_type must be 'kaiming' or 'normal', got {cfg.model.init_type!r}")
    if cfg.train.warmup_target not in WARMUP_TARGETS:
        raise ConfigError(f"train.warmup_target must be one of {list(WARMUP_TARGETS)}, got {cfg.train.warmup_target!r}")


def _check_counts(cfg: Any) -> None:
    positive = ("data.crop_size", "data.epoch_size", "train.epochs", "train.batch_size", "train.checkpoint_every",
                "train.log_every", "model.ngf", "model.ndf", "model.n_layers")
    for key in positive:
        if get_key(cfg, key) < 1:
            raise ConfigError(f"{key} must be >= 1, got {get_key(cfg, key)}")
    for key in ("model.n_blocks", "train.sample_every", "data.num_workers", "loss.pool_size", "train.identity_warmup"):
        if get_key(cfg, key) < 0:
            raise ConfigError(f"{key} must be >= 0, got {get_key(cfg, key)}")
    for key in ("train.max_iterations", "train.checkpoint_every_iters", "data.resize_short"):
        value = get_key(cfg, key)
        if value is not None and value < 1:
            raise ConfigError(f"{key} must be >= 1 or null, got {value}")


def _check_numbers(cfg: Any) -> None:
    # The smallest crop every network can take: HED's four 2x poolings need 16 px, the
    # discriminator's n_layers stride-2 convs and two 4x4 convs need 3 * 2**n_layers.
    min_crop = max(16, 3 * 2 ** min(cfg.model.n_layers, 30))
    if cfg.data.crop_size < min_crop:
        raise ConfigError(f"data.crop_size must be >= {min_crop} (the smallest input the networks take with "
                          f"model.n_layers={cfg.model.n_layers}), got {cfg.data.crop_size}")
    for key in _float_keys(type(cfg)):
        value = get_key(cfg, key)
        for v in value if isinstance(value, tuple) else (value,):
            if v is not None and not math.isfinite(v):
                raise ConfigError(f"{key} must be finite, got {value!r}")
    for key in ("loss.adversarial", "loss.edge", "loss.hed", "loss.cycle", "optim.weight_decay",
                "optim.detector_weight_decay"):
        if get_key(cfg, key) < 0:
            raise ConfigError(f"{key} must be >= 0, got {get_key(cfg, key)!r}")
    for key in ("optim.betas", "optim.detector_betas"):
        if not all(0.0 <= b < 1.0 for b in get_key(cfg, key)):
            raise ConfigError(f"{key} must be two numbers in [0, 1) (Adam's decay rates), "
                              f"got {list(get_key(cfg, key))}")
    if not 0 <= cfg.train.seed < 2 ** 63:
        raise ConfigError(f"train.seed must be in [0, 2**63), got {cfg.train.seed}")


def _check_ranges(cfg: Any) -> None:
    if not 0.0 < cfg.model.hed_width <= 1.0:
        raise ConfigError(f"model.hed_width must be in (0, 1], got {cfg.model.hed_width}")
    if cfg.model.hed_weights and cfg.model.hed_width != 1.0:
        raise ConfigError(f"model.hed_width={cfg.model.hed_width} cannot load pretrained model.hed_weights "
                          f"(the real HED has width 1.0); set model.hed_width=1.0 or model.hed_weights=null")
    lo, hi = cfg.data.scale
    if not 0.0 < lo <= hi <= 1.0:
        raise ConfigError(f"data.scale must be (low, high) with 0 < low <= high <= 1, got {cfg.data.scale}")
    if cfg.data.resize_short is not None and cfg.data.resize_short < cfg.data.crop_size:
        raise ConfigError(
            f"data.resize_short ({cfg.data.resize_short}) must be >= data.crop_size ({cfg.data.crop_size})")
    if cfg.train.warmup_lr is not None and not cfg.train.warmup_lr > 0:
        raise ConfigError(f"train.warmup_lr must be > 0 or null (null: optim.lr), got {cfg.train.warmup_lr}")
    if not 0.0 <= cfg.train.ema < 1.0:
        raise ConfigError(f"train.ema must be in [0, 1) (0: no weight average), got {cfg.train.ema}")
    if not 0 <= cfg.optim.n_epochs_decay <= cfg.train.epochs:
        raise ConfigError(
            f"optim.n_epochs_decay must be in [0, train.epochs={cfg.train.epochs}], got {cfg.optim.n_epochs_decay}")
    validate_zoo(cfg)
    dev = cfg.device
    if not (dev in ("cpu", "cuda", "mps") or (dev.startswith("cuda:") and dev[5:].isdigit())):
        raise ConfigError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {dev!r}")


def validate(cfg: Any) -> None:
    """Raise ConfigError for values outside what the trainer supports.

    Example:
        >>> from dsa_plugin.gan.config import preset
        >>> cfg = preset("tiny")
        >>> validate(cfg)
        >>> cfg.model.ngf = 0
        >>> validate(cfg)
        Traceback (most recent call last):
        dsa_plugin.core.config.ConfigError: model.ngf must be >= 1, got 0
    """
    _check_choices(cfg)
    _check_counts(cfg)
    _check_numbers(cfg)
    _check_ranges(cfg)


# ----------------------------------------------------------------------------------------------
# presets, YAML and overrides


@functools.cache
def _float_keys(root: type) -> tuple[str, ...]:
    """Dotted keys of every float or float-tuple setting (all must be finite)."""
    floats = {float, float | None, tuple[float, float]}
    out = []

    def walk(cls: type, prefix: str) -> None:
        for name, hint in typing.get_type_hints(cls).items():
            if dataclasses.is_dataclass(hint):
                walk(hint, prefix + name + ".")
            elif hint in floats:
                out.append(prefix + name)

    walk(root, "")
    return tuple(out)
