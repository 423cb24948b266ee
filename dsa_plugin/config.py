"""The Dark Side Augmentation settings shared by every integration (cirtorch flags, HOW YAML).

One dataclass, validated at the boundary, so that a bad value fails before any data is loaded.
"""

from __future__ import annotations

import dataclasses
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
        _check_types(self)
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


_TYPES: dict[str, tuple[type, ...]] = {
    "generator": (str, type(None)),
    "night_ratio": (float, int),
    "night_label": (str,),
    "night_cache": (str, type(None)),
    "diverse_anchors": (bool,),
    "qpool_size": (int,),
    "similar_exclude": (float, int),
    "similar_include": (float, int),
    "clahe": (bool,),
    "clahe_grid": (int,),
    "device": (str, type(None)),
}


def _check_types(config: DSAConfig) -> None:
    for name, allowed in _TYPES.items():
        value = getattr(config, name)
        # bool is an int subclass: a YAML `true` must not pass as a ratio or a pool size.
        bad_bool = isinstance(value, bool) and bool not in allowed
        if bad_bool or not isinstance(value, allowed):
            names = " or ".join("null" if t is type(None) else t.__name__ for t in allowed)
            raise ConfigError(f"{name} must be {names}, got {value!r} ({type(value).__name__})")


def _is_device(text: str) -> bool:
    if text in ("cpu", "cuda", "mps"):
        return True
    head, _, index = text.partition(":")
    return head == "cuda" and index.isdigit()
