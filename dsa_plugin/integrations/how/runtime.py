"""What ``dsa how-train`` and the patched HOW change in HOW at run time.

- :func:`how_runtime`: everything one ``dsa how-train`` run changes, scoped (``compat.rebind``
  on an ``ExitStack``) and undone afterwards: ``pickle`` in HOW's and cirtorch's modules (the
  restricted unpickler, :func:`route_pickles`), HOW's ``initialize_loss``, ``train``,
  ``TuplesDataset``, ``build_transforms`` and ``NUM_WORKERS``, matplotlib's ``Axes.grid``, the
  HOW checkpoint safe globals and ``.cuda()`` on CPU runs.
- :func:`install_dsa`: the entry point of ``patches/how-train.patch``, called by HOW's own
  ``train()``; its fixes are process-wide (listed in ``compat.GLOBAL_PATCHES``).

The fixes for HOW at HEAD 4d73c88 on current libraries (docs/toolkits.md §runtime-fixes, rows
4-7) change no result.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from typing import Any, Iterator

from dsa_plugin.core.config import ConfigError, DSAConfig
from dsa_plugin.integrations import compat
from dsa_plugin.integrations.how.checkpoints import allow_how_checkpoints, how_checkpoint_loading
from dsa_plugin.integrations.how.params import DSA_SECTION, dsa_config_from_params
from dsa_plugin.integrations.how.transforms import ClaheCompose, mean_std_of, plain_transform, transform_builder
from dsa_plugin.integrations.how.tuples import NightTuplesFactory, check_device


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


def apply_runtime_fixes() -> None:
    """Process-wide fixes that change no result: cirtorch's (Pillow removed ANTIALIAS, numpy in1d)."""
    compat.apply_runtime_fixes()


@contextlib.contextmanager
def how_runtime(modules: dict[str, Any], config: DSAConfig | None, num_workers: int | None = None,
                cpu: bool = True) -> Iterator[dict]:
    """Everything ``dsa how-train`` changes in HOW for one run, undone afterwards.

    ``cpu``: the run has no GPU, so cirtorch's hard-coded ``.cuda()`` calls become no-ops.
    Yields a dict that receives the night tuple ``factory`` when DSA is on.
    """
    import matplotlib.axes

    train, how_net = modules["train"], modules["how_net"]
    state: dict[str, Any] = {"factory": None, "num_workers": lambda: how_net.NUM_WORKERS}
    apply_runtime_fixes()
    logger = logging.getLogger("HOW")
    handlers_before = list(logger.handlers)
    with contextlib.ExitStack() as stack:
        stack.enter_context(compat.cuda_noop(enabled=cpu))
        stack.enter_context(how_checkpoint_loading())
        route_pickles(stack)
        compat.rebind(stack, train, "initialize_loss", fixed_initialize_loss)
        if not getattr(matplotlib.axes.Axes.grid, "dsa_accepts_b", False):
            compat.rebind(stack, matplotlib.axes.Axes, "grid", _grid_accepting_b(matplotlib.axes.Axes.grid))
        if num_workers is not None:
            compat.rebind(stack, how_net, "NUM_WORKERS", num_workers)
        compat.rebind(stack, train, "train", _train_without_dsa_kwarg(train.train, state))
        clahe = config is not None and config.clahe
        grid = config.clahe_grid if config is not None else 8
        compat.rebind(stack, how_net, "build_transforms", transform_builder(how_net.build_transforms, clahe, grid))
        if config is not None and config.enabled:
            state["config"] = config
            compat.rebind(stack, train, "TuplesDataset", _DeferredFactory(state))
        try:
            yield state
        finally:
            # HOW's init_logger adds handlers on every run; keep repeated in-process runs apart.
            for handler in list(logger.handlers):
                if handler not in handlers_before:
                    logger.removeHandler(handler)
                    handler.close()


#: Packages whose ``pickle.load`` calls are routed through the restricted unpickler during a run.
TOOLKIT_PACKAGES = ("how", "cirtorch")


def route_pickles(stack: contextlib.ExitStack) -> list[str]:
    """Bind ``pickle`` to :data:`dsa_plugin.core.safe_pickle.RESTRICTED_PICKLE` in every loaded HOW and
    cirtorch module that uses it, until ``stack`` closes; returns the module names.

    HOW's ``load_dataset`` unpickles any validation dataset name containing "/" (and cirtorch its
    dbs and ground truth) with plain ``pickle.load``, which runs whatever a crafted file names.
    """
    import pickle
    import sys

    from dsa_plugin.core.safe_pickle import RESTRICTED_PICKLE

    routed = []
    for name, module in list(sys.modules.items()):
        if name.split(".")[0] in TOOLKIT_PACKAGES and getattr(module, "pickle", None) is pickle:
            compat.rebind(stack, module, "pickle", RESTRICTED_PICKLE)
            routed.append(name)
    return routed


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
            self.state["config"], mean_std_of(transform), data_root=globals_.get("root_path"),
            exp_path=globals_.get("exp_path"), num_workers=self.state["num_workers"](),
        )
        self.state["factory"] = factory
        return factory(*args, transform=transform, **kwargs)


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
        config, mean_std_of(globals["transform"]), data_root=globals.get("root_path"),
        exp_path=globals.get("exp_path"), num_workers=how_net.NUM_WORKERS,
    )
    return config
