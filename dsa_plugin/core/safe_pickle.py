"""The one restricted unpickler for every pickle the package reads.

Training dbs (``retrieval-SfM-120k.pkl``), whitening dbs, ground-truth files (``gnd_<name>.pkl``)
and published whitening (``*_lw.pkl``) hold only builtin containers/scalars and numpy arrays.
A pickle may name any importable callable, so plain ``pickle.load`` on a downloaded or
hand-made file runs whatever it names; here every global outside a small allow-list is refused
before anything is called. Every failure (unsafe, truncated, empty, not a pickle, unreadable) is
a :class:`PickleFileError`: a ``ValueError`` whose one-line message names the file.
"""

from __future__ import annotations

import io
import os
import pickle
import types
from pathlib import Path
from typing import BinaryIO

from dsa_plugin.core.files import atomic_write

# (module, name) pairs that builtin containers and numpy arrays/scalars need, across numpy 1.x
# and 2.x and Python-2 protocol-2 pickles. None of them can run code with attacker-chosen effects.
_ALLOWED = frozenset({
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy", "float64"),
    ("numpy", "float32"),
    ("numpy", "int64"),
    ("numpy", "int32"),
    ("numpy", "bool_"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("builtins", "slice"),
    ("builtins", "complex"),
    ("collections", "OrderedDict"),
    ("_codecs", "encode"),
})


class PickleFileError(ValueError):
    """A pickle file could not be read as plain data (the message names the file)."""


class UnsafePickleError(PickleFileError, pickle.UnpicklingError):
    """The pickle references a global outside the allow-list (it could run code)."""


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, path: Path, **kwargs):
        super().__init__(file, **kwargs)
        self._path = path

    def find_class(self, module: str, name: str):
        # Protocol <= 2 pickles spell builtins the Python-2 way; the base class maps the name back.
        if (module.replace("__builtin__", "builtins"), name) in _ALLOWED:
            return super().find_class(module, name)
        if not (name.isidentifier() and all(part.isidentifier() for part in module.split("."))):
            # A text file that happens to start with 'c' reads as a GLOBAL opcode: say what it is.
            raise PickleFileError(f"{self._path}: not a valid pickle (it looks like text, not pickled data)")
        raise UnsafePickleError(
            f"{self._path}: refusing to unpickle global {module}.{name}: it could run code; "
            "only builtin containers/scalars and numpy arrays are allowed in data pickles"
        )


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def load_pickle(path: str | os.PathLike) -> object:
    """Unpickle ``path`` allowing only builtins and numpy arrays (Python-2 pickles via latin1).

    Raises :class:`UnsafePickleError` for a file that names any other global and
    :class:`PickleFileError` for a missing, empty, truncated or non-pickle file.

    Example:
        >>> import os, pickle, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "db.pkl")
        >>> _ = dump_pickle({"cids": ["a", "b"], "qidxs": [0]}, path)
        >>> load_pickle(path)
        {'cids': ['a', 'b'], 'qidxs': [0]}
        >>> with open(path, "wb") as f:
        ...     pickle.dump(os.getcwd, f)
        >>> load_pickle(path)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        dsa_plugin.core.safe_pickle.UnsafePickleError: ...
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise PickleFileError(f"{path}: cannot read the file: {err.strerror or err}") from None
    return _load_bytes(data, path)


def load_from(file: BinaryIO, name: str | os.PathLike | None = None) -> object:
    """The restricted unpickler's load of an open binary ``file`` (reads the rest of it).

    For toolkit code that calls ``pickle.load`` on a handle it opened (see
    :data:`RESTRICTED_PICKLE`); ``name`` (default: ``file.name``) is what the errors say.
    """
    path = Path(str(name if name is not None else getattr(file, "name", "<pickle stream>")))
    try:
        data = file.read()
    except OSError as err:
        raise PickleFileError(f"{path}: cannot read the file: {err.strerror or err}") from None
    return _load_bytes(data, path)


def _load_bytes(data: bytes, path: Path) -> object:
    for encoding in ("ASCII", "latin1"):
        try:
            return _RestrictedUnpickler(io.BytesIO(data), path, encoding=encoding).load()
        except UnicodeDecodeError:
            continue  # a Python-2 str holding non-ASCII bytes: latin1 maps every byte
        except PickleFileError:
            raise
        except EOFError:
            raise PickleFileError(f"{path}: empty or truncated pickle (ran out of data)") from None
        except pickle.UnpicklingError as err:
            if "truncated" in str(err):
                raise PickleFileError(f"{path}: empty or truncated pickle (ran out of data)") from None
            raise PickleFileError(f"{path}: not a valid pickle ({_one_line(err)[:200]})") from None
        except Exception as err:  # noqa: BLE001 - any decoding failure of untrusted bytes is "not a pickle"
            raise PickleFileError(
                f"{path}: not a valid pickle ({type(err).__name__}: {_one_line(err)[:200]})"
            ) from None
    raise PickleFileError(f"{path}: cannot decode the pickle (tried ASCII and latin1 string encodings)")


class _RestrictedPickleModule(types.ModuleType):
    """Stands in for the ``pickle`` module inside toolkit code: ``load``/``loads`` are restricted,
    everything else (``dump``, ``HIGHEST_PROTOCOL``, ...) is the real module's."""

    def __init__(self) -> None:
        super().__init__("pickle", "the pickle module with load/loads through dsa_plugin.core.safe_pickle")

    load = staticmethod(load_from)

    @staticmethod
    def loads(data: bytes, **_: object) -> object:
        return _load_bytes(bytes(data), Path("<pickled bytes>"))

    def __getattr__(self, name: str) -> object:
        return getattr(pickle, name)


#: What :func:`dsa_plugin.integrations.how.runtime.how_runtime` binds as ``pickle`` in the
#: toolkit modules it runs: every ``pickle.load`` there reads plain data only.
RESTRICTED_PICKLE = _RestrictedPickleModule()


def dump_pickle(obj: object, path: str | os.PathLike) -> Path:
    """Pickle ``obj`` atomically (temp file + os.replace)."""
    return atomic_write(path, lambda f: pickle.dump(obj, f, protocol=pickle.HIGHEST_PROTOCOL))
