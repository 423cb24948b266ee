"""Restricted unpickling for the published ground-truth and whitening pickles.

``gnd_<name>.pkl`` and ``*_lw.pkl`` hold only builtins and numpy arrays, so arbitrary globals are
refused: opening a downloaded pickle must not run code.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

from dsa_plugin.files import atomic_write

# (module, name) pairs numpy arrays and scalars need to unpickle, across numpy 1.x and 2.x.
_ALLOWED = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy", "float64"),
    ("numpy", "float32"),
    ("numpy", "int64"),
    ("numpy", "int32"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("builtins", "slice"),
    ("collections", "OrderedDict"),
    ("_codecs", "encode"),
}


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle references a global outside the allow-list (it could run code)."""


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, path: Path, **kwargs):
        super().__init__(file, **kwargs)
        self._path = path

    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise UnsafePickleError(
            f"{self._path}: refusing to unpickle global {module}.{name}; "
            "only builtins and numpy arrays are allowed in ground-truth / whitening pickles"
        )


def load_pickle(path: str | os.PathLike) -> object:
    """Unpickle ``path`` allowing only builtins and numpy arrays (Python-2 pickles via latin1)."""
    path = Path(path)
    for encoding in ("ASCII", "latin1"):
        with open(path, "rb") as f:
            try:
                return _RestrictedUnpickler(f, path, encoding=encoding).load()
            except UnicodeDecodeError:
                continue
    raise pickle.UnpicklingError(f"{path}: cannot decode the pickle (tried ASCII and latin1 string encodings)")


def dump_pickle(obj: object, path: str | os.PathLike) -> Path:
    """Pickle ``obj`` atomically (temp file + os.replace)."""
    return atomic_write(path, lambda f: pickle.dump(obj, f, protocol=pickle.HIGHEST_PROTOCOL))
