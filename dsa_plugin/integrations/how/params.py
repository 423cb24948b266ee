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
    except RecursionError:
        raise ConfigError(f"{params_path}: its __template__ chain never ends (a file names itself or a file "
                          "that names it back)") from None
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


def validation_datasets(params: dict[str, Any]) -> list[tuple[str, Any]]:
    """``(key, name)`` of every dataset in HOW's ``validation`` section (HOW downloads and loads each)."""
    validation = params.get("validation")
    if validation is None:
        return []
    if not isinstance(validation, dict):
        raise ConfigError(f"validation must be a mapping, got {validation!r}")
    out = []
    for kind, section in validation.items():
        if not isinstance(section, dict):
            raise ConfigError(f"validation.{kind} must be a mapping, got {section!r}")
        names = section.get("datasets") or []
        if not isinstance(names, list):
            raise ConfigError(f"validation.{kind}.datasets must be a list, got {names!r}")
        out += [(f"validation.{kind}.datasets", name) for name in names]
    return out


def check_validation_pickles(params: dict[str, Any]) -> None:
    """HOW's ``load_dataset`` unpickles a dataset name containing "/" with plain ``pickle.load``:
    read each such file with the restricted unpickler first (one line on a crafted or missing file).

    The run itself also routes HOW's ``pickle.load`` through it (:func:`how_runtime`); this check
    makes the refusal come before HOW creates its folders, not after the first epoch.
    """
    from dsa_plugin.core.safe_pickle import PickleFileError, load_pickle

    for key, name in validation_datasets(params):
        if not isinstance(name, str) or "/" not in name:
            continue
        try:
            db = load_pickle(name)
        except PickleFileError as err:
            raise ConfigError(f"{key}: {err}") from None
        missing = [k for k in ("imlist", "qimlist", "gnd") if not isinstance(db, dict) or k not in db]
        if missing:
            raise ConfigError(f"{key}: {name}: not a HOW dataset pickle (missing {missing})")


def how_device(params: dict[str, Any]) -> str:
    """The device HOW's ``train()`` will use: ``cuda:<demo_train.gpu_id>``, or cpu when it is null."""
    demo = params.get("demo_train")
    gpu = demo.get("gpu_id") if isinstance(demo, dict) else None
    return "cpu" if gpu is None else f"cuda:{gpu}"


#: Where cirtorch's download_train / download_test fetch what HOW's demo needs.
CIRTORCH_DATA_URL = "http://cmp.felk.cvut.cz/cnnimageretrieval/data"
_TEST_IMAGES = {"oxford5k": "https://www.robots.ox.ac.uk/~vgg/data/oxbuildings/oxbuild_images-v1.tgz",
                "paris6k": "https://www.robots.ox.ac.uk/~vgg/data/parisbuildings/paris_1-v1.tgz"}


def pending_downloads(params: dict[str, Any], root: Path | None, dataset_url: str) -> list[str]:
    """URLs HOW's ``download_for_train`` (and cirtorch's downloads under it) will fetch: the
    files and folders they look for that are missing under the data folder ``root``."""
    if root is None:
        return []
    train = root / "train"
    urls = []
    if not (train / "retrieval-SfM-120k" / "ims").is_dir():
        urls.append(f"{CIRTORCH_DATA_URL}/train/ims/ims.tar.gz")
    for db, name in (("retrieval-SfM-120k", "retrieval-SfM-120k.pkl"),
                     ("retrieval-SfM-120k", "retrieval-SfM-120k-whiten.pkl"),
                     ("retrieval-SfM-30k", "retrieval-SfM-30k-whiten.pkl")):
        if not (train / db / name).is_file():
            urls.append(f"{CIRTORCH_DATA_URL}/train/dbs/{name}")
    names = {name for _, name in validation_datasets(params) if isinstance(name, str)}
    if "val_eccv20" in names and not (train / "retrieval-SfM-120k" / "retrieval-SfM-120k-val-eccv2020.pkl").is_file():
        urls.append(f"{dataset_url}retrieval-SfM-120k-val-eccv2020.pkl")
    if names & {"roxford5k", "rparis6k"}:
        for test in ("oxford5k", "paris6k", "roxford5k", "rparis6k"):
            base = test.removeprefix("r")
            if not (root / "test" / test / "jpg").is_dir() and test == base:
                urls.append(_TEST_IMAGES[base])
            if not (root / "test" / test / f"gnd_{test}.pkl").is_file():
                urls.append(f"{CIRTORCH_DATA_URL}/test/{test}/gnd_{test}.pkl")
    return urls


def check_downloads(params: dict[str, Any], root: Path | None, dataset_url: str, timeout: float = 15.0) -> None:
    """Before HOW creates its folders: when it will download, its servers must answer.

    Offline, HOW's ``urlretrieve`` fails with a traceback after the experiment folder and log
    are written (and cirtorch's ``wget`` leaves empty files). One HEAD request per server.
    """
    import urllib.error
    import urllib.parse
    import urllib.request

    urls = pending_downloads(params, root, dataset_url)
    hosts: dict[str, str] = {}
    for url in urls:
        parts = urllib.parse.urlsplit(url)
        hosts.setdefault(f"{parts.scheme}://{parts.netloc}", url)
    for host, url in hosts.items():
        try:
            urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout).close()
        except urllib.error.HTTPError:
            continue  # the server answered
        except (urllib.error.URLError, OSError, ValueError) as err:
            reason = getattr(err, "reason", None) or err
            raise ConfigError(
                f"HOW will download {len(urls)} missing data file(s) into {root} (first: {url}), but {host} "
                f"cannot be reached ({' '.join(str(reason).split())}); put the files there (docs/how.md, offline runs) "
                "or run where the server is reachable") from None
