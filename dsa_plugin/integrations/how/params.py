"""HOW's YAML parameters: the ``dsa:`` section, ``__template__`` lookup and the pre-flight checks.

Everything here runs before HOW downloads or loads anything, so a bad ``dsa:`` section, a missing
template, an unusable generator or a crafted data pickle fails at once with one line.
"""

from __future__ import annotations

import contextlib
import functools
import os
from pathlib import Path
from typing import Any, Iterator

from dsa_plugin.core.config import ConfigError, DSAConfig
from dsa_plugin.integrations import compat

DSA_SECTION = "dsa"
#: HOW's parameter folder where bare ``__template__`` names of our configs are looked up
HOW_PARAMS_DIR = Path("examples") / "params" / "eccv20"


def dsa_config_from_params(params: dict[str, Any], where: str = DSA_SECTION) -> DSAConfig | None:
    """Validate the ``dsa:`` section of loaded HOW parameters; ``None`` when there is none.

    Raises :class:`ConfigError` naming the unknown key (with the valid ones), the wrong type, or
    a generator/night cache that does not exist.

    Example:
        >>> dsa_config_from_params({"training": {}}) is None
        True
        >>> dsa_config_from_params({"dsa": {"diverse_anchors": True}}).diverse_anchors
        True
    """
    if DSA_SECTION not in params:
        return None
    section = params[DSA_SECTION]
    if section is not None and not isinstance(section, dict):
        raise ConfigError(f"'{where}' must be a mapping of DSA settings, got {type(section).__name__}: {section!r}")
    config = DSAConfig.from_dict(section, where=where)
    if config.generator and "://" not in config.generator and not Path(config.generator).expanduser().is_file():
        raise ConfigError(f"in '{where}': generator file not found: {config.generator}")
    if config.night_cache and not Path(config.night_cache).expanduser().is_dir():
        raise ConfigError(f"in '{where}': night_cache directory not found: {config.night_cache}")
    dataset = (params.get("training") or {}).get("dataset") if isinstance(params.get("training"), dict) else None
    qsize = dataset.get("qsize") if isinstance(dataset, dict) else None
    # The rule cirtorch's --dsa-qpool-size/--query-size check applies too: diverse anchor mining picks
    # the epoch's qsize anchors from a pool of qpool_size candidates, so the pool cannot be smaller.
    if config.diverse_anchors and isinstance(qsize, int) and config.qpool_size < qsize:
        raise ConfigError(
            f"in '{where}': qpool_size ({config.qpool_size}) must be >= training.dataset.qsize ({qsize}): "
            "diverse anchor mining picks the epoch's anchors from that pool"
        )
    return config


def validate_params(params: dict[str, Any], source: str | os.PathLike = "parameters") -> DSAConfig | None:
    """Entry point of ``patches/how-train.patch``: fail on a bad ``dsa:`` section before any download."""
    return dsa_config_from_params(params, where=f"{source}: {DSA_SECTION}")


def resolve_params_path(parameters: str, how_root: Path) -> Path:
    """The YAML file HOW's demo reads: a ``.yml`` path, or HOW's dotted name (``eccv20.how_r18``)."""
    if parameters.endswith(".yml"):
        return Path(parameters)
    *folders, fname = parameters.split(".")
    return how_root / "examples" / "params" / "/".join(folders) / f"train_{fname}.yml"


@contextlib.contextmanager
def template_fallback(io_helpers, how_root: Path) -> Iterator[None]:
    """Let a ``__template__`` that is not beside its file resolve in HOW's ``examples/params/eccv20``.

    HOW joins a template path to the folder of the file naming it. Our configs say
    ``__template__: train_how_r18.yml``: that works when the file is copied next to HOW's own
    parameters, and with this fallback also from ``configs/how/`` of this project.
    """
    original = io_helpers.load_params

    @functools.wraps(original)
    def load_params(path):
        if not os.path.exists(path):
            fallback = how_root / HOW_PARAMS_DIR / os.path.basename(path)
            if fallback.is_file():
                path = str(fallback)
        return original(path)

    with compat.rebound(io_helpers, "load_params", load_params):
        yield


def load_params(io_helpers: Any, params_path: Path) -> dict[str, Any]:
    """HOW's YAML loader (``__template__`` chains), with its failures as one-line ConfigErrors."""
    import yaml

    try:
        params = io_helpers.load_params(str(params_path))
    except yaml.YAMLError as err:
        raise ConfigError(f"{params_path}: not valid YAML: {' '.join(str(err).split())}") from None
    except OSError as err:  # a __template__ that does not exist, an unreadable file
        raise ConfigError(f"{params_path}: cannot read {err.filename or 'a parameter file'}: {err.strerror or err} "
                          "(check __template__)") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{params_path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    if not isinstance(params, dict):
        raise ConfigError(f"{params_path}: expected a mapping of HOW parameters, got {type(params).__name__}")
    return params


def check_generator(config: DSAConfig | None, source: str | os.PathLike) -> None:
    """Load the ``dsa.generator`` once before HOW starts (downloads, mining): a file that is not a
    generator, or a URL that cannot be fetched, fails now instead of in the first epoch."""
    if config is None or config.generator is None:
        return
    from dsa_plugin.models.checkpoint_files import CheckpointError
    from dsa_plugin.models.checkpoints import load_generator

    try:
        load_generator(config.generator, device="cpu")
    except (CheckpointError, ValueError, KeyError, RuntimeError, OSError, AttributeError, TypeError) as err:
        raise ConfigError(f"{source}: {DSA_SECTION}.generator {config.generator}: not a usable day->night "
                          f"generator: {' '.join(str(err).split())}") from None


def data_folder(params: dict[str, Any], how_argv: list[str], how_root: Path) -> Path | None:
    """HOW's ``root_path`` for this run: ``--data-folder`` or ``demo_train.data_folder``, from HOW's root."""
    folder = None
    for i, arg in enumerate(how_argv):
        if arg == "--data-folder" and i + 1 < len(how_argv):
            folder = how_argv[i + 1]
        elif arg.startswith("--data-folder="):
            folder = arg.split("=", 1)[1]
    if folder is None:
        demo = params.get("demo_train")
        folder = demo.get("data_folder") if isinstance(demo, dict) else None
    return how_root / str(folder) if folder else None


def check_data_pickles(root: Path | None) -> None:
    """Read every ``.pkl`` HOW and cirtorch may unpickle under the data folder with the restricted
    unpickler first: they use plain ``pickle.load``, which runs whatever code a crafted file names.

    Covers ``train/<db>/*.pkl`` (training, validation and whitening dbs) and
    ``test/<set>/gnd_*.pkl``. Raises :class:`ConfigError` naming the file.
    """
    from dsa_plugin.core.safe_pickle import PickleFileError, load_pickle

    if root is None or not root.is_dir():
        return
    for path in sorted([*root.glob("train/*/*.pkl"), *root.glob("test/*/gnd_*.pkl")]):
        try:
            load_pickle(path)
        except PickleFileError as err:
            raise ConfigError(str(err)) from None
