"""The ``--dsa-*`` command-line flags: add them to any argparse parser, turn them into a DSAConfig.

All flags are off by default, so a parser extended with them parses the toolkit's own command
lines to exactly the same values as before. ``dsa_config_from_args`` validates everything that
can be checked without the training data (the generator file, ranges, the night cache's
manifest) and reports problems through ``parser.error`` -- the usual ``usage: ... error: ...``
message and exit status 2 -- before any image is loaded.

Example::

    >>> parser = argparse.ArgumentParser()
    >>> _ = add_dsa_arguments(parser)
    >>> args = parser.parse_args(["--dsa-diverse-anchors", "--dsa-clahe"])
    >>> dsa_config_from_args(args, parser).tag()
    '_diverse10000_0.2-0.8_clahe'
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from dsa_plugin.core.config import ConfigError, DSAConfig

#: DSAConfig field -> argparse dest of its flag.
CONFIG_DESTS: dict[str, str] = {name: f"dsa_{name}" for name in DSAConfig.keys()}

#: Runtime flags of the integration (not DSA settings): argparse dest -> default.
RUNTIME_DESTS: dict[str, Any] = {
    "dsa_data_root": None,
    "dsa_no_download": False,
    "dsa_skip_test": False,
    "dsa_seed": 0,
}

_DEFAULTS = DSAConfig()


def _device(text: str) -> str:
    if text == "cpu" or text == "cuda" or (text.startswith("cuda:") and text[5:].isdigit()):
        from dsa_plugin.core.devices import DeviceError, check_device

        try:  # at parse time: before cirtorch's main() creates the export directory
            return check_device(text, "--dsa-device")
        except DeviceError as err:
            raise argparse.ArgumentTypeError(str(err)) from None
    raise argparse.ArgumentTypeError(f"expected cpu, cuda or cuda:N, got {text!r}")


def has_dsa_arguments(parser: argparse.ArgumentParser) -> bool:
    return "--dsa-generator" in parser._option_string_actions


def add_dsa_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``--dsa-*`` flags (DSA settings and integration runtime options) to ``parser``.

    Idempotent: a parser that already has them is returned unchanged (the patched cirtorch
    script and the ``dsa cirtorch-train`` wrapper may both ask).

    Example:
        >>> import argparse
        >>> parser = add_dsa_arguments(argparse.ArgumentParser())
        >>> has_dsa_arguments(parser)
        True
        >>> args = parser.parse_args(["--dsa-diverse-anchors", "--dsa-clahe"])
        >>> config = dsa_config_from_args(args, parser)
        >>> config.diverse_anchors, config.clahe, config.generator
        (True, True, None)
    """
    if has_dsa_arguments(parser):
        return parser
    g = parser.add_argument_group(
        "Dark Side Augmentation",
        "synthetic night anchors, diverse anchor mining and CLAHE (all off by default)",
    )
    g.add_argument("--dsa-generator", metavar="PATH|URL", default=None,
                   help="frozen day->night generator checkpoint (e.g. hedngan_generator_X.pth); "
                        "turns the hash-selected anchors into night images")
    g.add_argument("--dsa-night-ratio", metavar="R", type=float, default=_DEFAULTS.night_ratio,
                   help="fraction of anchors made night by the md5 rule (default: %(default)s)")
    g.add_argument("--dsa-night-label", metavar="PREFIX", default=_DEFAULTS.night_label,
                   help="image label prefix that may become night (default: %(default)s)")
    g.add_argument("--dsa-night-cache", metavar="DIR", default=None,
                   help="precomputed night images from `dsa translate` (checked against the settings)")
    g.add_argument("--dsa-diverse-anchors", action="store_true",
                   help="choose the epoch's anchors by diverse anchor mining instead of at random")
    g.add_argument("--dsa-qpool-size", metavar="N", type=int, default=_DEFAULTS.qpool_size,
                   help="anchor candidate pool of diverse anchor mining (default: %(default)s)")
    g.add_argument("--dsa-similar-exclude", metavar="Q", type=float, default=_DEFAULTS.similar_exclude,
                   help="lower quantile of the diverse-anchor band (default: %(default)s)")
    g.add_argument("--dsa-similar-include", metavar="Q", type=float, default=_DEFAULTS.similar_include,
                   help="upper quantile of the diverse-anchor band (default: %(default)s)")
    g.add_argument("--dsa-clahe", action="store_true",
                   help="CLAHE (L of Lab, clip 1, 8x8) on every training, mining and test image")
    g.add_argument("--dsa-clahe-grid", metavar="N", type=int, default=_DEFAULTS.clahe_grid,
                   help="CLAHE tiles per side (default: %(default)s; fewer for small images)")
    g.add_argument("--dsa-device", metavar="DEVICE", type=_device, default=None,
                   help="cpu, cuda or cuda:N for translation and mining; `cpu` also keeps the "
                        "toolkit itself on the CPU (default: cuda when available)")
    r = parser.add_argument_group("Dark Side Augmentation: runtime options of the integration")
    r.add_argument("--dsa-data-root", metavar="DIR", default=None,
                   help="data root with train/<db> and test/<dataset> (default: the toolkit's own)")
    r.add_argument("--dsa-no-download", action="store_true",
                   help="never download data: fail with a clear message when a file is missing")
    r.add_argument("--dsa-skip-test", action="store_true",
                   help="skip cirtorch's test-set evaluation (before training and every --test-freq epochs)")
    r.add_argument("--dsa-seed", metavar="N", type=int, default=0,
                   help="seed of the DSA tuple sampler's private generator (default: %(default)s)")
    return parser


