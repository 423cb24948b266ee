"""Synthetic night: which anchors become night, the frozen-generator translator, the night cache.

- ``selection``: the reference's md5 rule (``is_night``, ``select_night``, ``night_score``, ``image_name``).
- ``translator``: ``NightTranslator`` (frozen generator, batched, any device, optional AMP).
- ``cache``: the night cache's format and reader, ``NightCache`` / ``StaleCacheError``.
- ``build``: ``build_night_cache`` (``dsa translate``, whose command is ``cli``).
- ``source``: ``NightSource`` and ``night_source_from_config`` for the tuple loader.
"""

from dsa_plugin.night.build import build_night_cache
from dsa_plugin.night.cache import NightCache, NightCacheError, StaleCacheError, clahe_settings
from dsa_plugin.night.selection import image_name, is_night, night_score, select_night
from dsa_plugin.night.source import NightSource, night_source_from_config
from dsa_plugin.night.translator import NightTranslator, TranslatorError, output_size, translate

__all__ = [
    "NightCache",
    "NightCacheError",
    "NightSource",
    "NightTranslator",
    "StaleCacheError",
    "TranslatorError",
    "build_night_cache",
    "clahe_settings",
    "image_name",
    "is_night",
    "night_score",
    "night_source_from_config",
    "output_size",
    "select_night",
    "translate",
]
