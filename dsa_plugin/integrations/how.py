"""HOW integration: a ``dsa:`` section in HOW's YAML parameter files and ``dsa how-train``.

``dsa how-train <params.yml> [HOW's train options]`` runs HOW's own ``examples/demo_how.py``
train stage (its argument parsing, its ``__template__`` parameter loading, its training loop and
checkpoints) with three changes when the parameters hold a ``dsa:`` section:

- the training tuples come from :class:`dsa_plugin.tuples.NightTuplesDataset` (night anchors,
  diverse anchors) instead of cirtorch's ``TuplesDataset``;
- CLAHE is prepended to HOW's transform (``how_net.build_transforms``) when ``dsa.clahe`` is on,
  so training, PCA initialisation and validation all see CLAHE images;
- the ``dsa:`` section is validated (:meth:`DSAConfig.from_dict`) before anything is loaded.

Runtime fixes for HOW at HEAD 4d73c88 on current libraries are applied with or without a
``dsa:`` section (they do not change results): the ``initialize_loss`` NameError, matplotlib's
removed ``grid(b=)``, ``weights_only`` loading of HOW checkpoints (numpy types and HOW's
``defaultdict`` scores allow-listed, see :func:`load_how_checkpoint`), cirtorch's hard-coded
``.cuda()`` on CPU runs and cirtorch's other fixes from :mod:`dsa_plugin.integrations.compat`.
A per-run report, ``<exp>/dsa_stats.json``, records the tuples, night anchors and mining stats.

``patches/how-train.patch`` makes HOW's own ``demo_how.py`` accept the section by calling
:func:`validate_params` and :func:`install_dsa` from here.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib.util
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Callable, Iterator

from dsa_plugin.config import ConfigError, DSAConfig
from dsa_plugin.files import atomic_write_text

HOW_SRC_ENV = "HOW_SRC"
DSA_SECTION = "dsa"
#: name of the per-run DSA report written next to HOW's ``train.log``
STATS_FILE = "dsa_stats.json"
#: HOW's parameter folder where bare ``__template__`` names of our configs are looked up
HOW_PARAMS_DIR = Path("examples") / "params" / "eccv20"

HOW_TRAIN_OPTIONS = (
    "--experiment/-e NAME, --epochs N, --architecture ARCH, --skip-layer N, "
    "--loss-margin/-lm M, --data-folder PATH, --exp-folder PATH"
)


class HOWIntegrationError(RuntimeError):
    """HOW (or one of its dependencies) is missing or not the expected version."""


# --------------------------------------------------------------------------------------------
# Locating HOW
# --------------------------------------------------------------------------------------------


def locate_how(how_src: str | os.PathLike | None = None) -> Path:
    """Root of a HOW checkout: ``how_src``, else ``$HOW_SRC``, else the importable ``how`` package.

    The root must hold ``how/stages/train.py`` and ``examples/demo_how.py`` (HOW has no setup.py,
    so a clone is the only way to get it).
    """
    tried: list[str] = []
    candidates: list[tuple[str, Path]] = []
    if how_src:
        candidates.append(("--how-src", Path(how_src)))
    elif os.environ.get(HOW_SRC_ENV):
        candidates.append((f"${HOW_SRC_ENV}", Path(os.environ[HOW_SRC_ENV])))
    else:
        spec = importlib.util.find_spec("how")
        if spec is not None and spec.origin:
            candidates.append(("importable package 'how'", Path(spec.origin).resolve().parent.parent))
    for origin, root in candidates:
        root = root.expanduser().resolve()
        missing = [p for p in ("how/stages/train.py", "examples/demo_how.py") if not (root / p).is_file()]
        if not missing:
            return root
        tried.append(f"{origin} = {root} (lacks {', '.join(missing)})")
    detail = "; ".join(tried) if tried else "no --how-src, no $HOW_SRC and no importable 'how' package"
    raise HOWIntegrationError(
        f"HOW source not found: {detail}. Clone it (git clone https://github.com/gtolias/how) and pass "
        f"--how-src <clone> or set {HOW_SRC_ENV}=<clone>."
    )


def _require(module: str, hint: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise HOWIntegrationError(f"HOW needs the Python package '{module}', which is not installed: {hint}")


def import_how(root: Path) -> dict[str, Any]:
    """Import HOW's modules from ``root`` (put first on ``sys.path``); returns them by short name."""
    _require("cirtorch", "clone filipradenovic/cnnimageretrieval-pytorch and `pip install --no-deps -e <clone>`")
    _require("asmk", "`pip install asmk faiss-cpu` (or `pip install dsa-plugin[how]`)")
    _require("faiss", "`pip install faiss-cpu`")
    loaded = sys.modules.get("how")
    if loaded is not None and getattr(loaded, "__file__", None):
        here = Path(loaded.__file__).resolve().parent.parent
        if here != root:
            raise HOWIntegrationError(f"another HOW is already imported from {here}; asked for {root}")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    import how.networks.how_net as how_net
    import how.stages.train as train
    import how.utils.io_helpers as io_helpers
    import how.utils.plots as plots

    return {"how_net": how_net, "train": train, "io_helpers": io_helpers, "plots": plots}


