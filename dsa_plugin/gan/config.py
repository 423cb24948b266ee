"""GAN training settings: one nested dataclass schema with the paper's defaults (docs/reference.md §gan-variants).

The schema, its presets and its validation are one contract (a field, its default and its check
are read together); the generic typed construction of nested dataclasses is
:func:`dsa_plugin.core.config.build_dataclass`.

A config is built from presets (``hedngan``, ``cut``, ..., ``tiny``, ``cut-tiny``, ...), YAML files and
``key=value`` overrides with dotted keys (``data.crop_size=64``). Every value is validated at the
boundary: an unknown key names itself and the valid keys, a wrong type names the expected one.

Example:
    >>> cfg = load_config("tiny", ["train.max_iterations=5", "data.crop_size=32"])
    >>> cfg.train.max_iterations, cfg.data.crop_size
    (5, 32)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dsa_plugin.core.config import ConfigError, build_dataclass, dotted_keys
from dsa_plugin.core.files import to_plain
from dsa_plugin.gan.validation import validate
from dsa_plugin.gan.variants import zoo_presets


@dataclass
class DataConfig:
    """Unpaired day (domain X) / night (domain Y) images (docs/reference.md §gan-data).

    Attributes:
        day, night: a folder (searched recursively for images) or a list file (one path per line).
        root: base folder for relative paths in list files (default: the list file's folder).
        crop_size: side of the square training crop (256).
        scale: (low, high) absolute downscale factor of the shared random scale-crop window.
        epoch_size: pairs per epoch, over all processes (10000).
        resize_short: downscale images on load so that the shorter side is at most this (None:
            original resolution, as the reference). Small runs use it so that a crop shows most of
            the scene (the scale-crop window stays an absolute 1/scale x crop px of the loaded image).
        skip_bad_images: skip (and log) unreadable / too small images instead of failing.
        num_workers: DataLoader worker processes.
        cache_images: keep decoded images in memory (small data sets only).
    """

    day: str | None = None
    night: str | None = None
    root: str | None = None
    crop_size: int = 256
    scale: tuple[float, float] = (0.8, 1.0)
    epoch_size: int = 10000
    resize_short: int | None = None
    skip_bad_images: bool = False
    num_workers: int = 0
    cache_images: bool = False


@dataclass
class ModelConfig:
    """Architectures and initialisation (docs/reference.md §generator, §discriminator, §hed, §weight-init).

    Attributes:
        ngf, n_blocks, ndf, n_layers: generator / discriminator sizes (64, 9, 64, 3).
        norm: "batch" (HEDN GAN, HED GAN) or "instance" (CycleGAN) for G and D.
        init_type: "kaiming" (kaiming_p2p) or "normal" (normal_p2p, CycleGAN).
        init_gain: 0.2 as the reference (not upstream CycleGAN's 0.02).
        hed_weights: path or URL of the pretrained HED (student and teacher start from it);
            None trains with a randomly initialised HED and logs a warning.
        hed_width: channel multiplier of the edge detector's VGG blocks (HED, or RCF for the RCF
            variants). 1.0 is the real detector (required with hed_weights / rcf_weights); smaller
            values only make random-init smoke runs (the ``tiny`` presets) fast.
        rcf_weights: pretrained RCF of the RCF variants (``rcf`` = the published file, a path or URL).
        mlp_nc: CUT's patch MLP width (256).
    """

    ngf: int = 64
    n_blocks: int = 9
    ndf: int = 64
    n_layers: int = 3
    norm: str = "batch"
    init_type: str = "kaiming"
    init_gain: float = 0.2
    hed_weights: str | None = None
    hed_width: float = 1.0
    rcf_weights: str | None = None
    mlp_nc: int = 256


@dataclass
class OptimConfig:
    """Adam optimizers and the lambda_p2p linear-decay schedule (docs/reference.md §gan-schedule).

    Attributes:
        lr, betas, weight_decay: generator(s) and discriminator(s).
        detector_lr, detector_betas, detector_weight_decay: HED student base values; the
            per-group multipliers of HED.parameter_groups apply on top.
        n_epochs_decay: epochs of linear decay at the end (lr factor never reaches 0).
    """

    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    weight_decay: float = 0.0
    detector_lr: float = 1e-6
    detector_betas: tuple[float, float] = (0.9, 0.999)
    detector_weight_decay: float = 2e-4
    n_epochs_decay: int = 25


@dataclass
class LossConfig:
    """Loss weights (docs/reference.md §gan-losses). CUT's ``identity`` (10, a PatchNCE of night vs
    G(night)), ``nce`` (1), ``nce_layers`` ("4,8,12,16"), ``num_patches`` (256) and
    ``nce_temperature`` (0.07): docs/gan.md §cut."""

    adversarial: float = 1.0
    edge: float = 5.0
    hed: float = 1.0
    cycle: float = 10.0
    pool_size: int = 50
    identity: float = 10.0
    nce: float = 1.0
    nce_layers: str = "4,8,12,16"
    num_patches: int = 256
    nce_temperature: float = 0.07


@dataclass
class TrainConfig:
    """Loop length, checkpoints, logging.

    Attributes:
        epochs: total epochs (50 HEDN GAN, 100 CycleGAN).
        batch_size: images per process per iteration (10; CycleGAN 1).
        max_iterations: stop after this many iterations in total (None: run all epochs).
        seed: seeds model init (before each network, as the reference) and the data sampling.
        checkpoint_every: epochs between kept checkpoints (every one also refreshes `*_last`).
        checkpoint_every_iters: also save a resumable state every N iterations (None: off).
        sample_every: iterations between sample-grid PNGs (0: off).
        log_every: iterations between JSONL log lines.
        amp: float16 autocast + GradScaler (CUDA only).
        channels_last: channels_last memory format (CUDA only).
        progress: show a tqdm progress bar.
        identity_warmup: before the first iteration, this many L1 steps fitting each generator to
            the identity on day and night crops (0: none, the reference; for CPU-sized runs, see
            ``dsa_plugin.gan.warmup``).
        warmup_target: what the warm-up fits: ``identity`` (``G(x) = x`` on day and night crops) or
            ``night-colours`` (day crops to themselves re-graded to the night photos' per-channel
            colour distribution; :mod:`dsa_plugin.gan.quantile_match`).
        warmup_lr: the warm-up's Adam lr (None: ``optim.lr``), so that the adversarial phase can
            move slower than the fit before it.
        ema: decay of an exponential moving average of the generator's weights, saved as the
            generator (0: none, the reference; see ``dsa_plugin.gan.ema``).
    """

    epochs: int = 50
    batch_size: int = 10
    max_iterations: int | None = None
    seed: int = 0
    checkpoint_every: int = 2
    checkpoint_every_iters: int | None = None
    sample_every: int = 500
    log_every: int = 10
    amp: bool = False
    channels_last: bool = False
    progress: bool = True
    identity_warmup: int = 0
    warmup_target: str = "identity"
    warmup_lr: float | None = None
    ema: float = 0.0


@dataclass
class GanConfig:
    """Full settings of one GAN training run (defaults: HEDN GAN of the paper)."""

    variant: str = "hedngan"
    device: str = "cpu"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        validate(self)

    def to_dict(self) -> dict[str, Any]:
        return to_plain(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None, where: str = "config") -> "GanConfig":
        return build_dataclass(cls, dict(values or {}), where)

    @classmethod
    def keys(cls) -> list[str]:
        """All valid dotted keys, e.g. ``data.crop_size``."""
        return dotted_keys(cls)


def _tiny() -> dict[str, Any]:
    # Seconds-scale smoke runs and the demo: small G/D, small crops, images downscaled on load.
    return {
        "variant": "hedngan",
        "data": {"crop_size": 64, "epoch_size": 200, "resize_short": 80, "cache_images": True},
        "model": {"ngf": 8, "n_blocks": 2, "ndf": 8, "n_layers": 2, "hed_width": 0.25},
        "optim": {"lr": 1e-3, "n_epochs_decay": 0},
        "train": {"epochs": 1, "batch_size": 2, "max_iterations": 100, "checkpoint_every": 1,
                  "sample_every": 50, "log_every": 10},
    }


PRESETS: dict[str, Any] = {
    "hedngan": lambda: {"variant": "hedngan"},
    "hedgan": lambda: {"variant": "hedgan"},
    "cyclegan": lambda: {
        "variant": "cyclegan",
        "model": {"norm": "instance", "init_type": "normal"},
        "optim": {"n_epochs_decay": 50},
        "train": {"epochs": 100, "batch_size": 1},
    },
    "tiny": _tiny,
    **zoo_presets(_tiny),  # cut, rcfgan, rcfngan and <variant>-tiny (dsa_plugin.gan.variants)
}


def preset(name: str) -> GanConfig:
    """A built-in config: ``hedngan``, ``hedgan``, ``cyclegan``, ``cut``, ``rcfgan``, ``rcfngan`` (the
    reference's), ``tiny`` (= ``hedngan-tiny``) or ``<variant>-tiny``.

    Example:
        >>> cfg = preset("hedngan")
        >>> cfg.variant, cfg.model.ngf, cfg.model.n_blocks
        ('hedngan', 64, 9)
    """
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; available: {sorted(PRESETS)}")
    return GanConfig.from_dict(PRESETS[name](), where=f"preset {name}")


def load_config(source: "str | Path | dict | GanConfig | None" = None,
                overrides: "list[str] | dict[str, Any] | None" = None) -> GanConfig:
    """Build a config from a preset name, a YAML path, a dict or a GanConfig, then apply overrides.

    Args:
        source: ``"tiny"`` etc. (see :data:`PRESETS`), a ``.yaml`` path, a (nested) dict, a
            GanConfig, or None for the HEDN GAN defaults. A YAML file may start from a preset with
            a top-level ``preset: tiny`` key.
        overrides: ``["data.crop_size=64", ...]`` (values parsed as YAML) or a dotted-key dict.

    Example:
        >>> cfg = load_config("tiny", ["train.max_iterations=5", "data.day=day/"])
        >>> cfg.train.max_iterations, cfg.data.day
        (5, 'day/')
    """
    if isinstance(source, GanConfig):
        values = source.to_dict()
    elif source is None:
        values = {}
    elif isinstance(source, dict):
        values = _with_preset(dict(source), "dict")
    elif isinstance(source, (str, Path)) and str(source) in PRESETS:
        values = PRESETS[str(source)]()
    else:
        values = _yaml_values(source)
    for key, value in parse_overrides(overrides).items():
        _set_dotted(values, key, value)
    return GanConfig.from_dict(values, where=str(source) if source is not None else "config")


def _yaml_values(source: "str | Path") -> dict[str, Any]:
    """The values of a YAML config file (or of the installed config of that name)."""
    path = Path(source)
    if not path.is_file():
        path = packaged_config(source) or path
    if not path.is_file():
        raise ConfigError(f"config {str(source)!r} is neither a preset ({sorted(PRESETS)}), a YAML file nor one "
                          f"of the installed configs ({', '.join(packaged_configs())})")
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"cannot parse YAML config {path}: {err}") from None
    except RecursionError:
        raise ConfigError(f"cannot parse YAML config {path}: nested too deeply") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"config {path} must hold a mapping at the top level")
    return _with_preset(loaded, str(path))


#: The YAML configs installed with the package: a copy of the repository's top-level ``configs/``.
PACKAGED_CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def packaged_configs() -> list[str]:
    """Names of the installed GAN configs (``hedngan``, ``hedngan-tiny``, ...)."""
    return sorted(p.stem for p in PACKAGED_CONFIGS.glob("*.yaml"))


def packaged_config(name: "str | Path") -> Path | None:
    """The installed copy of ``name``: ``hedngan-tiny``, ``hedngan-tiny.yaml`` or ``configs/hedngan-tiny.yaml``
    (so the README's commands also work outside a checkout); ``None`` when there is none."""
    parts = Path(name).parts
    if parts and parts[0] == "configs":
        parts = parts[1:]
    if not parts or ".." in parts:
        return None
    path = PACKAGED_CONFIGS.joinpath(*parts)
    if path.suffix not in (".yaml", ".yml"):
        path = path.with_name(path.name + ".yaml")
    return path if path.is_file() else None


def _with_preset(values: dict[str, Any], where: str) -> dict[str, Any]:
    name = values.pop("preset", None)
    if name is None:
        return values
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r} in {where}; available: {sorted(PRESETS)}")
    base = PRESETS[name]()
    _deep_update(base, values)
    return base


def _deep_update(base: dict, new: dict) -> None:
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _deep_update(base[key], value)
        else:
            base[key] = value


def parse_overrides(overrides: "list[str] | dict[str, Any] | None") -> dict[str, Any]:
    """``key=value`` strings (values read as YAML, as on the command line) or a dict -> a dict.

    Example:
        >>> parse_overrides(["train.max_iterations=2000", "train.ema=0.99", "data.day=days.txt"])
        {'train.max_iterations': 2000, 'train.ema': 0.99, 'data.day': 'days.txt'}
    """
    if not overrides:
        return {}
    if isinstance(overrides, dict):
        return dict(overrides)
    parsed = {}
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} must look like key=value (e.g. data.crop_size=64)")
        try:
            parsed[key.strip()] = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError:
            parsed[key.strip()] = text
    return parsed


def _set_dotted(values: dict[str, Any], key: str, value: Any) -> None:
    if key not in GanConfig.keys():
        raise ConfigError(f"unknown config key {key!r}; valid keys: {GanConfig.keys()}")
    parts = key.split(".")
    node = values
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:  # absent, or an empty YAML section
            child = node[part] = {}
        elif not isinstance(child, dict):
            raise ConfigError(f"{'.'.join(parts[:i + 1])} must be a mapping (to set {key}), got {child!r}")
        node = child
    node[parts[-1]] = value


def save_yaml(cfg: GanConfig, path: "str | Path") -> None:
    from dsa_plugin.core.files import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
