"""Runtime fixes that let the toolkits' old code run on today's libraries, without editing it.

cirtorch (HEAD 1e66a41) and HOW (HEAD 4d73c88) were written for Pillow < 10, numpy < 2 and a
CUDA machine. Each fix below is the smallest change that restores the missing behaviour
(docs/toolkits.md §runtime-fixes):

- ``fix_pillow_antialias``: Pillow >= 10 removed ``Image.ANTIALIAS``; it was always LANCZOS.
- ``fix_numpy_in1d``: numpy 2.4 removed ``np.in1d``; ``np.isin`` on the flattened input is
  what it computed.
- ``cuda_noop``: the toolkits call ``.cuda()`` unconditionally; on a CPU run those calls become
  identity functions (scoped: restored on exit).

Every fix is idempotent. DataLoader workers started with ``spawn``/``forkserver`` re-import
the toolkit modules from scratch, so the fixes must travel with the data: ``worker_init_fn``
re-applies them, and ``WithRuntimeFixes`` wraps any picklable callable (a transform) so that
unpickling it in a worker re-applies them before the first image is loaded.

Scoped patches, one way: :func:`rebind` (an attribute or a mapping entry, restored when an
``ExitStack`` closes) and :func:`rebound` (the same as a ``with`` block). Every integration rebinds
toolkit names with these.

Global patches: :data:`GLOBAL_PATCHES` below is the complete list of changes that outlive a
call (what, set by, when, and why each cannot be scoped); docs/toolkits.md §global-patches
points here.

Example::

    >>> from dsa_plugin.integrations import compat
    >>> fixed = compat.apply_runtime_fixes()  # {'pillow_antialias': ..., 'numpy_in1d': ...}
    >>> import torch
    >>> with compat.cuda_noop():
    ...     t = torch.zeros(2).cuda()   # stays on the CPU
    >>> import types
    >>> ns = types.SimpleNamespace(x=1)
    >>> with compat.rebound(ns, "x", 2):
    ...     ns.x
    2
    >>> ns.x
    1
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, MutableMapping
from typing import Any, NamedTuple

import numpy as np
import torch


class GlobalPatch(NamedTuple):
    """One process-wide change: what, which function makes it, when, and why it is not scoped."""

    patch: str
    set_by: str
    when: str
    why_global: str


#: Every change to a toolkit or library that outlives a call (the module docstring's table).
GLOBAL_PATCHES: tuple[GlobalPatch, ...] = (
    GlobalPatch("PIL.Image.ANTIALIAS = PIL.Image.Resampling.LANCZOS (only if missing)",
                "dsa_plugin.integrations.compat.fix_pillow_antialias",
                "apply_runtime_fixes(): whenever an integration loads or runs toolkit code, in worker_init_fn "
                "and when a WithRuntimeFixes transform is unpickled in a DataLoader worker",
                "toolkit code runs in worker processes and after our call returns; adds a missing name only"),
    GlobalPatch("numpy.in1d = dsa_plugin.integrations.compat.in1d (only if missing)",
                "dsa_plugin.integrations.compat.fix_numpy_in1d",
                "as PIL.Image.ANTIALIAS", "as PIL.Image.ANTIALIAS"),
    GlobalPatch("HOW's checkout root first on sys.path",
                "dsa_plugin.integrations.how.locate.import_how",
                "dsa how-train, and tests that import HOW",
                "HOW has no setup.py; its modules stay in sys.modules and spawned workers re-import them by path"),
    GlobalPatch("cirtorch train.py names (dsa_session kept open for the rest of the process)",
                "dsa_plugin.integrations.cirtorch.hooks.install",
                "only from the patched train.py (patches/cirtorch-train.patch)",
                "the user's own script owns the process and has no exit hook"),
    GlobalPatch("matplotlib.axes.Axes.grid accepts b= (as visible=)",
                "dsa_plugin.integrations.how.runtime.accept_grid_b",
                "only from the patched HOW (install_dsa, patches/how-train.patch)",
                "HOW's own train() calls install_dsa and runs on; there is no exit hook"),
    GlobalPatch("torch.serialization.add_safe_globals(HOW checkpoint types)",
                "dsa_plugin.integrations.how.checkpoints.allow_how_checkpoints",
                "only from the patched HOW (install_dsa)",
                "HOW's own train() calls install_dsa and runs on; there is no exit hook"),
)


def rebind(stack: contextlib.ExitStack, target: Any, name: str, value: Any) -> None:
    """Rebind ``target.name`` (or ``target[name]`` for a mapping) until ``stack`` closes.

    The one way the integrations patch toolkit (and library) names: the old value, or the
    absence of a mapping key, comes back on exit, also after an exception.
    """
    if isinstance(target, MutableMapping):
        missing = name not in target
        old = target.get(name)
        target[name] = value
        stack.callback(lambda: target.pop(name, None) if missing else target.__setitem__(name, old))
    else:
        old = getattr(target, name)
        setattr(target, name, value)
        stack.callback(setattr, target, name, old)


@contextlib.contextmanager
def rebound(target: Any, name: str, value: Any) -> Iterator[None]:
    """:func:`rebind` for the duration of a ``with`` block.

    Example:
        >>> import types
        >>> ns = types.SimpleNamespace(x=1)
        >>> with rebound(ns, "x", 2):
        ...     print(ns.x)
        2
        >>> ns.x
        1
    """
    with contextlib.ExitStack() as stack:
        rebind(stack, target, name, value)
        yield


def fix_pillow_antialias() -> bool:
    """Alias ``PIL.Image.ANTIALIAS`` to ``LANCZOS`` when Pillow no longer has it; True if added."""
    from PIL import Image

    if hasattr(Image, "ANTIALIAS"):
        return False
    # Pillow 10 removed the alias; the filter itself (LANCZOS) is unchanged.
    Image.ANTIALIAS = Image.Resampling.LANCZOS  # type: ignore[attr-defined]
    return True


def in1d(ar1: Any, ar2: Any, assume_unique: bool = False, invert: bool = False) -> np.ndarray:
    """numpy < 2.4 ``np.in1d``: membership of each element of the flattened ``ar1`` in ``ar2`` (1-D bool).

    Example:
        >>> import numpy as np
        >>> in1d(np.array([1, 2, 3]), [2])
        array([False,  True, False])
    """
    return np.isin(np.ravel(ar1), ar2, assume_unique=assume_unique, invert=invert)


def fix_numpy_in1d() -> bool:
    """Provide ``np.in1d`` (removed in numpy 2.4) as ``in1d`` above; True if added."""
    try:
        np.in1d  # noqa: B018 -- numpy raises AttributeError for removed names
        return False
    except AttributeError:
        np.in1d = in1d  # type: ignore[attr-defined]
        return True


def apply_runtime_fixes() -> dict[str, bool]:
    """Apply every library fix the toolkits need (idempotent); returns which ones changed something."""
    return {"pillow_antialias": fix_pillow_antialias(), "numpy_in1d": fix_numpy_in1d()}


def worker_init_fn(worker_id: int) -> None:
    """DataLoader ``worker_init_fn`` that re-applies the fixes in a freshly spawned worker."""
    apply_runtime_fixes()


class WithRuntimeFixes:
    """Transparent wrapper of a callable (a transform) that carries the runtime fixes into workers.

    Calls, ``repr`` and attribute reads go to the wrapped object, so the toolkit sees its own
    transform; unpickling (what a ``spawn`` worker does with the dataset) re-applies the fixes.
    """

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        if name == "fn":  # not yet set during unpickling
            raise AttributeError(name)
        return getattr(self.fn, name)

    def __repr__(self) -> str:
        return repr(self.fn)

    def __getstate__(self) -> dict[str, Any]:
        return {"fn": self.fn}

    def __setstate__(self, state: dict[str, Any]) -> None:
        apply_runtime_fixes()
        self.fn = state["fn"]


def _tensor_cuda_noop(self: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    return self


def _module_cuda_noop(self: torch.nn.Module, device: Any = None) -> torch.nn.Module:
    return self


@contextlib.contextmanager
def cuda_noop(enabled: bool = True) -> Iterator[bool]:
    """Make ``Tensor.cuda()`` / ``Module.cuda()`` identity functions inside the block.

    For CPU runs of toolkit code that hard-codes ``.cuda()``; ``enabled=False`` leaves CUDA
    alone (a real GPU run). The originals are restored on exit, also after an exception.
    """
    if not enabled:
        yield False
        return
    with contextlib.ExitStack() as stack:
        rebind(stack, torch.Tensor, "cuda", _tensor_cuda_noop)
        rebind(stack, torch.nn.Module, "cuda", _module_cuda_noop)
        yield True


def cuda_noop_active() -> bool:
    """True while ``cuda_noop`` is in effect."""
    return torch.Tensor.cuda is _tensor_cuda_noop


def cpu_only_run(device: str | None) -> bool:
    """Whether a toolkit run must stay on the CPU: asked for (``cpu``) or no CUDA device present."""
    if device is not None and device.startswith("cpu"):
        return True
    return not torch.cuda.is_available()
