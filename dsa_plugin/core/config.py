"""The Dark Side Augmentation settings shared by every integration (cirtorch flags, HOW YAML).

One dataclass, validated at the boundary, so that a bad value fails before any data is loaded.

The type check is :func:`check_value`, driven by the dataclass annotations; the GAN settings
(:mod:`dsa_plugin.gan.config`) use the same function, so a setting's type is written once (its
annotation) and every wrong type is reported the same way: key, expected type, value and its type.

Example:
    >>> check_value(3, float, "night_ratio")
    3.0
    >>> check_value(True, float, "night_ratio")
    Traceback (most recent call last):
    ...
    dsa_plugin.core.config.ConfigError: night_ratio must be float or int, got True (bool)
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, fields
from typing import Any


class ConfigError(ValueError):
    """A DSA setting is unknown or has a value that is not allowed."""


@dataclass(frozen=True)
class DSAConfig:
    """Settings of Dark Side Augmentation (defaults = the paper's fine-tuning, docs/reference.md §finetuning ff.).

    Attributes:
        generator: path or URL of a frozen day->night generator checkpoint; ``None`` disables night anchors.
        night_ratio: fraction of anchors turned into night, selected by the md5 rule (0.25).
        night_label: label prefix of the images that may become night (``"anc"``).
        night_cache: directory of a precomputed night cache (``dsa translate``); ``None`` translates online.
        diverse_anchors: pick anchors by diverse anchor mining instead of uniformly at random.
        qpool_size: size of the random pool that diverse anchors are mined from (10000).
        similar_exclude: lower quantile of the band (drop the most dissimilar, 0.2).
        similar_include: upper quantile of the band (drop the most similar, 0.8).
        clahe: apply CLAHE (L of Lab, clip 1.0, 8x8 tiles) to every image.
        clahe_grid: CLAHE tiles per side (8, the paper's at ~1024 px). Small images need fewer:
            at 128 px an 8x8 grid equalises 16 px tiles and mostly amplifies noise.
        device: device for translation and descriptor extraction (``None``: the network's device).

    Example:
        >>> cfg = DSAConfig(diverse_anchors=True, clahe=True)
        >>> cfg.enabled, cfg.night_ratio
        (True, 0.25)
        >>> DSAConfig().enabled
        False
    """

    generator: str | None = None
    night_ratio: float = 0.25
    night_label: str = "anc"
    night_cache: str | None = None
    diverse_anchors: bool = False
    qpool_size: int = 10000
    similar_exclude: float = 0.2
    similar_include: float = 0.8
    clahe: bool = False
    clahe_grid: int = 8
    device: str | None = None

    def __post_init__(self) -> None:
        check_fields(self)
        if not 0.0 <= self.night_ratio <= 1.0:
            raise ConfigError(f"night_ratio must be in [0, 1], got {self.night_ratio}")
        for name in ("similar_exclude", "similar_include"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"{name} must be in [0, 1], got {value}")
        if self.similar_include < self.similar_exclude:
            raise ConfigError(
                f"similar_include ({self.similar_include}) must be >= similar_exclude ({self.similar_exclude})"
            )
        if self.clahe_grid < 1:
            raise ConfigError(f"clahe_grid must be a positive number of tiles per side, got {self.clahe_grid}")
        if self.qpool_size < 1:
            raise ConfigError(f"qpool_size must be a positive integer, got {self.qpool_size}")
        if not self.night_label:
            raise ConfigError("night_label must be a non-empty label prefix such as 'anc'")
        if self.device is not None and not _is_device(self.device):
            raise ConfigError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {self.device!r}")

    @property
    def enabled(self) -> bool:
        """True when any part of DSA changes the toolkit's behaviour."""
        return self.generator is not None or self.diverse_anchors or self.clahe or self.night_cache is not None

    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None, where: str = "dsa") -> "DSAConfig":
        """Build from a mapping (a YAML section); unknown keys are named together with the valid ones."""
        values = dict(values or {})
        unknown = sorted(set(values) - set(cls.keys()))
        if unknown:
            raise ConfigError(f"unknown key(s) {unknown} in '{where}'; valid keys: {cls.keys()}")
        try:
            return cls(**values)
        except ConfigError as err:
            raise ConfigError(f"in '{where}': {err}") from None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def tag(self, generator_fingerprint: str | None = None) -> str:
        """Short string for export-directory names, in cirtorch's `_key_value` style ('' when off).

        ``generator_fingerprint`` (the generator's state-dict sha256) adds ``_g<first 8 hex>``, so
        that runs with different generators never share (or resume) one directory.
        """
        if not self.enabled:
            return ""
        parts = []
        if self.generator is not None or self.night_cache is not None:
            parts.append(f"_dsa_night{self.night_ratio:g}_{self.night_label}")
            if generator_fingerprint:
                parts.append(f"_g{generator_fingerprint[:8]}")
        if self.diverse_anchors:
            parts.append(f"_diverse{self.qpool_size}_{self.similar_exclude:g}-{self.similar_include:g}")
        if self.clahe:
            parts.append("_clahe" if self.clahe_grid == 8 else f"_clahe{self.clahe_grid}")
        return "".join(parts)


def check_value(value: Any, hint: Any, key: str) -> Any:
    """``value`` checked against a setting's annotation ``hint``, in the form the setting keeps.

    Handles what settings are annotated with: ``bool``, ``int``, ``float``, ``str``, ``None`` and
    ``tuple[float, float]``, alone or in a union (``str | None``), as resolved by
    ``typing.get_type_hints``. Ints pass as floats (and become floats), lists
    as tuples; a bool never passes as a number, so a YAML ``true`` is not taken for 1.

    Raises:
        ConfigError: naming ``key``, the expected type(s), the value and its type.

    Example:
        >>> check_value(3, float, "night_ratio")
        3.0
    """
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union \
        else (hint,)
    for option in options:
        if option is type(None) and value is None:
            return None
        if option is bool and isinstance(value, bool):
            return value
        if isinstance(value, bool):
            continue  # a YAML `true` must not pass as a number
        if option is int and isinstance(value, int):
            return value
        if option is float and isinstance(value, (int, float)):
            return float(value)
        if option is str and isinstance(value, str):
            return value
        if typing.get_origin(option) is tuple and isinstance(value, (list, tuple)):
            args = typing.get_args(option)
            if len(value) == len(args) and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                               for v in value):
                return tuple(float(v) if a is float else v for v, a in zip(value, args))
    names = " or ".join(_type_name(o) for o in options)
    raise ConfigError(f"{key} must be {names}, got {value!r} ({type(value).__name__})")


def _type_name(option: Any) -> str:
    if option is type(None):
        return "null"
    if typing.get_origin(option) is tuple:
        return f"a list of {len(typing.get_args(option))} numbers"
    if option is float:
        return "float or int"  # ints are accepted (and stored as floats)
    return option.__name__


def check_fields(obj: Any) -> None:
    """:func:`check_value` on every field of the dataclass instance ``obj``, by its annotation.

    Only checks: the values are left as given (a frozen :class:`DSAConfig` keeps ``night_ratio=1``
    an int, exactly as before this check was shared).
    """
    hints = typing.get_type_hints(type(obj))
    for f in fields(obj):
        check_value(getattr(obj, f.name), hints[f.name], f.name)


def _is_device(text: str) -> bool:
    if text in ("cpu", "cuda", "mps"):
        return True
    head, _, index = text.partition(":")
    return head == "cuda" and index.isdigit()


def dotted_keys(cls: type, prefix: str = "") -> list[str]:
    """Every leaf field of a nested dataclass, as dotted keys.

    Example:
        >>> @dataclass
        ... class Crop:
        ...     size: int = 64
        ...     scale: float = 1.0
        >>> dotted_keys(Crop), dotted_keys(Crop, prefix="data.")
        (['size', 'scale'], ['data.size', 'data.scale'])
        >>> build_dataclass(Crop, {"size": 32}, "the example")
        Crop(size=32, scale=1.0)
        >>> build_dataclass(Crop, {"sise": 32}, "the example")
        Traceback (most recent call last):
        dsa_plugin.core.config.ConfigError: unknown config key(s) ['sise'] in the example; valid keys: ['size', 'scale']
    """
    keys = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            keys += dotted_keys(hints[f.name], prefix + f.name + ".")
        else:
            keys.append(prefix + f.name)
    return keys


def build_dataclass(cls: type, values: dict[str, Any], where: str, prefix: str = "", root: type | None = None) -> Any:
    """``cls(**values)`` for a nested dataclass, every value checked by :func:`check_value`.

    Unknown keys raise :class:`ConfigError` naming them and the valid keys of ``root`` (default ``cls``).
    """
    root = cls if root is None else root
    if not isinstance(values, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} in {where} must be a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ConfigError(
            f"unknown config key(s) {[prefix + k for k in unknown]} in {where}; valid keys: {dotted_keys(root)}")
    kwargs = {}
    for name in names:
        if name not in values:
            continue
        hint, value = hints[name], values[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = (value if isinstance(value, hint)
                            else build_dataclass(hint, value or {}, where, prefix + name + ".", root))
        else:
            kwargs[name] = check_value(value, hint, prefix + name)
    return cls(**kwargs)
