"""Synthetic night: which anchors become night, the frozen-generator translator, the night cache.

- ``selection``: the reference's md5 rule (``is_night``, ``select_night``, ``night_score``, ``image_name``).
- ``translator``: ``NightTranslator`` (frozen generator, batched, any device, optional AMP).
- ``cache``: ``build_night_cache`` / ``NightCache`` / ``StaleCacheError`` (``dsa translate``).
- ``source``: ``NightSource`` and ``night_source_from_config`` for the tuple loader.
"""

from dsa_plugin.night.cache import (
    NightCache,
    NightCacheError,
    StaleCacheError,
    anchor_images_from_db,
    build_night_cache,
    clahe_settings,
    read_image_list,
)
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
    "anchor_images_from_db",
    "build_night_cache",
    "clahe_settings",
    "image_name",
    "is_night",
    "night_score",
    "night_source_from_config",
    "output_size",
    "read_image_list",
    "select_night",
    "translate",
]
