"""Where night anchors come from: a validated night cache, or the generator online.

The tuple loader asks ``source.night(name, x01)`` for each anchor the selection rule picks (or
``source.maybe_night(name, label, x01)`` for any image) and gets the same tensor either way:
the generator output in [0, 1], 4*ceil(H/4) x 4*ceil(W/4), before CLAHE (the loader applies
CLAHE to every image, night or not, like the reference's ``clahepost``), snapped to the cache's
1/16384 grid (``cache.quantise_night``). CLAHE reads its input only through that grid, so the
snap changes nothing after CLAHE and the cached and online paths are equal bit for bit.

Example:
    >>> source = NightSource(translator)                     # doctest: +SKIP
    >>> source.maybe_night(cid, "anc", x01).shape            # doctest: +SKIP
    torch.Size([1, 3, 272, 364])
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from dsa_plugin.night.cache import NightCache, StaleCacheError, normalise_clahe, quantise_night, settings_differences
from dsa_plugin.night.selection import DEFAULT_PREFIX, DEFAULT_RATIO, is_night
from dsa_plugin.night.translator import NightTranslator, TranslatorError, output_size


class NightSource:
    """Night versions of anchors from ``cache`` when it holds the image, else from ``translator``.

    Args:
        translator: the online generator (``None``: cache only).
        cache: an opened ``NightCache`` (``None``: always online). Its settings must agree with
            ``ratio``, ``prefix``, ``clahe`` and the translator's fingerprint.
        ratio, prefix: the selection rule used by ``is_night`` / ``maybe_night``.
        clahe: CLAHE applied after the generator (``None``: raw output, the default). The online
            path applies the same, so both paths return the same tensor.
    """

    def __init__(
        self,
        translator: NightTranslator | None = None,
        cache: NightCache | None = None,
        ratio: float = DEFAULT_RATIO,
        prefix: str = DEFAULT_PREFIX,
        clahe: dict[str, Any] | None = None,
    ) -> None:
        if translator is None and cache is None:
            raise ValueError("NightSource needs a translator, a cache, or both")
        self.translator = translator
        self.cache = cache
        self.ratio = float(ratio)
        self.prefix = prefix
        if cache is not None:
            expected: dict[str, Any] = {"ratio": ratio, "prefix": prefix, "clahe": clahe}
            if translator is not None:
                expected["generator"] = translator.fingerprint
            diff = settings_differences(expected, cache.manifest)
            if diff:
                raise StaleCacheError(f"night cache {cache.root} does not match this source: " + "; ".join(diff))
        self.clahe = normalise_clahe(clahe)
        self.stats = {"cached": 0, "online": 0}

    def is_night(self, name: str, label: str) -> bool:
        """The selection rule with this source's ratio and prefix."""
        return is_night(name, label, self.ratio, self.prefix)

    def night(self, name: str, x01: Tensor) -> Tensor:
        """Night version of image ``name`` whose day pixels are ``x01`` (``[1,]3 x H x W`` in [0, 1]).

        Returns the same layout and device as ``x01``, spatial size 4*ceil(H/4) x 4*ceil(W/4).
        """
        if x01.dim() not in (3, 4) or x01.shape[-3] != 3:
            raise TranslatorError(
                f"night() expects 3 x H x W or 1 x 3 x H x W, got shape {tuple(x01.shape)} for {name!r}"
            )
        batched = x01.dim() == 4
        if batched and x01.shape[0] != 1:
            raise TranslatorError(f"night() translates one image at a time, got a batch of {x01.shape[0]} for {name!r}")
        want = output_size(*x01.shape[-2:])
        if self.cache is not None and name in self.cache:
            y = self.cache.load(name, device=x01.device)
            if tuple(y.shape[-2:]) != want:
                raise StaleCacheError(
                    f"night cache {self.cache.root}: image {name!r} is stored at {tuple(y.shape[-2:])} but this input "
                    f"{tuple(x01.shape[-2:])} needs {want}; the cache was built with image_size="
                    f"{self.cache.settings['image_size']}: rebuild it at the training image size"
                )
            self.stats["cached"] += 1
            return y.unsqueeze(0) if batched else y
        if self.translator is None:
            raise StaleCacheError(
                f"image {name!r} is not in the night cache {self.cache.root} and no generator is set to "
                "translate it online; build the cache from this training db"
            )
        y = self.translator.translate(x01 if batched else x01.unsqueeze(0))
        if self.clahe is not None:
            from dsa_plugin.transforms import clahe as clahe_fn

            y = clahe_fn(
                y, clip_limit=self.clahe["clip_limit"], grid_size=tuple(self.clahe["grid_size"]), check_range=False
            )
        y = quantise_night(y)  # exactly what the cache stores (a no-op for the CLAHE that follows)
        self.stats["online"] += 1
        y = y.to(x01.device)
        return y if batched else y[0]

    def maybe_night(self, name: str, label: str, x01: Tensor) -> Tensor:
        """``night(name, x01)`` when the rule selects (name, label), else ``x01`` unchanged."""
        return self.night(name, x01) if self.is_night(name, label) else x01

    def __repr__(self) -> str:
        parts = [f"ratio={self.ratio}", f"prefix={self.prefix!r}"]
        if self.cache is not None:
            parts.append(f"cache={str(self.cache.root)!r}")
        if self.translator is not None:
            parts.append(f"translator on {self.translator.device}")
        return f"NightSource({', '.join(parts)})"


def night_source_from_config(config, device: str | torch.device | None = None, image_size: int | None = 362,
                             inputs: dict[str, str] | None = None):
    """The ``NightSource`` a ``DSAConfig`` asks for, or ``None`` when it sets neither generator nor cache.

    The cache (``config.night_cache``) is opened only if its manifest matches ``night_ratio``,
    ``night_label``, ``image_size``, raw generator output (no CLAHE) and, when a generator is
    also set, that generator's fingerprint; otherwise ``StaleCacheError`` says which field differs.
    ``inputs`` (name -> image path) are checked against the sizes and mtimes the cache recorded.
    """
    if config.generator is None and config.night_cache is None:
        return None
    device = device if device is not None else (config.device or "cpu")
    translator = NightTranslator.from_checkpoint(config.generator, device=device) if config.generator else None
    cache = None
    if config.night_cache is not None:
        expected: dict[str, Any] = {
            "ratio": config.night_ratio,
            "prefix": config.night_label,
            "image_size": image_size,
            "clahe": None,
        }
        if translator is not None:
            expected["generator"] = translator.fingerprint
        cache = NightCache.open(config.night_cache, **expected)
        if inputs is not None:
            cache.check_inputs(inputs)
    return NightSource(translator, cache, ratio=config.night_ratio, prefix=config.night_label)