def config_values(args: argparse.Namespace) -> dict[str, Any]:
    """The DSAConfig fields found in ``args`` (missing dests fall back to the defaults)."""
    return {name: getattr(args, dest, getattr(_DEFAULTS, name)) for name, dest in CONFIG_DESTS.items()}


def flag_of(name: str) -> str:
    """flag_of.

    Example:
        >>> flag_of("night_ratio")
        '--dsa-night-ratio'
    """
    return "--" + CONFIG_DESTS[name].replace("_", "-")


def dsa_config_from_args(
    args: argparse.Namespace,
    parser: argparse.ArgumentParser,
    check_files: bool = True,
) -> DSAConfig:
    """Validated DSAConfig from parsed flags; any problem ends in ``parser.error`` (exit status 2).

    Checks: value ranges (ratio and quantiles in [0, 1], include >= exclude, positive pool),
    the generator (a local file must exist and hold a ResnetGenerator; a URL is fetched now, not
    at the first night anchor), the qpool size against cirtorch's ``--query-size``, and the night
    cache (complete, and made with the same generator, ratio, label and image size).
    ``check_files=False`` skips the checks that open files.

    With the files checked, the generator's fingerprint (state-dict sha256; the cache's, for a
    cache alone) is left in ``args.dsa_generator_fingerprint`` for :func:`export_tag`.
    """
    values = config_values(args)
    try:
        config = DSAConfig(**values)
    except ConfigError as err:
        parser.error(_flagify(str(err)))
    query_size = getattr(args, "query_size", None)
    if config.diverse_anchors and isinstance(query_size, int) and config.qpool_size < query_size:
        parser.error(f"--dsa-qpool-size ({config.qpool_size}) must be >= --query-size ({query_size}): "
                     "diverse anchor mining picks the epoch's anchors from that pool")
    if not check_files:
        return config
    fingerprint = None
    if config.generator is not None:
        fingerprint = _check_generator(config.generator, parser)
    if config.night_cache is not None:
        fingerprint = _check_cache(config, fingerprint, getattr(args, "image_size", None), parser)
    args.dsa_generator_fingerprint = fingerprint
    return config


def _flagify(message: str) -> str:
    # DSAConfig names fields; a command-line user knows the flags.
    for name in sorted(CONFIG_DESTS, key=len, reverse=True):
        message = message.replace(f"{name} ", f"{flag_of(name)} ").replace(f"({name})", f"({flag_of(name)})")
    return message


def _check_generator(path_or_url: str, parser: argparse.ArgumentParser) -> str:
    """Fingerprint of the generator; ``parser.error`` when it is missing, unreachable or not a generator."""
    from dsa_plugin.models.checkpoint_files import CheckpointError, is_url
    from dsa_plugin.models.checkpoints import load_generator

    if is_url(path_or_url):
        try:  # fetched into the torch.hub cache now, so that a dead URL fails before any data is read
            generator = load_generator(path_or_url, device="cpu")
        except (CheckpointError, OSError, ValueError, KeyError, RuntimeError, AttributeError, TypeError) as err:
            parser.error(f"--dsa-generator: cannot use {path_or_url}: {err}")
        from dsa_plugin.night.translator import NightTranslator

        return NightTranslator(generator, device="cpu").fingerprint
    if not os.path.exists(path_or_url):
        parser.error(f"--dsa-generator: file not found: {path_or_url}")
    if os.path.isdir(path_or_url):
        parser.error(f"--dsa-generator: {path_or_url} is a directory, expected a generator checkpoint (.pth)")
    try:
        generator = load_generator(path_or_url, device="cpu")
    except (CheckpointError, ValueError, KeyError, RuntimeError, AttributeError, TypeError) as err:
        parser.error(f"--dsa-generator: {path_or_url} is not a day->night generator checkpoint: {err}")
    from dsa_plugin.night.translator import NightTranslator

    return NightTranslator(generator, device="cpu").fingerprint


def _check_cache(config: DSAConfig, fingerprint: str | None, image_size: Any, parser: argparse.ArgumentParser
                 ) -> str | None:
    """The cache's generator fingerprint; ``parser.error`` when the cache does not fit the flags."""
    from dsa_plugin.night.cache import NightCache, NightCacheError

    # The tuple loader reads raw generator output (CLAHE comes after, on every image).
    expected: dict[str, Any] = {"ratio": config.night_ratio, "prefix": config.night_label, "clahe": None}
    if fingerprint is not None:
        expected["generator"] = fingerprint
    if isinstance(image_size, int):
        expected["image_size"] = int(image_size)
    try:
        cache = NightCache.open(config.night_cache, verify_files=False, **expected)
    except NightCacheError as err:
        parser.error(f"--dsa-night-cache: {err}")
    return cache.settings.get("generator") or fingerprint
