"""Safe loading of HOW checkpoints: ``torch.load(weights_only=True)`` with HOW's few extra types.

torch >= 2.6 loads with ``weights_only=True``; HOW checkpoints also hold numpy scalars and small
arrays (validation mAPs) and a ``defaultdict(list)`` of validation scores. Exactly those types are
allow-listed, scoped (:func:`how_checkpoint_loading`) or, for the patched HOW only, process-wide
(:func:`allow_how_checkpoints`); safe loading is never switched off.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Iterator


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
    process-wide (HOW's own patched process; see ``compat.GLOBAL_PATCHES``). Safe loading stays on
    for every other type."""
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