def load_demo(root: Path):
    """HOW's ``examples/demo_how.py`` as a module (its ``main(argv)`` is the HOW command line)."""
    path = root / "examples" / "demo_how.py"
    spec = importlib.util.spec_from_file_location("how_demo_how", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------------------------
# The `dsa:` section
# --------------------------------------------------------------------------------------------


def dsa_config_from_params(params: dict[str, Any], where: str = DSA_SECTION) -> DSAConfig | None:
    """Validate the ``dsa:`` section of loaded HOW parameters; ``None`` when there is none.

    Raises :class:`ConfigError` naming the unknown key (with the valid ones), the wrong type, or
    a generator/night cache that does not exist.
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
        raise ConfigError(f"in '{where}': qpool_size ({config.qpool_size}) must be >= training.dataset.qsize ({qsize}): "
                          "diverse anchor mining picks the epoch's anchors from that pool")
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

    with _patched(io_helpers, "load_params", load_params):
        yield


# --------------------------------------------------------------------------------------------
# Pieces that go into HOW's training
# --------------------------------------------------------------------------------------------


class ClaheCompose:
    """HOW's transform with CLAHE in front; ``plain`` keeps HOW's transform for the night dataset.

    When HOW's transform starts with ``ToTensor`` (it does: ToTensor + Normalize), CLAHE's float
    result replaces ``ToTensor`` (no uint8 rounding, as the reference's ``pil2np | apply_clahe |
    totensor``). The night dataset applies CLAHE itself, after translating an anchor, so it gets
    ``plain``.
    """

    def __init__(self, plain: Callable, clip_limit: float = 1.0, grid_size: tuple[int, int] | int = 8):
        from dsa_plugin.transforms import with_clahe

        self.plain = plain
        first, *self.rest = with_clahe(plain, clip_limit=clip_limit, grid_size=grid_size).transforms
        self.clahe = first

    def __call__(self, img):
        x = self.clahe(img)
        for step in self.rest:
            x = step(x)
        return x

    def __repr__(self) -> str:
        inner = "\n".join(f"    {t!r}" for t in [self.clahe, *self.rest])
        return f"ClaheCompose(\n{inner}\n)"


def build_transform(how_net, runtime: dict[str, Any], clahe: bool, grid: int = 8) -> Callable:
    """HOW's ``build_transforms(runtime)``, with CLAHE (``grid`` x ``grid`` tiles) in front when ``clahe``."""
    plain = how_net.build_transforms(runtime)
    return ClaheCompose(plain, grid_size=grid) if clahe else plain


def plain_transform(transform: Callable | None) -> Callable | None:
    """HOW's own transform inside our wrappers (the night dataset recognises ToTensor + Normalize)."""
    from dsa_plugin.integrations.compat import WithRuntimeFixes

    while isinstance(transform, (WithRuntimeFixes, ClaheCompose)):
        transform = transform.fn if isinstance(transform, WithRuntimeFixes) else transform.plain
    return transform


class NightTuplesFactory:
    """Callable in place of cirtorch's ``TuplesDataset`` in HOW's ``initialize_training``.

    It takes the TuplesDataset arguments HOW passes (``name, mode, imsize, nnum, qsize, poolsize,
    transform``) and builds a :class:`NightTuplesDataset` with the DSA settings.
    """

    def __init__(self, config: DSAConfig, mean_std, data_root: str | os.PathLike | None = None,
                 exp_path: str | os.PathLike | None = None, logger_name: str = "HOW", seed: int = 0,
                 num_workers: int = 0):
        self.config = config
        self.num_workers = num_workers
        from dsa_plugin.transforms import check_mean_std

        self.mean_std = [list(v) for v in check_mean_std(mean_std, "HOW's mean_std")]
        self.data_root = None if data_root is None else str(data_root)
        self.exp_path = None if exp_path is None else str(exp_path)
        self.logger_name = logger_name
        self.seed = seed
        self.datasets: list = []

    def __call__(self, name, mode, imsize=None, nnum=5, qsize=2000, poolsize=20000, transform=None, **kwargs):
        from dsa_plugin.tuples import NightTuplesDataset

        dataset = NightTuplesDataset(
            name, mode, imsize=imsize, nnum=nnum, qsize=qsize, poolsize=poolsize,
            transform=plain_transform(transform), config=self.config, mean_std=self.mean_std,
            seed=self.seed, data_root=self.data_root, num_workers=self.num_workers,
            # HOW's forward_global squeezes the batch dimension: one image per forward, as HOW mines.
            batch_size=1, **kwargs,
        )
        dataset.create_epoch_tuples = EpochReporter(dataset, self.exp_path, self.logger_name)
        self.datasets.append(dataset)
        return dataset


class EpochReporter:
    """Wraps ``create_epoch_tuples`` to log the DSA statistics and keep ``dsa_stats.json`` current.

    A plain class (not a closure) so that the dataset stays picklable for DataLoader workers.
    """

    def __init__(self, dataset, exp_path: str | None, logger_name: str):
        self.create = dataset.create_epoch_tuples
        self.dataset = dataset
        self.exp_path = exp_path
        self.logger_name = logger_name
        self.epochs: list[dict[str, Any]] = []

    def __call__(self, net, device=None):
        if self.epochs:
            # What was served during the previous epoch is known only now (HOW has no epoch-end hook).
            self.epochs[-1]["night_images_served"] = night_images_served(self.dataset)
        result = self.create(net, device=device)
        # "epoch" is HOW's (1-based); the dataset's own 0-based counter stays as "dataset_epoch".
        stats = dataset_stats(self.dataset)
        stats["dataset_epoch"] = stats.pop("epoch", None)
        entry = {"epoch": len(self.epochs) + 1, "avg_neg_dist": _jsonable(result), **stats}
        self.epochs.append(entry)
        logging.getLogger(self.logger_name).info(
            "DSA: %d tuples, %d night anchors, diverse anchors %s",
            len(self.dataset.qidxs or []), entry["night_anchors"], "on" if entry["diverse_anchors"] else "off",
        )
        self.write()
        return result

    def finish(self) -> None:
        if self.epochs:
            self.epochs[-1]["night_images_served"] = night_images_served(self.dataset)
        self.write()

    def write(self) -> None:
        if self.exp_path is None:
            return
        report = {"config": self.dataset.config.to_dict(), "epochs": self.epochs}
        atomic_write_text(Path(self.exp_path) / STATS_FILE, json.dumps(report, indent=2, default=_jsonable))


def night_images_served(dataset) -> int:
    """Night anchors ``__getitem__`` returned in this process (0 with DataLoader workers)."""
    return int(dataset.night_served)


def dataset_stats(dataset) -> dict[str, Any]:
    """This epoch's mining statistics plus the tuples, for ``dsa_stats.json``."""
    stats = {k: _jsonable(v) for k, v in dict(dataset.stats or {}).items()}
    stats["night_anchors"] = len(dataset.night_anchor_indices)
    stats["night_anchor_indices"] = [int(i) for i in dataset.night_anchor_indices]
    stats["diverse_anchors"] = bool(dataset.sampler.needs_descriptors)
    stats["qidxs"] = [int(i) for i in (dataset.qidxs or [])]
    stats["pidxs"] = [int(i) for i in (dataset.pidxs or [])]
    stats["nidxs"] = [[int(j) for j in row] for row in (dataset.nidxs or [])]
    return stats


def _jsonable(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def install_dsa(dsa: dict[str, Any] | DSAConfig | None, globals: dict[str, Any]) -> DSAConfig | None:
    """Entry point of ``patches/how-train.patch``, called by HOW's ``train()`` after its transform.

    Puts the CLAHE transform into ``globals["transform"]`` (used by HOW for PCA initialisation,
    training and validation) and the night tuple factory into ``globals["tuples_dataset"]``
    (read by the patched ``initialize_training``). Returns the validated settings.
    """
    config = dsa if isinstance(dsa, DSAConfig) else dsa_config_from_params({DSA_SECTION: dsa})
    if config is None:
        return None
    apply_runtime_fixes()
    allow_how_checkpoints()
    accept_grid_b()
    from how.networks import how_net

    if config.clahe:
        globals["transform"] = ClaheCompose(plain_transform(globals["transform"]), grid_size=config.clahe_grid)
    check_device(config, globals.get("device"))
    globals["tuples_dataset"] = NightTuplesFactory(
        config, _mean_std_of(globals["transform"]), data_root=globals.get("root_path"),
        exp_path=globals.get("exp_path"), num_workers=how_net.NUM_WORKERS,
    )
    return config


def check_device(config: DSAConfig, how_device) -> None:
    """``dsa.device`` must be HOW's training device: mining runs HOW's network there (and would
    leave it there), while HOW feeds its training batches to ``demo_train.gpu_id``."""
    import torch

    if config.device is None or how_device is None:
        return
    ours, hows = torch.device(config.device), torch.device(how_device)
    if ours.type == "cuda" and ours.index is None:
        ours = torch.device("cuda", 0)
    if ours != hows:
        raise ConfigError(f"dsa.device is {config.device!r} but HOW trains on {hows} (demo_train.gpu_id); "
                          f"set dsa.device to null (HOW's device) or to {str(hows)!r}")


def _mean_std_of(transform) -> list[list[float]]:
    from dsa_plugin.transforms import find_normalize

    found = find_normalize(plain_transform(transform))
    if found is None:
        raise HOWIntegrationError(f"cannot find Normalize(mean, std) in HOW's transform {transform!r}")
    return [list(found.mean), list(found.std)]


# --------------------------------------------------------------------------------------------
# Runtime fixes for HOW at HEAD 4d73c88 on current libraries (docs/toolkits.md §runtime-fixes, rows 4-7)
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _patched(obj, name: str, value) -> Iterator[None]:
    original = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, original)


def fixed_initialize_loss(loss: dict[str, Any], device):
    """HOW's ``initialize_loss`` refers to an undefined ``training`` at HEAD; same intent, fixed."""
    from cirtorch.layers.loss import ContrastiveLoss

    if loss.keys() != {"margin"}:
        raise ConfigError(f"training.loss must have exactly the key 'margin', got {sorted(loss)}")
    return ContrastiveLoss(**loss).to(device)


def _grid_accepting_b(grid):
    @functools.wraps(grid)
    def patched(self, *args, **kwargs):
        # matplotlib >= 3.7 renamed `b` to `visible`; HOW's EpochFigure.save still passes `b=`.
        if "b" in kwargs:
            kwargs.setdefault("visible", kwargs.pop("b"))
        return grid(self, *args, **kwargs)

    patched.dsa_accepts_b = True
    return patched


def accept_grid_b() -> None:
    """Process-wide version of the ``grid(b=)`` fix, for HOW's own (patched) ``demo_how.py``."""
    import matplotlib.axes

    if not getattr(matplotlib.axes.Axes.grid, "dsa_accepts_b", False):
        matplotlib.axes.Axes.grid = _grid_accepting_b(matplotlib.axes.Axes.grid)


def _defaultdict_as_dict(default_factory=None, *args):
    """Stands in for ``collections.defaultdict`` when unpickling: torch's safe unpickler only fills
    plain dicts, and a loaded checkpoint needs no default factory."""
    return {}


def how_checkpoint_safe_globals() -> list:
    """What HOW checkpoints pickle besides tensors and builtins, for ``weights_only=True`` loading.

    numpy scalars and small arrays (validation mAPs), and the ``defaultdict(list)`` of HOW's
    validation ``scores``, which loads as a plain dict (torch cannot fill a defaultdict safely).
    """
    import numpy as np

    core = getattr(np, "_core", None) or np.core
    dtype_classes = [type(np.dtype(t)) for t in ("f2", "f4", "f8", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "?")]
    return [(_defaultdict_as_dict, "collections.defaultdict"), list,  # `list` = the defaultdict's factory
            core.multiarray.scalar, core.multiarray._reconstruct, np.ndarray, np.dtype, *dtype_classes]


def allow_how_checkpoints() -> None:
    """Let ``torch.load(weights_only=True)`` (the default since torch 2.6) read HOW checkpoints,
    process-wide (HOW's own patched process). Safe loading stays on for every other type."""
    import torch

    torch.serialization.add_safe_globals(how_checkpoint_safe_globals())


@contextlib.contextmanager
def how_checkpoint_loading() -> Iterator[None]:
    """:func:`allow_how_checkpoints` for the duration of a block only."""
    import torch

    with torch.serialization.safe_globals(how_checkpoint_safe_globals()):
        yield


def load_how_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """A HOW checkpoint (``model_epochN.pth``/``model_best.pth``) with ``torch.load(weights_only=True)``."""
    import torch

    with how_checkpoint_loading():
        return torch.load(path, map_location=map_location, weights_only=True)


def apply_runtime_fixes() -> None:
    """Process-wide fixes that change no result: cirtorch's (Pillow removed ANTIALIAS, numpy in1d)."""
    from dsa_plugin.integrations import compat

    compat.apply_runtime_fixes()


@contextlib.contextmanager
def how_runtime(modules: dict[str, Any], config: DSAConfig | None, num_workers: int | None = None,
                cpu: bool = True) -> Iterator[dict]:
    """Everything ``dsa how-train`` changes in HOW for one run, undone afterwards.

    ``cpu``: the run has no GPU, so cirtorch's hard-coded ``.cuda()`` calls become no-ops.
    Yields a dict that receives the night tuple ``factory`` when DSA is on.
    """
    import matplotlib.axes

    from dsa_plugin.integrations import compat

    train, how_net = modules["train"], modules["how_net"]
    state: dict[str, Any] = {"factory": None, "num_workers": lambda: how_net.NUM_WORKERS}
    apply_runtime_fixes()
    logger = logging.getLogger("HOW")
    handlers_before = list(logger.handlers)
    with contextlib.ExitStack() as stack:
        stack.enter_context(compat.cuda_noop(enabled=cpu))
        stack.enter_context(how_checkpoint_loading())
        stack.enter_context(_patched(train, "initialize_loss", fixed_initialize_loss))
        if not getattr(matplotlib.axes.Axes.grid, "dsa_accepts_b", False):
            stack.enter_context(_patched(matplotlib.axes.Axes, "grid", _grid_accepting_b(matplotlib.axes.Axes.grid)))
        if num_workers is not None:
            stack.enter_context(_patched(how_net, "NUM_WORKERS", num_workers))
        stack.enter_context(_patched(train, "train", _train_without_dsa_kwarg(train.train, state)))
        clahe = config is not None and config.clahe
        grid = config.clahe_grid if config is not None else 8
        stack.enter_context(_patched(how_net, "build_transforms",
                                     _transform_builder(how_net.build_transforms, clahe, grid)))
        if config is not None and config.enabled:
            state["config"] = config
            stack.enter_context(_patched(train, "TuplesDataset", _DeferredFactory(state)))
        try:
            yield state
        finally:
            # HOW's init_logger adds handlers on every run; keep repeated in-process runs apart.
            for handler in list(logger.handlers):
                if handler not in handlers_before:
                    logger.removeHandler(handler)
                    handler.close()


def _transform_builder(build: Callable, clahe: bool, grid: int = 8) -> Callable:
    """HOW's ``build_transforms`` (+ CLAHE), wrapped so that spawned DataLoader workers get the fixes."""
    from dsa_plugin.integrations.compat import WithRuntimeFixes

    @functools.wraps(build)
    def build_transforms(runtime):
        transform = build(runtime)
        return WithRuntimeFixes(ClaheCompose(transform, grid_size=grid) if clahe else transform)

    return build_transforms


def _train_without_dsa_kwarg(train_fn, state: dict[str, Any]):
    """HOW's ``train(**params)`` rejects unknown keys: take ``dsa`` out and remember HOW's globals."""

    @functools.wraps(train_fn)
    def train(*args, **params):
        params.pop(DSA_SECTION, None)
        state["globals"] = params.get("globals")
        try:
            return train_fn(*args, **params)
        finally:
            factory = state.get("factory")
            for dataset in getattr(factory, "datasets", []):
                dataset.create_epoch_tuples.finish()

    return train


class _DeferredFactory:
    """In place of ``TuplesDataset``: builds the factory once HOW's globals (paths) are known."""

    def __init__(self, state: dict[str, Any]):
        self.state = state

    def __call__(self, *args, transform=None, **kwargs):
        globals_ = self.state.get("globals") or {}
        check_device(self.state["config"], globals_.get("device"))
        factory = NightTuplesFactory(
            self.state["config"], _mean_std_of(transform), data_root=globals_.get("root_path"),
            exp_path=globals_.get("exp_path"), num_workers=self.state["num_workers"](),
        )
        self.state["factory"] = factory
        return factory(*args, transform=transform, **kwargs)


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


# --------------------------------------------------------------------------------------------
# `dsa how-train`
# --------------------------------------------------------------------------------------------


def _load_params(io_helpers: Any, params_path: Path) -> dict[str, Any]:
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
    from dsa_plugin.checkpoints import CheckpointError, load_generator

    try:
        load_generator(config.generator, device="cpu")
    except (CheckpointError, ValueError, KeyError, RuntimeError, OSError, AttributeError, TypeError) as err:
        raise ConfigError(f"{source}: {DSA_SECTION}.generator {config.generator}: not a usable day->night "
                          f"generator: {' '.join(str(err).split())}") from None


def _data_folder(params: dict[str, Any], how_argv: list[str], how_root: Path) -> Path | None:
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
    from dsa_plugin.safe_pickle import PickleFileError, load_pickle

    if root is None or not root.is_dir():
        return
    for path in sorted([*root.glob("train/*/*.pkl"), *root.glob("test/*/gnd_*.pkl")]):
        try:
            load_pickle(path)
        except PickleFileError as err:
            raise ConfigError(str(err)) from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dsa how-train",
        allow_abbrev=False,  # an abbreviation must not swallow one of HOW's options
        description="Run HOW's own training (examples/demo_how.py train) with Dark Side Augmentation "
        "configured by a `dsa:` section in HOW's YAML parameters.",
        epilog=f"Any other option goes to HOW's train command: {HOW_TRAIN_OPTIONS}. "
        f"`dsa:` keys: {', '.join(DSAConfig.keys())}.",
    )
    parser.add_argument("parameters", help="HOW parameter file (.yml) or HOW's dotted name such as eccv20.how_r18")
    parser.add_argument("--how-src", metavar="DIR", default=None,
                        help=f"HOW checkout (default: ${HOW_SRC_ENV}, else the importable 'how' package)")
    parser.add_argument("--num-workers", metavar="N", type=int, default=None,
                        help="DataLoader workers for HOW's extraction loaders (HOW's default: 6)")
    return parser


def main(argv: list[str]) -> int:
    parser = _parser()
    args, how_argv = parser.parse_known_args(argv)
    if args.num_workers is not None and args.num_workers < 0:
        parser.error(f"--num-workers must be >= 0, got {args.num_workers}")
    try:
        root = locate_how(args.how_src)
        modules = import_how(root)
        params_path = resolve_params_path(args.parameters, root)
        if not params_path.is_file():
            raise ConfigError(f"HOW parameter file not found: {params_path}")
        with template_fallback(modules["io_helpers"], root):
            params = _load_params(modules["io_helpers"], params_path)
            config = validate_params(params, params_path)
            check_generator(config, params_path)
            check_data_pickles(_data_folder(params, how_argv, root))
            demo = load_demo(root)
            cpu = params.get("demo_train", {}).get("gpu_id") is None or not _cuda_available()
            with how_runtime(modules, config, num_workers=args.num_workers, cpu=cpu):
                demo.main(["train", str(params_path), *how_argv])
    except (ConfigError, HOWIntegrationError) as err:
        print(f"dsa how-train: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
